import re
from pathlib import Path

import pytest

from rlcamp.cli.quickstart import HARD_JOB, MAIN_JOB
from rlcamp.config import build_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script, job", [("run_smollm2_135m_arith_cpu.sh", MAIN_JOB),
                                         ("run_smollm2_135m_arith_hard_cpu.sh", HARD_JOB)])
def test_work_order_script_sets_exactly_its_job(script, job):
    text = (ROOT / "examples/ppo_trainer" / script).read_text()
    keys = re.findall(r"^\s+(\+?[a-z_][\w.]*)=(\S+?)\s*\\?$", text, re.M)
    script_settings = {k: v.strip("'\"") for k, v in keys if "$" not in v}
    assert script_settings == dict(item.split("=", 1) for item in job)
    build_config(job)  # and every key is valid


def test_a_run_folder_among_the_overrides_is_the_one_summarised(tmp_path, monkeypatch):
    import rlcamp.cli.quickstart as quickstart
    import rlcamp.data.arith
    import rlcamp.models.prepare
    import rlcamp.trainer.main_ppo

    seen = {}
    run_dir = tmp_path / "mine"

    def fake_train(overrides):
        seen["dir"] = [o for o in overrides if o.startswith("trainer.default_local_dir=")][-1]
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text('{"step": 0, "val/acc": 0.0}\n{"step": 1, "val/acc": 0.5}\n')
        return 0

    monkeypatch.setattr(rlcamp.models.prepare, "prepare", lambda name: tmp_path / "model")
    monkeypatch.setattr(rlcamp.data.arith, "write_splits", lambda *a, **k: (tmp_path / "train", tmp_path / "test"))
    monkeypatch.setattr(rlcamp.trainer.main_ppo, "main", fake_train)
    assert quickstart.run([f"trainer.default_local_dir={run_dir}"], run_dir=str(tmp_path / "default")) == 0
    assert seen["dir"] == f"trainer.default_local_dir={run_dir}"
