"""``strategy=megatron``: Megatron-style parallelism on PyTorch's own distributed engine (protocol: ``engines.base``).

The ranks of a role form a data-parallel x tensor-parallel mesh, tensor parallel inner (ranks
0..TP-1 hold one copy of the model split TP ways, as Megatron places them), data parallel outer.
Tensor parallelism is ``engines.tensor_parallel`` (DTensor); the data-parallel ranks sum their
gradients with one all-reduce per parameter before each optimizer step, as Megatron's DDP does.
Every rank of a tensor-parallel group sees the same micro batches; the first returns the outputs.

What differs from megatron-core: the model is the HF module itself (no conversion to mcore
layers, so checkpoints are HF-named and any HF-loadable weights of a supported family work); the
optimizer is torch's AdamW over each rank's slices (``use_distributed_optimizer`` has no effect:
with TP alone every slice is held once per data-parallel rank); the attention kernel is the one
the HF model would use. Pipeline, expert and context parallelism and sequence parallelism are
refused by name until they exist (``rlcamp.config``).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as tdist

from rlcamp.algos.losses import sum_norm_divisor
from rlcamp.batch import Batch
from rlcamp.config.schema import OptimConfig
from rlcamp.engines.base import LogProbs, LossFn, Mesh, MicroBatching, Values
from rlcamp.engines.batching import in_original_order, micro_batches
from rlcamp.engines.local import lr_lambda
from rlcamp.engines.tensor_parallel import parallelize, tp_problems, vocab_parallel_log_probs
from rlcamp.models.forward import critic_forward, decoder_hidden, sequence_inputs
from rlcamp.utils import dist


def _is_dtensor(t) -> bool:
    return hasattr(t, "to_local")


class MegatronEngine:
    """One role's model on this rank, split ``tp`` ways. ``optim`` None: frozen (the reference).
    ``like``: another engine whose mesh this one shares (the reference next to its actor)."""

    def __init__(self, model, *, device: torch.device, tp: int, key: str, compute_dtype: torch.dtype | None = None,
                 remove_padding: bool = False, optim: OptimConfig | None = None, total_steps: int = 1,
                 warmup_steps: int = 0, grad_clip: float = 1.0, like: MegatronEngine | None = None):
        self.model, self.device, self.compute_dtype, self.remove_padding = model, device, compute_dtype, remove_padding
        self.grad_clip = grad_clip
        world = dist.world_size()
        if world % tp:
            raise ValueError(f"{key}={tp} does not divide the role's {world} devices")
        problems = tp_problems(model.config, tp, key) if tp > 1 else []
        if problems:
            raise ValueError("; ".join(problems))
        self.tp, self.dp = tp, world // tp
        self.device_mesh, self.tp_group, self.dp_group = None, None, None
        if like is not None:
            self.device_mesh, self.tp_group, self.dp_group = like.device_mesh, like.tp_group, like.dp_group
        elif world > 1:
            from torch.distributed.device_mesh import init_device_mesh

            self.device_mesh = init_device_mesh(device.type, (self.dp, tp), mesh_dim_names=("dp", "tp"))
            self.tp_group = self.device_mesh.get_group("tp")
            self.dp_group = self.device_mesh.get_group("dp")
        rank = dist.rank()
        self.mesh = Mesh(dp_rank=rank // tp, dp_size=self.dp, dp_group=self.dp_group, tp_size=tp,
                         returns_outputs=rank % tp == 0)
        if tp > 1:
            parallelize(model, self.device_mesh["tp"])
        self.optimizer = self.scheduler = None
        if optim is not None:
            self.params = [p for p in model.parameters() if p.requires_grad]
            # the optimizer steps each rank's slices as plain tensors (views of the DTensors' storage)
            self.locals = [p.to_local().detach() if _is_dtensor(p) else p for p in self.params]
            fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
            self.optimizer = torch.optim.AdamW(self.locals, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                               weight_decay=optim.weight_decay, **fused)
            min_lr = optim.min_lr_ratio or 0.0
            total = optim.total_training_steps if optim.total_training_steps > 0 else total_steps
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer,
                lambda s: lr_lambda(s, warmup_steps, total, optim.warmup_style, min_lr, optim.num_cycles))

    # ------------------------------------------------------------------------------ passes
    def _autocast(self):
        param_dtype = next(self.model.parameters()).dtype
        if self.compute_dtype is None or self.compute_dtype == param_dtype:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def _head(self, head: LogProbs | Values, part: Batch) -> dict:
        inputs = sequence_inputs(part["input_ids"].to(self.device), part["attention_mask"].to(self.device),
                                 part["responses"].to(self.device), part["response_mask"].to(self.device))
        if isinstance(head, Values):  # the value head is whole on every rank: the model's own forward
            return {"values": critic_forward(self.model, inputs, self.remove_padding)}
        hidden, labels, finish = decoder_hidden(self.model, inputs, self.remove_padding)
        weight = self.model.get_output_embeddings().weight
        if self.tp > 1:
            log_probs, entropy = vocab_parallel_log_probs(hidden, weight, labels, head.temperature, head.entropy,
                                                          self.tp_group)
        else:
            from rlcamp.models.head import chunked_log_probs

            log_probs, entropy = chunked_log_probs(hidden, weight, labels, head.temperature, head.entropy)
        return {"log_probs": finish(log_probs), "entropy": finish(entropy) if entropy is not None else None,
                "aux_loss": None}

    def forward(self, batch: Batch, head: LogProbs | Values, micro: MicroBatching) -> Batch:
        was_training = self.model.training
        self.model.eval()
        parts = defaultdict(list)
        with torch.no_grad(), self._autocast():
            for rows, part in micro_batches(batch, micro.dynamic, micro.size, micro.max_tokens):
                for key, value in self._head(head, part).items():
                    if value is not None and key != "aux_loss":
                        parts[key].append((rows, value.cpu()))
        self.model.train(was_training)
        return Batch({key: in_original_order(values, len(batch)) for key, values in parts.items()})

    def _dp_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.dp == 1:
            return x.detach().clone().float()
        return dist.all_reduce_sum(x, self.dp_group)

    def loss_norm(self, mask: torch.Tensor, loss_scale_factor: int, accumulation: int) -> dict:
        """Counts over the data-parallel group; the data-parallel ranks sum (not average) their gradients,
        so seq-mean-token-sum-norm's divisor counts them as verl's Megatron engine does."""
        return {"global_tokens": self._dp_sum(mask.sum()), "global_seqs": self._dp_sum((mask.sum(-1) > 0).sum()),
                "sum_norm": sum_norm_divisor(loss_scale_factor, accumulation, self.dp)}

    def forward_backward(self, mini_batch: Batch, head: LogProbs | Values, loss_fn: LossFn, micro: MicroBatching,
                         *, loss_scale_factor: int, accumulation: int) -> dict:
        norm = self.loss_norm(mini_batch["response_mask"].float(), loss_scale_factor, accumulation)
        parts = micro_batches(mini_batch, micro.dynamic, micro.size, micro.max_tokens)
        reported = torch.zeros((), device=self.device)
        for _, part in parts:
            with self._autocast():
                outputs = self._head(head, part)
            loss, report = loss_fn(outputs, part, norm)
            loss.backward()
            reported = reported + report.detach().to(reported.device)
        return {"loss": self._dp_sum(reported), "micro_batches": len(parts)}

    # --------------------------------------------------------------------------- optimizer
    def optimizer_step(self) -> torch.Tensor:
        """Sum gradients over the data-parallel group, clip by the norm of the whole (unsplit) gradient,
        step (skipped when it is not finite), zero. Returns the norm before clipping."""
        sharded_sq = torch.zeros((), device=self.device)
        whole_sq = torch.zeros((), device=self.device)
        for param, local in zip(self.params, self.locals):
            if param.grad is None:
                local.grad = None
                continue
            grad = param.grad
            if _is_dtensor(grad):
                if grad.placements != param.placements:  # e.g. the embedding's: partial sums, reduced to the slice
                    grad = grad.redistribute(param.device_mesh, param.placements)
                grad = grad.to_local()
            if self.dp > 1:
                tdist.all_reduce(grad, group=self.dp_group)
            local.grad = grad
            if _is_dtensor(param):
                sharded_sq = sharded_sq + grad.float().pow(2).sum()
            else:
                whole_sq = whole_sq + grad.float().pow(2).sum()
        if self.tp > 1:  # each rank holds 1/TP of the split weights' gradient; the rest is alike on all
            tdist.all_reduce(sharded_sq, group=self.tp_group)
        norm = (sharded_sq + whole_sq).sqrt()
        if torch.isfinite(norm):
            scale = self.grad_clip / (norm + 1e-6)
            if scale < 1:
                for local in self.locals:
                    if local.grad is not None:
                        local.grad.mul_(scale)
            self.optimizer.step()
        for param, local in zip(self.params, self.locals):
            param.grad = local.grad = None
        return norm

    def scheduler_step(self) -> None:
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def master(self):
        return None

    def full_precision(self):
        return nullcontext()

    # ----------------------------------------------------------------------------- weights
    def export_weights(self, layered: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor), one tensor gathered at a time (so ``layered`` changes nothing);
        collective: every rank consumes it to the end."""
        with torch.no_grad():
            for name, value in self.model.state_dict().items():
                yield name, value.full_tensor() if _is_dtensor(value) else value

    # ------------------------------------------------------------------------- checkpoints
    def _optimizer_state(self, create: bool) -> dict:
        """The optimizer state by parameter name, split tensors as DTensors of their parameter's layout
        (so a checkpoint loads into another tensor-parallel size). ``create``: zeros where none exist yet."""
        from torch.distributed.tensor import DTensor

        names = {id(p): n for n, p in self.model.named_parameters()}
        out = {}
        for param, local in zip(self.params, self.locals):
            state = self.optimizer.state[local]
            if not state and create:
                fused = self.optimizer.defaults.get("fused")
                state["step"] = torch.zeros((), dtype=torch.float32, device=local.device if fused else "cpu")
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(local), torch.zeros_like(local)
            for key, value in state.items():
                if _is_dtensor(param) and key != "step":
                    value = DTensor.from_local(value, param.device_mesh, param.placements, run_check=False,
                                               shape=param.shape, stride=param.stride())
                out[f"{names[id(param)]}.{key}"] = value
        return out

    def save(self, folder: Path, contents, generators: dict[str, torch.Generator], tokenizer=None) -> None:
        """'model' and 'optimizer': every rank writes its slices (torch.distributed.checkpoint, ``sharded/``),
        readable at another tensor-parallel size; 'hf_model': the full weights as a transformers folder
        (``huggingface/``); 'extra': the LR schedule and each rank's RNG. Collective."""
        import torch.distributed.checkpoint as dcp

        contents, rank = set(contents), dist.rank()
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        if "model" in contents:
            state["model"] = self.model.state_dict()
        if "optimizer" in contents:
            state["optimizer"] = self._optimizer_state(create=True)
        if state:
            dcp.save(state, checkpoint_id=str(folder / "sharded"))
        if "hf_model" in contents:
            weights = dict(self.export_weights())
            if rank == 0:
                self.model.save_pretrained(folder / "huggingface", safe_serialization=True, state_dict=weights)
                if tokenizer is not None:
                    tokenizer.save_pretrained(folder / "huggingface")
        if rank == 0:
            meta = {"world_size": dist.world_size(), "contents": sorted(contents), "engine": "megatron",
                    "tensor_model_parallel_size": self.tp}
            if "extra" in contents:
                meta["scheduler"] = self.scheduler.state_dict()
            torch.save(meta, folder / "state.pt")
        if "extra" in contents:
            torch.save({name: g.get_state() for name, g in generators.items()}, folder / f"rng_rank{rank}.pt")

    def load(self, folder: Path, contents, generators: dict[str, torch.Generator], role: str) -> None:
        import torch.distributed.checkpoint as dcp

        from rlcamp.config.validate import checkpoint_holds

        meta = torch.load(folder / "state.pt", weights_only=False)
        contents, saved = set(contents), set(meta["contents"])
        if meta.get("engine") != "megatron":
            raise RuntimeError(f"{role} checkpoint {folder} was written by the FSDP engine; resume it with "
                               "strategy=fsdp, or start this Megatron run from its huggingface/ folder")
        for part in contents:
            if not checkpoint_holds(part, saved):
                raise RuntimeError(f"{role} checkpoint {folder} holds no '{part}' (it saved {sorted(saved)}); drop "
                                   f"'{part}' from the role's checkpoint.load_contents to resume without it")
        state = {}
        if "model" in contents:
            state["model"] = self.model.state_dict()
        if "optimizer" in contents:
            state["optimizer"] = self._optimizer_state(create=True)
        if state:  # read into this layout's tensors in place, resharded from whatever layout wrote them
            dcp.load(state, checkpoint_id=str(folder / "sharded"))
        if "extra" in contents:
            self.scheduler.load_state_dict(meta["scheduler"])
            rng = folder / f"rng_rank{dist.rank()}.pt"
            if meta["world_size"] == dist.world_size() and rng.exists():
                states = torch.load(rng, weights_only=False)
                for name, g in generators.items():
                    g.set_state(states[name])
            else:
                warnings.warn(f"{role} checkpoint {folder} was written by {meta['world_size']} ranks, this run has "
                              f"{dist.world_size()}: weights and optimizer are resharded, the random generators "
                              "start afresh", stacklevel=2)



def recompute(model, megatron_cfg) -> None:
    """``override_transformer_config.recompute_granularity=full|selective``: activation checkpointing of
    every decoder layer (HF's gradient checkpointing; selective recomputes the same whole layers here)."""
    if megatron_cfg.override_transformer_config.get("recompute_granularity") in ("full", "selective"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
