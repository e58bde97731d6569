#!/usr/bin/env bash
# PPO on GSM8K + MATH, Qwen2-7B-Instruct, SGLang rollout
#
# Model:    Qwen/Qwen2-7B-Instruct (actor), Qwen/Qwen2-7B-Instruct (critic)
# Data:     ['gsm8k/train.parquet', 'math/train.parquet']
# Hardware: 1 node(s) x 8 GPUs; FSDP; rollout sglang, tensor parallel 2
# Special:  rollout.name=sglang (CUDA only)
# Memory:   ~67 GiB peak per 80 GiB device (resident 27 + generate 40): fits (rlcamp plan's estimate at full lengths, not measured)
# Source:   verl's examples/ppo_trainer/run_qwen2-7b_sglang_seq_balance.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k
#   python examples/data_preprocess/math_dataset.py --local_dataset_path <MATH train/test files> --local_dir $DATA_DIR/math
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_qwen2-7b_sglang_seq_balance.sh
# Check the full line here:           bash examples/ppo_trainer/run_qwen2-7b_sglang_seq_balance.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2-7B-Instruct}

python3 -m rlcamp.trainer.main_ppo \
    algorithm.adv_estimator=gae \
    "data.train_files=['$DATA_DIR/gsm8k/train.parquet', '$DATA_DIR/math/train.parquet']" \
    "data.val_files=['$DATA_DIR/gsm8k/test.parquet', '$DATA_DIR/math/test.parquet']" \
    data.train_batch_size=4096 \
    data.max_prompt_length=4096 \
    data.max_response_length=4096 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.ppo_mini_batch_size=512 \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24000 \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.name=sglang \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=24000 \
    critic.optim.lr=1e-5 \
    critic.model.use_remove_padding=True \
    "critic.model.path=$MODEL_PATH" \
    critic.model.enable_gradient_checkpointing=True \
    critic.ppo_max_token_len_per_gpu=98304 \
    critic.model.fsdp_config.param_offload=False \
    critic.model.fsdp_config.optimizer_offload=False \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    'trainer.logger=["console","wandb"]' \
    trainer.project_name=verl_example_gsm8k \
    trainer.experiment_name=qwen2-7b_function_rm_bsz8k_p4k_r4k_seq_packing \
    trainer.n_gpus_per_node=8 \
    trainer.val_before_train=False \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=5 \
    trainer.total_epochs=15 \
    "$@"
