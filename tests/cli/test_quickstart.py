import re
from pathlib import Path

from rlcamp.cli.quickstart import MAIN_JOB
from rlcamp.config import build_config

ROOT = Path(__file__).resolve().parents[2]


def test_work_order_script_sets_exactly_the_main_job():
    script = (ROOT / "examples/ppo_trainer/run_smollm2_135m_arith_cpu.sh").read_text()
    keys = re.findall(r"^\s+(\+?[a-z_][\w.]*)=(\S+?)\s*\\?$", script, re.M)
    script_settings = {k: v.strip("'\"") for k, v in keys if "$" not in v}
    job = dict(item.split("=", 1) for item in MAIN_JOB)
    assert script_settings == job
    build_config(MAIN_JOB)  # and every key is valid
