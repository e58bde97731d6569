"""Options that are valid verl keys but that rlcamp does not run yet.

Each entry fails the config with a message saying so, instead of being silently ignored. When
an issue implements an option, its entry goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rlcamp.config.schema import RLConfig

_NOT_PLANNED = "is not implemented in rlcamp and no issue plans it yet"


@dataclass(frozen=True)
class Unsupported:
    key: str
    applies: Callable[[Any], bool]  # value -> is this setting unsupported?
    why: str
    fix: str


UNSUPPORTED: list[Unsupported] = [
    Unsupported("actor_rollout_ref.rollout.multi_turn.enable", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("actor_rollout_ref.actor.strategy", lambda v: v == "megatron", _NOT_PLANNED, "use strategy=fsdp"),
    Unsupported("critic.strategy", lambda v: v == "megatron", _NOT_PLANNED, "use strategy=fsdp"),
    Unsupported("reward_model.ulysses_sequence_parallel_size", lambda v: v > 1,
                "is not implemented: the reward model scores on the driver, in one process", "set it to 1"),
    Unsupported("reward_model.reward_manager", lambda v: v in ("batch", "dapo"), _NOT_PLANNED, "use reward_manager=naive"),
    Unsupported("actor_rollout_ref.model.lora_rank", lambda v: v > 0, _NOT_PLANNED, "set it to 0 (full fine-tuning)"),
    Unsupported("critic.model.lora_rank", lambda v: v > 0, _NOT_PLANNED, "set it to 0 (full fine-tuning)"),
    Unsupported("actor_rollout_ref.model.use_liger", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("actor_rollout_ref.model.use_fused_kernels", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("actor_rollout_ref.model.enable_activation_offload", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("data.custom_cls.path", lambda v: v is not None, _NOT_PLANNED, "convert your data to the verl schema"),
    Unsupported("trainer.default_hdfs_dir", lambda v: v is not None, _NOT_PLANNED, "copy checkpoints yourself"),
    Unsupported("trainer.logger", lambda v: bool(set(v) - {"console", "file"}),
                "is not implemented yet: only the console and file (jsonl) loggers exist", "use trainer.logger='[console,file]'"),
]


def unsupported_problems(cfg: RLConfig) -> list[str]:
    from rlcamp.config.loader import get_key

    problems = []
    for entry in UNSUPPORTED:
        value = get_key(cfg, entry.key)
        if entry.applies(value):
            problems.append(f"{entry.key}={value!r} is a known option that rlcamp does not run yet: it {entry.why}; {entry.fix}")
    rollout = cfg.actor_rollout_ref.rollout
    if rollout.mode == "async" and rollout.name != "vllm":
        problems.append(f"actor_rollout_ref.rollout.mode=async is served by vLLM's AsyncLLM; with "
                        f"rollout.name={rollout.name} use rollout.mode=sync (or rollout.name=vllm)")
    if rollout.name in ("vllm", "sglang") and rollout.tensor_model_parallel_size != 1:
        problems.append(f"actor_rollout_ref.rollout.tensor_model_parallel_size={rollout.tensor_model_parallel_size} "
                        f"with rollout.name={rollout.name} is not implemented: rlcamp runs one rollout engine per "
                        "device (tensor parallel 1); set it to 1")
    n_devices = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    if n_devices > 1 and cfg.trainer.worker_group == "in_process":
        problems.append(f"trainer.worker_group=in_process runs one device, but trainer.nnodes x trainer.n_gpus_per_node "
                        f"= {n_devices}; use trainer.worker_group=ray (or auto)")
    return problems
