"""Many programs at once: sleepers do not queue behind each other, saturation is said in time, SIGTERM stops cleanly."""

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from rlcamp.sandbox.executor import sandbox_pids
from tests.helpers import start_service, stop_service

SLEEP = "import time\ntime.sleep(30)\n"


def post(url: str, request: dict, timeout_s: float) -> tuple[int, dict, dict]:
    """One try, no retry (as verl's client on anything but 504): (HTTP status, body, headers)."""
    req = urllib.request.Request(url, data=json.dumps(request).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_a_hundred_sleeping_programs_run_side_by_side(tmp_path):
    """verl's high-load case: 100 programs that all run into their timeout, 100 requests in flight,
    each answered within its client's patience (run timeout + 10 s), none refused. Their memory limits
    (100 x 128 MB) fit the budget given, as on any host, so only the slots could make them wait."""
    svc = start_service(tmp_path / "log", "--max-concurrent", "100", "--memory-budget-mb", "12800")
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=100) as pool:
            answers = list(pool.map(lambda _: post(svc["run_url"], {"code": SLEEP, "run_timeout": 3,
                                                          "memory_limit_MB": 128}, 13), range(100)))
        wall = time.monotonic() - start
    finally:
        stop_service(svc)
    assert [a[0] for a in answers] == [200] * 100
    assert all(a[1]["run_result"]["status"] == "TimeLimitExceeded" for a in answers)
    print(f"100 x 3 s sleepers answered in {wall:.1f} s")
    assert wall < 13, f"100 x 3 s sleepers took {wall:.1f} s: they waited behind each other"


def test_saturation_is_answered_before_the_clients_patience(tmp_path):
    svc = start_service(tmp_path / "log", "--max-concurrent", "2", "--max-wait", "1")
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            busy = [pool.submit(post, svc["run_url"], {"code": SLEEP, "run_timeout": 6}, 30) for _ in range(2)]
            time.sleep(1.0)
            start = time.monotonic()
            status, body, headers = post(svc["run_url"], {"code": "print(1)"}, 30)
            waited = time.monotonic() - start
            assert [f.result()[1]["run_result"]["status"] for f in busy] == ["TimeLimitExceeded"] * 2
        assert status == 504 and "saturated" in body["message"] and "--max-concurrent" in body["message"]
        assert int(headers["Retry-After"]) >= 1 and waited < 4
        assert post(svc["run_url"], {"code": "print(1)"}, 30)[1]["run_result"]["stdout"] == "1\n"  # free again
    finally:
        stop_service(svc)


def test_the_memory_limits_of_programs_at_once_stay_within_the_budget(tmp_path):
    """Each program is held to its memory_limit_MB; the service starts no more at once than the budget
    holds, so the host never overcommits (verl's all-timeout case: 100 programs of ~1 GB each)."""
    svc = start_service(tmp_path / "log", "--memory-budget-mb", "600", "--max-wait", "1")
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(post, svc["run_url"], {"code": SLEEP, "run_timeout": 4, "memory_limit_MB": 512}, 30)
            time.sleep(1.0)
            status, body, _ = post(svc["run_url"], {"code": "print(2)", "memory_limit_MB": 512}, 30)
            small = post(svc["run_url"], {"code": "print(3)", "memory_limit_MB": 64}, 30)  # fits beside it
            assert first.result()[1]["run_result"]["status"] == "TimeLimitExceeded"
        assert status == 504 and "512 MB of the 600 MB memory budget" in body["message"], body
        assert small[1]["run_result"]["stdout"] == "3\n"
    finally:
        stop_service(svc)


def test_requests_start_in_the_order_they_came(tmp_path):
    """A small program that would fit beside the one running still waits behind a large one that came
    first: a stream of small programs cannot starve a large one past its client's patience."""
    svc = start_service(tmp_path / "log", "--memory-budget-mb", "600", "--max-wait", "20")
    done = {}

    def send(name, memory_mb, code):
        post(svc["run_url"], {"code": code, "run_timeout": 3, "memory_limit_MB": memory_mb}, 30)
        done[name] = time.monotonic()

    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            first = pool.submit(send, "first", 512, SLEEP)
            time.sleep(1.0)
            large = pool.submit(send, "large", 512, "print('large')")  # waits for the first's memory
            time.sleep(0.5)
            small = pool.submit(send, "small", 64, "print('small')")  # 512 + 64 fit, but it came later
            for future in (first, large, small):
                future.result()
    finally:
        stop_service(svc)
    assert done["small"] > done["first"], done
    assert done["large"] > done["first"], done


def test_sigterm_stops_the_service_and_its_programs_at_once(tmp_path):
    svc = start_service(tmp_path / "log")
    answers = []
    flight = threading.Thread(target=lambda: answers.append(post(svc["run_url"], {"code": SLEEP, "run_timeout": 30}, 60)))
    flight.start()
    time.sleep(1.5)
    assert sandbox_pids(), "the program should be running"
    start = time.monotonic()
    svc["proc"].send_signal(signal.SIGTERM)
    code = svc["proc"].wait(15)
    stopped = time.monotonic() - start
    flight.join(15)
    svc["log"].close()
    assert code == 0 and stopped < 5, (code, stopped)
    status, body, _ = answers[0]
    assert status == 200 and body["status"] == "Failed" and body["run_result"]["status"] == "Error"
    assert "shutting down" in body["run_result"]["stderr"]
    time.sleep(0.3)
    assert sandbox_pids() == []
    log = (tmp_path / "log").read_text()
    assert "stopping (1 running programs killed)" in log
