"""``reward_model.enable_resource_pool=True``: the reward model on devices of its own.

The pool is ``reward_model.nnodes x reward_model.n_gpus_per_node`` devices; each engine replica
takes ``reward_model.rollout.tensor_model_parallel_size`` of them (vLLM), or one (rlcamp's own
engine), and runs in a process of its own: a ``RewardEngine`` that sees only its devices
(``CUDA_VISIBLE_DEVICES``, ``ASCEND_RT_VISIBLE_DEVICES``), on the devices after the trainer's
``trainer.n_gpus_per_node``. On a CPU the pool's "devices" are processes, as the trainer's are.

The trainer's side (``PooledRewardEngine``) has the interface of ``RewardEngine``: requests go to
the replicas in turn, answers come back on one queue and resolve the futures the reward loop's
workers wait on. A replica that dies fails its open requests with its exit code instead of leaving
them waiting, and a replica that cannot start (a bad path, a missing package) fails the pool's
start with its error.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import traceback
from concurrent.futures import Future

from rlcamp.config import RLConfig

_VISIBLE = {"cuda": "CUDA_VISIBLE_DEVICES", "npu": "ASCEND_RT_VISIBLE_DEVICES"}
START_TIMEOUT_S = 900


def pool_layout(config: RLConfig) -> tuple[int, int]:
    """(replicas, devices per replica) of the reward model's own pool."""
    rm = config.reward_model
    per = rm.rollout.tensor_model_parallel_size if rm.rollout.name == "vllm" else 1
    return max(1, rm.nnodes * rm.n_gpus_per_node // per), per


def _member(config: RLConfig, device_type: str, devices: list[int], micro_batch: int, threads: int,
            requests, answers, index: int) -> None:
    """One replica's process: a RewardEngine on ``devices``, answering ``requests`` on ``answers``."""
    if device_type in _VISIBLE:
        os.environ[_VISIBLE[device_type]] = ",".join(map(str, devices))
        device = device_type
    else:
        device = "cpu"
    import torch

    torch.set_num_threads(threads)
    try:
        from rlcamp.rewards.loop import RewardEngine

        engine = RewardEngine(config, device, micro_batch)
    except BaseException:
        answers.put(("ready", index, False, traceback.format_exc()))
        return
    answers.put(("ready", index, True, os.getpid()))

    def answer(rid: int, future: Future) -> None:
        exc = future.exception()
        if exc is None:
            answers.put((rid, index, True, future.result()))
        else:
            answers.put((rid, index, False, "".join(traceback.format_exception(exc))))

    while True:
        item = requests.get()
        if item is None:
            break
        rid, kind, payload = item
        future = engine.score([payload])[0] if kind == "score" else engine.chat(*payload)
        future.add_done_callback(lambda f, rid=rid: answer(rid, f))
    engine.close()


class PooledRewardEngine:
    def __init__(self, config: RLConfig, device_type: str, micro_batch: int):
        import multiprocessing as mp

        from rlcamp.models.loading import load_tokenizer
        from rlcamp.rewards.loop import is_generative

        rm = config.reward_model
        self.rm_cfg = rm
        self.generative = is_generative(rm.model.path) and bool(config.custom_reward_function.path)
        self.tokenizer = load_tokenizer(rm.model.path, trust_remote_code=rm.model.trust_remote_code,
                                        key="reward_model.model.path")
        self.worker = None  # nothing of the reward model runs in this process
        replicas, per = pool_layout(config)
        first = config.trainer.n_gpus_per_node  # the pool's devices come after the trainer's on this node
        visible = os.environ.get(_VISIBLE.get(device_type, ""), "")
        names = visible.split(",") if visible else None  # the indices this process's devices have
        trainer_procs = config.trainer.nnodes * config.trainer.n_gpus_per_node
        threads = max(1, (os.cpu_count() or 1) // (trainer_procs + replicas))
        ctx = mp.get_context("spawn")  # a fresh interpreter: no CUDA context or threads inherited
        self.answers = ctx.Queue()
        self.queues, self.procs = [], []
        for i in range(replicas):
            devices = list(range(first + i * per, first + (i + 1) * per))
            if names is not None:
                devices = [int(names[d]) if d < len(names) else d for d in devices]
            q = ctx.Queue()
            p = ctx.Process(target=_member, name=f"rlcamp-reward-pool-{i}", daemon=True,
                            args=(config, device_type, devices, micro_batch, threads, q, self.answers, i))
            p.start()
            self.queues.append(q)
            self.procs.append(p)
        self.pids = self._wait_ready()
        self.pending: dict[int, tuple[int, Future]] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.turn = itertools.cycle(range(replicas))
        self.closing = False
        self.reader = threading.Thread(target=self._read, name="rlcamp-reward-pool-reader", daemon=True)
        self.reader.start()

    def _wait_ready(self) -> list[int]:
        pids: dict[int, int] = {}
        errors = []
        while len(pids) + len(errors) < len(self.procs):
            try:
                tag, index, ok, value = self.answers.get(timeout=5)
            except queue.Empty:
                dead = [i for i, p in enumerate(self.procs) if not p.is_alive() and i not in pids]
                if dead:
                    errors += [f"member {i} exited with code {self.procs[i].exitcode} while starting" for i in dead]
                    break
                continue
            if ok:
                pids[index] = value
            else:
                errors.append(f"member {index}:\n{value}")
        if errors:
            self._stop()
            raise RuntimeError("reward_model.enable_resource_pool: the reward model's pool did not start:\n"
                               + "\n".join(errors))
        return [pids[i] for i in range(len(self.procs))]

    def _read(self) -> None:
        while True:
            try:
                rid, index, ok, value = self.answers.get(timeout=1)
            except queue.Empty:
                self._fail_dead()
                if self.closing:
                    return
                continue
            except (EOFError, OSError):
                return
            with self.lock:
                _, future = self.pending.pop(rid, (None, None))
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(f"reward model pool member {index} failed:\n{value}"))

    def _fail_dead(self) -> None:
        for i, p in enumerate(self.procs):
            if p.is_alive() or self.closing:
                continue
            with self.lock:
                lost = [rid for rid, (member, _) in self.pending.items() if member == i]
                futures = [self.pending.pop(rid)[1] for rid in lost]
            for future in futures:
                future.set_exception(RuntimeError(f"reward model pool member {i} (pid {p.pid}) exited with code "
                                                  f"{p.exitcode}; its requests are lost"))

    def _submit(self, kind: str, payload) -> Future:
        future: Future = Future()
        member = next(self.turn)
        if not self.procs[member].is_alive():
            future.set_exception(RuntimeError(f"reward model pool member {member} (pid {self.procs[member].pid}) "
                                              f"exited with code {self.procs[member].exitcode}"))
            return future
        rid = next(self.ids)
        with self.lock:
            self.pending[rid] = (member, future)
        self.queues[member].put((rid, kind, payload))
        return future

    def texts(self, raw_prompts: list, responses: list[str]) -> list[str]:
        from rlcamp.workers.reward_model import conversation_texts

        return conversation_texts(self.tokenizer, raw_prompts, responses)

    def score(self, texts: list[str]) -> list[Future]:
        return [self._submit("score", text) for text in texts]

    def chat(self, messages: list[dict], sampling: dict) -> Future:
        return self._submit("chat", (messages, sampling))

    def _stop(self) -> None:
        for q, p in zip(self.queues, self.procs):
            if p.is_alive():
                q.put(None)
        for p in self.procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)

    def close(self) -> None:
        self.closing = True
        self._stop()
        self.reader.join(timeout=10)
