#!/usr/bin/env bash
# PPO on GSM8K + MATH, Qwen2.5-3B-Instruct, two nodes of 8 GPUs on a Ray cluster
#
# Model:    Qwen/Qwen2.5-3B-Instruct (actor, critic)
# Data:     gsm8k/train.parquet, math/train.parquet
# Hardware: 2 node(s) x 8 GPUs; FSDP; rollout vllm, tensor parallel 2
# Special:  several nodes: start a Ray cluster first, then run this on its head node:
#             head:   ray start --head --port=6379
#             others: ray start --address=<head ip>:6379
#           Every node needs the same rlcamp install, models and data paths. Not yet run by rlcamp
#           on GPUs (none lent so far); its smoke run keeps the 2-process layout on one CPU.
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k
#   python examples/data_preprocess/math_dataset.py --local_dataset_path <MATH train/test files> --local_dir $DATA_DIR/math
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_qwen2.5-3b_gsm8k_2nodes_ray.sh
# Check the full line here:           bash examples/ppo_trainer/run_qwen2.5-3b_gsm8k_2nodes_ray.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-3B-Instruct}

python3 -m rlcamp.trainer.main_ppo \
    algorithm.adv_estimator=gae \
    "data.train_files=['$DATA_DIR/gsm8k/train.parquet', '$DATA_DIR/math/train.parquet']" \
    "data.val_files=['$DATA_DIR/gsm8k/test.parquet', '$DATA_DIR/math/test.parquet']" \
    data.train_batch_size=1024 \
    data.max_prompt_length=1024 \
    data.max_response_length=1024 \
    data.filter_overlong_prompts=True \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    "critic.model.path=$MODEL_PATH" \
    critic.model.use_remove_padding=True \
    critic.optim.lr=1e-5 \
    critic.use_dynamic_bsz=True \
    critic.ppo_max_token_len_per_gpu=32768 \
    'trainer.logger=["console"]' \
    trainer.project_name=rlcamp_work_orders \
    trainer.experiment_name=qwen2.5_3b_gsm8k_math_2nodes \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=2 \
    trainer.save_freq=20 \
    trainer.test_freq=10 \
    trainer.total_epochs=15 \
    "$@"
