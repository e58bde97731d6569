#!/usr/bin/env bash
# The main job. Until the trainer lands this converts the real GSM8K data and dry-runs the
# GSM8K work order: the config is validated and the resolved config and batch plan printed.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${RLCAMP_DATA:-$HOME/data/gsm8k}
src=../shared/data/gsm8k
[ -d "$src" ] || src=tests/fixtures/gsm8k
.venv/bin/python examples/data_preprocess/gsm8k.py --local_dataset_path "$src" --local_dir "$data"
.venv/bin/python -m rlcamp.trainer.main_ppo --dry-run \
  data.train_files="$data/train.parquet" data.val_files="$data/test.parquet" \
  data.train_batch_size=16 data.max_prompt_length=256 data.max_response_length=128 \
  actor_rollout_ref.rollout.n=4 actor_rollout_ref.actor.ppo_mini_batch_size=8 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 critic.ppo_micro_batch_size_per_gpu=8 \
  trainer.n_gpus_per_node=1 trainer.device=cpu trainer.total_epochs=1
