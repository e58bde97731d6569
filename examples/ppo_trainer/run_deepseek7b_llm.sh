#!/usr/bin/env bash
# PPO on GSM8K, DeepSeek-LLM-7B-Chat as actor and critic
#
# Model:    deepseek-ai/deepseek-llm-7b-chat (actor), deepseek-ai/deepseek-llm-7b-chat (critic)
# Data:     gsm8k/train.parquet
# Hardware: 1 node(s) x 8 GPUs; FSDP; rollout vllm, tensor parallel 4
# Special:  the reference PPO work order: rule reward, vLLM rollout with tensor parallel 4
# Memory:   ~57 GiB peak per 80 GiB device (resident 25 + generate 32): fits (rlcamp plan's estimate at full lengths, not measured)
# Source:   verl's examples/ppo_trainer/run_deepseek7b_llm.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_deepseek7b_llm.sh
# Check the full line here:           bash examples/ppo_trainer/run_deepseek7b_llm.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/deepseek-llm-7b-chat}

python3 -m rlcamp.trainer.main_ppo \
    algorithm.adv_estimator=gae \
    "data.train_files=$DATA_DIR/gsm8k/train.parquet" \
    "data.val_files=$DATA_DIR/gsm8k/test.parquet" \
    data.train_batch_size=1024 \
    data.max_prompt_length=512 \
    data.max_response_length=512 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=4 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
    critic.optim.lr=1e-5 \
    critic.model.use_remove_padding=True \
    "critic.model.path=$MODEL_PATH" \
    critic.model.enable_gradient_checkpointing=True \
    critic.ppo_micro_batch_size_per_gpu=32 \
    critic.model.fsdp_config.param_offload=False \
    critic.model.fsdp_config.optimizer_offload=False \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    'trainer.logger=["console","wandb"]' \
    trainer.project_name=verl_example_gsm8k \
    trainer.experiment_name=deepseek_llm_7b_function_rm \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=1 \
    trainer.use_legacy_worker_impl=auto \
    trainer.total_epochs=15 \
    "$@"
