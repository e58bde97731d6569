"""rlcamp plan's memory estimate against the measured peak of each worker, on this CPU.

Each case trains 2 steps in its own process (the peak is the process's peak resident memory,
``perf/actor_peak_memory_gb`` / ``perf/critic_peak_memory_gb``); the estimate is
``rlcamp.workorders.plan.estimate`` for the same config: for one in-process device everything on it,
for Ray workers the roles each worker holds.

    python benchmarks/plan_accuracy.py [--cases tiny,tiny2,smollm2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACTOR_ROLES = ("actor", "ref", "rollout", "runtime")
CRITIC_ROLES = ("critic", "runtime")


def tiny_line(root: Path, processes: int) -> list[str]:
    from tests.helpers import make_tiny_setup, tiny_run_overrides

    model, data = make_tiny_setup(root)
    return tiny_run_overrides(model, data, root / "run", **{"trainer.n_gpus_per_node": processes,
                                                            "trainer.total_training_steps": 2,
                                                            "trainer.save_freq": -1})


def smollm2_line(root: Path) -> list[str]:
    from rlcamp.cli.quickstart import MAIN_JOB
    from rlcamp.data.arith import write_splits
    from rlcamp.models.prepare import prepare

    model = prepare("smollm2-135m-instruct")
    train, test = write_splits(root / "arith", n_test=32)
    return MAIN_JOB + [f"actor_rollout_ref.model.path={model}", f"data.train_files={train}", f"data.val_files={test}",
                       f"trainer.default_local_dir={root / 'run'}", "trainer.resume_mode=disable",
                       "trainer.total_training_steps=2", "trainer.val_before_train=False", "trainer.test_freq=-1",
                       "trainer.save_freq=-1", "trainer.logger=[]"]


def measure(line: list[str], root: Path) -> dict[str, float]:
    subprocess.run([sys.executable, "-m", "rlcamp.trainer.main_ppo", *line], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    return {k: max(r.get(k, 0.0) for r in rows) for k in ("perf/actor_peak_memory_gb", "perf/critic_peak_memory_gb")}


def compare(line: list[str], processes: int, measured: dict[str, float]) -> list[tuple[str, float, float]]:
    """(worker, estimated GiB, measured GiB)."""
    from rlcamp.config import build_config, resolve
    from rlcamp.workorders.plan import Hardware, estimate

    cfg = resolve(build_config(line)).config  # the machine's precision choices applied, as the run had them
    est = estimate(cfg, Hardware(1, processes, 0.0, "cpu"))
    actor, critic = measured["perf/actor_peak_memory_gb"], measured["perf/critic_peak_memory_gb"]
    if processes == 1:  # one process holds every role
        return [("the one process", est.peak(), max(actor, critic))]
    return [("actor worker", est.role_peak(ACTOR_ROLES), actor), ("critic worker", est.role_peak(CRITIC_ROLES), critic)]


def run_case(name: str) -> list[tuple[str, str, float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        processes = 2 if name == "tiny2" else 1
        line = smollm2_line(root) if name == "smollm2" else tiny_line(root, processes)
        measured = measure(line, root)
        return [(name, *row) for row in compare(line, processes, measured)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="tiny,tiny2,smollm2")
    args = parser.parse_args()
    print(f"{'case':<9} {'worker':<16} {'estimate':>9} {'measured':>9} {'ratio':>6}")
    for name in args.cases.split(","):
        for case, worker, est, got in run_case(name):
            print(f"{case:<9} {worker:<16} {est:8.2f}G {got:8.2f}G {est / got:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
