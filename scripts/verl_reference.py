"""Facts rlcamp keeps about verl at commit b178a3c, written from a copy of its repository:

- ``rlcamp/config/verl_keys.py``: every key of verl's ppo_trainer.yaml and ppo_megatron_trainer.yaml
  (from verl's own flattened ``_generated_*.yaml``), so a verl key rlcamp does not run is answered as
  one, not as a typo;
- ``tests/fixtures/verl_ppo_trainer/launch_lines.json``: the launch line of each of verl's
  ``examples/ppo_trainer/*.sh``, as bash would pass it to ``python3``.

Each script is run by bash with ``python3`` replaced by a function that prints its argv and
environment, so variables, ``${x:-default}`` and quoting expand exactly as for a user. Model and
data paths are then replaced by placeholders (``{models}/<family>``, ``{data}/<relative path>``),
the only values a user changes, and the original values are kept beside them.

    python scripts/verl_reference.py /path/to/verl   # a clone or `git --git-dir` mirror of volcengine/verl

verl's ``run_deepseek7b_llm_pfppo.sh`` has a comment after a line continuation (``\\  # [...]``),
which ends its command after four keys in bash; the intended line (comment removed) is recorded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rlcamp.workorders.stand_ins import family_of, is_reward_model  # noqa: E402

COMMIT = "b178a3c"
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/verl_ppo_trainer/launch_lines.json"
KEYS_OUT = ROOT / "rlcamp/config/verl_keys.py"
GENERATED = ("verl/trainer/config/_generated_ppo_trainer.yaml", "verl/trainer/config/_generated_ppo_megatron_trainer.yaml")
CAPTURE = r'''
python3() { /usr/bin/env python3 -c 'import json, os, sys
print("ARGV " + json.dumps({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("VERL_")}}))' "$@"; }
python() { :; }; huggingface-cli() { :; }
HOME=/HOME
f=$1; shift; source "$f"
'''
MODEL_KEYS = ("actor_rollout_ref.model.path", "critic.model.path", "reward_model.model.path")
DATA_KEYS = ("data.train_files", "data.val_files")


def show(repo: Path, path: str) -> str:
    git = ["git", f"--git-dir={repo / '.git'}" if (repo / ".git").exists() else f"--git-dir={repo}"]
    return subprocess.run(git + ["show", f"{COMMIT}:{path}"], check=True, capture_output=True, text=True).stdout


def scripts(repo: Path) -> list[str]:
    git = ["git", f"--git-dir={repo / '.git'}" if (repo / ".git").exists() else f"--git-dir={repo}"]
    out = subprocess.run(git + ["ls-tree", "--name-only", COMMIT, "examples/ppo_trainer/"], check=True,
                         capture_output=True, text=True).stdout.split()
    return sorted(p for p in out if p.endswith(".sh"))


def capture(text: str) -> dict:
    text = re.sub(r"\\[ \t]+#.*$", "\\\\", text, flags=re.MULTILINE)  # the pfppo script's comment after a `\`
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "script.sh").write_text(text)
        (Path(tmp) / "capture.sh").write_text(CAPTURE)
        out = subprocess.run(["bash", "capture.sh", "script.sh"], check=False, cwd=tmp, capture_output=True, text=True).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("ARGV ")][-1]
    return json.loads(line[5:])


def model_placeholder(text: str, value: str) -> str:
    name = value.rstrip("/").rsplit("/", 1)[-1]
    if not name:  # the two MoE megatron scripts use $LLM without setting it; their HF_MODEL_PATH names the model
        name = re.search(r"^HF_MODEL_PATH=(\S+)", text, re.MULTILINE).group(1).rsplit("/", 1)[-1]
    family = family_of(name)
    if family is None:
        raise SystemExit(f"no tiny family stands in for {name} (rlcamp.workorders.stand_ins.NAME_FAMILIES)")
    return "{models}/" + family + ("-rm" if is_reward_model(name) else "")


def data_placeholder(value: str) -> str:
    return re.sub(r"/HOME/data/", "{data}/", value)


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for name, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def write_keys(repo: Path) -> None:
    import yaml

    keys: dict = {}
    for path in GENERATED:  # ppo_trainer's default wins where both files have a key
        for key, value in _leaves(yaml.safe_load(show(repo, path))).items():
            keys.setdefault(key, value)
    keys = dict(sorted(keys.items()))
    body = "".join(f"    {k!r}: {v!r},\n" for k, v in keys.items())
    KEYS_OUT.write_text(f'''"""Every key of verl's ppo_trainer.yaml and ppo_megatron_trainer.yaml at commit {COMMIT} (volcengine/verl),
with verl's defaults (ppo_trainer's where the two differ), from its flattened _generated_*.yaml.
Written by scripts/verl_reference.py; do not edit by hand."""

VERL_COMMIT = "{COMMIT}"
VERL_KEYS = {{
{body}}}
''')
    print(f"wrote {len(keys)} verl keys to {KEYS_OUT}")


def main(repo: str) -> None:
    write_keys(Path(repo))
    lines = {}
    for path in scripts(Path(repo)):
        text = show(Path(repo), path)
        got = capture(text)
        argv = got["argv"][2:]  # drop "-m verl.trainer.main_ppo"
        assert got["argv"][:2] == ["-m", "verl.trainer.main_ppo"], (path, got["argv"][:2])
        args, original = [], {}
        for arg in argv:
            key, sep, value = arg.partition("=")
            if sep and key in MODEL_KEYS:
                original[key] = value
                value = model_placeholder(text, value)
            elif sep and key in DATA_KEYS:
                original[key] = value
                value = data_placeholder(value)
            args.append(f"{key}={value}" if sep else arg)
        lines[Path(path).name] = {"args": args, "env": got["env"], "original": original}
    OUT.write_text(json.dumps({"repository": "volcengine/verl", "commit": COMMIT, "scripts": lines}, indent=1) + "\n")
    print(f"wrote {len(lines)} launch lines to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror/volcengine+verl/repo")
