#!/usr/bin/env bash
# The main job: PPO (GAE + critic) on SmolLM2-135M-Instruct for GSM8K-format arithmetic, on CPU.
# Prepares the model (once) and the data, validates greedily before and after training, and
# prints both accuracies and where the checkpoints and metrics went. Extra key=value overrides
# are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/rlcamp quickstart "$@"
