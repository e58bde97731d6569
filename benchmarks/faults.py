"""Random worker kills in a longer run: does the run survive them, and what does each cost?

    python benchmarks/faults.py --kills 3 --steps 12 --seed 0

A tiny PPO run (a random qwen2 built from a config, GAE + critic) on 2 Ray ranks per role (4 worker
processes), once straight and once with ``trainer.max_restarts=<kills>``, where this script SIGKILLs a
random worker process at a random moment of a random step, ``--kills`` times (each after the restarted
run has logged a new step, so every kill lands in training: generation, a log-prob or value pass, an
update, a collective, a checkpoint write). It reports, per kill: the stage the kill landed in (from the
driver's message), seconds from the kill to the driver naming the dead rank (detect), seconds from
there to the restarted workers having loaded the checkpoint (resume), the steps redone (the last step
logged before the kill minus the checkpoint's); and for the run: faults injected and survived,
checkpoints damaged (every ``global_step_*`` checked against its manifest), and whether every step's
metrics equal the straight run's. Writes ``benchmarks/results/faults.json`` and prints the markdown
table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
VOLATILE = ("timing_s/", "timing_per_token_ms/", "perf/")


def overrides(model: Path, data: Path, run: Path, steps: int, **extra) -> list[str]:
    settings = {
        "actor_rollout_ref.model.path": model, "data.train_files": data / "train.parquet",
        "data.val_files": data / "test.parquet", "data.train_batch_size": 8, "data.max_prompt_length": 64,
        "data.max_response_length": 8, "actor_rollout_ref.rollout.n": 2, "actor_rollout_ref.rollout.temperature": 1.0,
        "actor_rollout_ref.actor.ppo_mini_batch_size": 4, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 4,
        "critic.ppo_micro_batch_size_per_gpu": 4, "actor_rollout_ref.actor.optim.lr": 1e-3, "critic.optim.lr": 1e-3,
        "actor_rollout_ref.rollout.dtype": "fp32", "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype":
        "fp32", "critic.model.fsdp_config.mixed_precision.param_dtype": "fp32",
        "actor_rollout_ref.actor.use_torch_compile": False, "trainer.n_gpus_per_node": 2, "ray_init.num_cpus": 4,
        "trainer.stage_timeout_s": 120, "trainer.device": "cpu", "trainer.total_training_steps": steps,
        "trainer.save_freq": 1, "trainer.default_local_dir": run, "trainer.logger": "[]",
        "trainer.val_before_train": False, "trainer.test_freq": -1, **extra}
    return [f"{k}={v}" for k, v in settings.items()]


def start(args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "rlcamp.trainer.main_ppo", *args], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def metrics(run: Path) -> dict[int, dict]:
    rows = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["step"]] = row  # a restarted run's rows replace the ones it redid
    return rows


def same(a: dict, b: dict) -> list[str]:
    """Where two runs' metrics differ (timings aside)."""
    wrong = []
    for step, row in a.items():
        for key, value in row.items():
            if key.startswith(VOLATILE) and key != "perf/total_num_tokens" or not isinstance(value, (int, float)):
                continue
            other = b.get(step, {}).get(key)
            if other is None or abs(other - value) > 1e-7 + 1e-5 * abs(value):
                wrong.append(f"step {step} {key}: {value} vs {other}")
    return wrong


def wait_for(condition, proc: subprocess.Popen, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"the run exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.02)


def faulty_run(args: list[str], run: Path, log: Path, kills: int, rng: random.Random) -> tuple[int, list[dict]]:
    from rlcamp.controller.ray_group import rank_processes

    proc = start(args, log)
    records = []
    try:
        wait_for(lambda: (run / "latest_checkpointed_iteration.txt").exists(), proc, 600, "first checkpoint")
        for k in range(kills):
            before = len(logged_steps(run))
            wait_for(lambda: len(logged_steps(run)) > before, proc, 600, "a new logged step")
            step_s = 1.0 + rng.random() * 4.0  # somewhere in the next step or two
            time.sleep(rng.random() * step_s)
            victims = rank_processes(proc.pid)
            if not victims:
                raise RuntimeError("no worker processes to kill")
            victim = rng.choice(victims)
            last_logged = max(logged_steps(run))
            victim.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            text = lambda: log.read_text()  # noqa: E731
            died = wait_for(lambda: re.search(rf"(\w+): rank (\d) \([^)]*pid {victim.pid}\) died during stage "
                                              rf"'(\w+)'", text()), proc, 300, "the driver naming the dead worker")
            detected = time.monotonic()
            offset = died.end()
            resumed = wait_for(lambda: re.search(r"resumed from \S+ at step (\d+)", text()[offset:]), proc, 600,
                               "the restarted run loading its checkpoint")
            records.append({"kill": k + 1, "role": died.group(1), "rank": int(died.group(2)), "stage": died.group(3),
                            "detect_s": detected - killed, "resume_s": time.monotonic() - detected,
                            "last_logged_step": last_logged, "resumed_at_step": int(resumed.group(1)),
                            "steps_redone": last_logged - int(resumed.group(1))})
            print(f"kill {k + 1}: {records[-1]}", flush=True)
        code = proc.wait(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    a = parser.parse_args()

    from rlcamp.data.arith import write_splits
    from rlcamp.models.tiny import build_tiny_model
    from rlcamp.trainer import checkpoint as ckpt

    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="rlcamp-faults-") as tmp:
        tmp = Path(tmp)
        model, data = build_tiny_model(tmp / "model", "qwen2"), tmp / "data"
        write_splits(data, n_test=84)
        straight, broken = tmp / "straight", tmp / "broken"
        started = time.monotonic()
        code = start(overrides(model, data, straight, a.steps), tmp / "straight.log").wait()
        straight_s = time.monotonic() - started
        if code != 0:
            print((tmp / "straight.log").read_text()[-3000:])
            return 1
        started = time.monotonic()
        code, records = faulty_run(overrides(model, data, broken, a.steps, **{"trainer.max_restarts": a.kills}),
                                   broken, tmp / "broken.log", a.kills, rng)
        broken_s = time.monotonic() - started
        if code != 0:
            print((tmp / "broken.log").read_text()[-3000:])
        folders = sorted(broken.glob("global_step_*"))
        damaged = [f.name for f in folders if ckpt.damage(f) is not None]
        differ = same(metrics(straight), metrics(broken)) if code == 0 else ["the run failed"]
        cpu = sorted(set(re.findall(r"amx_bf16|avx512_bf16|avx512f", Path("/proc/cpuinfo").read_text())))
        result = {"command": " ".join(["python", "benchmarks/faults.py"] + sys.argv[1:]), "cpu": cpu,
                  "cores": os.cpu_count(), "python": platform.python_version(), "kills": a.kills, "steps": a.steps,
                  "exit_code": code, "survived": sum(1 for _ in records) if code == 0 else 0, "per_kill": records,
                  "checkpoints": len(folders), "damaged_checkpoints": damaged, "metrics_equal": not differ,
                  "differences": differ[:20], "straight_s": straight_s, "faulty_s": broken_s}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0 if code == 0 and not differ and not damaged else 1


def table(r: dict) -> str:
    lines = ["| kill | landed in (role, rank, stage) | detect s | resume s | steps redone |", "| --- | --- | --- | --- | --- |"]
    for k in r["per_kill"]:
        lines.append(f"| {k['kill']} | {k['role']} rank {k['rank']}, `{k['stage']}` | {k['detect_s']:.2f} | "
                     f"{k['resume_s']:.1f} | {k['steps_redone']} |")
    lines += ["", f"faults injected {r['kills']}, survived {r['survived']} (exit {r['exit_code']}); checkpoints "
              f"damaged {len(r['damaged_checkpoints'])} of {r['checkpoints']}; metrics equal to the straight run: "
              f"{'yes' if r['metrics_equal'] else 'no'}; straight run {r['straight_s']:.0f} s, with the kills "
              f"{r['faulty_s']:.0f} s ({', '.join(r['cpu'])}, {r['cores']} cores)"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
