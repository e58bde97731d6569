#!/usr/bin/env bash
# Set up, then run the tests: the default tier (must pass), then the slow tier while time allows.
# SLOW_BUDGET_S (default 3500) bounds the slow tier; 0 skips it. Ends with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# Debian packages some tests use for real, installed when missing (root with apt): the report test
# drives a headless Chromium; the sandbox's language tests compile and run C, C++, Java, Go, Rust and
# JavaScript with Debian's toolchains (a test whose toolchain is missing is skipped, saying which)
want=()
command -v chromium >/dev/null || want+=(chromium)
command -v chromedriver >/dev/null || want+=(chromium-driver)
for tool in g++:g++ gcc:gcc javac:default-jdk-headless go:golang-go node:nodejs rustc:rustc; do
  # the sandbox's jail sees only /usr/local/bin:/usr/bin:/bin (a rustup toolchain under ~/.cargo is hidden)
  PATH=/usr/local/bin:/usr/bin:/bin command -v "${tool%%:*}" >/dev/null || want+=("${tool#*:}")
done
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}") >/dev/null \
      || echo "could not install ${want[*]}: the tests that need them will be skipped"
  else
    echo "missing Debian packages ${want[*]} (install them as root): the tests that need them will be skipped"
  fi
fi
log=$(mktemp)
.venv/bin/python -m pytest "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ $rc -eq 0 ] && [ $# -eq 0 ] && [ "${SLOW_BUDGET_S:-3500}" -gt 0 ]; then
  budget=${SLOW_BUDGET_S:-3500}
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
