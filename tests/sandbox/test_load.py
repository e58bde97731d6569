"""128 concurrent requests on loopback: none lost, each with the right status (overload is retried)."""

from concurrent.futures import ThreadPoolExecutor

from rlcamp.sandbox.client import HTTPSandbox

KINDS = {
    "pass": ({"code": "print(sum(range(10)))"}, "Success", "Finished"),
    "fail": ({"code": "raise ValueError('no')"}, "Failed", "Finished"),
    "timeout": ({"code": "while True:\n    pass", "run_timeout": 1}, "Failed", "TimeLimitExceeded"),
}


def test_128_concurrent_mixed_requests(service):
    client = HTTPSandbox(service["run_url"], timeout_s=120, retries=30)
    plan = [list(KINDS)[i % 3] for i in range(128)]
    with ThreadPoolExecutor(max_workers=128) as pool:
        results = list(pool.map(lambda kind: client.run(dict(KINDS[kind][0], language="python")), plan))
    assert len(results) == 128
    for kind, result in zip(plan, results):
        _, status, run_status = KINDS[kind]
        assert result["status"] == status and result["run_result"]["status"] == run_status, (kind, result)
        if kind == "pass":
            assert result["run_result"]["stdout"] == "45\n"
    assert client.retried > 0  # the queue (16) overflowed and the client retried: nothing was dropped
