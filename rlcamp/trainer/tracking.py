"""Metric loggers: a compact console line per step with a progress bar, and a jsonl file."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HEADLINE = [("critic/score/mean", "score"), ("val/acc", "val_acc"), ("actor/pg_loss", "pg"),
            ("actor/ppo_kl", "kl"), ("actor/entropy", "ent"), ("critic/vf_loss", "vf"),
            ("response_length/mean", "len"), ("timing_s/step", "s/step")]


class ConsoleLogger:
    def __init__(self, total_steps: int, stream=None):
        self.total, self.stream, self.start = total_steps, stream, time.monotonic()

    def log(self, metrics: dict[str, float], step: int) -> None:
        done = min(step / max(self.total, 1), 1.0)
        bar = "=" * int(done * 20)
        elapsed = time.monotonic() - self.start
        parts = [f"step {step:>4}/{self.total} [{bar:<20}] {done:4.0%}"]
        for key, short in HEADLINE:
            if key in metrics:
                parts.append(f"{short} {metrics[key]:.4g}")
        for key in sorted(metrics):
            if key.startswith("val/") and key.endswith("/acc") and key != "val/acc":
                parts.append(f"{key[4:-4]} acc {metrics[key]:.3f}")
        parts.append(f"{elapsed:5.0f}s")
        print(" | ".join(parts), file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        pass


class JsonlLogger:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Tracking:
    """Fans metrics out to the configured loggers (trainer.logger)."""

    def __init__(self, names: list[str], run_dir: Path, total_steps: int):
        self.loggers = []
        if "console" in names:
            self.loggers.append(ConsoleLogger(total_steps))
        if "file" in names:
            self.loggers.append(JsonlLogger(run_dir / "metrics.jsonl"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
