"""The critic worker: values of each response token, and the clipped value update."""

from __future__ import annotations

from pathlib import Path

import torch

from rlcamp.algos import masked_mean, value_loss
from rlcamp.batch import Batch
from rlcamp.config import RLConfig
from rlcamp.config.validate import Derived
from rlcamp.engines.local import LocalEngine
from rlcamp.models import ulysses
from rlcamp.models.forward import critic_forward, sequence_inputs
from rlcamp.models.loading import import_external_lib, load_critic, load_tokenizer
from rlcamp.trainer.profiling import Profiled
from rlcamp.utils import dist
from rlcamp.utils.device import to_dtype
from rlcamp.workers.common import (MetricSink, global_norm, in_original_order, load_model_state, micro_batches,
                                   mini_batches, prepare_trained_model, save_model_state, seed_everything,
                                   shard_trained_model)


class CriticWorker(Profiled):
    SEQUENCE_PARALLEL = frozenset({"compute_values", "update_critic"})  # see the actor

    def __init__(self, config: RLConfig, derived: Derived, device: str = "cpu"):
        c = config.critic
        self.config, self.cfg, self.derived, self.device = config, c, derived, torch.device(device)
        self.init_profiler(config, {"critic": c.profiler}, "critic")
        seed_everything(config.trainer.seed + 1)
        import_external_lib(c.model.external_lib)
        self.model = load_critic(c.model.path, dtype=to_dtype(c.model.dtype), trust_remote_code=c.model.trust_remote_code,
                                 override_config=c.model.override_config).to(self.device)
        # saved with each checkpoint, so that <step>/critic/huggingface is a complete transformers folder
        self.tokenizer = load_tokenizer(c.model.tokenizer_path, trust_remote_code=c.model.trust_remote_code,
                                        key="critic.model.tokenizer_path")
        self.remove_padding = prepare_trained_model(self.model, c.model, critic_forward, "critic.model.use_remove_padding")
        self.share_prefix = c.model.share_prompt_prefix
        fsdp = c.model.fsdp_config
        shard_trained_model(self.model, fsdp, self.device)
        self.sp = ulysses.setup(c.ulysses_sequence_parallel_size)  # None at degree 1
        if self.sp is not None:
            ulysses.install(self.model, self.sp, "critic.ulysses_sequence_parallel_size")
        self.engine = LocalEngine(self.model, c.optim, total_steps=derived.total_training_steps or 1,
                                  warmup_steps=derived.critic_warmup_steps or 0, grad_clip=c.grad_clip,
                                  compute_dtype=to_dtype(c.model.fsdp_config.mixed_precision.param_dtype),
                                  device=self.device, optimizer_offload=fsdp.optimizer_offload)
        self.generator = torch.Generator().manual_seed(config.trainer.seed + 2)  # the same on every rank

    def _inputs(self, part: Batch):
        return sequence_inputs(part["input_ids"].to(self.device), part["attention_mask"].to(self.device),
                               part["responses"].to(self.device), part["response_mask"].to(self.device))

    def compute_values(self, batch: Batch) -> Batch:
        values = []
        self.model.eval()
        size = self.derived.critic_forward_micro_batch_per_device
        with torch.no_grad(), self.engine.autocast():
            for rows, part in micro_batches(batch, self.cfg.use_dynamic_bsz, size, self.cfg.forward_max_token_len_per_gpu):
                values.append((rows, critic_forward(self.model, self._inputs(part), self.remove_padding, self.sp,
                                                    self.share_prefix).cpu() * part["response_mask"]))
        self.model.train()
        return Batch({"values": in_original_order(values, len(batch))})

    def update_critic(self, batch: Batch) -> dict[str, float]:
        c, plan = self.cfg, self.derived.critic
        sink = MetricSink()
        self.model.train()
        for mini in mini_batches(batch, plan.mini_batch_responses_per_device, c.ppo_epochs, c.shuffle, self.generator):
            norm = global_norm(mini["response_mask"].float(), self.sp.size if self.sp else 1,
                               c.loss_scale_factor or self.config.actor_rollout_ref.rollout.response_length,
                               plan.grad_accum_steps)
            total = torch.zeros(())
            for _, micro in micro_batches(mini, c.use_dynamic_bsz, plan.micro_batch_per_device, c.ppo_max_token_len_per_gpu):
                micro_mask = micro["response_mask"].to(self.device).float()
                with self.engine.autocast():
                    values = critic_forward(self.model, self._inputs(micro), self.remove_padding, self.sp,
                                            self.share_prefix)
                out = value_loss(values, micro["values"].to(self.device), micro["returns"].to(self.device), micro_mask,
                                 c.cliprange_value, c.loss_agg_mode, **norm)
                (out.loss * dist.grad_scale(self.model)).backward()  # see the actor
                total = total + out.loss.detach().cpu()
                sink.add("critic/vf_clipfrac", out.clipfrac)
                sink.add("critic/vpred_mean", masked_mean(values.detach(), micro_mask))
            sink.add("critic/vf_loss", dist.all_reduce_sum(total) / (self.sp.size if self.sp else 1))
            sink.add("critic/grad_norm", self.engine.optimizer_step())
        sink.add("critic/lr", self.engine.lr)
        sink.add("perf/critic_peak_memory_gb", dist.peak_memory_gb(self.device))
        self.engine.scheduler_step()
        return sink.means()

    def save_checkpoint(self, folder: Path) -> None:
        with self.engine.full_precision():
            save_model_state(folder, self.model, self.engine, {"shuffle": self.generator}, self.cfg.checkpoint.save_contents,
                             self.tokenizer)

    def load_checkpoint(self, folder: Path) -> None:
        with self.engine.full_precision():
            load_model_state(folder, self.model, self.engine, {"shuffle": self.generator}, self.cfg.checkpoint.load_contents,
                             "critic")
