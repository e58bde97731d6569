"""One table per registry (rlcamp.algos.registry): the schema, validation and the implementations follow it."""

import typing
from pathlib import Path

import pytest
import torch

from rlcamp.algos import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, agg_loss, kl_penalty, pf_ppo_weights, register_advantage
from rlcamp.algos import registry
from rlcamp.config import build_config, resolve
from rlcamp.config.loader import ConfigError
from rlcamp.config.schema import ActorConfig, AlgorithmConfig, PFPPOConfig, PolicyLossConfig, TrainerConfig
from rlcamp.trainer.tracking import TRACKERS
from tests.helpers import tiny_run_overrides


def choices(cls, name):
    return set(typing.get_args(typing.get_type_hints(cls)[name]))


def test_the_schema_offers_exactly_the_declared_names():
    assert choices(AlgorithmConfig, "adv_estimator") == set(registry.ADV_ESTIMATORS)
    assert choices(AlgorithmConfig, "kl_penalty") == set(registry.KL_ESTIMATORS)
    assert choices(ActorConfig, "kl_loss_type") == set(registry.KL_ESTIMATORS)
    assert choices(ActorConfig, "loss_agg_mode") == set(registry.LOSS_AGG_MODES)
    assert choices(PFPPOConfig, "reweight_method") == set(registry.PF_PPO_METHODS)
    assert choices(PolicyLossConfig, "loss_mode") == set(registry.POLICY_LOSS_MODES)


def test_every_declared_name_is_implemented():
    assert set(ADVANTAGE_ESTIMATORS) == set(registry.ADV_ESTIMATORS)
    assert set(POLICY_LOSSES) == set(registry.POLICY_LOSS_MODES)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    for name, kl in registry.KL_ESTIMATORS.items():
        if kl.needs_vocabulary:
            full = torch.log_softmax(torch.randn(2, 3, 5, generator=g), -1)
            assert kl_penalty(full, full, name).shape == (2, 3)
        else:
            assert kl_penalty(a, b, name).shape == (2, 3)
    for mode in registry.LOSS_AGG_MODES:
        assert agg_loss(a, torch.ones(2, 3), mode).dim() == 0
    for method in registry.PF_PPO_METHODS:
        assert pf_ppo_weights(torch.tensor([1.0, -2.0, 0.5]), method).shape == (3,)


def test_an_undeclared_estimator_cannot_be_registered():
    with pytest.raises(ValueError, match="not declared in rlcamp.algos.registry.ADV_ESTIMATORS"):
        register_advantage("my_estimator")(lambda **_: None)


@pytest.mark.parametrize("name", sorted(registry.ADV_ESTIMATORS))
def test_critic_and_group_needs_come_from_the_declaration(name):
    est = registry.ADV_ESTIMATORS[name]
    lines = tiny_run_overrides(Path("model"), Path("data"), Path("run"), **{"algorithm.adv_estimator": name})
    if est.needs_groups:
        with pytest.raises(ConfigError, match=f"adv_estimator={name} compares responses within a prompt group"):
            resolve(build_config(lines + ["actor_rollout_ref.rollout.n=1"]), 16)
    assert resolve(build_config(lines), 16).derived.uses_critic is est.needs_critic


def test_the_logger_key_documents_every_tracker():
    import dataclasses

    text = next(f for f in dataclasses.fields(TrainerConfig) if f.name == "logger").metadata["doc"]
    assert all(name in text for name in TRACKERS), (sorted(TRACKERS), text)
