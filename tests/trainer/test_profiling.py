"""global_profiler / <role>.profiler: a real tiny run writes the traces of the named steps."""

import json

import pytest

from rlcamp.trainer.main_ppo import main
from rlcamp.trainer.profiling import step_windows
from tests.helpers import make_tiny_setup, tiny_run_overrides


def test_step_windows():
    assert step_windows([1, 2, 5], continuous=False) == ({1, 2, 5}, {1, 2, 5})
    assert step_windows([1, 2, 5], continuous=True) == ({1, 5}, {2, 5})  # 1-2 is one recording
    assert step_windows(None, continuous=True) == (set(), set())


@pytest.mark.parametrize("tool, suffix", [("torch", ".json"), ("torch_memory", ".memory.json")])
def test_named_steps_and_roles_are_recorded(tmp_path, tool, suffix):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    line = tiny_run_overrides(model, data, run, **{
        "trainer.total_training_steps": 2, "global_profiler.tool": tool, "global_profiler.steps": "[2]",
        "actor_rollout_ref.actor.profiler.enable": True, "critic.profiler.enable": True})
    assert main(line) == 0
    folder = run / "outputs/profile"
    # one in-process device: actor (with its reference) and critic share one process, so one trace
    (trace,) = folder.glob("step*/*")
    assert trace.parent.name == "step2" and trace.name == f"actor+critic_rank0{suffix}"
    if tool == "torch":
        names = {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}
        assert {"generate", "compute_log_prob", "compute_values", "update_critic", "update_actor"} <= names
    else:
        assert json.loads(trace.read_text())  # the memory timeline: times and bytes per category


def test_profiler_settings_that_record_nothing_say_so():
    from rlcamp.config import build_config, resolve

    base = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2"]
    warnings = resolve(build_config(base + ["global_profiler.tool=torch"])).warnings
    assert any("records nothing: global_profiler.steps names no step" in w for w in warnings)
    warnings = resolve(build_config(base + ["critic.profiler.enable=True"])).warnings
    assert any("critic.profiler.enable=True records nothing without global_profiler.tool" in w for w in warnings)


def test_the_npu_profiler_says_what_it_needs_and_checks_its_level():
    from rlcamp.config import build_config, resolve
    from rlcamp.config.loader import ConfigError
    from rlcamp.trainer.profiling import npu_settings
    from rlcamp.utils.imports import has_module

    base = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2",
            "global_profiler.tool=npu", "global_profiler.steps=[1]", "actor_rollout_ref.actor.profiler.enable=True"]
    resolved = resolve(build_config(base))
    said = [b for b in resolved.blockers if "global_profiler.tool=npu" in b]
    assert bool(said) != has_module("torch_npu")  # a blocker exactly where torch_npu is missing
    with pytest.raises(ConfigError, match=r"actor.profiler.tool_config.npu.level=level9 is not one of level_none"):
        resolve(build_config(base + ["actor_rollout_ref.actor.profiler.tool_config.npu.level=level9"]))
    # the role's settings over the global ones over verl's defaults
    assert npu_settings({"npu": {"level": "level1"}}, {"npu": {"analysis": False}}) == {
        "contents": [], "level": "level1", "analysis": False, "discrete": False}
