"""The step's batch: its operations, and every key a step writes declared (stage, shape, dtype)."""

import pytest
import torch

from rlcamp.batch import KEYS, Batch, check_batch
from rlcamp.config import build_config, resolve
from rlcamp.models.tiny import build_tiny_model
from rlcamp.trainer.build import build_trainer
from rlcamp.trainer.stages import StepState
from rlcamp.trainer.validation import prompt_batch
from tests.helpers import make_tiny_setup, tiny_run_overrides


def make(n):
    return Batch({"x": torch.arange(n), "y": torch.arange(n * 2).view(n, 2)}, {"s": [f"s{i}" for i in range(n)]})


def test_batch_ops():
    b = make(6)
    assert len(b) == 6 and b["s"][2] == "s2"
    assert b.index([5, 0])["x"].tolist() == [5, 0] and b.index([5, 0])["s"] == ["s5", "s0"]
    assert [len(p) for p in b.split(4)] == [4, 2] and [len(p) for p in b.chunk(4)] == [2, 2, 1, 1]
    assert Batch.concat(b.chunk(3))["s"] == b["s"]
    r = make(2).repeat_interleave(3)
    assert r["x"].tolist() == [0, 0, 0, 1, 1, 1] and r["s"] == ["s0"] * 3 + ["s1"] * 3
    assert sorted(b.select("x", "s").tensors) == ["x"] and b.select("x", "s")["s"] == b["s"]
    with pytest.raises(ValueError, match="has 3 rows, the batch has 6"):
        b["z"] = torch.zeros(3)
    with pytest.raises(ValueError, match="disagree"):
        Batch({"a": torch.zeros(2)}, {"b": [1]})


def test_to_moves_tensors_and_keeps_fields():
    b = make(3)
    moved = b.to(torch.device("meta"))
    assert moved["x"].device.type == "meta" and moved["s"] == b["s"] and b["x"].device.type == "cpu"


def test_concat_names_the_keys_a_batch_lacks():
    a, b = make(2), make(3)
    b["extra"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"'extra' missing from batch\(es\) \[0\]"):
        Batch.concat([a, b])
    del b.tensors["x"]
    with pytest.raises(ValueError, match=r"'extra' missing from batch\(es\) \[0\]; 'x' missing from batch\(es\) \[1\]"):
        Batch.concat([a, b])
    with pytest.raises(ValueError, match="at least one"):
        Batch.concat([])


def test_check_batch_names_undeclared_and_misshaped_keys():
    ok = Batch({"input_ids": torch.zeros(2, 5, dtype=torch.long), "responses": torch.zeros(2, 3, dtype=torch.long),
                "loss_mask": torch.ones(2, 3, dtype=torch.long)}, {"uid": [0, 0]})
    check_batch(ok)
    bad = Batch({**ok.tensors, "loss_mask": torch.ones(2, 5, dtype=torch.long), "old_log_probs": torch.zeros(2, 3,
                 dtype=torch.float64), "mystery": torch.zeros(2)}, {"uid": [0, 0]})
    with pytest.raises(ValueError) as info:
        check_batch(bad)
    message = str(info.value)
    assert "'loss_mask' has shape (2, 5); KEYS declares [B,R] = (2, 3)" in message
    assert "'old_log_probs' is torch.float64; KEYS declares float32" in message
    assert "'mystery' is not declared in rlcamp.batch.KEYS" in message


def test_every_key_a_step_writes_is_declared_by_the_stage_that_writes_it(tmp_path):
    """A tiny step with every keyed stage on (critic, reference, KL in reward, a reward model): after each stage
    the batch matches KEYS, each new key comes from the stage KEYS names, and every declared key is made."""
    model, data = make_tiny_setup(tmp_path)
    rm = build_tiny_model(tmp_path / "rm", "llama", reward_model=True)
    overrides = tiny_run_overrides(model, data, tmp_path / "run", **{
        "algorithm.use_kl_in_reward": True, "reward_model.enable": True, "reward_model.model.path": rm,
        "reward_model.use_reward_loop": False})
    trainer = build_trainer(resolve(build_config(overrides), 16), tmp_path / "run")
    s = StepState(prompt_batch(next(iter(trainer.loader))), 1)
    check_batch(s.batch)
    made = {name: "prompts" for name in list(s.batch.tensors) + list(s.batch.meta)}
    for stage in vars(trainer.stages).values():
        if stage is None or stage.name in ("update_critic", "update_actor", "sync_weights"):
            continue
        stage(s)
        check_batch(s.batch)
        for name in list(s.batch.tensors) + list(s.batch.meta):
            made.setdefault(name, stage.name)
    assert made == {name: key.stage for name, key in KEYS.items()}
