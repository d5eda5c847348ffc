"""Sandbox security: each hostile program ends within its limit with reward 0 and the host unharmed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from thinkrl.rewards import get_reward
from thinkrl.rewards.code import run_tests
from thinkrl.rewards.sandbox import SandboxLimits, isolation, run_python

LIMITS = SandboxLimits(wall_s=3.0, cpu_s=2, memory_mb=256, file_mb=4, nproc=16)
REPO = Path(__file__).resolve().parents[1]
TEST = [{"input": "3\n", "output": "6\n"}]  # the task: print twice the input


def _code(body: str) -> str:
    return f"<think>..</think><answer>```python\n{body}\n```</answer>"


def _score(body: str, tests=None) -> float:
    from thinkrl.rewards.code import score_code

    return score_code([_code(body)], [tests or TEST], partial=True, limits=LIMITS)[0]


def test_correct_program_passes() -> None:
    assert _score("print(int(input()) * 2)") == 1.0
    assert get_reward("code")(["q"], [_code("print(int(input()) * 2)")], tests=[TEST]) == [1.0]
    assert get_reward("code")(["q"], ["no code here"], tests=[TEST]) == [0.0]
    assert get_reward("code")(["q"], ["x"], tests=[None]) == [None]


def test_partial_credit_and_asserts() -> None:
    prog = "def f(x):\n    return x * 2 if x < 3 else 0"
    tests = ["assert f(1) == 2", "assert f(2) == 4", {"assert": "assert f(5) == 10"}, "assert f(0) == 0"]
    assert run_tests(prog, [{"assert": t} if isinstance(t, str) else t for t in tests], LIMITS) == [
        True,
        True,
        False,
        True,
    ]
    assert get_reward("code_partial")(["q"], [_code(prog)], tests=[tests]) == [0.75]
    assert get_reward("code")(["q"], [_code(prog)], tests=[tests]) == [0.0]


@pytest.mark.parametrize(
    "name,body",
    [
        ("infinite loop", "while True:\n    pass"),
        ("sleep", "import time\ntime.sleep(60)"),
        ("memory bomb", "x = bytearray(4 * 1024**3)\nprint(6)"),
        ("huge file", "f = open('big', 'wb')\nfor _ in range(64):\n    f.write(b'x' * 2**20)\nprint(6)"),
        ("exit before output", "import sys\nsys.exit(0)"),
    ],
)
def test_resource_abuse_scores_zero_within_limit(name: str, body: str) -> None:
    t = time.monotonic()
    assert _score(body) == 0.0, name
    assert time.monotonic() - t < LIMITS.wall_s + 5


def test_sys_exit_before_asserts_is_not_a_pass() -> None:
    prog = "import sys\nprint('0 0 1')\nsys.exit(0)"
    assert _score(prog, tests=["assert f(1) == 2"]) == 0.0
    assert _score("import os\nos._exit(0)", tests=["assert True"]) == 0.0


def test_bounded_fork_loop_hits_process_limit() -> None:
    # 200 sleeping children would exceed nproc=16: forks must fail, and nothing may outlive the run.
    body = (
        "import os, time\nn = 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    n += 1\nprint(n)"
    )
    r = run_python(body, limits=LIMITS)
    if isolation()["uid"]:
        assert r.stdout.strip() and int(r.stdout) < 200
    time.sleep(0.5)
    interp = str(isolation()["interpreter"])
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmd(p).startswith(interp + " -I -S -c")]
    leftovers = [p for p in leftovers if _uid(p) >= 1_500_000_000]
    assert not leftovers
    assert _score(body) == 0.0


def _cmd(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _uid(pid: str) -> int:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return -1


def test_cannot_write_outside_workdir() -> None:
    target = REPO / "SANDBOX_ESCAPE_TEST"
    r = run_python(f"open({str(target)!r}, 'w').write('x')\nprint(6)", limits=LIMITS)
    assert r.returncode != 0 and not target.exists()
    assert _score(f"open({str(target)!r}, 'w').write('x')\nprint(int(input()) * 2)") == 0.0
    r = run_python("open('/tmp/thinkrl_sbx_escape', 'w').write('x')", limits=LIMITS)
    if isolation()["mountns"]:
        assert not Path("/tmp/thinkrl_sbx_escape").exists()


@pytest.mark.parametrize("path", ["/etc/shadow", str(REPO / "pyproject.toml")])
def test_cannot_read_secrets_or_project(path: str) -> None:
    if path == "/etc/shadow" and not (isolation()["uid"] or os.geteuid() != 0):
        pytest.skip("running as root without a uid drop: /etc/shadow is readable")
    if path.startswith(str(REPO)) and not isolation()["mountns"]:
        pytest.skip("no mount namespace on this machine: world-readable project files stay readable")
    assert _score(f"print(open({path!r}).read()[:40])\nprint(int(input()) * 2)") == 0.0


def test_no_network() -> None:
    if not isolation()["netns"]:
        pytest.skip("no network namespace on this machine (documented fallback)")
    body = "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 53))\nprint(int(input()) * 2)"
    assert _score(body) == 0.0
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:  # the host's loopback is not reachable either
        assert _score(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 1)\nprint(6)") == 0.0
    finally:
        srv.close()


def test_cannot_kill_parent() -> None:
    body = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill({}, signal.SIGKILL)\nprint(6)"
    assert _score(body.format(os.getpid())) == 0.0
    assert os.getpid() > 0  # still alive: we got here


def test_environment_is_stripped() -> None:
    os.environ["THINKRL_SECRET_TEST"] = "s3cret"
    try:
        r = run_python("import os\nprint(sorted(os.environ))", limits=LIMITS)
    finally:
        del os.environ["THINKRL_SECRET_TEST"]
    assert "THINKRL_SECRET_TEST" not in r.stdout and "PATH" in r.stdout
