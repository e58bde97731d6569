#!/usr/bin/env bash
# The harder arithmetic work order: 2-digit sums (10-99) and 1-digit products mixed, GSM8K format, held-out
# test problems of both kinds; the main job's model and recipe, 16 steps, and partial credit (0.2) for the right
# number after a "####" that does not read strictly, as in "#### 4 * 6 = 24" (validation accuracy counts only
# strict answers). One CPU.
#   bash examples/ppo_trainer/run_smollm2_135m_arith_hard_cpu.sh [more key=value overrides]
set -euo pipefail
MODEL=$(rlcamp models prepare smollm2-135m-instruct)
DATA=${DATA:-$HOME/data/rlcamp_arith_hard}
python -c "from rlcamp.data.arith import write_hard_splits; write_hard_splits('$DATA')"

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
  actor_rollout_ref.actor.ppo_mini_batch_size=8 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32 \
  critic.optim.lr=5e-5 \
  critic.ppo_micro_batch_size_per_gpu=32 \
  critic.model.enable_gradient_checkpointing=False \
  +custom_reward_function.reward_kwargs.marked_score=0.2 \
  trainer.device=cpu \
  trainer.n_gpus_per_node=1 \
  trainer.nnodes=1 \
  trainer.total_training_steps=16 \
  trainer.val_before_train=True \
  trainer.test_freq=-1 \
  trainer.save_freq=-1 \
  trainer.logger='[console]' \
  trainer.log_val_generations=4 \
  trainer.project_name=rlcamp_quickstart \
  trainer.experiment_name=smollm2_135m_arith_hard_ppo \
  "$@"
