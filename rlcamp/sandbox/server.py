"""`rlcamp sandbox serve`: an HTTP service speaking SandboxFusion's run_code API (aiohttp).

POST /run_code  (also /run_code/ and /v1/run_code)  -> the run result, HTTP 200
GET  /health                                        -> {"status": "ok", "isolated": ..., "running": ...}
Overload (more than max_queue requests waiting) -> HTTP 429 with Retry-After: retry, nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import sys

from aiohttp import web

from rlcamp.sandbox.executor import Executor, Limits

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
        except Exception as exc:  # the service stays up whatever one request does
            log.exception("run_code failed")
            result = {"status": "SandboxError", "message": f"{type(exc).__name__}: {exc}", "run_result": None}
        return web.json_response(result)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "isolated": executor.isolated, "waiting": executor.waiting})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    for path in ("/run_code", "/run_code/", "/v1/run_code"):
        app.router.add_post(path, run_code)
    app.router.add_get("/health", health)
    return app


def serve(host: str, port: int, max_concurrent: int, max_queue: int, limits: Limits) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    executor = Executor(max_concurrent=max_concurrent, max_queue=max_queue, limits=limits)
    level = logging.INFO if executor.isolated else logging.WARNING
    log.log(level, "%s", executor.report)
    print(f"rlcamp sandbox on http://{host}:{port}/run_code ({max_concurrent} at once, queue {max_queue}); "
          f"{executor.report}", file=sys.stderr, flush=True)
    web.run_app(make_app(executor), host=host, port=port, print=None, access_log=None)
