"""Ray worker groups: one process per device, torch.distributed inside, the same split/gather as in-process.

The workers stay plain classes; a small host actor sets up the process group (gloo on CPU, nccl
on CUDA, hccl on NPU), builds the worker and runs its methods. A worker that raises stops the
stage at once with the worker's traceback on the driver; a stage that does not finish within
``stage_timeout_s`` (a hung collective) is reported by name instead of hanging the run.

Connects to ``RAY_ADDRESS`` when set (a cluster started with ``ray start --head`` on the first
node and ``ray start --address=<head>:6379`` on the others), else starts Ray on this machine.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

from rlcamp.controller.worker_group import WorkerGroup


class WorkerError(RuntimeError):
    """A stage failed on a worker. ``restartable``: a worker process died or a stage outlived
    trainer.stage_timeout_s (trainer.max_restarts may restart the workers); not when a worker's own
    code raised, which a restart would only repeat."""

    def __init__(self, message: str, restartable: bool = False):
        super().__init__(message)
        self.restartable = restartable


def ensure_ray(num_cpus: int | None = None):
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        # without RAY_ADDRESS a Ray of its own: a bare ray.init() would join the cluster named in
        # /tmp/ray/ray_current_cluster, which a killed `ray start` leaves behind (then it refuses num_cpus)
        kwargs = {"address": address} if address else {"address": "local", "num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=True, **kwargs)
    return ray




def rank_processes(driver: int) -> list:
    """The rank processes of the run whose driver is ``driver`` (psutil processes; Ray names each after
    the actor class, ``ray::_Host``): for fault tests and the fault benchmark."""
    import psutil

    found = []
    for proc in psutil.Process(driver).children(recursive=True):
        try:
            if proc.cmdline() and proc.cmdline()[0].startswith("ray::_Host"):
                found.append(proc)
        except psutil.Error:
            pass
    return found


class _Host:
    """Runs one rank's worker inside a Ray actor."""

    def address(self) -> tuple[str, int]:
        import ray

        from rlcamp.utils.dist import free_port

        return ray.util.get_node_ip_address(), free_port("")

    def whereabouts(self) -> str:
        import ray

        return f"node {ray.util.get_node_ip_address()}, pid {os.getpid()}"

    def setup(self, worker_path: str, rank: int, world_size: int, master: tuple[str, int], backend: str,
              timeout_s: float, threads: int, kwargs: dict) -> bool:
        from rlcamp.trainer.faults import ignore_interrupts_in_workers
        from rlcamp.utils.device import tune_cpu
        from rlcamp.utils.dist import init_distributed

        ignore_interrupts_in_workers()
        tune_cpu(threads)
        init_distributed(rank, world_size, master[0], master[1], backend, timeout_s)
        module, name = worker_path.split(":")
        self.worker = getattr(importlib.import_module(module), name)(**kwargs)
        return True

    def placements(self) -> dict:
        return self.worker.placements()

    def execute(self, method: str, *args, **kwargs) -> Any:
        from rlcamp.trainer.profiling import call_stage

        return call_stage(self.worker, method, *args, **kwargs)


class RayWorkerGroup(WorkerGroup):
    def __init__(self, worker_path: str, world_size: int, kwargs: dict, *, device: str, backend: str,
                 stage_timeout_s: float, startup_timeout_s: float | None = None, nnodes: int = 1,
                 cpus_per_worker: int = 1, name: str = "workers", runtime_env: dict | None = None):
        ensure_ray()
        from ray.util.placement_group import placement_group

        self.stage_timeout_s, self.name = stage_timeout_s, name
        bundle = {"CPU": cpus_per_worker} | ({"GPU": 1} if device == "cuda" else {})
        strategy = "SPREAD" if nnodes > 1 and device == "cpu" else "PACK"
        self.actors: list = []
        self.pg = placement_group([dict(bundle) for _ in range(world_size)], strategy=strategy)
        try:
            self._start(world_size, worker_path, kwargs, bundle, backend, cpus_per_worker, startup_timeout_s,
                        runtime_env)
        except BaseException:  # a worker that dies or hangs while starting: free what was started
            self.shutdown(worker_timeout_s=5.0)
            raise

    def _start(self, world_size, worker_path, kwargs, bundle, backend, cpus_per_worker, startup_timeout_s,
               runtime_env) -> None:
        ray = ensure_ray()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        name, stage_timeout_s = self.name, self.stage_timeout_s
        # placing and starting the workers is bounded by trainer.ray_wait_register_center_timeout
        startup = {"timeout_s": startup_timeout_s, "key": "trainer.ray_wait_register_center_timeout"} \
            if startup_timeout_s else {}
        self._wait([self.pg.ready()], f"placing {world_size} {name} ({bundle} each)", **startup)
        host = ray.remote(_Host)
        # runtime_env: e.g. {"nsight": options}, which starts each worker under `nsys profile`
        extra = {"runtime_env": runtime_env} if runtime_env else {}
        self.actors = [host.options(num_cpus=cpus_per_worker, num_gpus=bundle.get("GPU", 0),
                                    scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i), **extra).remote()
                       for i in range(world_size)]
        master = self._wait([self.actors[0].address.remote()], "finding rank 0's address", **startup)[0]
        self._wait([a.setup.remote(worker_path, i, world_size, master, backend, stage_timeout_s, cpus_per_worker,
                                   kwargs) for i, a in enumerate(self.actors)], f"starting {name}")
        self.whereabouts = self._wait([a.whereabouts.remote() for a in self.actors], "reading the workers' pids")
        # how each rank's engine splits its methods' batches (data-parallel rank of its mesh)
        self.placements = self._wait([a.placements.remote() for a in self.actors], "reading the engines' meshes")

    def _wait(self, refs: list, stage: str, timeout_s: float | None = None, key: str = "trainer.stage_timeout_s") -> list:
        """Results of all refs; the first failure raises at once with its traceback; a deadline bounds it."""
        import ray
        from ray.exceptions import RayError

        timeout_s = timeout_s or self.stage_timeout_s
        pending, deadline = list(refs), time.monotonic() + timeout_s
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                ranks = [i for i, r in enumerate(refs) if r in pending]
                why = ("a collective is probably stuck" if key == "trainer.stage_timeout_s" else
                       "the cluster may not have the resources asked for (see `ray status`)")
                raise WorkerError(f"{self.name}: stage '{stage}' did not finish within {timeout_s:.0f} s "
                                  f"({key}) on rank(s) {ranks}; {why}", restartable=key == "trainer.stage_timeout_s")
            try:
                ray.get(ready[0])
            except RayError as exc:
                raise self._failure(refs, refs.index(ready[0]), exc, stage) from None
        return ray.get(refs)

    def _failure(self, refs: list, rank: int, exc, stage: str) -> WorkerError:
        """The error for a failed stage, naming the rank that died if one did. A peer of a dead rank may
        fail first (its collective lost the connection): the others' outcomes decide which it was."""
        import ray
        from ray.exceptions import RayActorError

        dead = {rank: exc} if isinstance(exc, RayActorError) else {}
        if not dead:  # a worker that dies is reported within seconds; wait that long for it
            ray.wait(refs, num_returns=len(refs), timeout=5.0)
            for i, ref in enumerate(refs):
                try:
                    ray.get(ref, timeout=0)
                except RayActorError as other:
                    dead[i] = other
                except Exception:  # a result, a task error or not ready: not a death
                    pass
        self.shutdown(worker_timeout_s=5.0)  # the other ranks may be stuck in a collective
        where = getattr(self, "whereabouts", None)
        if not dead and getattr(getattr(exc, "cause", None), "restartable", False):  # e.g. its rollout engine died
            place = f" ({where[rank]})" if where else ""
            return WorkerError(f"{self.name}: stage '{stage}' failed on rank {rank}{place}: {exc.cause}",
                               restartable=True)
        if dead:
            first = min(dead)
            place = f" ({where[first]})" if where else ""
            return WorkerError(f"{self.name}: rank {first}{place} died during stage '{stage}' "
                               f"(dead ranks: {sorted(dead)}): {type(dead[first]).__name__}: "
                               f"{str(dead[first]).splitlines()[0] if str(dead[first]) else ''}", restartable=True)
        place = f" ({where[rank]})" if where else ""
        return WorkerError(f"{self.name}: stage '{stage}' failed on rank {rank}{place}:\n{exc}")

    def _run(self, method: str, args_per_rank, kwargs: dict) -> list[Any]:
        return self._wait([a.execute.remote(method, *args, **kwargs) for a, args in zip(self.actors, args_per_rank)],
                          method)

    def call_rank0(self, method: str, *args, **kwargs) -> Any:
        return self._wait([self.actors[0].execute.remote(method, *args, **kwargs)], method)[0]

    def shutdown(self, worker_timeout_s: float = 30.0) -> None:
        """Each worker's own shutdown (its rollout engine's process), waited for at most ``worker_timeout_s``
        (a rank that hangs or already failed is not waited on), then the processes and their placement go."""
        import ray

        if self.actors:
            ray.wait([a.execute.remote("shutdown") for a in self.actors], num_returns=len(self.actors),
                     timeout=worker_timeout_s)
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        try:
            ray.util.remove_placement_group(self.pg)
        except Exception:  # already removed
            pass
