#!/usr/bin/env bash
# PPO on GSM8K + MATH with a reward model, Qwen2.5-3B-Instruct, reward loop colocated
#
# Model:    /HOME/models/Qwen2.5-3B-Instruct (actor), /HOME/models/Qwen2.5-3B-Instruct (critic), /HOME/models/Skywork-Reward-V2-Llama-3.2-3B (reward_model)
# Data:     ['gsm8k/train.parquet', 'math/train.parquet']
# Hardware: 1 node(s) x 8 GPUs; FSDP; rollout vllm, tensor parallel 1
# Special:  the reward loop on vLLM, colocated
# Memory:   ~76 GiB peak per 80 GiB device (resident 12 + reward 64): fits (rlcamp plan's estimate at full lengths, not measured)
# Source:   verl's examples/ppo_trainer/run_qwen2.5-3b_rm_reward_loop_colocate.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k
#   python examples/data_preprocess/math_dataset.py --local_dataset_path <MATH train/test files> --local_dir $DATA_DIR/math
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_qwen2.5-3b_rm_reward_loop_colocate.sh
# Check the full line here:           bash examples/ppo_trainer/run_qwen2.5-3b_rm_reward_loop_colocate.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-$HOME/models/Qwen2.5-3B-Instruct}
RM_PATH=${RM_PATH:-$HOME/models/Skywork-Reward-V2-Llama-3.2-3B}

python3 -m rlcamp.trainer.main_ppo \
    algorithm.adv_estimator=gae \
    "data.train_files=['$DATA_DIR/gsm8k/train.parquet', '$DATA_DIR/math/train.parquet']" \
    "data.val_files=['$DATA_DIR/gsm8k/test.parquet', '$DATA_DIR/math/test.parquet']" \
    data.train_batch_size=1024 \
    data.max_prompt_length=1024 \
    data.max_response_length=2048 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    data.return_raw_chat=True \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.1 \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    critic.optim.lr=1e-5 \
    critic.model.use_remove_padding=True \
    critic.optim.lr_warmup_steps_ratio=0.05 \
    "critic.model.path=$MODEL_PATH" \
    critic.model.enable_gradient_checkpointing=True \
    critic.ppo_micro_batch_size_per_gpu=32 \
    critic.model.fsdp_config.param_offload=False \
    critic.model.fsdp_config.optimizer_offload=False \
    reward_model.enable=True \
    "reward_model.model.path=$RM_PATH" \
    reward_model.use_reward_loop=True \
    reward_model.rollout.name=vllm \
    reward_model.rollout.gpu_memory_utilization=0.8 \
    reward_model.rollout.tensor_model_parallel_size=1 \
    reward_model.rollout.prompt_length=4096 \
    reward_model.rollout.response_length=4096 \
    reward_model.num_workers=8 \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    'trainer.logger=["console","wandb"]' \
    trainer.project_name=verl_test_qwen25_rm \
    trainer.val_before_train=False \
    trainer.experiment_name=reward_loop_colocate_reward_model \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=-1 \
    trainer.test_freq=10 \
    trainer.total_epochs=15 \
    "$@"
