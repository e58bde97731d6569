#!/usr/bin/env bash
# PPO on DAPO-Math-17k, Qwen3-8B, Ascend NPU
#
# Model:    Qwen/Qwen3-8B (actor), Qwen/Qwen3-8B (critic)
# Data:     dapo-math-17k.parquet
# Hardware: 1 node(s) x 8 NPUs; FSDP; rollout vllm, tensor parallel 1
# Special:  Ascend NPUs (picked when torch_npu sees them, as verl does); Ulysses 2 with parameter offload
# Memory:   ~59 GiB peak per 64 GiB device (resident 1 + generate 58): fits (rlcamp plan's estimate at full lengths, not measured)
# Source:   verl's examples/ppo_trainer/run_qwen3-8b_npu.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/dapo_math.py --local_dataset_path <BytedTsinghua-SIA/DAPO-Math-17k parquet> --local_file $DATA_DIR/dapo-math-17k.parquet
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_qwen3-8b_npu.sh
# Check the full line here:           bash examples/ppo_trainer/run_qwen3-8b_npu.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-8B}

python3 -m rlcamp.trainer.main_ppo \
    algorithm.adv_estimator=gae \
    "data.train_files=$DATA_DIR/dapo-math-17k.parquet" \
    "data.val_files=$DATA_DIR/dapo-math-17k.parquet" \
    data.train_batch_size=256 \
    data.max_prompt_length=2000 \
    data.max_response_length=12000 \
    data.shuffle=False \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1 \
    actor_rollout_ref.actor.fsdp_config.param_offload=True \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=True \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.actor.ulysses_sequence_parallel_size=2 \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.use_torch_compile=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.9 \
    actor_rollout_ref.rollout.max_num_batched_tokens=14000 \
    actor_rollout_ref.rollout.max_num_seqs=64 \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.enable_chunked_prefill=True \
    actor_rollout_ref.rollout.enforce_eager=False \
    critic.optim.lr=1e-5 \
    critic.model.use_remove_padding=True \
    "critic.model.path=$MODEL_PATH" \
    critic.model.enable_gradient_checkpointing=True \
    critic.ppo_micro_batch_size_per_gpu=1 \
    critic.ulysses_sequence_parallel_size=2 \
    critic.model.fsdp_config.param_offload=True \
    critic.model.fsdp_config.optimizer_offload=True \
    critic.use_dynamic_bsz=True \
    trainer.critic_warmup=0 \
    trainer.logger=console \
    trainer.project_name=verl_example_dapo_math_17k \
    trainer.experiment_name=qwen3_8b_fsdp \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=-1 \
    trainer.val_before_train=False \
    trainer.max_actor_ckpt_to_keep=1 \
    trainer.max_critic_ckpt_to_keep=1 \
    trainer.total_training_steps=100 \
    "$@"
