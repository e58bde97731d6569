"""Checkpoint folders: ``<run>/global_step_<N>/{actor,critic}/`` + ``trainer_state.pt``.

A checkpoint is written to a temporary folder and renamed into place, and only then does
``latest_checkpointed_iteration.txt`` move to it, so a run killed while saving still has its
previous checkpoint intact.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

LATEST = "latest_checkpointed_iteration.txt"
_STEP = re.compile(r"^global_step_(\d+)$")


def step_folder(run_dir: Path, step: int) -> Path:
    return run_dir / f"global_step_{step}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def commit(run_dir: Path, tmp_folder: Path, step: int) -> Path:
    final = step_folder(run_dir, step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp_folder, final)
    write_atomic(run_dir / LATEST, str(step))
    return final


def latest(run_dir: Path) -> Path | None:
    marker = run_dir / LATEST
    if not marker.exists():
        return None
    folder = step_folder(run_dir, int(marker.read_text().strip()))
    if not folder.is_dir():
        raise FileNotFoundError(f"{marker} points at {folder}, which does not exist; fix or delete the marker")
    return folder


def step_of(folder: Path) -> int:
    match = _STEP.match(folder.name)
    if not match:
        raise ValueError(f"{folder} is not a checkpoint folder (expected .../global_step_<N>)")
    return int(match.group(1))


def prune(run_dir: Path, keep_actor: int | None, keep_critic: int | None) -> None:
    """Delete the oldest actor / critic checkpoints beyond the keep limits (None = keep all)."""
    steps = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _STEP.match(p.name)))
    for role, keep in (("actor", keep_actor), ("critic", keep_critic)):
        if keep is None or keep <= 0:
            continue
        with_role = [p for _, p in steps if (p / role).exists()]
        for old in with_role[:-keep]:
            shutil.rmtree(old / role)
    for _, folder in steps:
        if not (folder / "actor").exists() and not (folder / "critic").exists():
            shutil.rmtree(folder)


def rng_state() -> dict:
    """The driver's random generators (torch, numpy, Python), to be restored exactly on resume."""
    import random

    import numpy as np
    import torch

    return {"torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])


def resume_folder(resume_mode: str, resume_from_path: str | None, run_dir: Path) -> Path | None:
    """trainer.resume_mode: the checkpoint to resume from (auto: the latest; resume_path: the one named), or None."""
    if resume_mode == "disable":
        return None
    folder = Path(resume_from_path).expanduser() if resume_mode == "resume_path" else latest(run_dir)
    if folder is not None and not (folder / "trainer_state.pt").exists():
        raise FileNotFoundError(f"{folder} is not a complete rlcamp checkpoint (no trainer_state.pt)")
    return folder
