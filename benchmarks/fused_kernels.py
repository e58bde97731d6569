"""actor_rollout_ref.model.use_fused_kernels on and off, on the main job (SmolLM2-135M, CPU).

True (rlcamp's default): log-probs and entropy from the hidden states a chunk of rows at a time
(rlcamp.models.head); False (verl's default): the full [tokens, 49152] logits. Times: two trainers
in one process, steps interleaved A B A B on the same prompts, medians of the actor's stages.
Memory: each setting's one step in its own process, peak resident memory.

    python benchmarks/fused_kernels.py [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

STAGES = ("timing_s/old_log_prob", "timing_s/update_actor", "timing_s/step")


def trainer(fused: bool, run_dir: str):
    """The main job's trainer (benchmarks/_main_job.py) with the one key changed."""
    from rlcamp.cli.quickstart import MAIN_JOB
    from rlcamp.config import build_config, resolve
    from rlcamp.data.arith import write_splits
    from rlcamp.models.prepare import prepare
    from rlcamp.trainer.build import build_trainer

    model = prepare("smollm2-135m-instruct")
    train, test = write_splits("/tmp/rlcamp_bench_arith", n_test=32)
    overrides = MAIN_JOB + [f"actor_rollout_ref.model.path={model}", f"data.train_files={train}",
                            f"data.val_files={test}", f"trainer.default_local_dir={run_dir}",
                            "trainer.resume_mode=disable", f"actor_rollout_ref.model.use_fused_kernels={fused}"]
    return build_trainer(resolve(build_config(overrides), 68), Path(run_dir))


def memory(fused: bool) -> float:
    t = trainer(fused, f"/tmp/rlcamp_bench_fused_mem_{fused}")
    t.global_step = 1
    t.step(next(iter(t.loader)))
    # this process's own high-water mark (VmHWM): ru_maxrss would carry the parent's over exec
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--memory-of", choices=["True", "False"])
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps({"peak_rss_gib": memory(args.memory_of == "True")}))
        return
    trainers = {fused: trainer(fused, f"/tmp/rlcamp_bench_fused_{fused}") for fused in (True, False)}
    loaders = {fused: iter(t.loader) for fused, t in trainers.items()}
    rows: dict[bool, list[dict]] = {True: [], False: []}
    for step in range(args.steps + 1):  # the first step of each warms up
        for fused, t in trainers.items():
            t.global_step = step + 1
            metrics = t.step(next(loaders[fused]))
            if step:
                rows[fused].append(metrics)
    peak = {fused: json.loads(subprocess.run([sys.executable, __file__, "--memory-of", str(fused)], check=True,
                                             capture_output=True, text=True).stdout.splitlines()[-1])["peak_rss_gib"]
            for fused in (True, False)}
    print("| use_fused_kernels | " + " | ".join(STAGES) + " | peak RSS, one step (GiB) |")
    print("| --- |" + " --- |" * (len(STAGES) + 1))
    for fused in (True, False):
        medians = [statistics.median(r[k] for r in rows[fused]) for k in STAGES]
        print(f"| {fused} | " + " | ".join(f"{m:.2f}" for m in medians) + f" | {peak[fused]:.2f} |")


if __name__ == "__main__":
    main()
