"""The launch line a work order runs, read the way bash runs it.

The script runs under bash with ``python``/``python3`` (and ``rlcamp``, ``huggingface-cli``)
replaced by exported shell functions (so a script that ``exec``s another is read too): the call ``python3 -m <...>.main_ppo ...`` prints its argv and the
environment it would see, as JSON; every other call does nothing (a data-preparation command, a
model download). Variables, ``${x:-default}``, quoting and the trailing ``"$@"`` expand exactly as
for a user, and nothing the script would start is started.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TRAINER_MODULES = ("rlcamp.trainer.main_ppo", "verl.trainer.main_ppo")
ENV_PREFIXES = ("VERL_", "RLCAMP_", "VLLM_", "RAY_", "CUDA_VISIBLE_DEVICES", "HF_")

_CAPTURE = r'''
_rlcamp_capture() {
  if [ "$1" = "-m" ] && { [ "$2" = "rlcamp.trainer.main_ppo" ] || [ "$2" = "verl.trainer.main_ppo" ]; }; then
    "$RLCAMP_CAPTURE_PYTHON" -c 'import json, os, sys
prefixes = tuple(os.environ["RLCAMP_CAPTURE_PREFIXES"].split(","))
env = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
print("RLCAMP_LAUNCH " + json.dumps({"module": sys.argv[1], "args": sys.argv[2:], "env": env}))' "${@:2}"
  fi
}
python() { _rlcamp_capture "$@"; }
python3() { _rlcamp_capture "$@"; }
rlcamp() { if [ "$1 $2" = "models prepare" ]; then echo "/rlcamp-smoke-models/$3"; fi; }
huggingface-cli() { :; }
hf() { :; }
export -f _rlcamp_capture python python3 rlcamp huggingface-cli hf
f=$1; shift
bash "$f" "$@"
'''


@dataclass
class LaunchLine:
    script: Path
    module: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


class LaunchError(ValueError):
    pass


def read_launch_line(script: str | Path, extra: list[str] | None = None, env: dict[str, str] | None = None) -> LaunchLine:
    """The trainer call of ``script`` (with ``extra`` as its ``"$@"``), without running anything."""
    import sys

    script = Path(script)
    if not script.is_file():
        raise LaunchError(f"{script}: no such work order (see examples/ppo_trainer/)")
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "capture.sh"
        capture.write_text(_CAPTURE)
        run_env = dict(os.environ, **(env or {}), RLCAMP_CAPTURE_PYTHON=sys.executable,
                       RLCAMP_CAPTURE_PREFIXES=",".join(ENV_PREFIXES))
        out = subprocess.run(["bash", str(capture), str(script.resolve()), *(extra or [])], capture_output=True,
                             text=True, env=run_env, cwd=script.resolve().parent, timeout=60)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RLCAMP_LAUNCH ")]
    if not lines:
        raise LaunchError(f"{script}: no `python3 -m rlcamp.trainer.main_ppo ...` line ran (bash exit {out.returncode}"
                          f"{': ' + out.stderr.strip()[-500:] if out.stderr.strip() else ''})")
    found = json.loads(lines[-1][len("RLCAMP_LAUNCH "):])
    return LaunchLine(script, found["module"], found["args"], found["env"])
