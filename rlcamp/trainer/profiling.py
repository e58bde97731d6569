"""Profiling of chosen steps: verl's ``global_profiler`` and the per-role ``<role>.profiler`` keys.

``global_profiler.tool`` picks the profiler and ``global_profiler.steps`` the training steps; a role
whose ``profiler.enable`` is True records them on the ranks it names (``all_ranks``, ``ranks``;
none named: rank 0). The driver calls ``profile_start`` / ``profile_stop`` on each worker group
around a named step (around a run of consecutive named steps with ``profile_continuous_steps``).

- ``torch``: a ``torch.profiler`` Chrome trace per process, ``<save_path>/step<k>/<roles>_rank<r>.json``
  (open in chrome://tracing or https://ui.perfetto.dev); ``tool_config.torch.contents`` adds
  ``memory`` / ``shapes`` / ``stack`` and restricts devices to ``cpu`` / ``cuda`` when given.
- ``torch_memory``: on CUDA the allocator's history (``torch.cuda.memory._record_memory_history``,
  ``trace_alloc_max_entries``, ``stack_depth``), dumped as a snapshot pickle for
  https://pytorch.org/memory_viz; on a CPU, which has no such allocator history, the profiler's
  memory timeline (``<roles>_rank<r>.memory.json``) instead.
- ``nsys``: NVIDIA Nsight Systems. Ray workers start under ``nsys profile`` with
  ``global_tool_config.nsys.worker_nsight_options``; a named step opens a cudaProfilerApi capture
  range (``torch.cuda.profiler.start/stop``), and with ``discrete`` each stage is an NVTX range.
  Needs ``nsys`` on PATH and a CUDA device (rlcamp.config.blockers says so before a run starts).
- ``npu``: Ascend's ``torch_npu.profiler`` with verl's ``tool_config.npu`` (``contents``, ``level``,
  ``analysis``), one folder per process, ``<save_path>/step<k>/<role>_rank<r>/``, for MindStudio
  Insight. Needs torch_npu (a blocker says so where it is missing).

A relative ``save_path`` lies inside the run folder. The reference runs in the actor's worker, so
its stage is in the actor's trace; when several roles share one process (one in-process device)
they share one trace, named by all of them.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from rlcamp.config.schema import GlobalProfilerConfig, ProfilerConfig


@dataclass(frozen=True)
class ProfileSpec:
    """What one worker records: the tool, where, and the settings of the tool."""

    tool: str
    folder: Path
    roles: tuple[str, ...]
    tool_config: dict
    global_tool_config: dict

    def selects(self, rank: int, role_cfgs: list[ProfilerConfig]) -> bool:
        return any(c.enable and (c.all_ranks or rank in (c.ranks or [0])) for c in role_cfgs)


def profile_spec(global_cfg: GlobalProfilerConfig, role_cfgs: dict[str, ProfilerConfig], run_dir: Path
                 ) -> ProfileSpec | None:
    """The spec of a worker that holds ``role_cfgs`` (e.g. actor and ref), or None when it records nothing."""
    enabled = {role: c for role, c in role_cfgs.items() if c.enable}
    if not enabled or not global_cfg.steps:
        return None
    tools = {c.tool for c in enabled.values()}
    if len(tools) != 1 or None in tools:
        return None
    (tool,) = tools
    first = next(iter(enabled.values()))
    folder = Path(first.save_path or global_cfg.save_path)
    if not folder.is_absolute():
        folder = run_dir / folder
    return ProfileSpec(tool, folder, tuple(enabled), first.tool_config, global_cfg.global_tool_config)


def step_windows(steps: list[int] | None, continuous: bool) -> tuple[set[int], set[int]]:
    """Steps where a recording starts and where one stops."""
    named = set(steps or [])
    if not continuous:
        return named, named
    return {s for s in named if s - 1 not in named}, {s for s in named if s + 1 not in named}


class _ProcessProfiler:
    """The one profiler of this process, shared by the roles that live in it."""

    def __init__(self):
        self.holders: list[str] = []  # roles recording now
        self.names: list[str] = []  # roles that recorded into this trace
        self.session = None
        self.spec: ProfileSpec | None = None
        self.step = 0

    def start(self, spec: ProfileSpec, role: str, step: int, rank: int) -> None:
        self.holders.append(role)
        if len(self.holders) > 1:
            self.names.append(role)
            return
        self.names = [role]
        self.spec, self.step, self.rank = spec, step, rank
        if spec.tool == "torch":
            contents = set(spec.tool_config.get("torch", {}).get("contents") or [])
            activities = [torch.profiler.ProfilerActivity.CPU] if not contents or "cpu" in contents else []
            if torch.cuda.is_available() and (not contents or "cuda" in contents):
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.session = torch.profiler.profile(
                activities=activities or [torch.profiler.ProfilerActivity.CPU], profile_memory="memory" in contents,
                record_shapes="shapes" in contents, with_stack="stack" in contents)
            self.session.__enter__()
        elif spec.tool == "torch_memory":
            settings = {**spec.global_tool_config.get("torch_memory", {}), **spec.tool_config.get("torch_memory", {})}
            if torch.cuda.is_available():
                torch.cuda.memory._record_memory_history(
                    max_entries=int(settings.get("trace_alloc_max_entries", 100000)),
                    stacks=settings.get("stacks", "all"), context=settings.get("context", "all"))
            else:
                self.session = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                      profile_memory=True, record_shapes=True, with_stack=True)
                self.session.__enter__()
        elif spec.tool == "nsys":
            torch.cuda.profiler.start()
        elif spec.tool == "npu":
            self.session, self.npu_dir = _npu_session(spec, spec.folder / f"step{step}" / f"{role}_rank{rank}")
            self.session.start()
        else:
            raise ValueError(f"global_profiler.tool={spec.tool!r} is not one rlcamp drives (torch, torch_memory, nsys, npu)")

    def stop(self, role: str) -> Path | None:
        if role not in self.holders:
            return None
        self.holders.remove(role)
        if self.holders:
            return None
        spec, folder = self.spec, self.spec.folder / f"step{self.step}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{'+'.join(self.names)}_rank{self.rank}"
        out = None
        if spec.tool == "torch":
            self.session.__exit__(None, None, None)
            out = folder / f"{name}.json"
            self.session.export_chrome_trace(str(out))
        elif spec.tool == "torch_memory":
            if self.session is None:
                out = folder / f"{name}.pickle"
                torch.cuda.memory._dump_snapshot(str(out))
                torch.cuda.memory._record_memory_history(enabled=None)
            else:
                self.session.__exit__(None, None, None)
                out = folder / f"{name}.memory.json"
                with warnings.catch_warnings():  # deprecated for CUDA in favour of the snapshot above
                    warnings.simplefilter("ignore", FutureWarning)
                    self.session.export_memory_timeline(str(out), device="cpu")
        elif spec.tool == "nsys":
            torch.cuda.profiler.stop()  # nsys writes its report when the process ends
        elif spec.tool == "npu":
            self.session.stop()  # its trace handler writes (and with analysis, parses) the folder
            out = self.npu_dir
        self.session = None
        return out


PROCESS = _ProcessProfiler()

NPU_LEVELS = ("level_none", "level0", "level1", "level2")


def npu_settings(spec_tool_config: dict, global_tool_config: dict) -> dict:
    """verl's NPUToolConfig: contents (npu, cpu, memory, shapes, module, stack; empty: npu and cpu),
    level (level_none, level0-2), analysis (parse the raw data when the step ends)."""
    return {"contents": [], "level": "level0", "analysis": True, "discrete": False,
            **global_tool_config.get("npu", {}), **spec_tool_config.get("npu", {})}


def _npu_session(spec: ProfileSpec, folder: Path):
    """Ascend's profiler (torch_npu.profiler) over one step, writing into ``folder``."""
    from rlcamp.rollout.engines import require

    torch_npu = require("torch_npu", "global_profiler.tool=npu needs Ascend's torch_npu")
    p = torch_npu.profiler
    settings = npu_settings(spec.tool_config, spec.global_tool_config)
    contents = set(settings["contents"] or ["npu", "cpu"])
    levels = {"level_none": p.ProfilerLevel.Level_none, "level0": p.ProfilerLevel.Level0,
              "level1": p.ProfilerLevel.Level1, "level2": p.ProfilerLevel.Level2}
    activities = [a for name, a in (("npu", p.ProfilerActivity.NPU), ("cpu", p.ProfilerActivity.CPU))
                  if name in contents]
    folder.mkdir(parents=True, exist_ok=True)
    session = p.profile(activities=activities or [p.ProfilerActivity.NPU], with_modules="module" in contents,
                        with_stack="stack" in contents, record_shapes="shapes" in contents,
                        profile_memory="memory" in contents,
                        experimental_config=p._ExperimentalConfig(profiler_level=levels[settings["level"]]),
                        on_trace_ready=p.tensorboard_trace_handler(str(folder), analyse_flag=bool(settings["analysis"])))
    return session, folder


class RoleProfiler:
    """A worker's side of profiling: ``start(step)`` / ``stop()`` when its rank is selected."""

    def __init__(self, spec: ProfileSpec | None, role_cfgs: list[ProfilerConfig], role: str, rank: int):
        self.spec = spec if spec is not None and spec.selects(rank, role_cfgs) else None
        self.role, self.rank, self.recording = role, rank, False

    def start(self, step: int) -> None:
        if self.spec is not None and not self.recording:
            PROCESS.start(self.spec, self.role, step, self.rank)
            self.recording = True

    def stop(self) -> Path | None:
        if not self.recording:
            return None
        self.recording = False
        return PROCESS.stop(self.role)

    def stage(self, name: str):
        """A named range for the stage: an NVTX range under nsys with ``discrete``, a profiler label otherwise."""
        if not self.recording:
            return nullcontext()
        if self.spec.tool == "nsys":
            discrete = self.spec.tool_config.get("nsys", {}).get("discrete",
                                                                  self.spec.global_tool_config["nsys"]["discrete"])
            return _nvtx(name) if discrete else nullcontext()
        return torch.profiler.record_function(name)


@contextmanager
def _nvtx(name: str):
    torch.cuda.nvtx.range_push(name)
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()


def nsight_runtime_env(global_cfg: GlobalProfilerConfig) -> dict:
    """Ray's runtime_env that starts each worker under ``nsys profile`` (global_profiler.tool=nsys)."""
    if global_cfg.tool != "nsys" or not global_cfg.steps:
        return {}
    options = {k: v for k, v in global_cfg.global_tool_config["nsys"]["worker_nsight_options"].items() if v is not None}
    return {"nsight": options}


class Profiled:
    """The profiling methods the driver calls on a worker (which sets ``self.profiler``)."""

    profiler: RoleProfiler | None = None

    def init_profiler(self, config, role_cfgs: dict[str, ProfilerConfig], role: str) -> None:
        from rlcamp.utils.dist import rank

        spec = profile_spec(config.global_profiler, role_cfgs, Path(config.trainer.default_local_dir).expanduser())
        self.profiler = RoleProfiler(spec, list(role_cfgs.values()), role, rank())

    def profile_start(self, step: int) -> None:
        if self.profiler is not None:
            self.profiler.start(step)

    def profile_stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()


def call_stage(worker, method: str, *args, **kwargs):
    """``worker.method(...)``, inside a named profiler range when the worker is recording; an out-of-memory
    comes out as ``OutOfMemory`` naming the role, its micro batch and the change that should fit."""
    profiler = getattr(worker, "profiler", None)
    try:
        with profiler.stage(method) if profiler is not None else nullcontext():
            return getattr(worker, method)(*args, **kwargs)
    except (RuntimeError, MemoryError) as exc:  # an OOM, said in the run's terms (role, micro batch, fix)
        from rlcamp.workers.memory import OutOfMemory, describe, is_out_of_memory

        if isinstance(exc, OutOfMemory) or not is_out_of_memory(exc) or not hasattr(worker, "derived"):
            raise
        raise OutOfMemory(describe(worker.config, worker.derived, str(worker.device), method, exc)) from exc
