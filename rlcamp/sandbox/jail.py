"""The launcher between the sandbox service and an untrusted program: ``python -m rlcamp.sandbox.jail SPEC``.

It is exec'd fresh for every program (no threads, unlike the service, so fork and mount are safe)
and, as root, builds the cage before exec'ing the program:

1. new mount, network, PID, IPC and UTS namespaces (no network interface is up: no connections);
2. forks: the child is PID 1 of the new PID namespace, so when it exits or is killed every process
   it left behind (daemons included) is killed by the kernel; the parent waits and passes on the
   exit status;
3. a private /proc (only the sandbox's processes are visible), tmpfs over /tmp, /var/tmp, /dev/shm
   and over the paths to hide (the service's own source, /root, /home);
4. the program's folder is a size-limited tmpfs with the request's files copied in; for a compile
   (``export`` in the spec) the namespace's init stays root, runs the compiler as the program, and
   copies the artifacts it names (plain files only) out to the stage's ``out`` folder for the run;
5. rlimits (CPU seconds, address space, processes, open files, file size, no core dumps), no
   supplementary groups, a uid of its own (unique per concurrent slot, so the process limit is
   per program), parent-death signal, scrubbed environment; then exec.

Without root (or without namespace support) it only applies the rlimits; the service says so at
start-up.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def set_limits(spec: dict) -> None:
    mb = 1024 * 1024
    limits = {
        resource.RLIMIT_CPU: spec["cpu_s"],
        resource.RLIMIT_AS: spec["memory_mb"] * mb,
        resource.RLIMIT_NPROC: spec["nproc"],
        resource.RLIMIT_NOFILE: spec["nofile"],
        resource.RLIMIT_FSIZE: spec["fsize_mb"] * mb,
        resource.RLIMIT_CORE: 0,
    }
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def build_cage(spec: dict) -> str:
    """Mounts and the program's folder (in the new mount namespace); returns the folder."""
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=1777")
    for path in spec["hide"]:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0555")
    box = os.path.join(spec["stage"], "box")
    mount("tmpfs", box, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['workdir_mb']}m,mode=0700")
    files = os.path.join(spec["stage"], "in")
    for name in os.listdir(files):
        shutil.copy(os.path.join(files, name), os.path.join(box, name))
    for name in os.listdir(box) + [""]:
        os.chown(os.path.join(box, name), spec["uid"], spec["uid"])
    return box


def become(spec: dict, folder: str) -> None:
    set_limits(spec)
    if spec["isolate"]:
        os.setgroups([])
        os.setgid(spec["uid"])
        os.setuid(spec["uid"])
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    os.chdir(folder)


def main() -> None:
    spec = json.loads(sys.argv[1])
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    if not spec["isolate"]:
        folder = os.path.join(spec["stage"], "in")
        become(spec, folder)
        os.execvpe(spec["argv"][0], spec["argv"], dict(env, HOME=folder, **spec.get("env", {})))
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)
    child = os.fork()
    if child:
        # the host-side parent: pass a kill on to the namespace's init, then its exit status
        signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
        _, status = os.waitpid(child, 0)
        os._exit(_exit_code(status))
    try:
        folder = build_cage(spec)
        if not spec.get("export"):
            become(spec, folder)
    except OSError as exc:
        print(f"rlcamp sandbox: could not build the cage: {exc}", file=sys.stderr)
        os._exit(125)
    env = dict(env, HOME=folder, **spec.get("env", {}))
    if not spec.get("export"):
        os.execvpe(spec["argv"][0], spec["argv"], env)
    # a compile: this init stays root to hand the artifacts out once the compiler is done
    compiler = os.fork()
    if compiler == 0:
        become(spec, folder)
        os.execvpe(spec["argv"][0], spec["argv"], env)
    _, status = os.waitpid(compiler, 0)
    code = _exit_code(status)
    if code == 0:
        hand_out(folder, spec["export"], os.path.join(spec["stage"], "out"))
    os._exit(code)


def _exit_code(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def hand_out(folder: str, patterns: list[str], out: str) -> None:
    """Copy the compile's regular files matching ``patterns`` to ``out`` (a folder outside the cage).
    Runs as root on files the program's uid made: links are not followed, only plain files copied."""
    import fnmatch
    import stat

    for name in os.listdir(folder):
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # a link, or gone
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                continue
            target = os.path.join(out, name)
            with open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(target, 0o755)


if __name__ == "__main__":
    main()
