"""Real faults need real resources: a small disk of its own (tmpfs) for the disk tests."""

from __future__ import annotations

import os
import subprocess
import pytest


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs mounted at a fresh folder (root only: mount needs CAP_SYS_ADMIN); unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the disk-full tests fill a real, small filesystem)")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)

