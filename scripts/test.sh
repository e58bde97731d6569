#!/usr/bin/env bash
# Set up, then run the tests: the default tier (must pass), then the slow tier while time allows.
# SLOW_BUDGET_S (default 3900) bounds the slow tier; 0 skips it. Ends with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# the report test drives a real headless Chromium: Debian's chromium + chromium-driver
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
      || echo "could not install chromium: the report's browser test will be skipped"
  else
    echo "chromium/chromedriver missing (install Debian's chromium chromium-driver): the report's browser test will be skipped"
  fi
fi
log=$(mktemp)
.venv/bin/python -m pytest "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ $rc -eq 0 ] && [ $# -eq 0 ] && [ "${SLOW_BUDGET_S:-3900}" -gt 0 ]; then
  budget=${SLOW_BUDGET_S:-3900}
  echo "== slow tier (budget ${budget}s) =="
  timeout --signal=INT "$budget" .venv/bin/python -m pytest -m slow 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  case $rc in
    5) echo "no slow tests collected"; rc=0 ;;
    124|130) echo "slow tier stopped after ${budget}s (time budget), not a failure"; rc=0 ;;
  esac
fi
# pytest's closing line, with its "===" border or without it (-q)
count() { grep -E "^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s" "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
echo "tests: $(count passed) passed, $(count failed) failed"
rm -f "$log"
exit $rc
