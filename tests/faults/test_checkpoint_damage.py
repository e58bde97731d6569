"""Disk trouble: a checkpoint write that fails on a real full disk, and checkpoints damaged after the fact."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rlcamp.trainer import checkpoint as ckpt
from rlcamp.trainer.main_ppo import main
from tests.helpers import make_tiny_setup, start_trainer, tiny_run_overrides

SLOW_REWARD = '''
import time

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    time.sleep(0.1)  # over a second a step: time to fill the disk between two checkpoints
    return float(solution_str.strip().startswith("7"))
'''


def fake_checkpoint(run: Path, step: int) -> Path:
    tmp = run / f".global_step_{step}.tmp"
    (tmp / "actor").mkdir(parents=True)
    (tmp / "actor" / "model.safetensors").write_bytes(os.urandom(4096))
    (tmp / "trainer_state.pt").write_bytes(b"state %d" % step)
    ckpt.write_manifest(tmp)
    return ckpt.commit(run, tmp, step)


@pytest.mark.parametrize("harm, found", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "has 100 bytes, the manifest says 4096"),
    (lambda p: p.unlink(), "actor/model.safetensors is missing"),
    (lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 1]) + p.read_bytes()[1:]), "does not match its checksum"),
])
def test_a_damaged_checkpoint_is_found_and_the_previous_one_used(tmp_path, capsys, harm, found):
    for step in (1, 2, 3):
        fake_checkpoint(tmp_path, step)
    assert ckpt.latest_whole(tmp_path) == tmp_path / "global_step_3"
    harm(tmp_path / "global_step_3" / "actor" / "model.safetensors")
    assert ckpt.damage(tmp_path / "global_step_3").endswith(found)
    assert ckpt.resume_folder("auto", None, tmp_path) == tmp_path / "global_step_2"
    assert f"checkpoint {tmp_path / 'global_step_3'} is damaged (actor/model.safetensors" in capsys.readouterr().out
    with pytest.raises(ckpt.CheckpointError, match="trainer.resume_from_path=.* is not a whole rlcamp checkpoint"):
        ckpt.resume_folder("resume_path", str(tmp_path / "global_step_3"), tmp_path)


def test_when_every_checkpoint_is_damaged_the_run_is_told_which_and_why(tmp_path):
    for step in (1, 2):
        fake_checkpoint(tmp_path, step)
        (tmp_path / f"global_step_{step}" / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint in .* is whole: global_step_2: trainer_state.pt "
                                                   r"has 0 bytes.*global_step_1: trainer_state.pt has 0 bytes"):
        ckpt.latest_whole(tmp_path)


def test_a_marker_naming_a_deleted_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    for step in (1, 2):
        fake_checkpoint(tmp_path, step)
    import shutil

    shutil.rmtree(tmp_path / "global_step_2")
    assert ckpt.latest_whole(tmp_path) == tmp_path / "global_step_1"
    assert "names it, but it does not exist" in capsys.readouterr().out


def test_a_real_run_resumes_past_a_truncated_checkpoint(tmp_path, capsys):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.save_freq": 1, "trainer.total_training_steps": 3})) == 0
    weights = next((run / "global_step_3" / "actor").rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    capsys.readouterr()
    assert main(tiny_run_overrides(model, data, run, **{"trainer.save_freq": 1, "trainer.total_training_steps": 4})) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {run / 'global_step_3'} is damaged (actor/" in out
    assert f"resumed from {run / 'global_step_2'} at step 2" in out
    assert ckpt.damage(run / "global_step_4") is None


def fill(disk: Path, leave_bytes: int) -> Path:
    """Take all of ``disk``'s free space but ``leave_bytes``: a real full disk."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler


def start_until_first_checkpoint(tmp_path: Path, run: Path, log_path: Path):
    """A slow-stepping run with a checkpoint every step, started and waited on until its first one; (process,
    its overrides) — the log file stays open for the process."""
    model, data = make_tiny_setup(tmp_path)
    (tmp_path / "slow.py").write_text(SLOW_REWARD)
    overrides = [o for o in tiny_run_overrides(model, data, run, **{
        "trainer.save_freq": 1, "trainer.total_training_steps": 10, "custom_reward_function.path": tmp_path / "slow.py"})
        if "reward_kwargs" not in o]
    proc = start_trainer(overrides, open(log_path, "w"))
    marker = run / ckpt.LATEST
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.02)
    return proc, overrides


def test_a_full_disk_stops_the_run_with_the_folder_and_free_space_and_keeps_the_last_checkpoint(tmp_path, small_disk):
    run, log_path = small_disk / "run", tmp_path / "full.log"
    proc, overrides = start_until_first_checkpoint(tmp_path, run, log_path)
    filler = fill(small_disk, leave_bytes=256 * 1024)  # room for the metrics' lines, not a checkpoint
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    out = log_path.read_text()
    assert code == 2, out[-3000:]
    last = ckpt.latest(run)
    step = ckpt.step_of(last) + 1
    assert f"rlcamp: writing the checkpoint of step {step} into {run / f'.global_step_{step}.tmp'} failed" in out
    # torch's writer says "unexpected pos ..." (or "No space left on device"), hence the free space beside it
    assert "MiB free of 0.06 GiB on the disk of" in out
    assert f"The previous checkpoint {last} is intact (it takes" in out
    assert ckpt.damage(last) is None and not list(run.glob(".global_step_*.tmp"))
    filler.unlink()  # space again: the run goes on from that checkpoint
    with open(tmp_path / "resumed.log", "w") as log:
        short = [o for o in overrides if not o.startswith(("trainer.total_training_steps=", "custom_reward"))]
        assert start_trainer(short + [f"trainer.total_training_steps={step}"], log).wait() == 0
    assert f"resumed from {last}" in (tmp_path / "resumed.log").read_text()


@pytest.mark.slow
def test_a_run_folder_turned_read_only_stops_the_run_naming_it_and_resumes_once_writable(tmp_path, small_disk):
    import subprocess

    run, log_path = small_disk / "run", tmp_path / "ro.log"
    proc, overrides = start_until_first_checkpoint(tmp_path, run, log_path)
    # the run folder bound onto itself read-only: what the run opens from now on is refused (EROFS)
    subprocess.run(["mount", "--bind", str(run), str(run)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(run)], check=True)
    try:
        code = proc.wait(timeout=120)
    finally:
        subprocess.run(["umount", str(run)], check=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    out = log_path.read_text()
    assert code == 2, out[-3000:]
    assert "Read-only file system" in out and str(run) in out, out[-3000:]
    last = ckpt.latest(run)
    assert ckpt.damage(last) is None
    with open(tmp_path / "resumed.log", "w") as log:
        short = [o for o in overrides if not o.startswith(("trainer.total_training_steps=", "custom_reward"))]
        assert start_trainer(short + [f"trainer.total_training_steps={ckpt.step_of(last) + 1}"], log).wait() == 0
    assert f"resumed from {last}" in (tmp_path / "resumed.log").read_text()


def test_metrics_on_a_full_disk_name_the_file_and_a_cut_line_is_dropped_at_the_next_start(small_disk, capsys):
    from rlcamp.trainer.run import RunFolderError
    from rlcamp.trainer.tracking import RunInfo, RunRecord

    info = RunInfo("p", "e", small_disk, {}, 10)
    record = RunRecord(info)
    record.log({"a": 1.0}, 1)
    filler = fill(small_disk, leave_bytes=0)
    with pytest.raises(RunFolderError, match=r"writing step 2's metrics to .*metrics.jsonl failed \(No space left"):
        record.log({f"k{i}": float(i) for i in range(20000)}, 2)  # ~400 kB: more than is left
    record.close()
    filler.unlink()
    RunRecord(info).close()
    lines = (small_disk / "metrics.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(line.startswith(b'{"step"') for line in lines[:-1])
    assert "ended in a cut line" in capsys.readouterr().out and len(lines) == 2  # step 1 kept, the cut step 2 dropped
