"""Start a run from a resolved config: the run folder, the written config, then the trainer."""

from __future__ import annotations

from pathlib import Path

from rlcamp.config import ResolvedConfig, config_to_yaml


def prepare_run_folder(resolved: ResolvedConfig) -> Path:
    """Create trainer.default_local_dir and write the resolved config into it (resolved_config.yaml)."""
    folder = Path(resolved.config.trainer.default_local_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolved_config.yaml").write_text(config_to_yaml(resolved.config))
    return folder


def run_training(resolved: ResolvedConfig) -> int:
    folder = prepare_run_folder(resolved)
    print(f"run folder: {folder} (resolved_config.yaml written)")
    from rlcamp.trainer.ppo import fit_from_config

    return fit_from_config(resolved, folder)
