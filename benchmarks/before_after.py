"""Before and after a refactor, on the main job: the same metrics and the same speed.

Runs the main job's first steps (SmolLM2-135M-Instruct, GAE + critic) on an earlier tree and on
this one, in separate processes, interleaved (base, head, base, head, ...), then reports every
metric that differs beyond fp tolerance (responses must be the same tokens: lengths and scores
exactly) and the median step time of each tree with their ratio.

    python benchmarks/before_after.py --base 7751692 [--steps 2] [--rounds 2]

The base tree is checked out with ``git worktree`` under /tmp; both run with this checkout's .venv.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VOLATILE = ("timing_s/", "timing_per_token_ms/", "perf/time_per_step", "perf/throughput", "perf/gen_tokens_per_s")
EXACT = ("response_length/", "critic/score/", "prompt_length/", "perf/total_num_tokens", "perf/generated_tokens")


def child(steps: int, out: Path) -> None:
    """In the tree on sys.path (the working directory): its own main job trainer, ``steps`` steps, their metrics."""
    sys.path.insert(0, str(Path.cwd() / "benchmarks"))
    import rlcamp
    from _main_job import main_job_trainer

    trainer = main_job_trainer(f"/tmp/rlcamp_before_after_{os.getpid()}")
    loader = iter(trainer.loader)
    rows = []
    for _ in range(steps):
        trainer.global_step += 1
        rows.append({k: v for k, v in trainer.step(next(loader)).items() if isinstance(v, (int, float))})
    out.write_text(json.dumps({"rlcamp": rlcamp.__file__, "rows": rows}))


def run_tree(tree: Path, steps: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(HERE / "before_after.py"), "--child",
                    "--steps", str(steps), "--out", str(out)], cwd=tree, env=env, check=True)
    result = json.loads(out.read_text())
    assert result["rlcamp"].startswith(str(tree)), f"imported {result['rlcamp']}, not the tree {tree}"
    return result


def differences(base: list[dict], head: list[dict]) -> list[str]:
    out = []
    for step, (want, got) in enumerate(zip(base, head), start=1):
        for key, value in want.items():
            if key.startswith(VOLATILE) or (key.startswith("perf/") and key.endswith(("_tokens_per_s", "_memory_gb"))):
                continue
            if key not in got:
                out.append(f"step {step}: {key} no longer logged")
            elif key.startswith(EXACT) and got[key] != value:
                out.append(f"step {step}: {key} {value} -> {got[key]} (must be exact)")
            elif not math.isclose(got[key], value, rel_tol=1e-4, abs_tol=1e-5):
                out.append(f"step {step}: {key} {value} -> {got[key]}")
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base", help="the earlier tree's commit")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", action="store_true")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    if a.child:
        child(a.steps, a.out)
        return 0
    base_tree = Path(f"/tmp/rlcamp_base_{a.base}")
    if not base_tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), a.base], cwd=ROOT, check=True)
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    for r in range(a.rounds):
        for name, tree in (("base", base_tree), ("head", ROOT)):
            runs[name].append(run_tree(tree, a.steps, Path(f"/tmp/rlcamp_before_after_{name}_{r}.json")))
    cpu = sorted(set(subprocess.run("grep -o 'amx_bf16\\|avx512f\\|avx512_bf16' /proc/cpuinfo", shell=True,
                                    capture_output=True, text=True).stdout.split()))
    print(f"CPU flags: {' '.join(cpu) or 'AVX2 only'}; base {a.base}, head {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}")
    diffs = differences(runs["base"][0]["rows"], runs["head"][0]["rows"])
    repeat = differences(runs["base"][0]["rows"], runs["base"][-1]["rows"])
    print(f"metrics: {len(diffs)} differ between base and head; {len(repeat)} between two base runs")
    for line in diffs[:40]:
        print("  " + line)
    steps = {name: [row["timing_s/step"] for run in rs for row in run["rows"]] for name, rs in runs.items()}
    stages = sorted({k for run in runs["head"] for row in run["rows"] for k in row if k.startswith("timing_s/")})
    print("| stage | base s | head s | head/base |\n| --- | --- | --- | --- |")
    for key in stages:
        b = [row[key] for run in runs["base"] for row in run["rows"] if key in row]
        h = [row[key] for run in runs["head"] for row in run["rows"] if key in row]
        bm = statistics.median(b) if b else float("nan")
        hm = statistics.median(h)
        print(f"| {key[len('timing_s/'):]} | {bm:.2f} | {hm:.2f} | {hm / bm if b and bm > 0 else float('nan'):.2f} |")
    print(f"step median: base {statistics.median(steps['base']):.2f} s, head {statistics.median(steps['head']):.2f} s")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
