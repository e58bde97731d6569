"""An out-of-memory in a worker's stage, said in the run's terms: the role, the micro batch or token
budget that sized the allocation, the device's memory, and the smallest change that should fit.

A CUDA OOM is ``torch.OutOfMemoryError``; on the CPU the allocator raises a RuntimeError ("can't
allocate memory") when the process's memory (or its RLIMIT_AS) runs out before the kernel's OOM
killer acts (a kill is a dead worker, rlcamp.controller.ray_group).
"""

from __future__ import annotations

MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "oom when allocating")


class OutOfMemory(RuntimeError):
    """A stage ran out of device (or host) memory; the message names the role, the micro batch and the fix."""


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and
                                            any(m in str(exc).lower() for m in MARKERS))


def micro_batch_of(config, derived, method: str) -> tuple[str, str, int | None] | None:
    """(what runs, the key that sizes the method's micro batch, its value per device) for a model pass,
    the token-budget key when dynamic batching is on; None for other methods."""
    arr, c = config.actor_rollout_ref, config.critic
    a, r, ref = arr.actor, arr.rollout, arr.ref
    table = {
        "update_actor": ("the actor's update", a.use_dynamic_bsz,
                         ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", a.ppo_max_token_len_per_gpu),
                         ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", derived.actor.micro_batch_per_device)),
        "compute_log_prob": ("the actor's old-log-prob pass", r.log_prob_use_dynamic_bsz,
                             ("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", r.log_prob_max_token_len_per_gpu),
                             ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
                              derived.rollout_log_prob_micro_batch_per_device)),
        "compute_ref_log_prob": ("the reference pass", ref.log_prob_use_dynamic_bsz,
                                 ("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", ref.log_prob_max_token_len_per_gpu),
                                 ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
                                  derived.ref_log_prob_micro_batch_per_device)),
        "compute_values": ("the critic's value pass", c.use_dynamic_bsz,
                           ("critic.forward_max_token_len_per_gpu", c.forward_max_token_len_per_gpu),
                           ("critic.forward_micro_batch_size_per_gpu", derived.critic_forward_micro_batch_per_device)),
        "update_critic": ("the critic's update", c.use_dynamic_bsz,
                          ("critic.ppo_max_token_len_per_gpu", c.ppo_max_token_len_per_gpu),
                          ("critic.ppo_micro_batch_size_per_gpu",
                           derived.critic.micro_batch_per_device if derived.critic else None)),
    }
    if method not in table:
        return None
    what, dynamic, budget, micro = table[method]
    key, value = budget if dynamic else micro
    return what, key, value


def device_memory(device: str) -> str:
    """'<free> free of <total> GiB' of the device (CUDA), or of this host's memory."""
    try:
        if device.startswith("cuda"):
            import torch

            free, total = torch.cuda.mem_get_info()
        else:
            import psutil

            import resource

            vm = psutil.virtual_memory()
            free, total = vm.available, vm.total
            limit = resource.getrlimit(resource.RLIMIT_AS)[0]
            if limit != resource.RLIM_INFINITY:  # `ulimit -v` / a scheduler's cap: the process hits it first
                return (f"{free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB on the host, but this process may "
                        f"map only {limit / 2**30:.2f} GiB (RLIMIT_AS, `ulimit -v`)")
        return f"{free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB"
    except Exception:  # the message must not fail on the figures
        return "memory figures unavailable"


def describe(config, derived, device: str, method: str, exc: BaseException) -> str:
    """The OOM message for ``method`` of a worker built from ``config``."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    where = f"on {device} ({device_memory(device)})"
    sized = micro_batch_of(config, derived, method)
    if sized is None:
        fix = ("lower data.max_response_length, or the rollout's batch (vLLM / SGLang: "
               "actor_rollout_ref.rollout.gpu_memory_utilization, max_num_seqs)" if method == "generate" else
               "more devices (trainer.n_gpus_per_node), or param / optimizer offload (fsdp_config)")
        return f"out of memory in stage '{method}' {where}. Try: {fix}. ({first})"
    what, key, value = sized
    unit = "tokens" if key.endswith("max_token_len_per_gpu") else "responses"
    smaller = max(1, (value or 2) // 2)
    change = f"{key}={smaller}" if value and value > 1 else (
        "actor_rollout_ref.model.enable_gradient_checkpointing=True" if method.startswith("update") else
        "more devices (trainer.n_gpus_per_node)")
    return (f"out of memory in {what} (stage '{method}') {where}, with a micro batch of {value} {unit} per device "
            f"({key}={value}). Smallest change: {change} (the gradient and metrics are the same: the micro "
            f"batches add up to the same mini batch); `rlcamp plan <your launch line>` estimates each part's "
            f"memory. ({first})")
