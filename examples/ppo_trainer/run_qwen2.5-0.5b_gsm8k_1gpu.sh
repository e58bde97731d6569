#!/usr/bin/env bash
# PPO on GSM8K, Qwen2.5-0.5B-Instruct as actor and critic, one GPU
#
# Model:    Qwen/Qwen2.5-0.5B-Instruct (actor, critic)
# Data:     gsm8k/train.parquet
# Hardware: 1 node(s) x 1 GPUs; FSDP; rollout vllm, tensor parallel 1
# Special:  verl's quickstart line (docs/start/quickstart.rst at b178a3c); verl reports GSM8K test
#           accuracy 36.4 -> 56.7 for it. Not yet run by rlcamp on a GPU (none lent so far).
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_qwen2.5-0.5b_gsm8k_1gpu.sh
# Check the full line here:           bash examples/ppo_trainer/run_qwen2.5-0.5b_gsm8k_1gpu.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-0.5B-Instruct}

python3 -m rlcamp.trainer.main_ppo \
    "data.train_files=$DATA_DIR/gsm8k/train.parquet" \
    "data.val_files=$DATA_DIR/gsm8k/test.parquet" \
    data.train_batch_size=256 \
    data.max_prompt_length=512 \
    data.max_response_length=512 \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
    critic.optim.lr=1e-5 \
    "critic.model.path=$MODEL_PATH" \
    critic.ppo_micro_batch_size_per_gpu=4 \
    algorithm.kl_ctrl.kl_coef=0.001 \
    trainer.logger=console \
    trainer.val_before_train=False \
    trainer.n_gpus_per_node=1 \
    trainer.nnodes=1 \
    trainer.save_freq=10 \
    trainer.test_freq=10 \
    trainer.total_epochs=15 \
    "$@"
