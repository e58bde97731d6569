"""Does a work order learn on every seed? Runs it on several seeds (rollout, data and trainer seeds all set to
the same value), with PPO (GAE + critic) and GRPO side by side, and records greedy validation accuracy
against the training wall-clock.

    python benchmarks/learning.py --task main --algos gae grpo --seeds 0 1 2 3 4
    python benchmarks/learning.py --task hard --algos gae grpo --seeds 0 1 2
    python benchmarks/learning.py ... --extra key=value ...   (applied to every run, e.g. a recipe under test)
    python benchmarks/learning.py --merge a b c --label all       (one table and plot from earlier labels' runs)
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/learning.py ...
        (an AVX-512 host on the AVX2 machine's kernels: no bf16 kernels, so fp32; the table says so)

Each run is a real ``python -m rlcamp.trainer.main_ppo`` process on the task's own key list (``main`` =
``rlcamp quickstart``'s), one at a time, interleaved by seed (seed 0 gae, seed 0 grpo, seed 1 gae, ...), so a
noisy machine hits both algorithms alike. Writes ``benchmarks/results/learning_<label>.json`` and
``learning_<label>.svg`` (accuracy against training seconds, one line per run) and prints the markdown table
that goes into RESULTS.md. "Training seconds" is the sum of ``timing_s/step`` (validations not counted);
"whole run" is the process's wall clock (model load and validations included).

A run is deterministic given its seed and config (the same curve step for step on a rerun), so runs made in
several invocations with the same ``--extra`` can be merged into one table (``--merge``, which refuses labels
whose task, extra keys or machine kind differ).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
FLEXIBLE = "val-aux/rlcamp/arith/flexible/mean@1"


# torch, oneDNN and MKL each cap the instructions they use to these: on an AVX-512 / AMX host, the AVX2
# machine's code paths (bf16 matmuls fall back to a reference loop; fp32 runs AVX2 kernels)
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_kind() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    caps = [f"{k}={os.environ[k]}" for k in ISA_CAPS if os.environ.get(k)]
    if caps:
        return f"{host_kind(flags)} host, instructions capped ({', '.join(caps)})"
    return host_kind(flags)


def host_kind(flags: set[str]) -> str:
    if "amx_bf16" in flags:
        return "AVX-512 + AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX-512 + AVX512-BF16, no AMX"
    if "avx512f" in flags:
        return "AVX-512, no BF16"
    return "AVX2 only" if "avx2" in flags else platform.machine()


def task_overrides(task: str, data_root: Path) -> list[str]:
    from rlcamp.cli.quickstart import HARD_JOB, MAIN_JOB
    from rlcamp.data.arith import write_hard_splits, write_splits
    from rlcamp.models.prepare import prepare

    model = prepare("smollm2-135m-instruct")
    if task == "main":
        train, test = write_splits(data_root / "main", n_test=32, digits=1)
        keys = MAIN_JOB
    else:
        train, test = write_hard_splits(data_root / "hard")
        keys = HARD_JOB
    return keys + [f"actor_rollout_ref.model.path={model}", f"data.train_files={train}", f"data.val_files={test}"]


def one_run(base: list[str], algo: str, seed: int, run_dir: Path, extra: list[str]) -> dict:
    overrides = base + [f"algorithm.adv_estimator={algo}", f"actor_rollout_ref.rollout.seed={seed}",
                        f"data.seed={seed}", f"trainer.seed={seed}", f"trainer.default_local_dir={run_dir}",
                        "trainer.resume_mode=disable", "trainer.test_freq=2", "trainer.log_val_generations=0",
                        f"trainer.experiment_name={run_dir.name}"] + extra
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlcamp.trainer.main_ppo", *overrides], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    # the final checkpoint (weights and optimizer state of actor and critic, ~3 GB) is not what this measures
    for folder in run_dir.glob("global_step_*"):
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{algo} seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return record(run_dir, algo, seed, wall)


def record(run_dir: Path, algo: str, seed: int, wall: float) -> dict:
    """One run's curve from its metrics.jsonl."""
    from rlcamp.trainer.report import read_metrics

    rows, clock, curve = read_metrics(run_dir), 0.0, []
    for row in rows:
        clock += row.get("timing_s/step", 0.0)
        if "val/acc" in row:
            curve.append({"step": row["step"], "train_s": round(clock, 1), "acc": row["val/acc"],
                          "flexible": row.get(FLEXIBLE)})
    return {"algo": algo, "seed": seed, "wall_s": round(wall, 1), "train_s": round(clock, 1), "curve": curve,
            "scores": [round(r["critic/score/mean"], 4) for r in rows if "critic/score/mean" in r]}


def svg(runs: list[dict], title: str) -> str:
    """A small line plot, written by hand (no plotting library in the project's environment)."""
    w, h, left, bottom, top, right = 640, 400, 56, 44, 30, 150
    xmax = max(p["train_s"] for r in runs for p in r["curve"]) or 1.0
    def x(v): return left + (w - left - right) * v / xmax
    def y(v): return h - bottom - (h - bottom - top) * v
    colours = {"gae": ["#1f77b4", "#2b8cbe", "#045a8d", "#74a9cf", "#0570b0"],
               "grpo": ["#d95f0e", "#fe9929", "#cc4c02", "#ec7014", "#993404"]}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="13">{title}</text>',
           f'<line x1="{left}" y1="{y(0)}" x2="{w - right}" y2="{y(0)}" stroke="black"/>',
           f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{y(1)}" stroke="black"/>']
    for frac in (0, 0.25, 0.5, 0.75, 0.9, 1.0):
        dash = ' stroke-dasharray="4 3"' if frac == 0.9 else ""
        out.append(f'<line x1="{left}" y1="{y(frac):.1f}" x2="{w - right}" y2="{y(frac):.1f}" stroke="#ccc"{dash}/>')
        out.append(f'<text x="{left - 6}" y="{y(frac) + 4:.1f}" text-anchor="end">{frac:.0%}</text>')
    for i in range(6):
        v = xmax * i / 5
        out.append(f'<text x="{x(v):.1f}" y="{h - bottom + 16}" text-anchor="middle">{v:.0f}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 8}" text-anchor="middle">training seconds</text>')
    out.append(f'<text x="14" y="{(top + h - bottom) / 2}" transform="rotate(-90 14 {(top + h - bottom) / 2})" '
               'text-anchor="middle">greedy validation accuracy (strict)</text>')
    for k, run in enumerate(runs):
        colour = colours.get(run["algo"], ["#555"])[run["seed"] % 5]
        pts = " ".join(f'{x(p["train_s"]):.1f},{y(p["acc"]):.1f}' for p in run["curve"])
        dash = "" if run["algo"] == "gae" else ' stroke-dasharray="6 3"'
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.8"{dash}/>')
        out.append(f'<text x="{w - right + 8}" y="{top + 14 * k + 10}" fill="{colour}">'
                   f'{"PPO" if run["algo"] == "gae" else run["algo"].upper()} seed {run["seed"]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def table(runs: list[dict]) -> str:
    lines = ["| algorithm | seed | accuracy before | accuracy after | best | flexible before -> after | training s | whole run s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        c = r["curve"]
        flex = (f"{c[0]['flexible']:.1%} -> {c[-1]['flexible']:.1%}" if c and c[0]["flexible"] is not None else "")
        lines.append(f"| {'PPO (GAE)' if r['algo'] == 'gae' else r['algo'].upper()} | {r['seed']} | {c[0]['acc']:.1%} | "
                     f"**{c[-1]['acc']:.1%}** | {max(p['acc'] for p in c):.1%} | {flex} | {r['train_s']:.0f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["main", "hard"], default="main")
    parser.add_argument("--algos", nargs="+", default=["gae", "grpo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--extra", nargs="*", default=[], help="key=value overrides for every run")
    parser.add_argument("--label", default=None, help="names the output files (default: the task)")
    parser.add_argument("--work", default="/tmp/rlcamp_learning", help="where the runs' folders go")
    parser.add_argument("--merge", nargs="+", default=None, help="labels of earlier invocations to combine")
    args = parser.parse_args()
    label = args.label or args.task
    if args.merge:
        return write(label, *merged(args.merge))
    work = Path(args.work) / label
    base = task_overrides(args.task, Path(args.work) / "data")
    meta = {"task": args.task, "extra": args.extra, "cpu": cpu_kind(), "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}
    runs = []
    for seed in args.seeds:
        for algo in args.algos:
            run = one_run(base, algo, seed, work / f"{algo}_s{seed}", args.extra)
            c = run["curve"]
            print(f"{algo} seed {seed}: {c[0]['acc']:.1%} -> {c[-1]['acc']:.1%} in {run['train_s']:.0f} s of training "
                  f"({run['wall_s']:.0f} s whole run)", flush=True)
            runs.append(run)
            write(label, meta, runs, quiet=True)  # after every run: a later failure keeps the runs made so far
    write(label, meta, runs)


def merged(labels: list[str]) -> tuple[dict, list[dict]]:
    """The runs of earlier invocations, which must share the task, the extra keys and the CPU kind."""
    parts = [json.loads((RESULTS / f"learning_{name}.json").read_text()) for name in labels]
    first = parts[0]["meta"]
    for name, part in zip(labels, parts):
        differ = [k for k in ("task", "extra", "cpu", "cores") if part["meta"][k] != first[k]]
        if differ:
            raise SystemExit(f"learning_{name}.json differs from learning_{labels[0]}.json in {differ}: "
                             "only runs of one recipe on one kind of machine merge")
    runs = sorted((r for part in parts for r in part["runs"]), key=lambda r: (r["seed"], r["algo"] != "gae"))
    dates = sorted({part["meta"]["date"] for part in parts})
    return {**first, "date": ", ".join(dates), "merged_from": labels}, runs


def write(label: str, meta: dict, runs: list[dict], quiet: bool = False) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"learning_{label}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    (RESULTS / f"learning_{label}.svg").write_text(svg(runs, f"{label}: {meta['cpu']}, {meta['cores']} cores"))
    if not quiet:
        print(f"\n{meta}\n\n{table(runs)}\n\nwrote {RESULTS / f'learning_{label}.json'} and .svg")


if __name__ == "__main__":
    main()
