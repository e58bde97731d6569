"""The trainer's side: send a program to a SandboxFusion-compatible URL, or run it embedded.

Retries on overload (429, 502-504: the service's saturation answer is 504) and connection errors with backoff; a run that keeps failing
raises, naming the URL and the last error.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import urllib.error
import urllib.request

from rlcamp.sandbox.executor import Executor, Limits


class SandboxUnavailable(RuntimeError):
    pass


class HTTPSandbox:
    def __init__(self, url: str, timeout_s: float = 60.0, retries: int = 8, backoff_s: float = 0.25,
                 max_backoff_s: float = 4.0):
        self.url, self.timeout_s, self.retries = url, timeout_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.retried = 0  # overload / connection retries so far, for metrics

    def run(self, request: dict) -> dict:
        data = json.dumps(request).encode()
        last = None
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=data, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 502, 503, 504):
                    raise SandboxUnavailable(f"sandbox {self.url} answered HTTP {exc.code}: {exc.read()[:200]!r}") from exc
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            self.retried += 1
            time.sleep(min(self.backoff_s * (2 ** attempt), self.max_backoff_s) * (0.5 + random.random()))
        raise SandboxUnavailable(f"sandbox {self.url} did not answer after {self.retries + 1} tries: {last}")


def wait_healthy(base_url: str, timeout_s: float = 30.0, process=None) -> dict:
    """Poll ``<base_url>/health`` until the service answers; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=1) as response:
                return json.loads(response.read())
        except OSError:
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
                raise SandboxUnavailable(f"sandbox {base_url} did not become healthy within {timeout_s:.0f} s") from None
            time.sleep(0.1)


class EmbeddedSandbox:
    """The same jail and limits, in this process (no URL configured): a private event loop thread."""

    def __init__(self, max_concurrent: int = 8, limits: Limits | None = None):
        # the trainer's own pool bounds what it sends: a request waits for a slot as long as it takes
        self.executor = Executor(max_concurrent=max_concurrent, max_queue=10**9, limits=limits or Limits(),
                                 max_wait_s=None)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="rlcamp-sandbox").start()

    def run(self, request: dict) -> dict:
        return asyncio.run_coroutine_threadsafe(self.executor.run(request), self.loop).result()


def make_sandbox(url: str | None, max_concurrent: int, memory_limit_mb: int):
    if url:
        return HTTPSandbox(url)
    return EmbeddedSandbox(max_concurrent, Limits(memory_mb=memory_limit_mb))
