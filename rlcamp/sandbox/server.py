"""`rlcamp sandbox serve`: an HTTP service speaking SandboxFusion's run_code API (aiohttp).

POST /run_code  (also /run_code/ and /v1/run_code)  -> the run result, HTTP 200
GET  /health        -> {"status": "ok", "isolated", "running", "waiting", "max_concurrent", "languages"}
Overload (more than max_queue requests waiting) -> HTTP 429 with Retry-After. Requests start first
come, first served; one that finds no slot or no room in the memory budget within its wait
(--max-wait; by default what its client's patience leaves), or too little host memory, is
answered HTTP 504 with Retry-After and the reason: the client hears it is saturated instead of
being held past its own timeout, and verl's client retries a 504 (it retries nothing else).
Shutting down -> 503.
SIGTERM / SIGINT: stop accepting, kill the programs running (their requests are answered with
status Error), close, exit 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

from aiohttp import web

from rlcamp.sandbox.executor import Executor, Limits, Saturated

log = logging.getLogger("rlcamp.sandbox")


def make_app(executor: Executor) -> web.Application:
    async def run_code(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"status": "SandboxError", "message": "request body is not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            return web.json_response({"status": "SandboxError", "message": "a JSON object with 'code' is required"},
                                     status=400)
        if executor.overloaded:
            return web.json_response({"status": "SandboxError", "message": "overloaded: retry later"}, status=429,
                                     headers={"Retry-After": "1"})
        try:
            result = await executor.run(body)
        except Saturated as exc:
            log.warning("answered %d: %s", exc.http_status, exc)
            return web.json_response({"status": "SandboxError", "message": str(exc), "run_result": None},
                                     status=exc.http_status, headers={"Retry-After": str(round(exc.retry_after_s))})
        except Exception as exc:  # the service stays up whatever one request does
            log.exception("run_code failed")
            result = {"status": "SandboxError", "message": f"{type(exc).__name__}: {exc}", "run_result": None}
        return web.json_response(result)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "stopping" if executor.closing else "ok", "isolated": executor.isolated,
                                  "running": executor.busy, "waiting": executor.waiting,
                                  "max_concurrent": executor.max_concurrent, "reserved_mb": executor.reserved_mb,
                                  "memory_budget_mb": executor.memory_budget_mb, "languages": executor.languages})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    for path in ("/run_code", "/run_code/", "/v1/run_code"):
        app.router.add_post(path, run_code)
    app.router.add_get("/health", health)
    return app


def serve(host: str, port: int, max_concurrent: int, max_queue: int, limits: Limits, max_wait_s: float | str = "auto",
          memory_budget_mb: int | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    executor = Executor(max_concurrent=max_concurrent, max_queue=max_queue, limits=limits, max_wait_s=max_wait_s,
                        memory_budget_mb=memory_budget_mb)
    level = logging.INFO if executor.isolated else logging.WARNING
    log.log(level, "%s", executor.report)
    wait = "as its client's patience allows" if max_wait_s == "auto" else f"at most {max_wait_s:g} s"
    print(f"rlcamp sandbox on http://{host}:{port}/run_code ({max_concurrent} at once within {executor.memory_budget_mb} "
          f"MB of memory limits, queue {max_queue}, a request waits {wait}; languages: {', '.join(executor.languages)}); "
          f"{executor.report}", file=sys.stderr, flush=True)
    asyncio.run(_serve(executor, host, port))


async def _serve(executor: Executor, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(executor), access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    killed = await executor.shutdown()
    print(f"rlcamp sandbox: stopping ({killed} running programs killed)", file=sys.stderr, flush=True)
    await runner.cleanup()
