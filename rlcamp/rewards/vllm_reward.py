"""The reward model served by vLLM (``reward_model.rollout.name=vllm``), for the reward loop.

- A discriminative reward model (a sequence classifier, e.g. ``LlamaForSequenceClassification``)
  runs on vLLM's pooling runner: the score of a conversation is the classifier's raw output at its
  last token (``classify`` without the activation), the same number transformers gives (tested to
  1e-5 in fp32).
- A generative one (a judge, a causal LM) runs on vLLM's generate runner and answers the chat
  requests of the reward loop's ``/v1/chat/completions`` endpoint.

Texts are tokenized here with the reward model's own tokenizer, truncated as rlcamp's own engine
truncates, and passed to vLLM as token ids, so both engines score the same tokens. The engine
core runs in its own process (vLLM's default). ``free_cache_engine`` on an accelerator puts the
engine to sleep (weights to host memory, KV cache freed) between batches, as verl's colocated
reward model does; vLLM's CPU backend has no sleep mode, so there it stays loaded.
"""

from __future__ import annotations

import os

from rlcamp.rollout.engines import require
from rlcamp.rollout.vllm_engine import INSTALL_HINT
from rlcamp.utils.device import to_dtype


class VLLMRewardBackend:
    def __init__(self, rm, tokenizer, generative: bool, max_length: int, device: str, seed: int):
        vllm = require("vllm", INSTALL_HINT.replace("rollout.name=vllm", "reward_model.rollout.name=vllm"))
        r = rm.rollout
        self.tokenizer, self.generative, self.max_length = tokenizer, generative, max_length
        self.seed, self.requests = seed, 0  # request k samples with seed + k: reproducible, never repeated
        if not generative and r.skip_tokenizer_init:
            raise ValueError("reward_model.rollout.skip_tokenizer_init=True: vLLM's pooling runner (a sequence "
                             "classifier reward model) needs its tokenizer; set it to False")
        if device == "cpu":  # the KV cache of vLLM's CPU backend is sized in GiB by this variable (a user's wins)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(os.environ.get("RLCAMP_VLLM_KV_GIB", "1")))))
        path = str(rm.model.path)
        kwargs = dict(model=path, tokenizer=path, runner="generate" if generative else "pooling", dtype=to_dtype(r.dtype),
                      seed=seed, enforce_eager=r.enforce_eager, max_model_len=max_length, max_num_seqs=r.max_num_seqs,
                      max_num_batched_tokens=max(r.max_num_batched_tokens, max_length),
                      enable_chunked_prefill=r.enable_chunked_prefill, enable_prefix_caching=r.enable_prefix_caching,
                      disable_log_stats=r.disable_log_stats, trust_remote_code=rm.model.trust_remote_code,
                      tensor_parallel_size=r.tensor_model_parallel_size, load_format=r.load_format,
                      skip_tokenizer_init=r.skip_tokenizer_init and generative)
        from rlcamp.rewards.loop import is_generative

        if not generative and is_generative(path):
            # a causal LM scored as a classifier (no custom_reward_function): vLLM puts a new one-output score
            # head on it, as the in-process path (AutoModelForSequenceClassification) does
            kwargs.update(convert="classify", hf_overrides={"num_labels": 1})
        if r.expert_parallel_size > 1:  # validated: it equals tensor x data parallel, which is all vLLM takes
            kwargs["enable_expert_parallel"] = True
        if r.limit_images is not None:
            kwargs["limit_mm_per_prompt"] = {"image": r.limit_images}
        if r.cudagraph_capture_sizes:
            kwargs["compilation_config"] = {"cudagraph_capture_sizes": list(r.cudagraph_capture_sizes)}
        self.sleeps = r.free_cache_engine and device != "cpu"
        if device != "cpu":
            kwargs.update(gpu_memory_utilization=r.gpu_memory_utilization, enable_sleep_mode=self.sleeps)
        kwargs.update(r.engine_kwargs.get("vllm", {}))
        self.llm = vllm.LLM(**kwargs)
        if self.sleeps:
            self.llm.sleep(level=1)

    def _token_ids(self, texts: list[str]) -> list[dict]:
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)
        return [{"prompt_token_ids": ids} for ids in enc["input_ids"]]

    def _awake(self, fn):
        if self.sleeps:
            self.llm.wake_up()
        try:
            return fn()
        finally:
            if self.sleeps:
                self.llm.sleep(level=1)

    def score(self, texts: list[str]) -> list[float]:
        from vllm import PoolingParams

        prompts = self._token_ids(texts)
        outs = self._awake(lambda: self.llm.classify(prompts, pooling_params=PoolingParams(use_activation=False),
                                                     use_tqdm=False))
        return [float(o.outputs.probs[0]) for o in outs]

    def chat(self, requests: list[tuple[list[dict], dict]]) -> list[str]:
        from vllm import SamplingParams

        texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in requests]
        params, base = [], self.requests
        self.requests += len(requests)
        for i, (_, s) in enumerate(requests):
            params.append(SamplingParams(max_tokens=int(s.get("max_tokens", s.get("max_new_tokens", 256))),
                                         temperature=float(s.get("temperature", 1.0)), top_p=float(s.get("top_p", 1.0)),
                                         top_k=int(s.get("top_k", -1)), seed=self.seed + base + i, detokenize=False))
        prompts = self._token_ids(texts)
        outs = self._awake(lambda: self.llm.generate(prompts, params, use_tqdm=False))
        return [self.tokenizer.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outs]

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
