#!/usr/bin/env bash
# The CUDA checks (tests/gpu, marked `gpu`) on a machine with an NVIDIA GPU, under whatever torch
# and transformers its Python has (no venv, no install: rlcamp is put on PYTHONPATH). Elsewhere
# the same tests are skipped with a reason. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PY" -c \
  'import sys, torch, transformers; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, cuda available: {torch.cuda.is_available()}")'
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PY" -m pytest -m gpu tests/gpu -p no:cacheprovider -v -rs "$@"
