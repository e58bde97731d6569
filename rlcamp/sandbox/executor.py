"""Run one untrusted program under the jail, with a bounded pool of slots (SandboxFusion semantics).

Request (SandboxFusion's run_code subset): ``code``, ``language``, ``stdin``, ``run_timeout``,
``memory_limit_MB``, ``files`` (name -> base64). Result: ``status`` Success | Failed |
SandboxError, ``run_result`` {status Finished | TimeLimitExceeded | Error, execution_time,
return_code, stdout, stderr}.
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
from dataclasses import dataclass, field
from pathlib import Path

import rlcamp

LANGUAGES = {"python": "main.py", "bash": "main.sh"}  # others once their runtime is installed
UID_BASE = 61000  # sandbox uids: UID_BASE + slot; no account needs to exist for them


class SandboxRequestError(ValueError):
    """A request the sandbox cannot run (bad language, bad files); reported as SandboxError."""


@dataclass
class Limits:
    run_timeout: float = 10.0
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


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    uid_line = next(line for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if int(uid_line.split()[1]) == uid:
                pids.append(int(entry))
    return pids


def kill_uid(uid: int, deadline_s: float = 5.0) -> int:
    """SIGKILL every process whose real uid is ``uid`` and wait until they are gone (a backstop after
    the namespace is gone; dying processes still count against the next program's process limit)."""
    killed, end = 0, time.monotonic() + deadline_s
    while (pids := _pids_of(uid)) and time.monotonic() < end:
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
    max_concurrent: int = 8
    max_queue: int = 256
    limits: Limits = field(default_factory=Limits)
    python: str = field(default_factory=default_python)
    work_root: str | None = None

    def __post_init__(self):
        self.isolated, self.report = isolation_report()
        root = self.work_root or ("/run/rlcamp-sandbox" if self.isolated else tempfile.gettempdir() + "/rlcamp-sandbox")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        self._slots: asyncio.Queue | None = None
        self.waiting = 0
        self.hide = hidden_paths()

    def _slot_queue(self) -> asyncio.Queue:
        if self._slots is None:  # created on first use, inside the running event loop
            self._slots = asyncio.Queue()
            for slot in range(self.max_concurrent):
                self._slots.put_nowait(slot)
        return self._slots

    @property
    def overloaded(self) -> bool:
        return self.waiting >= self.max_queue

    async def run(self, request: dict) -> dict:
        """Run a request; waits for a free slot (the caller checks ``overloaded`` first)."""
        slots = self._slot_queue()
        self.waiting += 1
        try:
            slot = await slots.get()
        finally:
            self.waiting -= 1
        try:
            return await self._run_in_slot(request, slot)
        except SandboxRequestError as exc:
            return {"status": "SandboxError", "message": str(exc), "run_result": None, "compile_result": None,
                    "files": {}}
        finally:
            slots.put_nowait(slot)

    def _stage(self, request: dict) -> Path:
        language = request.get("language", "python")
        if language not in LANGUAGES:
            raise SandboxRequestError(f"language '{language}' is not supported; supported: {sorted(LANGUAGES)}")
        stage = self.root / uuid.uuid4().hex
        (stage / "in").mkdir(parents=True)
        (stage / "box").mkdir()
        os.chmod(stage / "in", 0o700)
        for name, content in (request.get("files") or {}).items():
            if "/" in name or name in ("", ".", ".."):
                raise SandboxRequestError(f"file name '{name}' must be a plain name")
            try:
                (stage / "in" / name).write_bytes(base64.b64decode(content or ""))
            except ValueError as exc:
                raise SandboxRequestError(f"file '{name}' is not valid base64: {exc}") from exc
        (stage / "in" / LANGUAGES[language]).write_text(request.get("code", ""))
        return stage

    async def _run_in_slot(self, request: dict, slot: int) -> dict:
        limits = self.limits
        timeout = float(request.get("run_timeout") or limits.run_timeout)
        memory_mb = int(request.get("memory_limit_MB") or limits.memory_mb)
        stage = self._stage(request)
        uid = UID_BASE + slot
        spec = {"stage": str(stage), "uid": uid, "isolate": self.isolated, "hide": self.hide,
                "cpu_s": int(timeout) + 1, "memory_mb": memory_mb, "nproc": limits.nproc, "nofile": limits.nofile,
                "fsize_mb": limits.fsize_mb, "workdir_mb": limits.workdir_mb,
                "argv": self._argv(request.get("language", "python"))}
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rlcamp.sandbox.jail", json.dumps(spec), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(Path(rlcamp.__file__).parent.parent)})
        timed_out = False
        out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
        readers = asyncio.ensure_future(asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr)))
        try:
            try:
                proc.stdin.write((request.get("stdin") or "").encode())
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()
            done, _ = await asyncio.wait({readers}, timeout=timeout + 0.25)  # jail start-up grace
            if not done:
                timed_out = True
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
            shutil.rmtree(stage, ignore_errors=True)
        stdout, stderr, out_cut, err_cut = bytes(out.data), bytes(err.data), out.truncated, err.truncated
        elapsed = time.monotonic() - start
        code = proc.returncode
        # a program stopped by RLIMIT_CPU gets SIGXCPU (or SIGKILL past the hard limit)
        cpu_killed = code in (128 + signal.SIGXCPU, -signal.SIGXCPU, 128 + signal.SIGKILL, -signal.SIGKILL)
        status = "TimeLimitExceeded" if timed_out or (cpu_killed and elapsed >= timeout * 0.5) else "Finished"
        if code == 125 and b"could not build the cage" in stderr:
            return {"status": "SandboxError", "message": stderr.decode(errors="replace"), "run_result": None,
                    "compile_result": None, "files": {}}
        message = "; ".join(m for m, cut in (("stdout truncated", out_cut), ("stderr truncated", err_cut)) if cut)
        run_result = {"status": status, "execution_time": round(elapsed, 4), "return_code": code,
                      "stdout": stdout.decode("utf-8", errors="replace"),
                      "stderr": stderr.decode("utf-8", errors="replace")}
        ok = status == "Finished" and code == 0
        return {"status": "Success" if ok else "Failed", "message": message, "compile_result": None,
                "run_result": run_result, "files": {}}

    def _argv(self, language: str) -> list[str]:
        if language == "bash":
            return ["/bin/bash", LANGUAGES[language]]
        return [self.python, "-I", "-B", LANGUAGES[language]]

    @staticmethod
    def _kill(proc) -> None:
        if proc.returncode is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)  # the jail passes it on to the namespace's init as SIGKILL
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
