"""``strategy=megatron``: Megatron-style parallelism on PyTorch's own distributed engine (protocol: ``engines.base``).

The ranks of a role form a pipeline x data-parallel x tensor-parallel mesh in Megatron's order
(tensor parallel inner, then data, then pipeline): ranks 0..TP-1 hold one copy of a stage split TP
ways. Tensor parallelism is ``engines.tensor_parallel`` (DTensor), pipeline parallelism
``engines.pipeline`` (``torch.distributed.pipelining``); the data-parallel ranks sum their gradients
with one all-reduce per parameter before each optimizer step, as Megatron's DDP does. Every rank of
a tensor- and pipeline-parallel group sees the same micro batches; tensor-parallel rank 0 of the
last stage returns the outputs.

What differs from megatron-core: the model is the HF module itself (no conversion to mcore
layers, so checkpoints are HF-named and any HF-loadable weights of a supported family work); the
optimizer is torch's AdamW over each rank's slices (with ``use_distributed_optimizer`` each rank of the
data x context-parallel group keeps and steps 1/G of every non-expert slice, ``_ShardedSteps``; the weights
and gradients stay whole per rank unless megatron-core's FSDP switch splits the decoder layers over the
data-parallel ranks with FSDP2, ``shards_layers``); the attention kernel is the one the HF model
would use. Expert parallelism (``engines.experts``) splits MoE layers' experts over an expert group of
a stage's ranks. Context parallelism (``context_parallel_size``) splits the sequence: each rank runs its
columns, attention gathers K and V whole in one collective (``models.ulysses``).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as tdist

from rlcamp.algos.losses import sum_norm_divisor
from rlcamp.batch import Batch
from rlcamp.config.schema import OptimConfig
from rlcamp.engines.base import LogProbs, LossFn, Mesh, MicroBatching, Values
from rlcamp.engines.batching import gather_outputs, micro_batches
from rlcamp.engines.local import place_optimizer_state
from rlcamp.engines.schedule import lr_schedule
from rlcamp.engines.tensor_parallel import (
    parallelize,
    tp_problems,
    vocab_parallel_log_probs,
)
from rlcamp.models.forward import critic_forward, decoder_hidden, sequence_inputs
from rlcamp.utils import dist


def _is_dtensor(t) -> bool:
    return hasattr(t, "to_local")


class MegatronEngine:
    """One role's model on this rank, split ``tp`` ways. ``optim`` None: frozen (the reference).
    ``like``: another engine whose mesh this one shares (the reference next to its actor)."""

    def __init__(self, model, *, device: torch.device, tp: int, key: str, compute_dtype: torch.dtype | None = None,
                 remove_padding: bool = False, optim: OptimConfig | None = None, total_steps: int = 1,
                 warmup_steps: int = 0, grad_clip: float = 1.0, like: MegatronEngine | None = None, pp: int = 1,
                 vpp: int = 1, layers_first: int | None = None, layers_last: int | None = None,
                 schedule: str = "1f1b", pp_key: str = "pipeline_model_parallel_size",
                 dist_checkpoint: str | None = None, ep: int = 1, ep_key: str = "expert_model_parallel_size",
                 etp: int | None = None, sequence_parallel: bool = False, cp: int = 1,
                 cp_key: str = "context_parallel_size", param_offload: bool = False, optimizer_offload: bool = False,
                 distributed_optimizer: bool = False, fsdp: bool = False, fsdp_key: str = "override_ddp_config"):
        self.model, self.device, self.compute_dtype, self.remove_padding = model, device, compute_dtype, remove_padding
        self.grad_clip = grad_clip
        world = dist.world_size()
        if world % (tp * pp * cp):
            raise ValueError(f"{key}={tp} x {pp_key}={pp} x {cp_key}={cp} does not divide the role's {world} devices")
        from rlcamp.engines.experts import ep_problems, expert_group, expert_modules

        self.tp, self.pp, self.cp, self.dp = tp, pp, cp, world // (tp * pp * cp)
        moe = bool(expert_modules(model))
        problems = tp_problems(model.config, tp, key) if tp > 1 else []
        if cp > 1 and pp > 1:
            problems.append(f"{cp_key}={cp} needs {pp_key}=1 (context parallelism runs with one pipeline stage so far)")
        if cp > 1 and moe:
            problems.append(f"{cp_key}={cp}: rlcamp's context parallelism covers dense models so far (this "
                            f"{model.config.model_type} model has experts); set it to 1 and split by "
                            "expert_model_parallel_size / tensor_model_parallel_size")
        # the experts' own split (expert x expert-tensor parallel) over a stage's tensor x data-parallel ranks
        self.ep = expert_group(tp, ep, etp) if moe else 1
        if ep > 1 or self.ep > 1:
            problems += ep_problems(model.config, self.ep, self.dp * tp,
                                    f"{ep_key}={ep} x expert_tensor_parallel_size={tp if etp is None else etp}")
        if fsdp and (pp > 1 or cp > 1 or moe):
            problems.append(f"{fsdp_key}: sharding the decoder layers over the data-parallel ranks (FSDP2) runs with "
                            "one pipeline stage, no context parallelism and a dense model so far; use "
                            "use_distributed_optimizer=True (the optimizer state split) for those layouts")
        if problems:
            raise ValueError("; ".join(problems))
        self.device_mesh = self.tp_group = self.dp_group = self.pp_group = None
        self.ep_mesh = self.ep_group = self.edp_group = None
        self.cp_group = self.grad_group = None
        if like is not None:
            self.device_mesh, self.tp_group, self.dp_group, self.pp_group = (like.device_mesh, like.tp_group,
                                                                             like.dp_group, like.pp_group)
            self.ep_mesh, self.ep_group, self.edp_group = like.ep_mesh, like.ep_group, like.edp_group
            self.cp_group, self.grad_group = like.cp_group, like.grad_group
        elif world > 1:  # Megatron's rank order: tensor parallel inner, then context, then data, then pipeline
            from torch.distributed.device_mesh import init_device_mesh

            self.device_mesh = init_device_mesh(device.type, (pp, self.dp, cp, tp),
                                                mesh_dim_names=("pp", "dp", "cp", "tp"))
            self.tp_group, self.dp_group, self.pp_group, self.cp_group = (
                self.device_mesh.get_group(d) for d in ("tp", "dp", "pp", "cp"))
            # gradients are summed over the data- and context-parallel ranks together (each context-parallel
            # rank holds its columns' share of its data-parallel part's gradient)
            self.grad_group = self.dp_group if cp == 1 else init_device_mesh(
                device.type, (pp, self.dp * cp, tp), mesh_dim_names=("pp", "dpcp", "tp")).get_group("dpcp")
            if self.ep > 1:  # the expert group: consecutive ranks of a stage, tensor parallel inner (Megatron's order)
                self.ep_mesh = init_device_mesh(device.type, (pp, self.dp * tp // self.ep, self.ep),
                                                mesh_dim_names=("pp", "edp", "ep"))
                self.ep_group, self.edp_group = self.ep_mesh.get_group("ep"), self.ep_mesh.get_group("edp")
        rank = dist.rank()
        self.pp_rank = rank // (tp * cp * self.dp)
        self.mesh = Mesh(dp_rank=(rank // (tp * cp)) % self.dp, dp_size=self.dp, dp_group=self.dp_group, tp_size=tp,
                         pp_size=pp, ep_size=self.ep, cp_size=cp,
                         returns_outputs=rank % (tp * cp) == 0 and self.pp_rank == pp - 1)
        # context parallelism: each rank runs its 1/CP of the columns; attention gathers K and V whole
        self.cp_place = None
        if cp > 1:
            from rlcamp.models.ulysses import SequenceParallel, install_context_parallel

            self.cp_place = SequenceParallel(self.cp_group, cp, (rank // tp) % cp, self.mesh.dp_rank, self.dp,
                                             balanced=True)
            install_context_parallel(model)
        # MoE models: the router's load-balancing loss, as the HF model computes it (None when it has none)
        self.aux_loss = _aux_loss_fn(model) if moe else None
        # sequence parallelism between TP regions, with one stage (its boundary would cut the sequence); the
        # sequence is padded to a multiple of TP so that every rank holds an equal part
        self.sp_multiple = tp if (sequence_parallel and tp > 1 and pp == 1 and cp == 1 and not moe) else 1
        if tp > 1:
            parallelize(model, self.device_mesh["tp"], sequence_parallel=self.sp_multiple > 1)
        self.expert_params: set[int] = set()
        if self.ep > 1:
            from rlcamp.engines.experts import parallelize_experts

            self.expert_params = {id(p) for p in parallelize_experts(model, self.ep_mesh["ep"],
                                                                     self.tp_group if tp > 1 else None)}
        # FSDP2 over the data-parallel dimension (as torchtitan composes it with TP): each decoder layer's weights,
        # gradients and optimizer state are split over the DP ranks and gathered layer by layer for compute; the
        # embedding, final norm and head stay whole per DP rank (their gradients all-reduced as without it)
        self.fsdp_params: set[int] = set()
        if fsdp and self.dp > 1:
            from torch.distributed.fsdp import fully_shard

            from rlcamp.models.families import decoder_layers

            for layer in decoder_layers(model):
                fully_shard(layer, mesh=self.device_mesh["dp"], reshard_after_forward=True)
                self.fsdp_params |= {id(p) for p in layer.parameters()}
        if param_offload:  # before any view of the weights is taken (the optimizer's slices, a stage's names)
            from rlcamp.engines.offload import own_storage

            own_storage(model)
        # parameter names (tied weights under their first name), before any stage drops modules
        self.param_names = {id(p): n for n, p in model.named_parameters()}
        self.pipeline, self.tied = None, None
        if pp > 1:
            self._split(vpp, layers_first, layers_last, schedule, pp_key, trains=optim is not None)
        if dist_checkpoint is not None:
            self._dist_checkpoint(Path(dist_checkpoint), key.rsplit(".megatron.", 1)[0])
        self.optimizer = self.scheduler = None
        if optim is not None:
            modules = self.pipeline.chunks if self.pipeline is not None else [model]
            self.params = list({id(p): p for m in modules for p in m.parameters() if p.requires_grad}.values())
            # the optimizer steps each rank's slices as plain tensors (views of the DTensors' storage)
            self.locals = [p.to_local().detach() if _is_dtensor(p) else p for p in self.params]
            # use_distributed_optimizer: each rank of the gradient group steps (and keeps the state of) 1/G of
            # every non-expert tensor, flattened, and the updated parts are all-gathered after the step
            self.zero = None
            if distributed_optimizer and self.grad_group is not None and \
                    tdist.get_world_size(self.grad_group) > 1:
                whole = self.expert_params | self.fsdp_params
                self.zero = _ShardedSteps(self.locals, [id(p) in whole for p in self.params], self.grad_group)
            fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
            stepped = self.zero.stepped if self.zero is not None else self.locals
            self.optimizer = torch.optim.AdamW(stepped, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                               weight_decay=optim.weight_decay, **fused)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                               lr_schedule(optim, warmup_steps, total_steps))
        # param_offload: the weights wait in host memory between uses (the worker calls offload() after each);
        # optimizer_offload: the optimizer state waits there between steps
        self.host = None
        if param_offload:
            from rlcamp.engines.offload import HostOffload, local_tensors

            self.host = HostOffload(local_tensors(model), device)
        self.optimizer_offload = optimizer_offload and self.optimizer is not None

    # ----------------------------------------------------------------------------- offload
    def offload(self) -> None:
        """End of a use: with param_offload the weights go to host memory until the next call needs them."""
        if self.host is not None:
            self.host.offload()

    def onload(self) -> None:
        """The weights on the device again (every method calls it; also for a rollout that decodes on them)."""
        if self.host is not None:
            self.host.onload()

    def _place_optimizer_state(self, to_host: bool) -> None:
        if self.optimizer_offload:
            place_optimizer_state(self.optimizer, to_host)

    def _split(self, vpp: int, first: int | None, last: int | None, schedule: str, key: str, trains: bool) -> None:
        """Keep this rank's pipeline stages of the model (``engines.pipeline``) and drop the other layers.
        Checkpoints and exports stay by HF name: each name belongs to the stage that holds it."""
        import re

        from rlcamp.engines.pipeline import Pipeline, layer_bounds

        model, pp = self.model, self.pp
        decoder = model.get_decoder()
        prefix = next(n for n, m in model.named_modules() if m is decoder)
        stages = pp * vpp
        bounds = layer_bounds(len(decoder.layers), stages, first, last, key)
        head = _head_module(model)
        embed = decoder.embed_tokens
        tied = head is not None and getattr(head, "weight", None) is embed.weight
        state = model.state_dict(keep_vars=True)
        layer = re.compile(re.escape(prefix) + r"\.layers\.(\d+)\.")

        def stage_of(name: str) -> int:
            if name.startswith(f"{prefix}.embed_tokens."):
                return 0
            if m := layer.match(name):
                return next(s for s, (a, b) in enumerate(bounds) if a <= int(m.group(1)) < b)
            return stages - 1  # the final norm, the head, the rotary tables

        self.key_owner = {name: stage_of(name) % pp for name in state}
        self.key_meta = {name: (tuple(v.shape), v.dtype) for name, v in state.items()}
        self.owned = {name: v.detach() for name, v in state.items() if self.key_owner[name] == self.pp_rank}
        router = None
        if self.aux_loss is not None:
            router = (model.config.num_experts_per_tok, model.config.num_experts)
        self.pipeline = Pipeline(model, pp_rank=self.pp_rank, pp=pp, vpp=vpp, group=self.pp_group, device=self.device,
                                 bounds=bounds, head=head, schedule=schedule, router=router)
        keep = [i for s in self.pipeline.stage_ids for i in range(*bounds[s])]
        decoder.layers = torch.nn.ModuleList([decoder.layers[i] for i in keep])
        if not self.pipeline.holds_first:
            decoder.embed_tokens = None
        if not self.pipeline.holds_last:
            _drop_head(model)
        if tied and trains:  # the first and last stages hold one weight twice: their gradients are summed
            self.tied = embed.weight if (self.pipeline.holds_first or self.pipeline.holds_last) else None
            self.tied_group = None
            for dp in range(self.dp):  # every rank creates every pair's group, in one order
                for tp in range(self.tp):
                    ranks = [s * self.dp * self.tp + dp * self.tp + tp for s in (0, pp - 1)]
                    group = tdist.new_group(ranks)
                    if dist.rank() in ranks:
                        self.tied_group = group

    def _dist_checkpoint(self, root: Path, role: str) -> None:
        """``use_dist_checkpointing``: the initial weights come from rlcamp's sharded checkpoint under ``root``
        (``<root>/rlcamp-<model class>/``, HF names, readable at any layout); on first use it is written
        there from the weights loaded from the HF folder, so later starts read it. Collective."""
        import json

        import torch.distributed.checkpoint as dcp

        folder = root / f"rlcamp-{type(self.model).__name__}"
        marker = folder / "rlcamp.json"
        if marker.exists():
            dcp.load({"model": self._model_state()}, checkpoint_id=str(folder / "sharded"))
            return
        mcore = ("metadata.json", "common.pt", "latest_checkpointed_iteration.txt")
        if root.is_dir() and any((root / name).exists() for name in mcore):
            raise RuntimeError(f"{role}.megatron.dist_checkpointing_path={root} holds a megatron-core checkpoint "
                               "(mcore names); rlcamp's Megatron engine trains the HF modules and keeps its own "
                               "HF-named checkpoint there: point the key at another folder (rlcamp writes it from "
                               f"{role}'s model.path on first use) or set use_dist_checkpointing=False")
        dcp.save({"model": self._model_state()}, checkpoint_id=str(folder / "sharded"))
        if dist.rank() == 0:
            marker.write_text(json.dumps({"source": getattr(self.model.config, "_name_or_path", None),
                                          "model_class": type(self.model).__name__, "format":
                                          "torch.distributed.checkpoint of the HF state dict (rlcamp)",
                                          "written_at": {"tensor_model_parallel_size": self.tp,
                                                         "pipeline_model_parallel_size": self.pp}}, indent=1))
        if dist.world_size() > 1:
            tdist.barrier()

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
            return {"values": critic_forward(self.model, inputs, self.remove_padding, sp=self.cp_place,
                                             multiple_of=self.sp_multiple)}
        if self.cp_place is not None:
            return self._context_parallel_head(head, inputs)
        record = {} if self.aux_loss is not None else None
        hidden, labels, finish = decoder_hidden(self.model, inputs, self.remove_padding, record=record,
                                                multiple_of=self.sp_multiple)
        log_probs, entropy = self._log_probs(hidden, labels, head)
        aux = None
        if record is not None:
            aux = self.aux_loss(record["router_logits"], None if self.remove_padding else inputs.attention_mask)
        return {"log_probs": finish(log_probs), "entropy": finish(entropy) if entropy is not None else None,
                "aux_loss": aux}

    def _context_parallel_head(self, head: LogProbs, inputs) -> dict:
        """Log-probs (and entropy) with the sequence split over the context-parallel group: the decoder on this
        rank's columns, the head on the hidden states of those that predict response tokens, the outputs
        gathered whole (``models.ulysses.sharded_forward``: its backward keeps each rank's own columns)."""
        from rlcamp.models.forward import sp_layout
        from rlcamp.models.ulysses import sharded_forward

        input_ids, position_ids, segments, keep, finish = sp_layout(inputs, self.remove_padding)

        def on_columns(out, local_keep, global_keep):
            hidden = out.last_hidden_state[:, local_keep]
            log_probs, entropy = self._log_probs(hidden.reshape(-1, hidden.shape[-1]),
                                                 input_ids[:, global_keep + 1].reshape(-1), head)
            both = [log_probs, entropy] if entropy is not None else [log_probs]
            return torch.stack(both, -1).view(*hidden.shape[:2], len(both))

        values, _ = sharded_forward(self.model.get_decoder(), self.cp_place, input_ids, position_ids, segments, keep,
                                    on_columns)
        return {"log_probs": finish(values[..., 0]), "entropy": finish(values[..., 1]) if head.entropy else None,
                "aux_loss": None}

    def _log_probs(self, hidden: torch.Tensor, labels: torch.Tensor, head: LogProbs):
        weight = (self.model.get_output_embeddings() if self.pipeline is None else self.pipeline.head).weight
        if self.tp > 1:
            return vocab_parallel_log_probs(hidden, weight, labels, head.temperature, head.entropy, self.tp_group)
        from rlcamp.models.head import chunked_log_probs

        return chunked_log_probs(hidden, weight, labels, head.temperature, head.entropy)

    def _stage_head(self, head: LogProbs | Values):
        """(what the last pipeline stage computes from hidden states and labels [n, k], and how [rows, r, k]
        outputs read back as the head's outputs)."""
        if isinstance(head, Values):
            module, dropout = self.pipeline.head, getattr(self.model, "dropout", None)
            fn = lambda h, labels: module(dropout(h) if dropout is not None else h).float()[:, :1]  # noqa: E731
            return fn, 1, lambda out: {"values": out[..., 0]}

        def fn(h, labels):
            log_probs, entropy = self._log_probs(h, labels, head)
            return torch.stack([log_probs, entropy], -1) if entropy is not None else log_probs[:, None]

        def read(out):
            return {"log_probs": out[..., 0], "entropy": out[..., 1] if head.entropy else None, "aux_loss": None}

        return fn, 2 if head.entropy else 1, read

    def forward(self, batch: Batch, head: LogProbs | Values, micro: MicroBatching) -> Batch:
        self.onload()
        if self.pipeline is not None:
            return self._pipeline_forward(batch, head, micro)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self._autocast():
            out = gather_outputs(len(batch), ((rows, self._head(head, part)) for rows, part in
                                              micro_batches(batch, micro.dynamic, micro.size, micro.max_tokens)))
        self.model.train(was_training)
        return out

    def _pipeline_forward(self, batch: Batch, head: LogProbs | Values, micro: MicroBatching) -> Batch:
        """The last stage's outputs in batch order (zeros on the other stages, whose results are not kept)."""
        fn, k, read = self._stage_head(head)
        parts = micro_batches(batch, micro.dynamic, micro.size, micro.max_tokens)
        was_training = self.model.training
        self.model.eval()
        with self._autocast():
            outs = self.pipeline.run(batch, parts, fn, k, self.remove_padding)
        self.model.train(was_training)
        if not self.pipeline.holds_last:  # placeholders of the outputs' shapes: dispatch keeps the last stage's
            zeros = torch.zeros((len(batch), batch["responses"].shape[1], k))
            return gather_outputs(len(batch), [(list(range(len(batch))), read(zeros))])
        return gather_outputs(len(batch), ((parts[i][0], read(out[:len(parts[i][0])])) for i, out in outs.items()))

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
        self.onload()
        norm = self.loss_norm(mini_batch["loss_mask"].float(), loss_scale_factor, accumulation)
        parts = micro_batches(mini_batch, micro.dynamic, micro.size, micro.max_tokens)
        reported = torch.zeros((), device=self.device)
        if self.pipeline is not None:
            fn, k, read = self._stage_head(head)
            reports = []

            def stage_loss(out, i):
                rows, part = parts[i]
                out, aux = out if isinstance(out, tuple) else (out, None)
                outputs = read(out[:len(rows)])
                if aux is not None:
                    outputs["aux_loss"] = aux[0]
                loss, report = loss_fn(outputs, part, norm)
                reports.append(report.detach().to(reported.device))
                return loss

            with self._autocast():
                self.pipeline.run(mini_batch, parts, fn, k, self.remove_padding, loss_fn=stage_loss)
            reported = reported + sum(reports) if reports else reported
            return {"loss": self._dp_sum(reported), "micro_batches": len(parts)}
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
        self.onload()
        sharded_sq = torch.zeros((), device=self.device)
        whole_sq = torch.zeros((), device=self.device)
        expert_sq = torch.zeros((), device=self.device)
        fsdp_sq = torch.zeros(2, device=self.device)  # FSDP-split layers: [TP-split, whole over TP], 1/DP each
        for param, local in zip(self.params, self.locals):
            if param.grad is None and param is not self.tied:
                local.grad = None
                continue
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            if _is_dtensor(grad):
                if grad.placements != param.placements:  # e.g. the embedding's: partial sums, reduced to the slice
                    grad = grad.redistribute(param.device_mesh, param.placements)
                grad = grad.to_local()
            if id(param) in self.fsdp_params:  # reduce-scattered by FSDP2, which averages: the engine sums
                local.grad = grad.mul_(self.dp)
                fsdp_sq[int(not (len(param.placements) > 1 and param.placements[1].is_shard()))] += \
                    grad.float().pow(2).sum()
                continue
            expert = id(param) in self.expert_params
            if expert and self.dp * self.tp // self.ep > 1:  # the ranks that hold the same experts
                tdist.all_reduce(grad, group=self.edp_group)
            elif not expert and self.dp * self.cp > 1:
                tdist.all_reduce(grad, group=self.grad_group)
            local.grad = grad
            if param is self.tied:
                tdist.all_reduce(grad, group=self.tied_group)
                if not self.pipeline.holds_first:  # counted once, on the first stage
                    continue
            if expert:
                expert_sq = expert_sq + grad.float().pow(2).sum()
            elif _is_dtensor(param) and any(p.is_shard() for p in param.placements):
                sharded_sq = sharded_sq + grad.float().pow(2).sum()
            else:
                whole_sq = whole_sq + grad.float().pow(2).sum()
        if self.fsdp_params:  # each data-parallel rank holds 1/DP of the layers' gradient
            tdist.all_reduce(fsdp_sq, group=self.dp_group)
            sharded_sq, whole_sq = sharded_sq + fsdp_sq[0], whole_sq + fsdp_sq[1]
        if self.tp > 1:  # each rank holds 1/TP of the split weights' gradient; the rest is alike on all
            tdist.all_reduce(sharded_sq, group=self.tp_group)
        if self.ep > 1:  # each rank holds 1/EP of the experts
            tdist.all_reduce(expert_sq, group=self.ep_group)
        total = sharded_sq + whole_sq + expert_sq
        if self.pp > 1:  # each stage holds its own layers
            tdist.all_reduce(total, group=self.pp_group)
        norm = total.sqrt()
        if torch.isfinite(norm):
            scale = self.grad_clip / (norm + 1e-6)
            if scale < 1:
                for local in self.locals:
                    if local.grad is not None:
                        local.grad.mul_(scale)
            self._place_optimizer_state(to_host=False)
            if self.zero is not None:
                self.zero.point_grads()
            self.optimizer.step()
            if self.zero is not None:
                self.zero.gather()
            self._place_optimizer_state(to_host=True)  # it waits in host memory until the next step
        for param, local in zip(self.params, self.locals):
            param.grad = local.grad = None
        if self.zero is not None:
            self.zero.drop_grads()
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
        self.onload()
        with torch.no_grad():
            if self.pipeline is None:
                for name, value in self.model.state_dict().items():
                    yield name, value.full_tensor() if _is_dtensor(value) else value
                return
            for name, (shape, dtype) in self.key_meta.items():  # each from the stage that holds it
                owner = self.key_owner[name]
                if owner == self.pp_rank:
                    value = self.owned[name]
                    value = (value.full_tensor() if _is_dtensor(value) else value).contiguous()
                else:
                    value = torch.empty(shape, dtype=dtype, device=self.device)
                tdist.broadcast(value, group=self.pp_group, group_src=owner)
                yield name, value

    def _model_state(self) -> dict:
        """This rank's weights by HF name (its stages' under pipeline parallelism)."""
        return self.model.state_dict() if self.pipeline is None else dict(self.owned)

    # ------------------------------------------------------------------------- checkpoints
    def _optimizer_state(self, create: bool) -> dict:
        """The optimizer state by parameter name, split tensors as DTensors of their parameter's layout
        (so a checkpoint loads into another tensor-parallel size). ``create``: zeros where none exist yet."""
        from torch.distributed.tensor import DTensor

        names = self.param_names
        out = {}
        stepped = self.zero.stepped if self.zero is not None else self.locals
        self.gathered_state = []  # (this rank's state, key, whole tensor, index): loaded wholes go back to parts
        for i, (param, local, mine) in enumerate(zip(self.params, self.locals, stepped)):
            state = self.optimizer.state[mine]
            if not state and create:
                fused = self.optimizer.defaults.get("fused")
                state["step"] = torch.zeros((), dtype=torch.float32, device=local.device if fused else "cpu")
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(mine), torch.zeros_like(mine)
            if self.zero is not None and self.zero.parts[i] is not None:  # checkpoints hold whole tensors
                wholes = {k: v if k == "step" else self.zero.whole(i, v) for k, v in state.items()}
                self.gathered_state += [(state, k, v, i) for k, v in wholes.items() if k != "step"]
                state = wholes
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
        self.onload()
        self._place_optimizer_state(to_host=False)  # the checkpoint's DTensors live on the mesh's device
        state = {}
        if "model" in contents:
            state["model"] = self._model_state()
        if "optimizer" in contents:
            state["optimizer"] = self._optimizer_state(create=True)
        if state:
            dcp.save(state, checkpoint_id=str(folder / "sharded"))
        self._place_optimizer_state(to_host=True)
        if "hf_model" in contents:
            weights = dict(self.export_weights())
            if rank == 0:
                self.model.save_pretrained(folder / "huggingface", safe_serialization=True, state_dict=weights)
                if tokenizer is not None:
                    tokenizer.save_pretrained(folder / "huggingface")
        if rank == 0:
            meta = {"world_size": dist.world_size(), "contents": sorted(contents), "engine": "megatron",
                    "tensor_model_parallel_size": self.tp, "pipeline_model_parallel_size": self.pp}
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
        self.onload()
        self._place_optimizer_state(to_host=False)
        state = {}
        if "model" in contents:
            state["model"] = self._model_state()
        if "optimizer" in contents:
            state["optimizer"] = self._optimizer_state(create=True)
        if state:  # read into this layout's tensors in place, resharded from whatever layout wrote them
            dcp.load(state, checkpoint_id=str(folder / "sharded"))
        if "optimizer" in contents and self.zero is not None:  # this rank keeps its part of each whole
            for mine, key, whole, i in self.gathered_state:
                mine[key].copy_(self.zero.part(i, whole))
        self._place_optimizer_state(to_host=True)
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


class _ShardedSteps:
    """``use_distributed_optimizer``: the optimizer state of every non-expert tensor split over the gradient
    group (data x context parallel ranks, which hold the same tensors and, after the all-reduce, the same
    gradients), as Megatron's distributed optimizer does. Rank r of G steps elements [r*c, (r+1)*c) of each
    flattened tensor (c = ceil(n / G)); the updated parts are all-gathered in one collective after the step.
    Expert tensors (summed over another group) and FSDP-split layers (each rank holds its own part already)
    are stepped whole. Optimizer memory per rank: 1/G."""

    def __init__(self, locals_: list[torch.Tensor], whole: list[bool], group):
        self.group = group
        self.size, rank = tdist.get_world_size(group), tdist.get_rank(group)
        self.parts: list[tuple[torch.Tensor, int] | None] = []  # (whole tensor, chunk) or None: stepped whole
        self.stepped: list[torch.Tensor] = []
        for local, stepped_whole in zip(locals_, whole):
            if stepped_whole or not local.is_contiguous():
                self.parts.append(None)
                self.stepped.append(local)
                continue
            n = local.numel()
            chunk = -(-n // self.size)
            start = min(rank * chunk, n)
            self.parts.append((local, chunk))
            self.stepped.append(local.detach().view(-1)[start:min(start + chunk, n)])  # a leaf view of the storage

    def _bounds(self, i: int, rank: int) -> tuple[int, int]:
        local, chunk = self.parts[i]
        start = min(rank * chunk, local.numel())
        return start, min(start + chunk, local.numel())

    def part(self, i: int, whole: torch.Tensor) -> torch.Tensor:
        start, end = self._bounds(i, tdist.get_rank(self.group))
        return whole.reshape(-1)[start:end]

    def point_grads(self) -> None:
        for i, mine in enumerate(self.stepped):
            if self.parts[i] is not None:
                local = self.parts[i][0]
                mine.grad = None if local.grad is None else self.part(i, local.grad)

    def drop_grads(self) -> None:
        for i, mine in enumerate(self.stepped):
            if self.parts[i] is not None:
                mine.grad = None

    def _all_gather(self, items: list[tuple[int, torch.Tensor]]) -> list[list[torch.Tensor]]:
        """For each (index, this rank's part), every rank's part, in one all-gather per dtype."""
        out: list[list[torch.Tensor]] = [[] for _ in items]
        by_dtype: dict[torch.dtype, list[int]] = {}
        for k, (_, value) in enumerate(items):
            by_dtype.setdefault(value.dtype, []).append(k)
        for ks in by_dtype.values():
            chunks = [self.parts[items[k][0]][1] for k in ks]
            mine = torch.cat([torch.nn.functional.pad(items[k][1].reshape(-1), (0, c - items[k][1].numel()))
                              for k, c in zip(ks, chunks)])
            gathered = [torch.empty_like(mine) for _ in range(self.size)]
            tdist.all_gather(gathered, mine, group=self.group)
            offset = 0
            for k, c in zip(ks, chunks):
                i = items[k][0]
                for rank, flat in enumerate(gathered):
                    start, end = self._bounds(i, rank)
                    out[k].append(flat[offset:offset + end - start])
                offset += c
        return out

    @torch.no_grad()
    def gather(self) -> None:
        """Every rank's updated parts into the whole tensors (after the step)."""
        items = [(i, mine) for i, mine in enumerate(self.stepped) if self.parts[i] is not None]
        for (i, _), parts in zip(items, self._all_gather(items)):
            self.parts[i][0].view(-1).copy_(torch.cat(parts))

    @torch.no_grad()
    def whole(self, i: int, value: torch.Tensor) -> torch.Tensor:
        """A tensor of this rank's part's shape (its optimizer state) gathered to the whole tensor's shape."""
        (parts,) = self._all_gather([(i, value)])
        return torch.cat(parts).view(self.parts[i][0].shape)


def _aux_loss_fn(model):
    """(router logits per layer, attention mask or None) -> the model's load-balancing loss, as the HF
    modeling module's ``load_balancing_loss_func`` computes it (``experts.router_sums``: the same running
    sums, which pipeline stages carry to the last); None for a model whose forward computes none."""
    import sys

    from rlcamp.engines.experts import router_loss, router_sums

    if not hasattr(sys.modules[type(model).__module__], "load_balancing_loss_func") or \
            not getattr(model.config, "output_router_logits", False):
        return None
    experts, top_k = model.config.num_experts, model.config.num_experts_per_tok
    return lambda logits, mask: router_loss(router_sums(logits, top_k, experts, mask), experts)


def _head_module(model):
    """The module the last stage applies to the final hidden states: the output layer, or a critic's value head."""
    from rlcamp.models.families import value_head

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if head is not None else value_head(model)


def _drop_head(model) -> None:
    from rlcamp.models.families import OUTPUT_LAYERS

    for name in OUTPUT_LAYERS:
        if isinstance(getattr(model, name, None), torch.nn.Module):
            setattr(model, name, None)


def layout(megatron_cfg, role: str) -> dict:
    """A role's ``megatron.*`` parallel layout as MegatronEngine arguments (``role``: its key prefix)."""
    cut = megatron_cfg.override_transformer_config
    return dict(tp=megatron_cfg.tensor_model_parallel_size, key=f"{role}.megatron.tensor_model_parallel_size",
                pp=megatron_cfg.pipeline_model_parallel_size, vpp=megatron_cfg.virtual_pipeline_model_parallel_size or 1,
                layers_first=cut.get("num_layers_in_first_pipeline_stage"),
                layers_last=cut.get("num_layers_in_last_pipeline_stage"),
                pp_key=f"{role}.megatron.pipeline_model_parallel_size",
                dist_checkpoint=megatron_cfg.dist_checkpointing_path if megatron_cfg.use_dist_checkpointing else None,
                ep=megatron_cfg.expert_model_parallel_size, ep_key=f"{role}.megatron.expert_model_parallel_size",
                etp=megatron_cfg.expert_tensor_parallel_size, cp=megatron_cfg.context_parallel_size,
                cp_key=f"{role}.megatron.context_parallel_size",
                sequence_parallel=megatron_cfg.sequence_parallel,
                distributed_optimizer=megatron_cfg.use_distributed_optimizer, fsdp=shards_layers(megatron_cfg),
                fsdp_key=f"{role}.megatron.override_ddp_config.data_parallel_sharding_strategy")


# megatron-core's Megatron-FSDP switch (use_custom_fsdp before mcore 0.14) and its sharding strategies
FSDP_SWITCHES = ("use_megatron_fsdp", "use_custom_fsdp")
SHARDING_STRATEGIES = ("no_shard", "optim", "optim_grads_params")


def shards_layers(megatron_cfg) -> bool:
    """``override_ddp_config.use_megatron_fsdp=True`` + ``data_parallel_sharding_strategy=optim_grads_params``
    (megatron-core's FSDP, ZeRO-3): the decoder layers are split over the data-parallel ranks with FSDP2.
    ``optim`` is the distributed optimizer (``use_distributed_optimizer``); checked in config.blockers."""
    ddp = megatron_cfg.override_ddp_config
    return any(ddp.get(k) for k in FSDP_SWITCHES) and ddp.get("data_parallel_sharding_strategy") == "optim_grads_params"


def offload(megatron_cfg, device: torch.device) -> dict:
    """A role's ``megatron.param_offload`` / ``optimizer_offload`` as MegatronEngine arguments: on an accelerator
    only (on the CPU weights and state are in host memory already; the config layer says so).
    ``grad_offload`` has nothing to move: the engine frees every gradient after its optimizer step."""
    on_device = device.type != "cpu"
    return dict(param_offload=megatron_cfg.param_offload and on_device,
                optimizer_offload=megatron_cfg.optimizer_offload and on_device)


def apply_transformer_overrides(model, megatron_cfg, key: str = "override_transformer_config") -> list[int]:
    """The ``override_transformer_config`` entries with a counterpart in the HF module: ``attention_dropout``
    (every attention module's dropout probability in training), ``hidden_dropout`` (0 only: the HF layers
    have none; refused otherwise by the config checks) and the ``recompute_*`` entries (``recompute``).
    Returns the indices of the checkpointed layers."""
    o = megatron_cfg.override_transformer_config
    if o.get("attention_dropout") is not None:
        for module in model.modules():  # HF attention reads its own copy of the probability
            if isinstance(getattr(module, "attention_dropout", None), (int, float)):
                module.attention_dropout = float(o["attention_dropout"])
        model.config.attention_dropout = float(o["attention_dropout"])
    return recompute(model, megatron_cfg, key)


def recompute(model, megatron_cfg, key: str = "override_transformer_config") -> list[int]:
    """``override_transformer_config.recompute_*`` as activation checkpointing of whole decoder layers (HF's
    gradient checkpointing); returns the indices of the checkpointed layers. ``recompute_granularity``:
    full or selective (selective recomputes the same whole layers here, a superset of its
    ``recompute_modules``). With full, ``recompute_method=block`` and ``recompute_num_layers=N``: the first
    N layers of each pipeline stage (each virtual stage), as Megatron; ``uniform`` (or none): every layer
    (Megatron's uniform checkpoints chunks of N layers: the same numbers, a boundary kept per layer here)."""
    from rlcamp.engines.pipeline import layer_bounds
    from rlcamp.models.families import decoder_layers

    o = megatron_cfg.override_transformer_config
    granularity, method, n = o.get("recompute_granularity"), o.get("recompute_method"), o.get("recompute_num_layers")
    if granularity not in ("full", "selective"):
        return []
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = decoder_layers(model)
    kept = list(range(len(layers)))
    if granularity == "full" and method == "block":
        stages = megatron_cfg.pipeline_model_parallel_size * (megatron_cfg.virtual_pipeline_model_parallel_size or 1)
        bounds = layer_bounds(len(layers), stages, o.get("num_layers_in_first_pipeline_stage"),
                              o.get("num_layers_in_last_pipeline_stage"), f"{key}.recompute_method=block")
        kept = [i for start, end in bounds for i in range(start, min(start + n, end))]
        for i, layer in enumerate(layers):
            if i not in kept:
                layer.gradient_checkpointing = False
    return kept