"""The critic worker: values of each response token, and the clipped value update."""

from __future__ import annotations

from pathlib import Path

import torch

from rlcamp.algos import masked_mean, value_loss
from rlcamp.batch import Batch
from rlcamp.config import RLConfig
from rlcamp.config.validate import Derived
from rlcamp.engines.base import MicroBatching, Values
from rlcamp.engines.fsdp import FSDPEngine, prepare
from rlcamp.models.forward import critic_forward
from rlcamp.models.loading import import_external_lib, load_critic, load_tokenizer
from rlcamp.utils import dist
from rlcamp.utils.device import to_dtype
from rlcamp.workers.base import Worker
from rlcamp.workers.common import MetricSink, mini_batches, nonfinite_metrics, seed_everything


class CriticWorker(Worker):
    """The critic as a role adapter of a training engine: the value head and the clipped value loss."""

    ENGINE_METHODS = frozenset({"compute_values", "update_critic"})  # see the actor

    def __init__(self, config: RLConfig, derived: Derived, device: str = "cpu"):
        c = config.critic
        self.config, self.critic_cfg, self.derived, self.device = config, c, derived, torch.device(device)
        self.init_profiler(config, {"critic": c.profiler}, "critic")
        seed_everything(config.trainer.seed + 1)
        import_external_lib(c.model.external_lib)
        self.model = load_critic(c.model.path, dtype=to_dtype(c.model.dtype), trust_remote_code=c.model.trust_remote_code,
                                 override_config=c.model.override_config).to(self.device)
        # saved with each checkpoint, so that <step>/critic/huggingface is a complete transformers folder
        self.tokenizer = load_tokenizer(c.model.tokenizer_path, trust_remote_code=c.model.trust_remote_code,
                                        key="critic.model.tokenizer_path")
        remove_padding = prepare(self.model, c.model, critic_forward, "critic.model.use_remove_padding")
        steps = dict(optim=c.optim, total_steps=derived.total_training_steps or 1,
                     warmup_steps=derived.critic_lr_warmup_steps or 0, grad_clip=c.grad_clip)
        if (c.strategy or config.actor_rollout_ref.actor.strategy) == "megatron":
            from rlcamp.engines.megatron import (
                MegatronEngine,
                apply_transformer_overrides,
                layout,
                offload,
            )

            apply_transformer_overrides(self.model, c.megatron,
                                        "critic.megatron.override_transformer_config")
            self.engine = MegatronEngine(self.model, device=self.device, compute_dtype=to_dtype(c.megatron.dtype),
                                         remove_padding=remove_padding, **layout(c.megatron, "critic"),
                                         **offload(c.megatron, self.device), **steps)
        else:
            self.engine = FSDPEngine(self.model, device=self.device,
                                     compute_dtype=to_dtype(c.model.fsdp_config.mixed_precision.param_dtype),
                                     remove_padding=remove_padding, share_prefix=c.model.share_prompt_prefix,
                                     sp_size=c.ulysses_sequence_parallel_size,
                                     sp_key="critic.ulysses_sequence_parallel_size", fsdp_config=c.model.fsdp_config,
                                     **steps)
        self.generator = torch.Generator().manual_seed(config.trainer.seed + 2)  # the same on every rank

    def placements(self) -> dict:
        return {method: self.engine.mesh.place for method in self.ENGINE_METHODS}

    def compute_values(self, batch: Batch) -> Batch:
        micro = MicroBatching(self.derived.critic_forward_micro_batch_per_device, self.critic_cfg.use_dynamic_bsz,
                              self.critic_cfg.forward_max_token_len_per_gpu)
        values = self.engine.forward(batch, Values(), micro)["values"]
        self.engine.offload()
        self.model.train()
        return Batch({"values": values * batch["response_mask"]})

    def update_critic(self, batch: Batch) -> dict[str, float]:
        c, plan = self.critic_cfg, self.derived.critic
        sink = MetricSink()
        self.model.train()
        micro = MicroBatching(plan.micro_batch_per_device, c.use_dynamic_bsz, c.ppo_max_token_len_per_gpu)

        def loss_fn(outputs: dict, part: Batch, norm: dict):
            values, mask = outputs["values"], part["loss_mask"].to(self.device).float()
            out = value_loss(values, part["values"].to(self.device), part["returns"].to(self.device), mask,
                             c.cliprange_value, c.loss_agg_mode, **norm)
            sink.add("critic/vf_clipfrac", out.clipfrac)
            sink.add("critic/vpred_mean", masked_mean(values.detach(), mask))
            return out.loss, out.loss

        norms = []
        for mini in mini_batches(batch, plan.mini_batch_responses_per_device, c.ppo_epochs, c.shuffle, self.generator):
            out = self.engine.forward_backward(
                mini, Values(), loss_fn, micro, accumulation=plan.grad_accum_steps,
                loss_scale_factor=c.loss_scale_factor or self.config.actor_rollout_ref.rollout.response_length)
            sink.add("critic/vf_loss", out["loss"])
            norms.append(self.engine.optimizer_step())  # skipped on every rank when not finite
        sink.add("critic/lr", self.engine.lr)
        sink.values.update(nonfinite_metrics("critic", norms))
        sink.add("perf/critic_peak_memory_gb", dist.peak_memory_gb(self.device))
        self.engine.scheduler_step()
        self.engine.offload()
        return sink.means()

    def save_checkpoint(self, folder: Path) -> None:
        self.engine.save(folder, self.critic_cfg.checkpoint.save_contents, {"shuffle": self.generator}, self.tokenizer)
        self.engine.offload()

    def load_checkpoint(self, folder: Path) -> None:
        self.engine.load(folder, self.critic_cfg.checkpoint.load_contents, {"shuffle": self.generator}, "critic")
        self.engine.offload()
