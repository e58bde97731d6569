#!/usr/bin/env bash
# Set up, then run the tests: the default tier (must pass), then the slow tier while time allows.
# SLOW_BUDGET_S (default 2400) bounds the slow tier; 0 skips it.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
[ $rc -eq 0 ] || exit $rc
budget=${SLOW_BUDGET_S:-2400}
if [ "$budget" -gt 0 ] && [ $# -eq 0 ]; then
  echo "== slow tier (budget ${budget}s) =="
  timeout --signal=INT "$budget" .venv/bin/python -m pytest -m slow
  rc=$?
  case $rc in
    0) ;;
    5) echo "no slow tests collected"; rc=0 ;;
    124|130) echo "slow tier stopped after ${budget}s (time budget), not a failure"; rc=0 ;;
  esac
fi
exit $rc
