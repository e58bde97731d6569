"""The work-order folder: verl's 24 launch lines as rlcamp scripts, and `rlcamp smoke` on each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlcamp.workorders.launch import read_launch_line
from rlcamp.workorders.smoke import plan
from tests.verl_lines import launch_lines

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "examples/ppo_trainer"
SCRIPTS = sorted(p.name for p in FOLDER.glob("*.sh"))
VERL = launch_lines()
PATHS = {"MODEL_PATH": "/M", "CRITIC_PATH": "/C", "RM_PATH": "/R", "DATA_DIR": "/D"}


def test_the_folder_holds_every_verl_work_order_and_rlcamps_own():
    assert set(VERL) <= set(SCRIPTS), sorted(set(VERL) - set(SCRIPTS))
    own = set(SCRIPTS) - set(VERL)
    assert {"run_smollm2_135m_arith_cpu.sh", "run_smollm2_135m_arith_cpu_vllm.sh"} <= own


def test_the_scripts_are_what_the_generator_writes():
    sys.path.insert(0, str(ROOT / "scripts"))
    import work_orders

    for name, text in work_orders.scripts().items():
        assert (FOLDER / name).read_text() == text, f"{name} is stale: run python scripts/work_orders.py"


@pytest.mark.parametrize("name", sorted(VERL))
def test_each_script_passes_verls_keys_and_values(name):
    """Read as bash runs it, the script's line is verl's, paths aside, module aside."""
    line = read_launch_line(FOLDER / name, env=PATHS)
    assert line.module == "rlcamp.trainer.main_ppo"
    want = []
    for arg in VERL[name]["args"]:
        key = arg.split("=", 1)[0]
        model = {"reward_model.model.path": "/R"}.get(key, "/M")
        want.append(re.sub(r"\{models\}/[\w-]+", model, arg).replace("{data}", "/D"))
    assert line.args == want
    for env, value in VERL[name]["env"].items():
        assert line.env[env] == value


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_smoke_plan_drops_no_key_silently(name, tmp_path):
    line = read_launch_line(FOLDER / name)
    p = plan(line, tmp_path)
    kept = {a.split("=", 1)[0].lstrip("+") for a in p.args}
    changed = {c.key for c in p.changes}
    for arg in line.args:
        if arg.startswith("--"):
            assert arg in p.args
            continue
        key = arg.split("=", 1)[0].lstrip("+")
        assert key in kept or key in changed, f"{key} vanished without a word"
    if name == "run_moonlight16b_a3b_gsm8k_megatron.sh":  # TP 8 x EP 8 x PP 2 folded to 2 x 2 x 2
        args = " ".join(p.args)
        assert p.processes == 4 and "actor.megatron.expert_model_parallel_size=2" in args
        assert "actor.megatron.tensor_model_parallel_size=2" in args
    if name == "run_qwen2-7b_math_gsm8k_megatron.sh":  # tensor x pipeline parallel kept at 2 x 2
        assert p.processes == 4 and "tensor_model_parallel_size=2" in " ".join(p.args)


@pytest.mark.parametrize("name", [n for n in SCRIPTS if "reward_kwargs." in (FOLDER / n).read_text()])
def test_the_stand_in_data_takes_the_work_orders_reward_kwargs(name, tmp_path):
    """The stand-in rows go to a scorer that takes the work order's reward kwargs (the hard arithmetic
    order's marked_score once reached the GSM8K scorer, which has no such argument, and its smoke failed)."""
    import pyarrow.parquet as pq

    from rlcamp.rewards.registry import get_reward_function

    line = read_launch_line(FOLDER / name)
    prefix = "custom_reward_function.reward_kwargs."
    kwargs = {a.split("=", 1)[0].lstrip("+")[len(prefix):]: float(a.split("=", 1)[1])
              for a in line.args if a.lstrip("+").startswith(prefix)}
    p = plan(line, tmp_path)
    train = next(a.split("=", 1)[1] for a in p.args if a.startswith("data.train_files="))
    fn = get_reward_function(None, reward_kwargs=kwargs)
    for row in pq.read_table(train).to_pylist():
        truth = row["reward_model"]["ground_truth"]
        fn(row["data_source"], f"#### {truth}", truth, row["extra_info"])


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_work_order_passes_smoke(name, tmp_path):
    """Two steps, a save, a resume for a third, on 1-2 CPU processes (~1-2 min each here)."""
    run = subprocess.run([sys.executable, "-m", "rlcamp.cli.main", "smoke", str(FOLDER / name), "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=1500, cwd=ROOT)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "rlcamp smoke: passed" in out


def test_the_guide_lists_every_work_order_in_both_languages():
    sys.path.insert(0, str(ROOT / "scripts"))
    import work_orders

    guide = (FOLDER / "README.md").read_text()
    assert work_orders.update_guide(guide) == guide, "the guide's tables are stale: run python scripts/work_orders.py"
    english, chinese = guide.split("\n## 中文\n")
    for half in (english, chinese):
        table = half[half.index("<!-- work-orders"):half.index("<!-- /work-orders")]
        for name in SCRIPTS:
            assert f"| `{name}` |" in table, name
    # every key the folder sets is explained once in each language
    for half in (english, chinese):
        table = half[half.index("<!-- keys:"):half.index("<!-- /keys:")]
        for key in work_orders.folder_keys():
            assert table.count(f"| `{key}` |") == 1, key
    assert len(work_orders.folder_keys()) > 100
    # the same sections in both halves
    assert len(re.findall(r"^### ", english, re.M)) == len(re.findall(r"^### ", chinese, re.M))


@pytest.mark.slow
def test_a_megatron_work_order_runs_with_context_parallelism(tmp_path):
    """No verl work order asks for context_parallel_size > 1; the DeepSeek-Math Megatron line at CP 2 (actor,
    reference and critic; vLLM rollout) runs 2 steps, saves and resumes on 2 processes."""
    overrides = [f"{role}.megatron.{key}={value}" for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")
                 for key, value in (("tensor_model_parallel_size", 1), ("pipeline_model_parallel_size", 1),
                                    ("context_parallel_size", 2))]
    run = subprocess.run([sys.executable, "-m", "rlcamp.cli.main", "smoke",
                          str(FOLDER / "run_deepseek_math_gsm8k_megatron.sh"), *overrides, "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=1500, cwd=ROOT)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "rlcamp smoke: passed" in out and "(2 processes)" in out
