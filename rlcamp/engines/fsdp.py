"""The FSDP2 (+ Ulysses) training engine: ``actor.strategy=fsdp|fsdp2`` (the protocol: ``engines.base``).

One HF module per rank. With more than one rank (or offload) it is sharded with FSDP2 over all
ranks; with ``ulysses_sequence_parallel_size`` S > 1 consecutive groups of S ranks share each micro
batch (``rlcamp.models.ulysses``) and the data-parallel group of a rank is the ranks holding the
same position in the other Ulysses groups. One process, no offload: a plain module.

The optimizer, LR schedule and mixed precision are ``engines.local.LocalEngine``'s; a frozen engine
(the reference) has none of them and computes in the trained engine's compute dtype.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import torch

from rlcamp.algos.losses import sum_norm_divisor
from rlcamp.batch import Batch
from rlcamp.config.schema import OptimConfig
from rlcamp.engines.base import LogProbs, LossFn, Mesh, MicroBatching, Values
from rlcamp.engines.batching import gather_outputs, micro_batches
from rlcamp.engines.local import LocalEngine
from rlcamp.models import ulysses
from rlcamp.models.families import ties_output_to_embeddings
from rlcamp.models.forward import actor_forward, critic_forward, sequence_inputs
from rlcamp.utils import dist


def prepare(model, model_cfg, forward, key: str) -> bool:
    """Set-up of a model before it is copied (reference, rollout) and sharded: gradient checkpointing,
    no KV cache, the attention function for CPU (``rlcamp.models.cpu_attention``) and the packing
    self-check when ``use_remove_padding`` is on. Returns that flag."""
    from rlcamp.models.cpu_attention import use_on_cpu
    from rlcamp.models.forward import check_packing

    use_on_cpu(model, model_cfg.override_config)
    if model_cfg.enable_gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if model_cfg.use_remove_padding:
        check_packing(model, forward, model.config.vocab_size, key)
    return model_cfg.use_remove_padding


def _shard(model, fsdp_config, device: torch.device) -> None:
    """FSDP2 for a trained model when it is sharded at all (data parallel and/or offload)."""
    from rlcamp.utils.device import collective_backend, to_dtype

    if not dist.needs_sharding(fsdp_config):
        return
    dist.ensure_process_group(collective_backend(device.type))
    dist.shard(model, reduce_dtype=to_dtype(fsdp_config.mixed_precision.reduce_dtype),
               reshard_after_forward=fsdp_config.reshard_after_forward,
               offload=fsdp_config.param_offload or fsdp_config.offload_policy, pin_memory=device.type == "cuda",
               forward_prefetch=fsdp_config.forward_prefetch, min_num_params=fsdp_config.wrap_policy.min_num_params)


def ulysses_mesh(size: int) -> Mesh:
    """The mesh of data parallel x Ulysses ``size`` (collective: every rank calls it, in the same order)."""
    sp = ulysses.setup(size)
    if sp is None:
        return Mesh(dp_rank=dist.rank(), dp_size=dist.world_size())
    group = None
    if sp.dp_size > 1:  # rank r talks to r mod S, r mod S + S, ...
        for position in range(sp.size):
            ranks = list(range(position, dist.world_size(), sp.size))
            created = torch.distributed.new_group(ranks)
            if position == sp.rank:
                group = created
    return Mesh(dp_rank=sp.dp_rank, dp_size=sp.dp_size, dp_group=group, sp=sp, returns_outputs=sp.rank == 0)


class FSDPEngine:
    """One role's model on this rank. ``optim`` None: a frozen engine (forward only)."""

    def __init__(self, model, *, device: torch.device, compute_dtype: torch.dtype | None, remove_padding: bool,
                 mesh: Mesh | None = None, sp_size: int = 1, sp_key: str = "", fsdp_config=None,
                 optim: OptimConfig | None = None, total_steps: int = 1, warmup_steps: int = 0,
                 grad_clip: float = 1.0, chunked_head: bool = False, head_backend: str = "torch",
                 share_prefix: bool = False, compiled: bool = False, offload_between_uses: bool = False):
        self.model, self.device, self.compute_dtype = model, device, compute_dtype
        self.remove_padding, self.chunked_head, self.head_backend = remove_padding, chunked_head, head_backend
        self.share_prefix, self.compiled = share_prefix, compiled
        # a frozen model on an accelerator may wait in host memory between uses (ref.fsdp_config.param_offload)
        self.offload_between_uses = offload_between_uses
        if optim is not None:
            _shard(model, fsdp_config, device)
        self.mesh = mesh if mesh is not None else ulysses_mesh(sp_size)
        if self.mesh.sp is not None:
            ulysses.install(model, self.mesh.sp, sp_key)
        self.optim = None
        if optim is not None:
            self.optim = LocalEngine(model, optim, total_steps=total_steps, warmup_steps=warmup_steps,
                                     grad_clip=grad_clip, compute_dtype=compute_dtype, device=device,
                                     optimizer_offload=fsdp_config.optimizer_offload)

    # ------------------------------------------------------------------------------ passes
    def _autocast(self):
        """Autocast to the compute dtype when the weights are in another (a frozen fp32 reference next
        to a bf16 actor still computes in bf16)."""
        param_dtype = next(self.model.parameters()).dtype
        if self.compute_dtype is None or self.compute_dtype == param_dtype:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def _head(self, head: LogProbs | Values, part: Batch) -> dict[str, torch.Tensor | None]:
        inputs = sequence_inputs(part["input_ids"].to(self.device), part["attention_mask"].to(self.device),
                                 part["responses"].to(self.device), part["response_mask"].to(self.device))
        if isinstance(head, Values):
            return {"values": critic_forward(self.model, inputs, self.remove_padding, self.mesh.sp, self.share_prefix)}
        log_probs, entropy, aux_loss = actor_forward(
            self.model, inputs, head.temperature, head.entropy, self.remove_padding, self.mesh.sp,
            chunked_head=self.chunked_head, share_prefix=self.share_prefix, compiled=self.compiled,
            head_backend=self.head_backend)
        return {"log_probs": log_probs, "entropy": entropy, "aux_loss": aux_loss}

    def forward(self, batch: Batch, head: LogProbs | Values, micro: MicroBatching) -> Batch:
        was_training = self.model.training
        self.model.eval()
        if self.offload_between_uses:
            self.model.to(self.device)
        with torch.no_grad(), self._autocast():
            out = gather_outputs(len(batch), ((rows, self._head(head, part)) for rows, part in
                                              micro_batches(batch, micro.dynamic, micro.size, micro.max_tokens)))
        if self.offload_between_uses:
            self.model.to("cpu")
        self.model.train(was_training)
        return out

    def loss_norm(self, mask: torch.Tensor, loss_scale_factor: int, accumulation: int) -> dict[str, torch.Tensor]:
        """Token and sequence counts of a mini batch over the data-parallel group, and the divisor of
        seq-mean-token-sum-norm (see agg_loss). ``accumulation``: how many micro batches verl would
        accumulate per mini batch (the config's; 1 with token budgets). FSDP averages gradients over
        every rank, so that divisor counts all of them."""
        return {"global_tokens": self._dp_sum(mask.sum()), "global_seqs": self._dp_sum((mask.sum(-1) > 0).sum()),
                "sum_norm": sum_norm_divisor(loss_scale_factor, accumulation, dist.world_size())}

    def forward_backward(self, mini_batch: Batch, head: LogProbs | Values, loss_fn: LossFn, micro: MicroBatching,
                         *, loss_scale_factor: int, accumulation: int) -> dict:
        norm = self.loss_norm(mini_batch["loss_mask"].float(), loss_scale_factor, accumulation)
        parts = micro_batches(mini_batch, micro.dynamic, micro.size, micro.max_tokens)
        reported = torch.zeros((), device=self.device)
        for _, part in parts:
            with self._autocast():
                outputs = self._head(head, part)
            loss, report = loss_fn(outputs, part, norm)
            # divided by the mini batch's global counts; FSDP then averages over ranks (see dist.shard)
            (loss * dist.grad_scale(self.model)).backward()
            reported = reported + report.detach().to(reported.device)
        return {"loss": self._dp_sum(reported), "micro_batches": len(parts)}

    def _dp_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over the data-parallel group (a float copy)."""
        if self.mesh.dp_size == 1:
            return x.detach().clone().float()
        return dist.all_reduce_sum(x, self.mesh.dp_group)

    # --------------------------------------------------------------------------- optimizer
    def optimizer_step(self) -> torch.Tensor:
        return self.optim.optimizer_step()

    def scheduler_step(self) -> None:
        self.optim.scheduler_step()

    def offload(self) -> None:
        """Nothing to do at the end of a use: FSDP2's offload policy keeps the shards on the host
        (fsdp_config.param_offload), the optimizer state goes there after each step (optimizer_offload),
        and a frozen reference is moved back to the host at the end of its own forward."""

    def onload(self) -> None:
        """Nothing to do: FSDP2 gathers its shards for each forward itself."""

    @property
    def lr(self) -> float:
        return self.optim.lr

    @property
    def optimizer(self):
        return self.optim.optimizer

    @property
    def scheduler(self):
        return self.optim.scheduler

    @property
    def master(self):
        """The fp32 master weights when the model computes in a lower dtype on one CPU process."""
        return self.optim.master if self.optim is not None else None

    def full_precision(self):
        return self.optim.full_precision() if self.optim is not None else nullcontext()

    # ----------------------------------------------------------------------------- weights
    def export_weights(self, layered: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) in full precision. Sharded: gathered, the whole state at once or, with
        ``layered`` (``rollout.layered_summon``), one tensor at a time. Collective when sharded: every rank
        must consume it to the end."""
        with torch.no_grad(), self.full_precision():
            if dist.is_sharded(self.model):
                yield from (dist.iter_full_state(self.model) if layered else dist.full_state_dict(self.model).items())
            else:
                yield from self.model.state_dict().items()

    # ------------------------------------------------------------------------- checkpoints
    def save(self, folder: Path, contents, generators: dict[str, torch.Generator], tokenizer=None) -> None:
        """Write the parts named in ``contents`` (``checkpoint.save_contents``).

        Sharded (FSDP2) models: 'model' and 'optimizer' are written by every rank, each its own shards,
        with torch.distributed.checkpoint (folder ``sharded/``): no rank ever holds the full state.
        'hf_model' gathers the full weights to rank 0 and writes a transformers folder (``huggingface/``).
        One process: weights are the transformers folder ('model' or 'hf_model'), the optimizer goes
        into ``state.pt``. 'extra': LR schedule (``state.pt``) and each rank's RNG. Collective."""
        with self.full_precision():
            self._save(folder, set(contents), generators, tokenizer)

    def _save(self, folder: Path, contents: set, generators, tokenizer) -> None:
        model, rank, sharded = self.model, dist.rank(), dist.is_sharded(self.model)
        folder.mkdir(parents=True, exist_ok=True)
        if sharded and contents & {"model", "optimizer"}:
            dist.save_sharded(folder / "sharded", model, self.optimizer, "model" in contents, "optimizer" in contents)
        if "hf_model" in contents or (not sharded and "model" in contents):
            weights = dist.full_state_dict(model, rank0_only=True) if sharded else None
            if rank == 0:
                model.save_pretrained(folder / "huggingface", safe_serialization=True, state_dict=weights)
                if tokenizer is not None:
                    tokenizer.save_pretrained(folder / "huggingface")
        if rank == 0:
            meta = {"world_size": dist.world_size(), "contents": sorted(contents), "sharded": sharded}
            if "extra" in contents:
                meta["scheduler"] = self.scheduler.state_dict()
            if not sharded and "optimizer" in contents:
                meta["optimizer"] = self.optimizer.state_dict()
            torch.save(meta, folder / "state.pt")
        if "extra" in contents:
            torch.save({name: g.get_state() for name, g in generators.items()}, folder / f"rng_rank{rank}.pt")

    def load(self, folder: Path, contents, generators: dict[str, torch.Generator], role: str) -> None:
        """Load the parts named in ``contents`` (``checkpoint.load_contents``) back; see ``save``."""
        with self.full_precision():
            self._load(folder, set(contents), generators, role)

    def _load(self, folder: Path, contents: set, generators, role: str) -> None:
        from rlcamp.config.validate import checkpoint_holds

        model = self.model
        state = torch.load(folder / "state.pt", weights_only=False)
        saved, sharded = set(state["contents"]), dist.is_sharded(model)
        if state["world_size"] != dist.world_size():
            raise RuntimeError(f"{role} checkpoint {folder} was written by {state['world_size']} ranks, this run has "
                               f"{dist.world_size()}; resume with the same trainer.nnodes x trainer.n_gpus_per_node")
        for part in contents:
            if not checkpoint_holds(part, saved):
                key = {"actor": "actor_rollout_ref.actor"}.get(role, role)
                raise RuntimeError(f"{role} checkpoint {folder} holds no '{part}' (it saved {sorted(saved)}); drop "
                                   f"'{part}' from {key}.checkpoint.load_contents to resume without it")
        if state["sharded"] != sharded:
            raise RuntimeError(f"{role} checkpoint {folder} was written {'with' if state['sharded'] else 'without'} "
                               f"FSDP sharding, this {role} is {'' if sharded else 'not '}sharded; resume with the "
                               "same trainer devices and fsdp_config offload settings")
        if sharded and contents & {"model", "optimizer"} & saved:
            dist.load_sharded(folder / "sharded", model, self.optimizer, "model" in contents and "model" in saved,
                              "optimizer" in contents)
        if "model" in contents and not (sharded and "model" in saved):
            _load_hf_weights(folder, model, role)
        if "optimizer" in contents and not sharded:
            self.optimizer.load_state_dict(state["optimizer"])
        if "extra" in contents:
            self.scheduler.load_state_dict(state["scheduler"])
            states = torch.load(folder / f"rng_rank{dist.rank()}.pt", weights_only=False)
            for name, g in generators.items():
                g.set_state(states[name])


def _load_hf_weights(folder: Path, model, role: str) -> None:
    from safetensors.torch import load_file

    weights = {}
    for file in sorted((folder / "huggingface").glob("*.safetensors")):
        weights.update(load_file(file))
    # a tied output layer is saved once (as the embedding); only models with an lm_head have one
    tied = {"lm_head.weight"} if ties_output_to_embeddings(model) else set()
    if dist.is_sharded(model):
        if "lm_head.weight" in tied and "lm_head.weight" not in weights:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        dist.load_full_state_dict(model, weights)
        return
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"{role} checkpoint {folder} does not match the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
