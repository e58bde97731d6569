"""Run one untrusted program under the jail, with a bounded pool of slots (SandboxFusion semantics).

Request (SandboxFusion's run_code subset): ``code``, ``language`` (rlcamp.sandbox.languages),
``stdin``, ``compile_timeout``, ``run_timeout``, ``memory_limit_MB``, ``files`` (name -> base64).
Result: ``status`` Success | Failed | SandboxError, ``compile_result`` (compiled languages) and
``run_result``, each {status Finished | TimeLimitExceeded | Error, execution_time, return_code,
stdout, stderr}; a failed compile has no run_result.

Slots: ``max_concurrent`` programs run at once, each with its own uid; the kernel shares the CPUs
among them, so a program that sleeps until its timeout costs its slot no CPU and nothing waits
behind it; the memory limits of the programs running add up to at most ``memory_budget_mb``. Requests
start first come, first served; one waits at most ``max_wait_s`` (by default what its client's
patience leaves), then is refused as saturated, so a client hears so before its own patience ends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import rlcamp

from rlcamp.sandbox.languages import COMPILE_MEMORY_MB, LANGUAGES, available, fill, java_main_class, missing_toolchain

UID_BASE = 61000  # sandbox uids: UID_BASE + slot; no account needs to exist for them


class SandboxRequestError(ValueError):
    """A request the sandbox cannot run (bad language, bad files); reported as SandboxError."""


@dataclass
class _Ticket:
    """A request waiting to start: the memory it asks, and the slot it is given."""

    memory_mb: int
    granted: asyncio.Future


class Saturated(RuntimeError):
    """The request could not start in time (no slot, the memory budget full, too little host memory):
    answered HTTP 504 with Retry-After, the status verl's SandboxFusion client retries (SandboxFusion's
    gateway answers it when its runners are busy; the client retries nothing else). While the service
    shuts down: 503."""

    def __init__(self, message: str, retry_after_s: float, http_status: int = 504):
        super().__init__(message)
        self.retry_after_s, self.http_status = retry_after_s, http_status


def _mem_total_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def mem_available_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


@dataclass
class Limits:
    run_timeout: float = 10.0
    compile_timeout: float = 10.0
    memory_mb: int = 1024
    nproc: int = 32
    nofile: int = 64
    fsize_mb: int = 16
    workdir_mb: int = 64
    output_bytes: int = 1 << 20  # kept per stream; the rest is read and dropped


def default_python() -> str:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            return candidate
    return sys.executable


def hidden_paths() -> list[str]:
    """Where the service's own source and home folders are; the program sees them empty."""
    package = Path(rlcamp.__file__).resolve().parent
    checkout = package.parent if (package.parent / "pyproject.toml").exists() else package
    return sorted({str(checkout), "/root", "/home"})


def isolation_report() -> tuple[bool, str]:
    """(isolated?, what is not) for the start-up message."""
    if os.geteuid() != 0:
        return False, ("not running as root: programs run with rlimits only, as this user, WITHOUT network, "
                       "filesystem or PID isolation; run the service as root (e.g. in a container) for those")
    try:
        pid = os.fork()
        if pid == 0:
            try:
                from rlcamp.sandbox.jail import (
                    CLONE_NEWNET,
                    CLONE_NEWNS,
                    CLONE_NEWPID,
                    unshare,
                )

                unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
                os._exit(0)
            except OSError:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if os.WEXITSTATUS(status) != 0:
            return False, "namespaces are not available here: programs run with rlimits only, WITHOUT isolation"
    except OSError as exc:
        return False, f"cannot probe namespaces ({exc}): programs run with rlimits only"
    return True, "isolated: own uid, no network, private /proc, /tmp and folder, hidden service source"


def _pids_of(uids: range) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    uid_line = next(line for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if int(uid_line.split()[1]) in uids:
                pids.append(int(entry))
    return pids


def sandbox_pids() -> list[int]:
    """Processes of any sandbox uid still alive (none once every answer is out)."""
    return _pids_of(range(UID_BASE, UID_BASE + 1024))


def kill_uid(uid: int, deadline_s: float = 5.0) -> int:
    """SIGKILL every process whose real uid is ``uid`` and wait until they are gone (a backstop after
    the namespace is gone; dying processes still count against the next program's process limit)."""
    killed, end = 0, time.monotonic() + deadline_s
    while (pids := _pids_of(range(uid, uid + 1))) and time.monotonic() < end:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    return killed


class _Capture:
    """Reads a stream to its end, keeping the first ``cap`` bytes; what it read survives a kill."""

    def __init__(self, cap: int):
        self.cap, self.data, self.truncated = cap, bytearray(), False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            room = self.cap - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            self.truncated = self.truncated or len(chunk) > room


@dataclass
class Executor:
    max_concurrent: int = 64
    max_queue: int = 1024
    limits: Limits = field(default_factory=Limits)
    python: str = field(default_factory=default_python)
    work_root: str | None = None
    # how long a request may wait to start: "auto" = what its client's patience leaves (below); a number
    # of seconds; None = as long as it takes (the in-process sandbox, whose caller bounds what it sends)
    max_wait_s: float | str | None = "auto"
    min_free_mb: int = 512  # host memory a new program needs free to start
    # the sum of the memory limits of the programs running at once (each is held to its own): by
    # default three quarters of this host's memory
    memory_budget_mb: int | None = None

    def __post_init__(self):
        self.isolated, self.report = isolation_report()
        root = self.work_root or ("/run/rlcamp-sandbox" if self.isolated else tempfile.gettempdir() + "/rlcamp-sandbox")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        self.reserved_mb = 0
        if self.memory_budget_mb is None:
            self.memory_budget_mb = int(0.75 * _mem_total_mb())
        self._free_slots = list(range(self.max_concurrent))  # slot i runs as uid UID_BASE + i
        self._admission: deque[_Ticket] = deque()  # requests waiting to start, first come first served
        self.closing = False
        self._running: set = set()  # jail processes now running
        self.hide = hidden_paths()
        self.languages = available()

    @property
    def waiting(self) -> int:
        return len(self._admission)

    @property
    def overloaded(self) -> bool:
        return self.waiting >= self.max_queue

    @property
    def busy(self) -> int:
        return self.max_concurrent - len(self._free_slots)

    def patience(self, request: dict, compiled: bool) -> float | None:
        """Seconds ``request`` may wait to start. "auto": a SandboxFusion client (verl's) gives up after
        compile_timeout + run_timeout + 10 s; the request itself may take its run_timeout (and its
        compile_timeout when compiled); what is left, less a second, may be spent waiting."""
        if self.max_wait_s != "auto":
            return None if self.max_wait_s is None else float(self.max_wait_s)
        run_s = float(request.get("run_timeout") or self.limits.run_timeout)
        compile_s = float(request.get("compile_timeout") or self.limits.compile_timeout)
        return max(1.0, compile_s + run_s + 10.0 - run_s - (compile_s if compiled else 0.0) - 1.0)

    async def run(self, request: dict) -> dict:
        """Run a request once a slot and its memory are free; raises Saturated when that does not happen
        within its patience (the caller checks ``overloaded`` first)."""
        if self.closing:
            raise Saturated("the sandbox is shutting down", 5.0, 503)
        try:
            name, lang = self._language(request)
        except SandboxRequestError as exc:
            return _sandbox_error(str(exc))
        wait_s = self.patience(request, lang.compile is not None)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        memory_mb = min(int(request.get("memory_limit_MB") or self.limits.memory_mb), self.memory_budget_mb)
        slot = await self._admit(memory_mb, wait_s)
        try:
            await self._enough_memory(deadline)
            return await self._run_in_slot(request, slot)
        except SandboxRequestError as exc:
            return _sandbox_error(str(exc))
        finally:
            self._give_back(slot, memory_mb)

    async def _admit(self, memory_mb: int, wait_s: float | None) -> int:
        """A slot, with ``memory_mb`` of the memory budget held for it (a program larger than the whole
        budget runs alone). Requests start in the order they came: one that arrives while others wait
        queues behind them even if it would fit now, so a steady stream cannot starve a waiting one."""
        if not self._admission and self._fits(memory_mb):
            return self._take(memory_mb)
        ticket = _Ticket(memory_mb, asyncio.get_running_loop().create_future())
        self._admission.append(ticket)
        try:
            await asyncio.wait({ticket.granted}, timeout=wait_s)
        except BaseException:  # the request was cancelled (its client went away) while it waited
            self._withdraw(ticket)
            raise
        if ticket.granted.done():
            return ticket.granted.result()  # a slot, or Saturated when the service is shutting down
        self._withdraw(ticket)
        if not self._free_slots:
            why = f"no free slot within {wait_s:g} s ({self.max_concurrent} programs running"
            fix = "a larger --max-concurrent"
        else:
            why = (f"the programs running hold {self.reserved_mb} MB of the {self.memory_budget_mb} MB memory budget "
                   f"and this one asks {memory_mb} MB (memory_limit_MB) (waited {wait_s:g} s")
            fix = "a larger --memory-budget-mb, or ask for less"
        raise Saturated(f"saturated: {why}, {self.waiting} more waiting); retry later, or start the service with "
                        f"{fix}", self._retry_after())

    def _fits(self, memory_mb: int) -> bool:
        return bool(self._free_slots) and self.reserved_mb + memory_mb <= self.memory_budget_mb

    def _take(self, memory_mb: int) -> int:
        self.reserved_mb += memory_mb
        return self._free_slots.pop()

    def _give_back(self, slot: int, memory_mb: int) -> None:
        self.reserved_mb -= memory_mb
        self._free_slots.append(slot)
        self._grant()

    def _grant(self) -> None:
        """Start the waiting requests at the head of the queue while they fit."""
        while self._admission and self._fits(self._admission[0].memory_mb):
            ticket = self._admission.popleft()
            ticket.granted.set_result(self._take(ticket.memory_mb))

    def _withdraw(self, ticket: _Ticket) -> None:
        if ticket.granted.done():  # granted as it gave up: hand the slot on
            if ticket.granted.exception() is None:
                self._give_back(ticket.granted.result(), ticket.memory_mb)
            return
        ticket.granted.cancel()
        self._admission.remove(ticket)
        self._grant()  # a large request at the head no longer holds back the smaller ones behind it

    def _retry_after(self) -> float:
        return max(1.0, min(self.limits.run_timeout, 10.0))

    async def _enough_memory(self, deadline: float | None) -> None:
        while (free := mem_available_mb()) < self.min_free_mb:
            if self.closing or (deadline is not None and time.monotonic() > deadline):
                raise Saturated(f"saturated: {free:.0f} MB of host memory free, a program needs {self.min_free_mb} MB "
                                f"to start ({self.busy} running); retry later", self._retry_after())
            await asyncio.sleep(0.1)

    async def shutdown(self, grace_s: float = 5.0) -> int:
        """Refuse new requests and those waiting, kill the programs running (their requests answer at once),
        wait for them."""
        self.closing = True
        while self._admission:
            self._admission.popleft().granted.set_exception(Saturated("the sandbox is shutting down", 5.0, 503))
        running = list(self._running)
        for proc in running:
            proc.stopped_by_shutdown = True
            _terminate(proc)
        start = time.monotonic()
        while self._running and time.monotonic() < start + grace_s:
            if time.monotonic() > start + 1.0:  # not isolated, and the program ignores SIGTERM
                for proc in list(self._running):
                    self._kill(proc)
            await asyncio.sleep(0.02)
        return len(running)

    def _language(self, request: dict):
        name = request.get("language") or "python"
        if name not in LANGUAGES:
            raise SandboxRequestError(f"language '{name}' is not supported; supported: {sorted(LANGUAGES)}")
        if (why := missing_toolchain(name)) is not None:
            raise SandboxRequestError(why)
        return name, LANGUAGES[name]

    def _stage(self, request: dict, source: str) -> Path:
        stage = self.root / uuid.uuid4().hex
        (stage / "in").mkdir(parents=True)
        (stage / "box").mkdir()
        (stage / "out").mkdir()
        os.chmod(stage / "in", 0o700)
        os.chmod(stage / "out", 0o700)
        for name, content in (request.get("files") or {}).items():
            if "/" in name or name in ("", ".", ".."):
                raise SandboxRequestError(f"file name '{name}' must be a plain name")
            try:
                (stage / "in" / name).write_bytes(base64.b64decode(content or ""))
            except ValueError as exc:
                raise SandboxRequestError(f"file '{name}' is not valid base64: {exc}") from exc
        (stage / "in" / source).write_text(request.get("code", ""))
        return stage

    async def _run_in_slot(self, request: dict, slot: int) -> dict:
        name, lang = self._language(request)
        limits = self.limits
        timeout = float(request.get("run_timeout") or limits.run_timeout)
        compile_timeout = float(request.get("compile_timeout") or limits.compile_timeout)
        memory_mb = int(request.get("memory_limit_MB") or limits.memory_mb)
        main = java_main_class(request.get("code", "")) if name == "java" else "main"
        values = {"python": self.python, "heap_mb": memory_mb, "main": main}
        stage = self._stage(request, lang.source.format(main=main))
        uid = UID_BASE + slot
        try:
            compile_result = None
            if lang.compile is not None:
                compile_result = await self._jail(stage, uid, fill(lang.compile, **values), compile_timeout,
                                                  max(memory_mb, COMPILE_MEMORY_MB) + lang.reserve_mb, "", lang,
                                                  export=list(lang.artifacts))
                if compile_result.pop("sandbox_error", None):
                    return _sandbox_error(compile_result["stderr"])
                if compile_result["status"] != "Finished" or compile_result["return_code"] != 0:
                    return {"status": "Failed", "message": compile_result.pop("message"),
                            "compile_result": compile_result, "run_result": None, "files": {}}
                compile_result.pop("message")
                for artifact in (stage / "out").iterdir():  # the run's files
                    shutil.move(str(artifact), stage / "in" / artifact.name)
            run_result = await self._jail(stage, uid, fill(lang.run, **values), timeout, memory_mb + lang.reserve_mb,
                                          request.get("stdin") or "", lang)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if run_result.pop("sandbox_error", None):
            return _sandbox_error(run_result["stderr"])
        message = run_result.pop("message")
        ok = run_result["status"] == "Finished" and run_result["return_code"] == 0
        return {"status": "Success" if ok else "Failed", "message": message, "compile_result": compile_result,
                "run_result": run_result, "files": {}}

    async def _jail(self, stage: Path, uid: int, argv: list[str], timeout: float, memory_mb: int, stdin: str, lang,
                    export: list[str] | None = None) -> dict:
        """One program (a compiler or the program itself) in its own jail; its result as SandboxFusion
        reports it (``sandbox_error``: the cage could not be built)."""
        limits = self.limits
        spec = {"stage": str(stage), "uid": uid, "isolate": self.isolated, "hide": self.hide,
                "cpu_s": int(timeout) + 1, "memory_mb": memory_mb, "nproc": limits.nproc, "nofile": limits.nofile,
                "fsize_mb": limits.fsize_mb, "workdir_mb": limits.workdir_mb, "argv": argv, "env": lang.env}
        if export is not None and self.isolated:
            spec["export"] = export
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rlcamp.sandbox.jail", json.dumps(spec), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(Path(rlcamp.__file__).parent.parent)})
        self._running.add(proc)
        timed_out = False
        out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
        readers = asyncio.ensure_future(asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr)))
        try:
            try:
                proc.stdin.write(stdin.encode())
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()
            done, _ = await asyncio.wait({readers}, timeout=timeout + 0.25)  # jail start-up grace
            if not done:
                timed_out = True
                _terminate(proc)
                done, _ = await asyncio.wait({readers}, timeout=1.0)
                if not done:  # not isolated (the program has the signal), or the jail still starting
                    self._kill(proc)
            # once the namespace is gone the pipes close; bound the wait anyway
            done, _ = await asyncio.wait({readers}, timeout=5.0)
            if not done:
                readers.cancel()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except asyncio.TimeoutError:
                self._kill(proc)
                await proc.wait()
        finally:
            self._kill(proc)
            if self.isolated:
                await asyncio.get_running_loop().run_in_executor(None, kill_uid, uid)
            self._running.discard(proc)
        stdout, stderr, out_cut, err_cut = bytes(out.data), bytes(err.data), out.truncated, err.truncated
        elapsed = time.monotonic() - start
        code = proc.returncode
        if code == 125 and b"could not build the cage" in stderr:
            return {"sandbox_error": True, "stderr": stderr.decode(errors="replace")}
        # a program stopped by RLIMIT_CPU gets SIGXCPU (or SIGKILL past the hard limit)
        cpu_killed = code in (128 + signal.SIGXCPU, -signal.SIGXCPU, 128 + signal.SIGKILL, -signal.SIGKILL)
        status = "TimeLimitExceeded" if timed_out or (cpu_killed and elapsed >= timeout * 0.5) else "Finished"
        if getattr(proc, "stopped_by_shutdown", False):
            status = "Error"
            stderr += b"\n[rlcamp sandbox: stopped, the service is shutting down]"
        message = "; ".join(m for m, cut in (("stdout truncated", out_cut), ("stderr truncated", err_cut)) if cut)
        return {"status": status, "execution_time": round(elapsed, 4), "return_code": code,
                "stdout": stdout.decode("utf-8", errors="replace"), "stderr": stderr.decode("utf-8", errors="replace"),
                "message": message}

    @staticmethod
    def _kill(proc) -> None:
        if proc.returncode is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)  # the jail passes it on to the namespace's init as SIGKILL
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _terminate(proc) -> None:
    """SIGTERM to a jail: its host-side parent turns it into a SIGKILL of the namespace's init and reaps
    that, so nothing of the program's uid is left behind. A SIGKILL of the jail's whole process group
    (Executor._kill, the fallback) orphans the init instead, whose zombie then waits for the host's init
    to reap it (kill_uid waited up to 2 s on such zombies with 100 timeouts at once)."""
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _sandbox_error(message: str) -> dict:
    return {"status": "SandboxError", "message": message, "run_result": None, "compile_result": None, "files": {}}
