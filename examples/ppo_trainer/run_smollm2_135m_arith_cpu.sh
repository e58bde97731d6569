#!/usr/bin/env bash
# PPO (GAE + critic) on SmolLM2-135M-Instruct, GSM8K-format arithmetic, one CPU.
# The same run as `make run` / `rlcamp quickstart`. About 5.5 minutes on 2 AVX-512 + AMX-BF16 cores, 7-8 on 2
# AVX-512 cores with AVX512-BF16 (8 samples per prompt since #19; not yet timed on AVX2-only cores).
#   bash examples/ppo_trainer/run_smollm2_135m_arith_cpu.sh [more key=value overrides]
set -euo pipefail
MODEL=$(rlcamp models prepare smollm2-135m-instruct)
DATA=${DATA:-$HOME/data/rlcamp_arith}
python -c "from rlcamp.data.arith import write_splits; write_splits('$DATA', n_test=32, digits=1)"

python -m rlcamp.trainer.main_ppo \
  algorithm.adv_estimator=gae \
  data.train_files="$DATA/train.parquet" \
  data.val_files="$DATA/test.parquet" \
  data.train_batch_size=16 \
  data.max_prompt_length=128 \
  data.max_response_length=32 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.model.enable_gradient_checkpointing=False \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=0.8 \
  actor_rollout_ref.actor.optim.lr=2e-5 \
  actor_rollout_ref.actor.optim.lr_decay_style=WSD \
  actor_rollout_ref.actor.optim.lr_wsd_decay_steps=4 \
  actor_rollout_ref.actor.optim.lr_wsd_decay_style=linear \
  actor_rollout_ref.actor.ppo_mini_batch_size=8 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32 \
  critic.optim.lr=5e-5 \
  critic.ppo_micro_batch_size_per_gpu=32 \
  critic.model.enable_gradient_checkpointing=False \
  trainer.device=cpu \
  trainer.n_gpus_per_node=1 \
  trainer.nnodes=1 \
  trainer.total_training_steps=14 \
  trainer.val_before_train=True \
  trainer.test_freq=-1 \
  trainer.save_freq=-1 \
  trainer.logger='[console]' \
  trainer.log_val_generations=4 \
  trainer.project_name=rlcamp_quickstart \
  trainer.experiment_name=smollm2_135m_arith_ppo \
  "$@"
