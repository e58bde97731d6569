"""SGLang as the rollout engine (rollout.name=sglang), colocated with the actor like vLLM.

Real engine code behind an import check. SGLang has no CPU build, so this path has not been run
on this project's CPU machines: it needs a CUDA device with ``pip install 'sglang[all]'``.

SGLang's offline ``Engine`` takes token ids and returns output ids with per-token log-probs;
weights are pushed in place with ``update_weights_from_tensor`` (bucketed, cache flushed once at
the end), and ``release_memory_occupation`` / ``resume_memory_occupation`` free the device while
the actor trains (``free_cache_engine``).
"""

from __future__ import annotations

import torch

from rlcamp.rollout.base import NamedTensors, RolloutEngine
from rlcamp.rollout.engines import (
    TP_ONE,
    is_greedy,
    prompt_lists,
    request_seeds,
    require,
    to_batch,
    weight_buckets,
)
from rlcamp.rollout.hf import SamplingParams

INSTALL_HINT = ("rollout.name=sglang needs SGLang on a CUDA machine: `pip install 'sglang[all]'` next to torch "
                "2.13.0 (SGLang has no CPU build; use rollout.name=vllm or hf on CPU)")



class SGLangRollout(RolloutEngine):
    def __init__(self, model_path: str, rollout_cfg, *, eos_token_ids: list[int], pad_token_id: int,
                 max_model_len: int, device: str, trust_remote_code: bool = False, initial_state: dict | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        if device != "cuda":
            raise RuntimeError(f"rollout.name=sglang runs on CUDA only (trainer.device resolved to {device}); "
                               "use rollout.name=vllm or hf")
        sglang = require("sglang", INSTALL_HINT)
        r = rollout_cfg
        if r.tensor_model_parallel_size != 1:
            raise ValueError(f"tensor_model_parallel_size={r.tensor_model_parallel_size}: {TP_ONE}")
        self.rollout_cfg, self.dtype = r, dtype
        self.eos, self.pad_token_id = sorted(set(eos_token_ids)), pad_token_id
        kwargs = dict(model_path=model_path, skip_tokenizer_init=True, dtype=str(dtype).removeprefix("torch."),
                      random_seed=r.seed, context_length=max_model_len, mem_fraction_static=r.gpu_memory_utilization,
                      tp_size=1, trust_remote_code=trust_remote_code, enable_memory_saver=r.free_cache_engine,
                      max_running_requests=r.max_num_seqs, chunked_prefill_size=r.max_num_batched_tokens
                      if r.enable_chunked_prefill else -1, disable_cuda_graph=r.enforce_eager,
                      load_format="dummy" if r.load_format.startswith("dummy") and initial_state is not None else "auto")
        kwargs.update(r.engine_kwargs.get("sglang", {}))
        self.llm = sglang.Engine(**kwargs)
        self.asleep = False
        if initial_state is not None:
            self.load_weights(initial_state)

    def load_weights(self, state: NamedTensors, bucket_mb: int = 512) -> None:
        self.wake()
        for bucket in weight_buckets(state, self.dtype, "cuda", bucket_mb << 20):
            self.llm.update_weights_from_tensor(named_tensors=bucket, flush_cache=False)
        self.llm.flush_cache()  # KV entries of the old weights

    def sleep(self) -> None:
        if self.rollout_cfg.free_cache_engine and not self.asleep:
            self.llm.release_memory_occupation()
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.resume_memory_occupation()
            self.asleep = False

    def shutdown(self) -> None:
        """Stop the engine's scheduler and its processes."""
        self.llm.shutdown()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if self.asleep:
            raise RuntimeError("the SGLang engine is asleep: call wake() before generate()")
        greedy = is_greedy(params)
        sampling = {"temperature": 0.0 if greedy else params.temperature, "top_p": 1.0 if greedy else params.top_p,
                    "top_k": -1 if greedy or params.top_k is None or params.top_k < 0 else params.top_k,
                    "max_new_tokens": params.max_new_tokens, "stop_token_ids": self.eos,
                    "ignore_eos": self.rollout_cfg.ignore_eos}
        prompts = prompt_lists(input_ids, attention_mask)
        seeds = request_seeds(len(prompts), generator)
        outputs = self.llm.generate(input_ids=prompts,
                                       sampling_params=[dict(sampling, sampling_seed=s) for s in seeds],
                                       return_logprob=True)
        tokens = [list(out["output_ids"]) for out in outputs]
        log_probs = [[entry[0] for entry in out["meta_info"]["output_token_logprobs"]] for out in outputs]
        return to_batch(tokens, log_probs, params.max_new_tokens, self.pad_token_id, input_ids.device)
