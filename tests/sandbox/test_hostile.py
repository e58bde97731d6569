"""Hostile programs: each is contained, and the service is healthy and clean afterwards."""

import json
import urllib.request
from pathlib import Path

import pytest

import rlcamp
from rlcamp.sandbox.client import HTTPSandbox
from rlcamp.sandbox.executor import UID_BASE, sandbox_pids

SOURCE = Path(rlcamp.__file__).resolve().parent / "sandbox" / "executor.py"


def run(service, code, **extra):
    return HTTPSandbox(service["run_url"], timeout_s=60).run({"code": code, "language": "python", **extra})


def sandbox_processes():
    return sandbox_pids()


@pytest.fixture(autouse=True)
def service_is_healthy_and_clean_after(service):
    yield
    with urllib.request.urlopen(f"{service['url']}/health", timeout=5) as response:
        assert json.loads(response.read())["status"] == "ok"
    assert run(service, "print(6 * 7)")["run_result"]["stdout"] == "42\n"
    assert sandbox_processes() == []  # the service waits for them to be gone before answering
    assert not any(Path("/run/rlcamp-sandbox").iterdir())  # every program folder was removed


def test_isolation_is_active(service):
    if not service["health"]["isolated"]:
        pytest.skip("this machine cannot isolate (needs root and namespaces); the service warned at start-up")


def test_fork_bomb(service):
    result = run(service, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert result["status"] == "Failed"


def test_infinite_loop(service):
    result = run(service, "while True:\n    pass\n", run_timeout=1)
    assert result["run_result"]["status"] == "TimeLimitExceeded" and result["run_result"]["execution_time"] < 5


def test_memory_bomb(service):
    result = run(service, "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n", memory_limit_MB=256)
    assert result["status"] == "Failed" and "MemoryError" in result["run_result"]["stderr"]


def test_huge_file(service):
    result = run(service, "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)\n")
    assert result["status"] == "Failed"


def test_writing_outside_its_folder(service, tmp_path):
    targets = ["/etc/rlcamp_escape", "/run/rlcamp-sandbox/escape", "/tmp/rlcamp_escape", str(SOURCE.parent / "x.py")]
    code = "import sys\nfor p in %r:\n    try:\n        open(p, 'w').write('pwned')\n        print('wrote', p)\n" \
           "    except OSError as e:\n        print('denied', p)\n" % targets
    result = run(service, code)
    for target in targets:
        assert not Path(target).exists(), target
    assert "wrote /etc" not in result["run_result"]["stdout"]


def test_reading_outside_its_folder(service):
    code = "for p in %r:\n    try:\n        print(open(p).read()[:40])\n    except OSError as e:\n" \
           "        print('denied', type(e).__name__)\n" % [str(SOURCE), "/etc/shadow", "/root/.bashrc"]
    out = run(service, code)["run_result"]["stdout"]
    assert "class Executor" not in out and "root:" not in out
    assert out.count("denied") == 3


def test_environment_secrets(service):
    code = ("import os\nprint(sorted(os.environ))\n"
            "for pid in os.listdir('/proc'):\n    if pid.isdigit():\n        try:\n"
            "            print(open(f'/proc/{pid}/environ').read())\n        except OSError:\n            pass\n")
    out = run(service, code)["run_result"]["stdout"]
    assert "s3cr3t-token" not in out and "RLCAMP_TEST_SECRET" not in out


def test_network_connection(service):
    code = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2)\n    print('connected')\n"
            "except OSError as e:\n    print('refused', e)\n" % service["port"])
    assert "connected" not in run(service, code)["run_result"]["stdout"]


def test_killing_its_parent(service):
    run(service, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL) if os.getppid() > 0 else None\n"
                 "os.kill(-1, signal.SIGKILL)\n")


def test_daemon_left_behind(service):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(300)\n    os._exit(0)\nprint('parent done')\n")
    assert run(service, code)["run_result"]["stdout"] == "parent done\n"
    # the autouse check asserts no sandbox process is left


def test_printing_gigabytes(service):
    result = run(service, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", run_timeout=2)
    assert len(result["run_result"]["stdout"]) <= 1 << 20 and "stdout truncated" in result["message"]


def test_binary_garbage_on_stdout(service):
    result = run(service, "import os, sys\nsys.stdout.buffer.write(os.urandom(4096) + bytes(range(256)))\n")
    assert result["status"] == "Success" and len(result["run_result"]["stdout"]) > 1000


def test_bash_programs_and_stdin(service):
    result = run(service, "read a b; echo $((a * b)); id -u", language="bash", stdin="6 7\n")
    lines = result["run_result"]["stdout"].split()
    assert lines[0] == "42" and (int(lines[1]) >= UID_BASE or not service["health"]["isolated"])


def test_bad_requests_get_clear_errors(service):
    assert "language 'cobol' is not supported" in run(service, "x", language="cobol")["message"]
    req = urllib.request.Request(service["run_url"], data=b"not json", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
