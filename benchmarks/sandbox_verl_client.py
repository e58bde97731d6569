"""verl's own sandbox client tests against `rlcamp sandbox serve` (#20).

verl b178a3c's ``tests/utils/reward_score/reward_score/test_sandbox_fusion_on_cpu.py`` (15 tests: 100
concurrent programs, timeouts, a C++ compile error, runtime errors, stdin) calls
``verl.utils.reward_score.sandbox_fusion.utils.check_correctness`` on a live SandboxFusion URL. This
takes that file and verl's ``verl/`` package from a git directory of volcengine/verl (nothing is copied
into this repository), starts the service with its default settings, runs the tests with pytest, then
stops the service with SIGTERM and reports how long it took and whether any program was left.

    python benchmarks/sandbox_verl_client.py --verl-git /work/.mirror/volcengine+verl/repo [--commit b178a3c]

verl's top-level ``verl/__init__.py`` (DataProto, tensordict, ...) is left out of the extracted copy:
the client needs only ``verl.utils``, which imports with rlcamp's own environment.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = "tests/utils/reward_score/reward_score/test_sandbox_fusion_on_cpu.py"
ROOT = Path(__file__).resolve().parents[1]


def extract(git_dir: str, commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", commit, "verl", TEST], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "verl" / "__init__.py").write_text("# left empty by rlcamp's benchmark: only verl.utils is needed\n")
    return into / TEST


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verl-git", required=True, help="a git directory of volcengine/verl")
    parser.add_argument("--commit", default="b178a3c")
    parser.add_argument("--serve-args", default="", help="extra arguments for rlcamp sandbox serve")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from rlcamp.sandbox.client import wait_healthy
    from rlcamp.sandbox.executor import sandbox_pids
    from rlcamp.utils.dist import free_port

    with tempfile.TemporaryDirectory() as tmp:
        test = extract(args.verl_git, args.commit, Path(tmp))
        port = free_port()
        log = open(Path(tmp) / "service.log", "w+")
        server = subprocess.Popen([sys.executable, "-m", "rlcamp.cli.main", "sandbox", "serve", "--port", str(port),
                                   *args.serve_args.split()], stdout=log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
        health = wait_healthy(f"http://127.0.0.1:{port}", 30, server)
        env = dict(os.environ, SANDBOX_FUSION_URL=f"http://127.0.0.1:{port}/run_code", PYTHONPATH=tmp)
        start = time.monotonic()
        tests = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", tmp,
                                "-o", "addopts=", str(test)], capture_output=True, text=True, env=env, cwd=tmp)
        tests_s = time.monotonic() - start
        # SIGTERM while programs are running: a request of 20 s in flight
        busy = subprocess.Popen([sys.executable, "-c", (
            "import json, urllib.request\n"
            f"r = urllib.request.Request('http://127.0.0.1:{port}/run_code', data=json.dumps({{'code': "
            "'import time; time.sleep(20)', 'run_timeout': 30}).encode())\n"
            "print(urllib.request.urlopen(r, timeout=60).read().decode())")], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        stop = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(30)
        except subprocess.TimeoutExpired:
            code = None
            server.kill()
        stop_s = time.monotonic() - stop
        answer = busy.communicate(timeout=30)[0].strip()
        time.sleep(0.5)
        left = len(sandbox_pids())
        log.seek(0)
        service_log = log.read()
    outcomes = re.findall(r"::(\w+) (PASSED|FAILED|SKIPPED|ERROR)", tests.stdout)
    print(f"service: {health}")
    print("| verl test | outcome |\n| --- | --- |")
    for name, outcome in outcomes:
        print(f"| {name} | {outcome} |")
    passed = sum(o == "PASSED" for _, o in outcomes)
    print(f"\n{passed} of {len(outcomes)} passed in {tests_s:.1f} s; "
          f"{tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ''}")
    print(f"SIGTERM with a program running: exit code {code} after {stop_s:.2f} s; the request in flight got "
          f"{answer[:160]!r}; sandbox processes left: {left}")
    if passed != len(outcomes):
        print(tests.stdout[-6000:])
        print(service_log[-6000:])


if __name__ == "__main__":
    main()
