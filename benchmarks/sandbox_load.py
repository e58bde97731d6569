"""Load on the sandbox service over loopback: N concurrent requests, mixed passing / failing / timing out.

Starts `rlcamp sandbox serve` (as root: fully isolated), fires N requests at once from N threads
through the retrying client, checks every result's status, and reports latency percentiles
(client-side, retries included), throughput and how many overload retries happened.

    python benchmarks/sandbox_load.py [--requests 128] [--max-concurrent 4] [--max-queue 16]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

KINDS = {
    "pass": ({"code": "print(sum(range(10)))"}, "Success", "Finished"),
    "fail": ({"code": "raise ValueError('no')"}, "Failed", "Finished"),
    "timeout": ({"code": "while True:\n    pass", "run_timeout": 1}, "Failed", "TimeLimitExceeded"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--kinds", default="pass,fail,timeout", help="request mix, cycled (pass, fail, timeout)")
    args = parser.parse_args()
    from rlcamp.sandbox.client import HTTPSandbox
    from rlcamp.utils.dist import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rlcamp.cli.main", "sandbox", "serve", "--port", str(port),
                               "--max-concurrent", str(args.max_concurrent), "--max-queue", str(args.max_queue)],
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    from rlcamp.sandbox.client import wait_healthy

    health = wait_healthy(url, 30, server)
    client = HTTPSandbox(f"{url}/run_code", timeout_s=300, retries=40)
    kinds = args.kinds.split(",")
    plan = [kinds[i % len(kinds)] for i in range(args.requests)]

    def one(kind):
        start = time.perf_counter()
        result = client.run(dict(KINDS[kind][0], language="python"))
        return kind, result, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.requests) as pool:
        results = list(pool.map(one, plan))
    wall = time.perf_counter() - start
    server.terminate()
    server.wait()
    wrong = [(k, r["status"]) for k, r, _ in results
             if (r["status"], (r.get("run_result") or {}).get("status")) != KINDS[k][1:]]
    latencies = sorted(t for _, _, t in results)
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"isolated={health['isolated']} requests={len(results)} wrong={len(wrong)} lost={args.requests - len(results)}")
    print("| mix | requests | slots | queue | wall s | throughput req/s | p50 s | p99 s | max s | overload retries |")
    print(f"| {args.kinds} | {len(results)} | {args.max_concurrent} | {args.max_queue} | {wall:.1f} | {len(results) / wall:.1f} | "
          f"{statistics.median(latencies):.2f} | {pct(0.99):.2f} | {latencies[-1]:.2f} | {client.retried} |")
    if wrong:
        raise SystemExit(f"wrong statuses: {wrong[:5]}")


if __name__ == "__main__":
    main()
