"""The reward loop (``reward_model.use_reward_loop=True``, verl's default): the reward model is served
by an engine, and scoring runs while the trainer moves on.

One engine thread owns the reward model and serves requests from a queue, as many at a time as
``reward_model.rollout.max_num_seqs`` (and, for a discriminative model, in micro batches of
``reward_model.micro_batch_size_per_gpu``). ``reward_model.num_workers`` threads prepare requests
(decode each response with the actor's tokenizer, re-template the conversation with the reward
model's) and wait on their answers concurrently. The trainer submits a step's batch right after
generation and collects the scores after the old-log-prob, reference and value stages.

- A **discriminative** reward model (a sequence classifier): the score of each (prompt, response),
  the same value the in-process path (``use_reward_loop=False``) computes (tested).
- A **generative** reward model (a causal LM, a judge, with a ``custom_reward_function``): as in
  verl, the scoring is the user's function, which receives ``reward_router_address``, an OpenAI-style
  ``/v1/chat/completions`` endpoint served by this engine on 127.0.0.1, and
  ``reward_model_tokenizer``; it sends its judge prompt there and parses the reply into a score.

``reward_model.rollout.name=hf`` is rlcamp's own engine (this process, any device); ``vllm`` serves
it through vLLM (``rlcamp.rewards.vllm_reward``: the pooling runner for a classifier, the generate
runner for a judge), same scores.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlcamp.batch import Batch
from rlcamp.config import RLConfig


def is_generative(path: str) -> bool:
    """Whether the model folder at ``path`` is a causal LM (a judge), not a sequence classifier."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(a.endswith("ForCausalLM") for a in architectures) and not any(
        a.endswith("ForSequenceClassification") for a in architectures)


@dataclass
class _Request:
    kind: str  # "score" (a templated text) or "chat" (messages + sampling)
    payload: Any
    done: Future = field(default_factory=Future)


class _HFBackend:
    """rlcamp's own engine (``reward_model.rollout.name=hf``): the model in this process, on ``device``."""

    def __init__(self, config: RLConfig, device: str, micro_batch: int, generative: bool, max_length: int):
        rm = config.reward_model
        self.device, self.max_length = torch.device(device), max_length
        self.worker = None
        if generative:
            from rlcamp.models.loading import (
                eos_token_ids,
                load_causal_lm,
                load_tokenizer,
            )
            from rlcamp.rollout.hf import HFRollout
            from rlcamp.utils.device import to_dtype

            self.tokenizer = load_tokenizer(rm.model.path, trust_remote_code=rm.model.trust_remote_code,
                                            key="reward_model.model.path")
            self.model = load_causal_lm(rm.model.path, dtype=to_dtype(rm.model.fsdp_config.model_dtype),
                                        trust_remote_code=rm.model.trust_remote_code).to(self.device).eval()
            self.rollout = HFRollout(self.model, eos_token_ids(self.tokenizer, self.model), self.tokenizer.pad_token_id,
                                     dtype=to_dtype(rm.rollout.dtype))
        else:
            from rlcamp.workers.reward_model import RewardModelWorker

            self.worker = RewardModelWorker(config, device, micro_batch)
            self.worker.max_length = rm.max_length or max_length  # the engine's context
            self.tokenizer = self.worker.tokenizer
        self.generator = torch.Generator().manual_seed(config.trainer.seed + 5)

    def score(self, texts: list[str]) -> list[float]:
        return self.worker.score_texts(texts).tolist()

    @torch.no_grad()
    def chat(self, requests: list[tuple[list[dict], dict]]) -> list[str]:
        from rlcamp.rollout.hf import SamplingParams

        out: list[str] = [""] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, (_, s) in enumerate(requests):  # one generate call per distinct sampling setting
            temperature = float(s.get("temperature", 1.0))
            params = SamplingParams(max_new_tokens=int(s.get("max_tokens", s.get("max_new_tokens", 256))),
                                    temperature=temperature, top_p=float(s.get("top_p", 1.0)),
                                    top_k=int(s.get("top_k", -1)), do_sample=temperature > 0)
            groups.setdefault(tuple(vars(params).items()), []).append(i)
        self.tokenizer.padding_side = "left"
        for key, rows in groups.items():
            params = SamplingParams(**dict(key))
            texts = [self.tokenizer.apply_chat_template(requests[i][0], add_generation_prompt=True, tokenize=False)
                     for i in rows]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                                 truncation=True, max_length=self.max_length).to(self.device)
            gen = self.rollout.generate(enc["input_ids"], enc["attention_mask"], params, self.generator)
            for i, row, n in zip(rows, gen["responses"].tolist(), gen["response_mask"].sum(-1).tolist()):
                out[i] = self.tokenizer.decode(row[:n], skip_special_tokens=True)
        return out

    def close(self) -> None:
        pass


class RewardEngine:
    """The served reward model: a thread that drains the request queue in batches, on the backend
    ``reward_model.rollout.name`` names."""

    def __init__(self, config: RLConfig, device: str, micro_batch: int):
        rm = config.reward_model
        self.rm_cfg = rm
        # as verl's reward loop: a judge is a causal LM that the user's function talks to; without a
        # function the model is scored as a classifier (a causal LM then gets a new score head)
        self.generative = is_generative(rm.model.path) and bool(config.custom_reward_function.path)
        self.max_batch = max(1, rm.rollout.max_num_seqs)
        self.max_length = rm.rollout.max_model_len or (rm.rollout.prompt_length + rm.rollout.response_length)
        if rm.rollout.name == "vllm":
            from rlcamp.models.loading import load_tokenizer
            from rlcamp.rewards.vllm_reward import VLLMRewardBackend

            tokenizer = load_tokenizer(rm.model.path, trust_remote_code=rm.model.trust_remote_code,
                                       key="reward_model.model.path")
            self.backend = VLLMRewardBackend(rm, tokenizer, self.generative, self.max_length, device,
                                             config.trainer.seed + 5)
        else:
            self.backend = _HFBackend(config, device, micro_batch, self.generative, self.max_length)
        self.tokenizer = self.backend.tokenizer
        self.requests: queue.Queue[_Request | None] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name="rlcamp-reward-engine", daemon=True)
        self.thread.start()

    @property
    def worker(self):
        """The in-process RewardModelWorker of rlcamp's engine for a discriminative model, else None."""
        return getattr(self.backend, "worker", None)

    def texts(self, raw_prompts: list, responses: list[str]) -> list[str]:
        from rlcamp.workers.reward_model import conversation_texts

        return conversation_texts(self.tokenizer, raw_prompts, responses)

    # ------------------------------------------------------------------------------ clients
    def score(self, texts: list[str]) -> list[Future]:
        futures = []
        for text in texts:
            request = _Request("score", text)
            self.requests.put(request)
            futures.append(request.done)
        return futures

    def chat(self, messages: list[dict], sampling: dict) -> Future:
        request = _Request("chat", (messages, sampling))
        self.requests.put(request)
        return request.done

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join(timeout=60)
        self.backend.close()

    # ------------------------------------------------------------------------------- engine
    def _serve(self) -> None:
        while True:
            first = self.requests.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self.requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.requests.put(None)  # stop after this batch
                    break
                batch.append(more)
            for kind in ("score", "chat"):
                todo = [r for r in batch if r.kind == kind]
                if not todo:
                    continue
                try:
                    results = self._run_scores(todo) if kind == "score" else self.backend.chat([r.payload for r in todo])
                    for request, result in zip(todo, results):
                        request.done.set_result(result)
                except BaseException as exc:  # the waiting worker re-raises it with its traceback
                    for request in todo:
                        if not request.done.done():
                            request.done.set_exception(exc)

    def _run_scores(self, todo: list[_Request]) -> list[float]:
        if self.generative:
            raise ValueError(f"reward_model.model.path={self.rm_cfg.model.path} is a generative model (a causal LM): "
                             "it answers chat requests, and custom_reward_function turns its answers into scores")
        return self.backend.score([r.payload for r in todo])


class ChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1 for a generative reward model (verl's
    ``reward_router_address``): ``{"messages": [...], "temperature", "top_p", "max_tokens"}`` ->
    ``{"choices": [{"message": {"role": "assistant", "content": ...}}]}``."""

    def __init__(self, engine: RewardEngine):
        from aiohttp import web

        self.engine = engine
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="rlcamp-reward-router", daemon=True)
        self.thread.start()
        ready.wait(30)
        self.address = f"127.0.0.1:{self.port}"

    async def _chat(self, request):
        from aiohttp import web

        body = await request.json()
        messages = body.pop("messages", None)
        if not isinstance(messages, list):
            return web.json_response({"error": "the request needs 'messages': a list of chat messages"}, status=400)
        try:
            text = await asyncio.wrap_future(self.engine.chat(messages, body))
        except Exception as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)
        return web.json_response({"object": "chat.completion", "model": self.engine.rm_cfg.model.path,
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": text}}]})

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


class RewardLoop:
    """What the trainer calls: ``loop(batch)`` -> one reward-model score per response (a
    discriminative model), computed by ``num_workers`` workers against the engine."""

    def __init__(self, config: RLConfig, device: str = "cpu", micro_batch: int = 8):
        from rlcamp.models.loading import load_tokenizer

        rm = config.reward_model
        if rm.enable_resource_pool:  # processes and devices of its own (rlcamp.rewards.pool)
            from rlcamp.rewards.pool import PooledRewardEngine

            self.engine = PooledRewardEngine(config, torch.device(device).type, micro_batch)
        else:
            self.engine = RewardEngine(config, device, micro_batch)
        self.generative = self.engine.generative
        self.input_tokenizer = load_tokenizer(rm.model.input_tokenizer, trust_remote_code=rm.model.trust_remote_code,
                                              key="reward_model.model.input_tokenizer")
        self.workers = ThreadPoolExecutor(max(1, rm.num_workers), "rlcamp-reward-worker")
        self.num_workers = max(1, rm.num_workers)
        self.server = ChatServer(self.engine) if self.generative else None
        # what a generative reward model's custom_reward_function receives, as in verl
        self.function_kwargs = {"reward_router_address": self.server.address,
                                "reward_model_tokenizer": self.engine.tokenizer} if self.server else {}

    def _score_rows(self, raw_prompts: list, responses: list) -> list[float]:
        texts = self.engine.texts(raw_prompts, responses)
        return [f.result() for f in self.engine.score(texts)]

    def __call__(self, batch: Batch) -> torch.Tensor | None:
        if self.generative:
            return None  # the user's function scores through the chat endpoint
        lengths = batch["response_mask"].sum(-1).tolist()
        responses = [self.input_tokenizer.decode(row[:n], skip_special_tokens=True)
                     for row, n in zip(batch["responses"].tolist(), lengths)]
        prompts = list(batch["raw_prompt"])
        size = -(-len(responses) // self.num_workers)
        chunks = [(prompts[s:s + size], responses[s:s + size]) for s in range(0, len(responses), size)]
        scores = [score for part in self.workers.map(lambda c: self._score_rows(*c), chunks) for score in part]
        return torch.tensor(scores, dtype=torch.float32)

    def profile_start(self, step: int) -> None:
        if self.engine.worker is not None:
            self.engine.worker.profile_start(step)

    def profile_stop(self) -> None:
        if self.engine.worker is not None:
            self.engine.worker.profile_stop()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.workers.shutdown(wait=False)
        self.engine.close()
