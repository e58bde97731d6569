"""The hybrid worker: actor (trained), rollout engine and reference model on one device.

A plain class: no Ray, no process groups. The worker group decides where it runs.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import torch

from rlcamp.algos import POLICY_LOSSES, agg_loss, kl_penalty, masked_mean, tis_weights
from rlcamp.batch import Batch
from rlcamp.config import RLConfig
from rlcamp.config.validate import Derived
from rlcamp.engines.base import LogProbs, MicroBatching
from rlcamp.engines.fsdp import FSDPEngine, prepare
from rlcamp.models.families import router_aux_loss_coef
from rlcamp.models.forward import actor_forward
from rlcamp.models.loading import (
    eos_token_ids,
    import_external_lib,
    load_causal_lm,
    load_tokenizer,
)
from rlcamp.rollout.engines import mask_through_first_eos
from rlcamp.rollout.hf import HFRollout, SamplingParams
from rlcamp.utils import dist
from rlcamp.utils.device import to_dtype, torch_compile_problem
from rlcamp.workers.base import Worker
from rlcamp.workers.common import MetricSink, mini_batches, nonfinite_metrics, seed_everything


def decodes_on_trainer_shards(rollout, actor, moe: bool) -> bool:
    """rollout.name=hf at the actor's tensor-parallel size under strategy=megatron decodes on the actor's own
    shards (``TrainerShardsRollout``) when a tensor-parallel group holds whole layers and whole sequences: one
    pipeline stage, no context parallelism, no sequence parallelism in effect (it is off for MoE models), and
    experts, if any, within the group (EP 1)."""
    m, tp = actor.megatron, rollout.tensor_model_parallel_size
    if rollout.name != "hf" or actor.strategy != "megatron" or tp == 1 or m.tensor_model_parallel_size != tp:
        return False
    return (m.pipeline_model_parallel_size == 1 and m.context_parallel_size == 1 and
            m.expert_model_parallel_size == 1 and (moe or not m.sequence_parallel))


class ActorRolloutRefWorker(Worker):
    """The actor and reference as role adapters of a training engine (``rlcamp.engines``) that supply
    the head and the loss; the rollout engine next to them."""

    # methods whose batch is split by the training engine's mesh (generation is plain data parallel)
    ENGINE_METHODS = frozenset({"compute_log_prob", "compute_ref_log_prob", "update_actor"})

    def __init__(self, config: RLConfig, derived: Derived, device: str = "cpu"):
        arr = config.actor_rollout_ref
        self.config, self.derived, self.device = config, derived, torch.device(device)
        self.actor_cfg, self.rollout_cfg = arr.actor, arr.rollout
        # the reference runs in this worker: its stage is in the actor's trace
        self.init_profiler(config, {"actor": arr.actor.profiler, "ref": arr.ref.profiler}, "actor")
        seed_everything(config.trainer.seed)
        import_external_lib(arr.model.external_lib)
        self.tokenizer = load_tokenizer(arr.model.path, trust_remote_code=arr.model.trust_remote_code,
                                        custom_chat_template=arr.model.custom_chat_template)
        self.model = load_causal_lm(arr.model.path, dtype=to_dtype(arr.model.dtype),
                                    trust_remote_code=arr.model.trust_remote_code,
                                    override_config=arr.model.override_config).to(self.device)
        self.eos_token_ids = eos_token_ids(self.tokenizer, self.model)
        remove_padding = prepare(self.model, arr.model, actor_forward, "actor_rollout_ref.model.use_remove_padding")
        # use_fused_kernels: log-probs from the hidden states a chunk of rows at a time (rlcamp.models.head,
        # impl_backend=torch, or rlcamp.models.triton_head for triton) instead of the full logits; prompt
        # sharing needs that head
        chunked_head = arr.model.use_fused_kernels
        head = {"chunked_head": chunked_head, "head_backend": arr.model.fused_kernel_options.impl_backend,
                "share_prefix": arr.model.share_prompt_prefix and chunked_head}
        # use_torch_compile: the full-logits paths' helpers (rlcamp.models.forward.logit_helpers)
        compilable = torch_compile_problem(self.device.type) is None
        self.ref = None
        if derived.uses_ref:  # a frozen copy of the initial weights (full on every rank: no grads, no comms)
            self.ref = copy.deepcopy(self.model).to(to_dtype(arr.ref.fsdp_config.model_dtype)).eval()
            # frozen by never being stepped and running under no_grad: on this torch's CPU build,
            # requires_grad_(False) on bf16 weights makes matmuls ~5x slower (measured)
        from rlcamp.engines.experts import expert_modules

        on_shards = decodes_on_trainer_shards(arr.rollout, arr.actor, moe=bool(expert_modules(self.model)))
        self.rollout = None if on_shards else self._make_rollout()
        compiled = {"actor": arr.actor.use_torch_compile and compilable, "ref": arr.ref.use_torch_compile and compilable}
        self.engine, self.ref_engine = self._make_engines(remove_padding, head, compiled)
        if on_shards:  # after the engine split the actor (rlcamp.rollout.tensor_parallel.TrainerShardsRollout)
            from rlcamp.rollout.tensor_parallel import TrainerShardsRollout

            self.rollout = TrainerShardsRollout(self.model, self.rollout_cfg.tensor_model_parallel_size,
                                                self._stop_tokens(),
                                                self.tokenizer.pad_token_id, to_dtype(self.rollout_cfg.dtype),
                                                self.device)
        if self.engine.master is not None and self.rollout.shares_weights:
            with self.engine.full_precision():  # the actor now computes in the compute dtype: not rollout.dtype
                self.rollout = self._make_rollout(share=False)
        # each rank samples differently; ranks that share sequences (Ulysses) shuffle mini batches alike;
        # resume restores every rank's own state
        # (the ranks of a tensor-parallel rollout group sample together, so alike)
        self.generator = torch.Generator(device="cpu").manual_seed(
            self.rollout_cfg.seed + 1000 * (dist.rank() // self.rollout_cfg.tensor_model_parallel_size))
        self.shuffle_generator = torch.Generator().manual_seed(config.trainer.seed + 1000 * self.engine.mesh.dp_rank)

    def _make_engines(self, remove_padding: bool, head: dict, compiled: dict):
        """The actor's training engine (``actor.strategy``) and the reference's, on the actor's mesh."""
        arr, derived = self.config.actor_rollout_ref, self.derived
        a = arr.actor
        steps = dict(total_steps=derived.total_training_steps or 1, warmup_steps=derived.actor_lr_warmup_steps or 0,
                     grad_clip=a.grad_clip)
        if a.strategy == "megatron":
            from rlcamp.engines.megatron import (
                MegatronEngine,
                apply_transformer_overrides,
                layout,
                offload,
            )

            compute = to_dtype(a.megatron.dtype)
            apply_transformer_overrides(self.model, a.megatron,
                                        "actor_rollout_ref.actor.megatron.override_transformer_config")
            engine = MegatronEngine(self.model, device=self.device, compute_dtype=compute, remove_padding=remove_padding,
                                    optim=a.optim, **layout(a.megatron, "actor_rollout_ref.actor"),
                                    **offload(a.megatron, self.device), **steps)
            ref = None if self.ref is None else MegatronEngine(
                self.ref, device=self.device, compute_dtype=compute, remove_padding=remove_padding, like=engine,
                **layout(arr.ref.megatron, "actor_rollout_ref.ref"), **offload(arr.ref.megatron, self.device))
            return engine, ref
        compute = to_dtype(a.fsdp_config.mixed_precision.param_dtype)
        # data parallel and/or offload: FSDP2; Ulysses: the trained model and the reference share
        # sequences over a group (the rollout copy does not)
        engine = FSDPEngine(self.model, device=self.device, compute_dtype=compute, remove_padding=remove_padding,
                            sp_size=a.ulysses_sequence_parallel_size,
                            sp_key="actor_rollout_ref.actor.ulysses_sequence_parallel_size", fsdp_config=a.fsdp_config,
                            optim=a.optim, compiled=compiled["actor"], **steps, **head)
        if self.ref is None:
            return engine, None
        # ref.fsdp_config.param_offload: on an accelerator the reference waits in host memory between uses
        offload = arr.ref.fsdp_config.param_offload and self.device.type != "cpu"
        if offload:
            self.ref.to("cpu")
        ref = FSDPEngine(self.ref, device=self.device, compute_dtype=compute, remove_padding=remove_padding,
                         mesh=engine.mesh, sp_key="actor_rollout_ref.actor.ulysses_sequence_parallel_size",
                         compiled=compiled["ref"], offload_between_uses=offload, **head)
        return engine, ref

    def placements(self) -> dict:
        """How the worker group splits the batch of each engine method (``controller.dispatch``)."""
        return {method: self.engine.mesh.place for method in self.ENGINE_METHODS}

    # ------------------------------------------------------------------------------ rollout
    def _make_rollout(self, share: bool = True):
        """rollout.name=hf: our engine generates from a copy in rollout.dtype (bf16 decodes ~2.5x faster
        on CPU here), refreshed in place after every update; in the model's own dtype it uses the actor
        directly (unless ``share`` is False). rollout.name=vllm|sglang: that engine, fed the actor's
        weights (rlcamp.rollout.*_engine)."""
        dtype = to_dtype(self.rollout_cfg.dtype)
        if self.rollout_cfg.name in ("vllm", "sglang"):
            if self.rollout_cfg.name == "vllm":
                from rlcamp.rollout.vllm_engine import VLLMRollout as Engine
            else:
                from rlcamp.rollout.sglang_engine import SGLangRollout as Engine
            r, arr = self.rollout_cfg, self.config.actor_rollout_ref
            return Engine(arr.model.path, r, eos_token_ids=self.eos_token_ids,
                          pad_token_id=self.tokenizer.pad_token_id,
                          max_model_len=r.max_model_len or r.prompt_length + r.response_length,
                          device=self.device.type, trust_remote_code=arr.model.trust_remote_code,
                          initial_state=self.model.state_dict(), dtype=dtype,
                          **({"stall_timeout_s": self.config.trainer.stage_timeout_s}
                             if self.rollout_cfg.name == "vllm" else {}))
        if self.rollout_cfg.tensor_model_parallel_size > 1:  # a copy split over the group (rlcamp.rollout.tensor_parallel)
            from rlcamp.rollout.tensor_parallel import TensorParallelRollout

            rollout = TensorParallelRollout(self.model, self.rollout_cfg.tensor_model_parallel_size,
                                            self._stop_tokens(),
                                            self.tokenizer.pad_token_id, dtype, self.device)
            rollout.load_weights(self.model.state_dict())
            return rollout
        module = self.model
        # a separate copy when its dtype differs, when the actor is sharded (generation is not lockstep), or
        # split into pipeline stages (each rank keeps only its own layers)
        # or split by experts (their exchange would make the ranks' generation lockstep)
        m = self.actor_cfg.megatron
        staged = self.actor_cfg.strategy == "megatron" and (m.pipeline_model_parallel_size > 1 or
                                                            m.expert_model_parallel_size > 1)
        if not share or staged or dtype != next(self.model.parameters()).dtype or \
                dist.needs_sharding(self.actor_cfg.fsdp_config):
            module = copy.deepcopy(self.model).to(dtype)  # no requires_grad_(False): see the ref above
            if getattr(module, "is_gradient_checkpointing", False):
                module.gradient_checkpointing_disable()
        module.config.use_cache = True
        return HFRollout(module, self._stop_tokens(), self.tokenizer.pad_token_id, shares_weights=module is self.model)

    def _stop_tokens(self) -> list[int]:
        """The tokens rlcamp's engine stops a row at (none with rollout.ignore_eos: full length)."""
        return [] if self.rollout_cfg.ignore_eos else self.eos_token_ids

    def sync_weights(self) -> None:
        """The ``sync_weights`` stage: the actor's weights into the rollout engine, in place (gathered one tensor
        at a time when sharded); nothing when the engine decodes on the actor's own weights."""
        if self.rollout.shares_weights:
            return
        # layered_summon: one full tensor at a time, never the whole state
        self.rollout.load_weights(self.engine.export_weights(layered=self.rollout_cfg.layered_summon))

    def sampling_params(self, validate: bool) -> SamplingParams:
        r = self.rollout_cfg
        if validate:
            v = r.val_kwargs
            return SamplingParams(r.response_length, v.temperature, v.top_p, v.top_k, v.do_sample)
        return SamplingParams(r.response_length, r.temperature, r.top_p, r.top_k, r.do_sample)

    def generate(self, batch: Batch, validate: bool = False) -> Batch:
        """Prompts in, responses out (``rollout.n`` or ``val_kwargs.n`` samples per prompt, adjacent)."""
        n = self.rollout_cfg.val_kwargs.n if validate else self.rollout_cfg.n
        prompts = batch.repeat_interleave(n) if n > 1 else batch
        shares = self.rollout.shares_weights
        if shares:  # it decodes on the actor's weights: on the device for it (megatron.param_offload)
            self.engine.onload()
        self.rollout.wake()
        out = self.rollout.generate(prompts["input_ids"].to(self.device), prompts["attention_mask"].to(self.device),
                                    self.sampling_params(validate), self.generator)
        self.rollout.sleep()  # free the engine's device memory for training (rollout.free_cache_engine)
        if shares:
            self.engine.offload()
        out = {k: v.cpu() for k, v in out.items()}
        if self.rollout_cfg.ignore_eos:  # generated to full length; the response still ends at its first EOS
            out["response_mask"] = mask_through_first_eos(out["responses"], self.eos_token_ids)
            out["rollout_log_probs"] = out["rollout_log_probs"] * out["response_mask"]
        if "loss_mask" not in out:  # a single-turn engine: every response token is the policy's, trained on
            out["loss_mask"] = out["response_mask"].clone()
        return prompts.update(out)

    # ---------------------------------------------------------------------------- log-probs
    def compute_log_prob(self, batch: Batch) -> Batch:
        r = self.rollout_cfg
        micro = MicroBatching(self.derived.rollout_log_prob_micro_batch_per_device, r.log_prob_use_dynamic_bsz,
                              r.log_prob_max_token_len_per_gpu)
        out = self.engine.forward(batch, LogProbs(r.temperature, entropy=True), micro)
        self.engine.offload()
        return Batch({"old_log_probs": out["log_probs"], "entropys": out["entropy"]})

    def compute_ref_log_prob(self, batch: Batch) -> Batch:
        if self.ref_engine is None:
            raise RuntimeError("compute_ref_log_prob called but no reference model was built (no KL is used)")
        ref = self.config.actor_rollout_ref.ref
        micro = MicroBatching(self.derived.ref_log_prob_micro_batch_per_device, ref.log_prob_use_dynamic_bsz,
                              ref.log_prob_max_token_len_per_gpu)
        out = self.ref_engine.forward(batch, LogProbs(self.rollout_cfg.temperature), micro)
        self.ref_engine.offload()
        return Batch({"ref_log_probs": out["log_probs"]})

    # ------------------------------------------------------------------------------- update
    def update_actor(self, batch: Batch) -> dict[str, float]:
        """PPO epochs x mini batches (one optimizer step each) x micro batches (the engine accumulates)."""
        a, plan = self.actor_cfg, self.derived.actor
        sink = MetricSink()
        self.model.train()
        # no recomputation pass reported the entropy (bypass_mode): the update's forward does
        head = LogProbs(self.rollout_cfg.temperature, entropy=a.entropy_coeff != 0 or "entropys" not in batch)
        micro = MicroBatching(plan.micro_batch_per_device, a.use_dynamic_bsz, a.ppo_max_token_len_per_gpu)
        # one mini batch, one epoch: the weights being differentiated are the ones that made old_log_probs, so
        # the ratio's anchor is the update's own log-probs, detached (verl's dp_actor ``on_policy``): the ratio is
        # exactly 1, not 1 give or take the rounding between two passes. Not in bypass_mode, whose anchor is
        # the rollout engine's log-probs by the user's choice.
        on_policy = (a.ppo_epochs == 1 and len(batch) <= plan.mini_batch_responses_per_device
                     and not self.config.algorithm.rollout_correction.bypass_mode)
        loss = partial(self._policy_loss, sink=sink, on_policy=on_policy)
        norms = []
        for mini in mini_batches(batch, plan.mini_batch_responses_per_device, a.ppo_epochs, a.shuffle,
                                 self.shuffle_generator):
            out = self.engine.forward_backward(mini, head, loss, micro,
                                               loss_scale_factor=a.loss_scale_factor or self.rollout_cfg.response_length,
                                               accumulation=plan.grad_accum_steps)
            sink.add("actor/pg_loss", out["loss"])
            sink.add("actor/micro_batches", out["micro_batches"])
            norms.append(self.engine.optimizer_step())  # skipped on every rank when not finite
        sink.add("actor/lr", self.engine.lr)
        sink.values.update(nonfinite_metrics("actor", norms))
        sink.add("perf/actor_peak_memory_gb", dist.peak_memory_gb(self.device))
        self.engine.scheduler_step()
        self.engine.offload()
        return sink.means()

    def _policy_loss(self, outputs: dict, micro: Batch, norm: dict, sink: MetricSink, on_policy: bool):
        """The actor's loss of one micro batch (PPO clip, entropy bonus, KL loss, MoE aux loss), and its
        share of the mini batch's policy loss to report. ``on_policy``: the ratio's anchor is ``log_probs``
        detached instead of the batch's old_log_probs."""
        a = self.actor_cfg
        log_probs, entropy, aux_loss = outputs["log_probs"], outputs["entropy"], outputs["aux_loss"]
        mask = micro["loss_mask"].to(self.device).float()
        old_log_probs = micro["old_log_probs"].to(self.device)
        anchor = log_probs.detach() if on_policy else old_log_probs
        is_weights = None
        if a.tis_imp_ratio_cap > 0:  # correct for the rollout engine's numerics (see algos.tis_weights)
            is_weights = tis_weights(old_log_probs, micro["rollout_log_probs"].to(self.device), a.tis_imp_ratio_cap)
            sink.add("actor/tis_weight_mean", masked_mean(is_weights, mask))
        pg = POLICY_LOSSES[a.policy_loss.loss_mode](anchor, log_probs, micro["advantages"].to(self.device), mask,
                         a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c, a.loss_agg_mode, is_weights=is_weights,
                         **norm)
        loss = pg.loss
        if entropy is not None:
            if a.entropy_coeff != 0:
                entropy_loss = agg_loss(entropy, mask, a.loss_agg_mode, **norm)
                loss = loss - a.entropy_coeff * entropy_loss
            sink.add("actor/entropy", masked_mean(entropy.detach(), mask))
        if a.use_kl_loss:
            kl = kl_penalty(log_probs, micro["ref_log_probs"].to(self.device), a.kl_loss_type)
            kl_loss = agg_loss(kl, mask, a.loss_agg_mode, **norm)
            loss = loss + a.kl_loss_coef * kl_loss
            sink.add("actor/kl_loss", masked_mean(kl.detach(), mask))
        if aux_loss is not None:  # MoE router balance loss, weighted as the model's config says
            share = mask.sum() / norm["global_tokens"] / self.engine.mesh.sp_size
            loss = loss + router_aux_loss_coef(self.model.config) * aux_loss * share
            sink.add("actor/moe_aux_loss", aux_loss.detach())
        sink.add("actor/pg_clipfrac", pg.clipfrac)
        sink.add("actor/ppo_kl", pg.ppo_kl)
        sink.add("actor/pg_clipfrac_lower", pg.clipfrac_lower)
        return loss, pg.loss

    def shutdown(self) -> None:
        """Stop the rollout engine's own process, if it has one (vLLM, SGLang)."""
        self.rollout.shutdown()

    def peak_memory_gb(self) -> float:
        """This worker's peak device memory (resident host memory on CPU) so far."""
        return dist.peak_memory_gb(self.device)

    # --------------------------------------------------------------------------- checkpoint
    def _generators(self) -> dict[str, torch.Generator]:
        return {"sampling": self.generator, "shuffle": self.shuffle_generator}

    def save_checkpoint(self, folder: Path) -> None:
        self.engine.save(folder, self.actor_cfg.checkpoint.save_contents, self._generators(), self.tokenizer)
        self.engine.offload()

    def load_checkpoint(self, folder: Path) -> None:
        self.engine.load(folder, self.actor_cfg.checkpoint.load_contents, self._generators(), "actor")
        self.sync_weights()
        self.engine.offload()
