"""Data parallel over Ray (FSDP2, gloo) against one process: same log-probs, losses and gradient norms."""

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is installed by scripts/setup.sh (extra 'ray')")

from rlcamp.config import build_config, resolve  # noqa: E402
from rlcamp.controller.ray_group import RayWorkerGroup, WorkerError  # noqa: E402
from rlcamp.workers.actor import ActorRolloutRefWorker  # noqa: E402
from rlcamp.workers.base import Worker  # noqa: E402
from rlcamp.workers.critic import CriticWorker  # noqa: E402
from tests.helpers import make_tiny_setup, tiny_run_overrides  # noqa: E402
from tests.workers.test_actor_update import rollout_batch  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def resolved_for(tmp_path, devices, **extra):
    model, data = make_tiny_setup(tmp_path)
    overrides = tiny_run_overrides(model, data, tmp_path / "run", **{
        "trainer.n_gpus_per_node": devices, "actor_rollout_ref.actor.ppo_mini_batch_size": 8,  # one mini batch
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 2, "critic.ppo_micro_batch_size_per_gpu": 2,
        "trainer.stage_timeout_s": 120, **extra})
    return resolve(build_config(overrides), 16)


def one_and_two(tmp_path, **options):
    """A one-process actor, a batch it rolled out, and a 2-rank Ray actor group with ``options``."""
    return _one_and_two_actors(resolved_for(tmp_path, 1), resolved_for(tmp_path, 2, **options))


def _one_and_two_actors(one, two):
    """The one-process actor worker, a rollout batch of 8 prompts from it (with values and returns for a
    critic), and the 2-rank Ray actor group of layout ``two``."""
    single = ActorRolloutRefWorker(one.config, one.derived)
    batch = rollout_batch(single, single.tokenizer, n_prompts=8)
    batch["values"] = torch.zeros(batch["responses"].shape)
    batch["returns"] = batch["advantages"] * 0.5
    group = RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", 2,
                           {"config": two.config, "derived": two.derived, "device": "cpu"}, device="cpu",
                           backend="gloo", stage_timeout_s=120, name="actor")
    return single, batch, group


def test_two_ranks_equal_one(tmp_path, ray_local):
    one = resolved_for(tmp_path, 1)
    two = resolved_for(tmp_path, 2)
    single = ActorRolloutRefWorker(one.config, one.derived)
    batch = rollout_batch(single, single.tokenizer, n_prompts=8)  # 16 responses
    batch["values"] = torch.zeros(batch["responses"].shape)
    batch["returns"] = batch["advantages"] * 0.5

    group = RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", 2,
                           {"config": two.config, "derived": two.derived, "device": "cpu"},
                           device="cpu", backend="gloo", stage_timeout_s=120, name="actor")
    log_probs = group.call("compute_log_prob", batch)
    real = batch["response_mask"].bool()  # padding positions hold no log-prob (layouts differ there)
    assert torch.allclose(log_probs["old_log_probs"][real], batch["old_log_probs"][real], atol=1e-5)
    m2, m1 = group.call("update_actor", batch), single.update_actor(batch)
    for key in ("actor/pg_loss", "actor/grad_norm"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    # after the step both hold the same weights: the rollout copies agree
    after_two = group.call("compute_log_prob", batch)["old_log_probs"]
    after_one = single.compute_log_prob(batch)["old_log_probs"]
    assert torch.allclose(after_two[real], after_one[real], atol=1e-4)
    group.shutdown()

    critic_group = RayWorkerGroup("rlcamp.workers.critic:CriticWorker", 2,
                                  {"config": two.config, "derived": two.derived, "device": "cpu"},
                                  device="cpu", backend="gloo", stage_timeout_s=120, name="critic")
    critic = CriticWorker(one.config, one.derived)
    c2, c1 = critic_group.call("update_critic", batch), critic.update_critic(batch)
    for key in ("critic/vf_loss", "critic/grad_norm"):
        assert c2[key] == pytest.approx(c1[key], rel=1e-4, abs=1e-6), key
    critic_group.shutdown()


class Exploding(Worker):
    def __init__(self, **_):
        pass

    def boom(self, batch):
        raise ZeroDivisionError("worker-side failure")


class StopRecorder(Worker):
    """Writes ``<folder>/stopped_<rank>`` from its own process when its group shuts down."""

    def __init__(self, folder):
        self.folder = folder

    def shutdown(self):
        from rlcamp.utils.dist import rank

        (self.folder / f"stopped_{rank()}").write_text(str(__import__("os").getpid()))


def test_both_groups_keep_one_contract_and_stop_their_workers(tmp_path, ray_local):
    """The Ray group and the in-process group are the same WorkerGroup: the same calls, and shutdown runs
    every worker's own shutdown (its rollout engine's process) before the Ray processes go."""
    import os

    from rlcamp.controller.worker_group import InProcessWorkerGroup, WorkerGroup

    group = RayWorkerGroup("tests.controller.test_ray_equivalence:StopRecorder", 2, {"folder": tmp_path}, device="cpu",
                           backend="gloo", stage_timeout_s=60, name="recorders")
    local = InProcessWorkerGroup([StopRecorder(tmp_path / "local")])
    (tmp_path / "local").mkdir()
    assert isinstance(group, WorkerGroup) and isinstance(local, WorkerGroup)
    assert (group.world_size, group.dp_size, local.world_size) == (2, 2, 1)
    group.shutdown()
    local.shutdown()
    pids = {(tmp_path / f"stopped_{r}").read_text() for r in range(2)}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # each rank, in its own process
    assert (tmp_path / "local" / "stopped_0").exists()
    assert not group.actors


def test_a_failing_worker_stops_the_stage_with_its_traceback(ray_local):
    group = RayWorkerGroup("tests.controller.test_ray_equivalence:Exploding", 2, {}, device="cpu", backend="gloo",
                           stage_timeout_s=60, name="exploding")
    from rlcamp.batch import Batch

    with pytest.raises(WorkerError, match=r"(?s)stage 'boom' failed on rank \d.*ZeroDivisionError: worker-side failure"):
        group.call("boom", Batch({"x": torch.zeros(2)}))


def test_balanced_and_unbalanced_batches_give_the_same_update(tmp_path, ray_local):
    """trainer.balance_batch only moves rows between ranks: losses and gradients do not change."""
    from rlcamp.controller.balance import balance_batch

    one = resolved_for(tmp_path, 1, **{"actor_rollout_ref.actor.optim.lr": 0.0})
    two = resolved_for(tmp_path, 2, **{"actor_rollout_ref.actor.optim.lr": 0.0})  # weights stay put
    single = ActorRolloutRefWorker(one.config, one.derived)
    batch = rollout_batch(single, single.tokenizer, n_prompts=8)
    balanced, restore = balance_batch(batch, 2)
    assert not torch.equal(balanced["responses"], batch["responses"])
    group = RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", 2,
                           {"config": two.config, "derived": two.derived, "device": "cpu"},
                           device="cpu", backend="gloo", stage_timeout_s=120, name="actor")
    plain, even = group.call("update_actor", batch), group.call("update_actor", balanced)
    for key in ("actor/pg_loss", "actor/grad_norm"):
        assert even[key] == pytest.approx(plain[key], rel=1e-5), key
    log_probs = group.call("compute_log_prob", balanced)["old_log_probs"].index_select(0, restore)
    real = batch["response_mask"].bool()
    assert torch.allclose(log_probs[real], batch["old_log_probs"][real], atol=1e-5)  # the order comes back
    group.shutdown()


def test_offload_gives_the_same_update(tmp_path, ray_local):
    """param/optimizer offload (FSDP2 CPUOffloadPolicy + host optimizer state) changes where, not what."""
    offload = {"actor_rollout_ref.actor.fsdp_config.param_offload": True,
               "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True}
    single, batch, group = one_and_two(tmp_path, **offload)
    for _ in range(2):  # two steps: the second uses the optimizer state that was offloaded
        m2, m1 = group.call("update_actor", batch), single.update_actor(batch)
        for key in ("actor/pg_loss", "actor/grad_norm"):
            assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    assert m2["perf/actor_peak_memory_gb"] > 0
    group.shutdown()


@pytest.mark.parametrize("remove_padding", [False, True], ids=["padded", "packed"])
def test_ulysses_two_ranks_equal_one(tmp_path, ray_local, remove_padding):
    """SP=2 (one data-parallel rank whose sequences are split over 2 processes) against one process:
    the same log-probs, entropies, values, losses and gradient norms, actor and critic."""
    common = {"actor_rollout_ref.model.use_remove_padding": remove_padding,
              "critic.model.use_remove_padding": remove_padding, "actor_rollout_ref.actor.entropy_coeff": 0.01}
    one = resolved_for(tmp_path, 1, **common)
    two = resolved_for(tmp_path, 2, **common, **{"actor_rollout_ref.actor.ulysses_sequence_parallel_size": 2,
                                                 "critic.ulysses_sequence_parallel_size": 2})
    assert two.derived.dp_size == 1
    single, batch, group = _one_and_two_actors(one, two)
    out = group.call("compute_log_prob", batch)
    mask = batch["response_mask"].bool()
    assert torch.allclose(out["old_log_probs"][mask], batch["old_log_probs"][mask], atol=1e-5)
    assert torch.allclose(out["entropys"][mask], batch["entropys"][mask], atol=1e-5)
    m2, m1 = group.call("update_actor", batch), single.update_actor(batch)
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "actor/pg_clipfrac"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    after_two = group.call("compute_log_prob", batch)["old_log_probs"][mask]
    assert torch.allclose(after_two, single.compute_log_prob(batch)["old_log_probs"][mask], atol=1e-4)
    group.shutdown()

    critic_group = RayWorkerGroup("rlcamp.workers.critic:CriticWorker", 2,
                                  {"config": two.config, "derived": two.derived, "device": "cpu"}, device="cpu",
                                  backend="gloo", stage_timeout_s=120, name="critic")
    critic = CriticWorker(one.config, one.derived)
    c2, c1 = critic_group.call("update_critic", batch), critic.update_critic(batch)
    for key in ("critic/vf_loss", "critic/grad_norm"):
        assert c2[key] == pytest.approx(c1[key], rel=1e-4, abs=1e-6), key
    values_two = critic_group.call("compute_values", batch)["values"]
    assert torch.allclose(values_two, critic.compute_values(batch)["values"], atol=1e-5)
    critic_group.shutdown()


def test_sharded_checkpoint_resumes_exactly(tmp_path, ray_local):
    """Each rank saves its own shards of weights and Adam state; a fresh group that loads them takes
    the same next step as the group that never stopped."""
    two = resolved_for(tmp_path, 2)
    single = ActorRolloutRefWorker(resolved_for(tmp_path, 1).config, resolved_for(tmp_path, 1).derived)
    batch = rollout_batch(single, single.tokenizer, n_prompts=8)
    kwargs = {"config": two.config, "derived": two.derived, "device": "cpu"}
    make = lambda: RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", 2, kwargs, device="cpu",  # noqa: E731
                                  backend="gloo", stage_timeout_s=120, name="actor")
    group = make()
    group.call("update_actor", batch)
    group.call("save_checkpoint", folder=tmp_path / "ckpt")
    expected = group.call("update_actor", batch)
    expected_after = group.call("compute_log_prob", batch)["old_log_probs"]  # the weights Adam's state led to
    group.shutdown()
    assert "optimizer" not in torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)  # nothing gathered
    fresh = make()
    fresh.call("load_checkpoint", folder=tmp_path / "ckpt")
    got = fresh.call("update_actor", batch)
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/ppo_kl"):
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
    assert torch.allclose(fresh.call("compute_log_prob", batch)["old_log_probs"], expected_after, atol=1e-6)
    fresh.shutdown()


def test_fsdp_prefetch_size_based_units_reduce_dtype_and_layered_summon_change_nothing(tmp_path, ray_local):
    """forward_prefetch, wrap_policy.min_num_params, mixed_precision.reduce_dtype and rollout.layered_summon
    change how the two ranks shard, gather and sync, not what they compute: the same update as one
    process, and after it the rollout copy (synced one tensor at a time) generates what one process does."""
    options = {"actor_rollout_ref.actor.fsdp_config.forward_prefetch": True,
               "actor_rollout_ref.actor.fsdp_config.wrap_policy.min_num_params": 2000,
               "actor_rollout_ref.actor.fsdp_config.mixed_precision.reduce_dtype": "fp32",
               "actor_rollout_ref.rollout.layered_summon": True}
    single, batch, group = one_and_two(tmp_path, **options)
    m2, m1 = group.call("update_actor", batch), single.update_actor(batch)
    for key in ("actor/pg_loss", "actor/grad_norm"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    prompts = batch.select("input_ids", "attention_mask").slice(0, 4)
    greedy_two = group.call("generate", prompts, validate=True)["responses"]
    assert torch.equal(greedy_two, single.generate(prompts, validate=True)["responses"])
    group.shutdown()


def test_ray_startup_is_bounded_by_ray_wait_register_center_timeout(ray_local):
    import time

    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"placing 1 gpus .* within 2 s \(trainer.ray_wait_register_center_timeout\)"):
        RayWorkerGroup("tests.controller.test_ray_equivalence:Exploding", 1, {}, device="cuda", backend="nccl",
                       stage_timeout_s=600, startup_timeout_s=2, name="gpus")  # this cluster has no GPU
    assert time.monotonic() - start < 30


def test_ray_timeline_is_written(tmp_path, ray_local):
    from rlcamp.batch import Batch
    from rlcamp.trainer.build import write_ray_timeline

    group = RayWorkerGroup("tests.controller.test_ray_equivalence:Exploding", 1, {}, device="cpu", backend="gloo",
                           stage_timeout_s=60, name="timeline")
    with pytest.raises(WorkerError):
        group.call("boom", Batch({"x": torch.zeros(2)}))
    group.shutdown()
    write_ray_timeline(str(tmp_path / "trace" / "timeline.json"))
    import json

    events = json.loads((tmp_path / "trace" / "timeline.json").read_text())
    assert any("execute" in e.get("name", "") for e in events)


@pytest.mark.parametrize("remove_padding", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("dim", ["tensor_model", "pipeline_model", "context"])
def test_megatron_two_ranks_equal_one_fsdp_process(tmp_path, ray_local, remove_padding, dim):
    """strategy=megatron with TP=2, PP=2 or CP=2 (one data-parallel rank split over 2 processes; the group
    hands both the same part and keeps the returning rank's result: TP / CP rank 0, the last stage) against the
    FSDP engine in one process: the same log-probs, entropies, values, losses and gradient norms,
    actor (with a KL loss on the reference) and critic, and the same log-probs after the step."""
    common = {"actor_rollout_ref.model.use_remove_padding": remove_padding,
              "critic.model.use_remove_padding": remove_padding, "actor_rollout_ref.actor.entropy_coeff": 0.01,
              "actor_rollout_ref.actor.use_kl_loss": True, "actor_rollout_ref.actor.kl_loss_coef": 0.1,
              "actor_rollout_ref.model.use_fused_kernels": False}
    one = resolved_for(tmp_path, 1, **common)
    megatron = {f"{role}.megatron.{dim}_parallel_size": 2
                for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")}
    two = resolved_for(tmp_path, 2, **common, **megatron, **{"actor_rollout_ref.actor.strategy": "megatron",
                                                             "actor_rollout_ref.ref.strategy": "megatron",
                                                             "critic.strategy": "megatron",
                                                             "actor_rollout_ref.actor.megatron.dtype": "fp32",
                                                             "critic.megatron.dtype": "fp32"})
    assert two.derived.dp_size == 1 and not two.blockers
    single, batch, group = _one_and_two_actors(one, two)
    mask = batch["response_mask"].bool()
    out = group.call("compute_log_prob", batch)
    assert torch.allclose(out["old_log_probs"][mask], batch["old_log_probs"][mask], atol=1e-5)
    assert torch.allclose(out["entropys"][mask], batch["entropys"][mask], atol=1e-5)
    ref = group.call("compute_ref_log_prob", batch)["ref_log_probs"]
    assert torch.allclose(ref[mask], batch["ref_log_probs"][mask], atol=1e-5)
    m2, m1 = group.call("update_actor", batch), single.update_actor(batch)
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "actor/kl_loss", "actor/pg_clipfrac"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    after_two = group.call("compute_log_prob", batch)["old_log_probs"][mask]
    assert torch.allclose(after_two, single.compute_log_prob(batch)["old_log_probs"][mask], atol=1e-4)
    # the sync_weights stage refreshes the rollout copy from the split weights: it samples with the log-probs
    # the trained (split) model gives its samples, not those of the weights before the step
    from rlcamp.batch import Batch

    group.call("sync_weights")
    prompts = Batch({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    sampled = group.call("generate", prompts)
    recomputed = group.call("compute_log_prob", sampled)["old_log_probs"]
    real = sampled["response_mask"].bool()
    assert torch.allclose(sampled["rollout_log_probs"][real], recomputed[real], atol=1e-4)
    group.shutdown()

    critic_group = RayWorkerGroup("rlcamp.workers.critic:CriticWorker", 2,
                                  {"config": two.config, "derived": two.derived, "device": "cpu"}, device="cpu",
                                  backend="gloo", stage_timeout_s=120, name="critic")
    critic = CriticWorker(one.config, one.derived)
    values_two = critic_group.call("compute_values", batch)["values"]
    assert torch.allclose(values_two, critic.compute_values(batch)["values"], atol=1e-5)
    c2, c1 = critic_group.call("update_critic", batch), critic.update_critic(batch)
    for key in ("critic/vf_loss", "critic/grad_norm", "critic/vpred_mean"):
        assert c2[key] == pytest.approx(c1[key], rel=1e-4, abs=1e-6), key
    critic_group.shutdown()


def test_megatron_tensor_parallel_rollout_decodes_on_the_actors_shards(tmp_path, ray_local):
    """rollout.name=hf at the actor's TP=2 (one stage, no sequence parallelism): the rollout decodes on the
    trained shards themselves (no copy, no weight export), so its samples before and after an update carry the
    log-probs the trained model gives them (tests/rollout/test_tensor_parallel.py: the tokens one process samples)."""
    megatron = {"actor_rollout_ref.actor.strategy": "megatron", "actor_rollout_ref.actor.megatron.dtype": "fp32",
                "actor_rollout_ref.actor.megatron.tensor_model_parallel_size": 2,
                "actor_rollout_ref.actor.megatron.sequence_parallel": False,
                "actor_rollout_ref.rollout.tensor_model_parallel_size": 2}
    one, two = resolved_for(tmp_path, 1), resolved_for(tmp_path, 2, **megatron)
    assert not two.blockers
    single, batch, group = _one_and_two_actors(one, two)
    from rlcamp.batch import Batch

    prompts = Batch({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    for update in (False, True):
        if update:
            m = group.call("update_actor", batch)
            assert m["actor/grad_norm"] > 0
        sampled = group.call("generate", prompts)
        recomputed = group.call("compute_log_prob", sampled)["old_log_probs"]
        real = sampled["response_mask"].bool()
        assert torch.allclose(sampled["rollout_log_probs"][real], recomputed[real], atol=1e-5), update
    group.shutdown()


@pytest.mark.parametrize("fsdp", [False, True], ids=["distributed_optimizer", "megatron_fsdp"])
def test_megatron_data_parallel_with_the_distributed_optimizer_equals_one_process(tmp_path, ray_local, fsdp):
    """strategy=megatron at DP=2 with verl's default use_distributed_optimizer=True (each rank steps half of
    the optimizer state), and with megatron-core's FSDP switch (the decoder layers split over the two ranks):
    the update's metrics and the log-probs after it equal the FSDP engine in one process."""
    one = resolved_for(tmp_path, 1)
    ddp = {"+actor_rollout_ref.actor.megatron.override_ddp_config.use_megatron_fsdp": True,
           "+actor_rollout_ref.actor.megatron.override_ddp_config.data_parallel_sharding_strategy":
           "optim_grads_params"} if fsdp else {}
    two = resolved_for(tmp_path, 2, **{"actor_rollout_ref.actor.strategy": "megatron",
                                       "actor_rollout_ref.actor.megatron.dtype": "fp32", **ddp})
    assert not two.blockers
    assert two.derived.dp_size == 2 and two.config.actor_rollout_ref.actor.megatron.use_distributed_optimizer
    single, batch, group = _one_and_two_actors(one, two)
    m2, m1 = group.call("update_actor", batch), single.update_actor(batch)
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/pg_clipfrac"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    mask = batch["response_mask"].bool()
    after_two = group.call("compute_log_prob", batch)["old_log_probs"][mask]
    assert torch.allclose(after_two, single.compute_log_prob(batch)["old_log_probs"][mask], atol=1e-4)
    group.shutdown()
