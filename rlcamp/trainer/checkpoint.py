"""Checkpoint folders: ``<run>/global_step_<N>/{actor,critic}/`` + ``trainer_state.pt`` + ``manifest.json``.

A checkpoint is written to a temporary folder; its manifest (every file's size and CRC-32) is
written last; the folder is renamed into place, and only then does ``latest_checkpointed_iteration.txt``
move to it. A run killed while saving, or a write that fails (a full disk), leaves the previous
checkpoint intact; a checkpoint damaged later (truncated, partly copied) fails its manifest at
resume and the newest one that passes is used instead, with a warning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from pathlib import Path

LATEST = "latest_checkpointed_iteration.txt"
MANIFEST = "manifest.json"
_STEP = re.compile(r"^global_step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or none can be resumed from; the message names the folder."""


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def write_manifest(folder: Path) -> None:
    """Record every file under ``folder`` (size, CRC-32): the last file a checkpoint gets."""
    files = {str(p.relative_to(folder)): [p.stat().st_size, _crc32(p)]
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    with open(folder / MANIFEST, "w") as f:
        json.dump({"files": files}, f)
        f.flush()
        os.fsync(f.fileno())


def damage(folder: Path) -> str | None:
    """What is wrong with the checkpoint in ``folder``, or None when it is whole. A folder without a
    manifest (written before rlcamp had one) passes when its trainer_state.pt is there."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return None if (folder / "trainer_state.pt").exists() else f"no {MANIFEST} and no trainer_state.pt"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"{MANIFEST} is unreadable ({type(exc).__name__})"
    for name, (size, crc) in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
        if _crc32(path) != crc:
            return f"{name} does not match its checksum"
    return None


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def free_space(folder: Path) -> str:
    """'<free> GiB free of <total> GiB' on the disk holding ``folder``."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"
    free = f"{usage.free / 2**30:.1f} GiB" if usage.free >= 2**30 else f"{usage.free / 2**20:.1f} MiB"
    return f"{free} free of {usage.total / 2**30:.2f} GiB"


def step_folder(run_dir: Path, step: int) -> Path:
    return run_dir / f"global_step_{step}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def clear_partial(run_dir: Path) -> None:
    """Remove checkpoint folders a stopped run left half written (``.global_step_<N>.tmp``)."""
    for tmp in run_dir.glob(".global_step_*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


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


def latest_whole(run_dir: Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that passes its manifest, from the marker's down; each one
    skipped is named with what is wrong with it. None when the run has none."""
    marker = run_dir / LATEST
    if not marker.exists():
        return None
    marked = int(marker.read_text().strip())
    steps = sorted({marked} | {int(m.group(1)) for p in run_dir.iterdir()
                               if p.is_dir() and (m := _STEP.match(p.name)) and int(m.group(1)) < marked})
    skipped = []
    for step in reversed(steps):
        folder = step_folder(run_dir, step)
        wrong = damage(folder) if folder.is_dir() else f"{marker.name} names it, but it does not exist"
        if wrong is None:
            for bad, why in skipped:
                print(f"rlcamp: warning: checkpoint {bad} is damaged ({why}); skipped, resuming from {folder}",
                      flush=True)
            return folder
        skipped.append((folder, wrong))
    raise CheckpointError(f"no checkpoint in {run_dir} is whole: " + "; ".join(f"{p.name}: {why}" for p, why in skipped)
                          + ". Delete them (or the whole folder) to start over, or trainer.resume_mode=disable with "
                          "another trainer.default_local_dir")


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
    if resume_mode == "resume_path":  # the one the user named, or an error: never another one instead
        folder = Path(resume_from_path).expanduser()
        wrong = damage(folder)
        if wrong is not None:
            raise CheckpointError(f"trainer.resume_from_path={folder} is not a whole rlcamp checkpoint: {wrong}")
        return folder
    return latest_whole(run_dir)
