#!/usr/bin/env bash
# PPO on code (Eurus-2-RL-Data), DeepSeek-LLM-7B-Chat, answers run in a sandbox
#
# Model:    deepseek-ai/deepseek-llm-7b-chat (actor), deepseek-ai/deepseek-llm-7b-chat (critic)
# Data:     Eurus-2-RL-Data/train.parquet
# Hardware: 1 node(s) x 8 GPUs; FSDP; rollout vllm, tensor parallel 4
# Special:  reward_model.sandbox_fusion.url: code rewards from a SandboxFusion service (`rlcamp sandbox serve` is one)
# Memory:   ~57 GiB peak per 80 GiB device (resident 25 + generate 32): fits (rlcamp plan's estimate at full lengths, not measured)
# Source:   verl's examples/ppo_trainer/run_deepseek7b_llm_sandbox_fusion.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/eurus_code.py --local_dataset_path <PRIME-RL/Eurus-2-RL-Data parquet files> --local_dir $DATA_DIR/Eurus-2-RL-Data
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_deepseek7b_llm_sandbox_fusion.sh
# Check the full line here:           bash examples/ppo_trainer/run_deepseek7b_llm_sandbox_fusion.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/deepseek-llm-7b-chat}

python3 -m rlcamp.trainer.main_ppo \
    reward_model.sandbox_fusion.url=https://xxxxxxxxx.apigateway-cn-beijing.volceapi.com/run_code \
    reward_model.sandbox_fusion.max_concurrent=128 \
    reward_model.reward_manager=prime \
    algorithm.adv_estimator=gae \
    "data.train_files=$DATA_DIR/Eurus-2-RL-Data/train.parquet" \
    "data.val_files=$DATA_DIR/Eurus-2-RL-Data/validation.parquet" \
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
    trainer.project_name=verl_example_sandbox_fusion \
    trainer.experiment_name=deepseek_llm_7b_function_sandbox_fusion \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=1 \
    trainer.total_epochs=15 \
    "$@"
