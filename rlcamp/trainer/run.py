"""Start a run from a resolved config: the run folder, the written config, the trainer, and at the
end the report and the summary."""

from __future__ import annotations

from pathlib import Path

from rlcamp.config import ResolvedConfig, config_to_yaml


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (it holds another run)."""


def holds_a_run(folder: Path) -> bool:
    from rlcamp.trainer import checkpoint as ckpt

    return folder.is_dir() and ((folder / "metrics.jsonl").exists() or (folder / ckpt.LATEST).exists()
                                or any(folder.glob("global_step_*")))


def prepare_run_folder(resolved: ResolvedConfig) -> Path:
    """Create trainer.default_local_dir and write the resolved config into it (resolved_config.yaml).

    With ``resume_mode=disable`` a folder that already holds a run is refused: appending to its
    metrics and mixing checkpoints of two runs would spoil both."""
    t = resolved.config.trainer
    folder = Path(t.default_local_dir).expanduser()
    if t.resume_mode == "disable" and holds_a_run(folder):
        raise RunFolderError(
            f"trainer.default_local_dir={folder} already holds a run (metrics.jsonl or checkpoints) and "
            "trainer.resume_mode=disable would start another one on top of it; set another "
            "trainer.default_local_dir for a new run, or trainer.resume_mode=auto to continue that one")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolved_config.yaml").write_text(config_to_yaml(resolved.config))
    return folder


def quiet_libraries() -> None:
    """No progress bars from transformers and huggingface_hub ("Loading weights: 100%|...") in the log."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging

    logging.disable_progress_bar()


def run_training(resolved: ResolvedConfig) -> int:
    folder = prepare_run_folder(resolved)
    print(f"run folder: {folder} (resolved_config.yaml written)")
    quiet_libraries()
    from rlcamp.trainer import checkpoint as ckpt
    from rlcamp.trainer.build import fit_from_config
    from rlcamp.trainer.faults import Interrupted
    from rlcamp.trainer.report import summarize, write_report

    try:
        code = fit_from_config(resolved, folder)
    except Interrupted as exc:
        last = ckpt.latest(folder)
        print(f"rlcamp: stopped at once: {exc}; the last complete checkpoint is "
              f"{last if last is not None else 'none (this run saved none)'}; resume with trainer.resume_mode=auto",
              flush=True)
        code = exc.exit_code
    finally:
        if (folder / "metrics.jsonl").exists():
            try:
                write_report(folder)
            except Exception as exc:  # the report must never cost the run its exit status or traceback
                print(f"rlcamp: could not write {folder}/report.html: {type(exc).__name__}: {exc}")
    print("\n".join(["", "== run summary =="] + summarize(folder).lines()), flush=True)
    return code
