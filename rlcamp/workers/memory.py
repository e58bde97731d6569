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
    figures = _memory_figures(device)
    if figures is None:
        return "memory figures unavailable"
    free, total, limit = figures
    if limit is not None:  # `ulimit -v` / a scheduler's cap: the process hits it first
        return (f"{free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB on the host, but this process may "
                f"map only {limit / 2**30:.2f} GiB (RLIMIT_AS, `ulimit -v`)")
    return f"{free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB"


def _memory_figures(device: str) -> tuple[int, int, int | None] | None:
    """(free, total, address-space limit or None) in bytes; None when they cannot be read."""
    try:
        if device.startswith("cuda"):
            import torch

            free, total = torch.cuda.mem_get_info()
            return free, total, None
        import resource

        import psutil

        vm = psutil.virtual_memory()
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        return vm.available, vm.total, None if limit == resource.RLIM_INFINITY else limit
    except Exception:  # the message must not fail on the figures
        return None


def planned_fit(config, device: str, key: str, value: int) -> tuple[int, float, float] | None:
    """The largest of value/2, value/4, ..., 1 for ``key`` whose peak `rlcamp plan` estimates within the
    device's memory, with that estimate and the memory: (size, GiB, GiB); None when the plan cannot
    say (no config.json at the model path, figures unreadable) or nothing smaller fits."""
    figures = _memory_figures(device)
    if figures is None:
        return None
    _, total, limit = figures
    memory = min(total, limit or total) / 2**30
    try:
        from rlcamp.workorders.plan import Hardware, _with, estimate

        t = config.trainer
        kind = "cuda" if device.startswith("cuda") else "npu" if device.startswith("npu") else "cpu"
        hardware = Hardware(t.nnodes, t.n_gpus_per_node, memory, kind)
        size = value // 2
        while size >= 1:
            peak = estimate(_with(config, {key: size}), hardware).peak()
            if peak <= memory:
                return size, peak, memory
            size //= 2
    except Exception:  # the plan is advice: a message without it still names the key
        return None
    return None


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
    planned = planned_fit(config, device, key, value) if value and value > 1 else None
    smaller = planned[0] if planned else max(1, (value or 2) // 2)
    change = f"{key}={smaller}" if value and value > 1 else (
        "actor_rollout_ref.model.enable_gradient_checkpointing=True" if method.startswith("update") else
        "more devices (trainer.n_gpus_per_node)")
    sizing = (f"`rlcamp plan` estimates the peak at {planned[1]:.1f} GiB of {planned[2]:.1f} with it"
              if planned else "`rlcamp plan <your launch line>` estimates each part's memory")
    return (f"out of memory in {what} (stage '{method}') {where}, with a micro batch of {value} {unit} per device "
            f"({key}={value}). Smallest change: {change} (the gradient and metrics are the same: the micro "
            f"batches add up to the same mini batch); {sizing}. ({first})")
