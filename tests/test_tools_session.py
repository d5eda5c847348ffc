"""The persistent Python session in the sandbox (thinkrl/rewards/sandbox/session.py): state, limits, attacks."""

from __future__ import annotations

import time

import pytest

from thinkrl.rewards.sandbox import SandboxLimits
from thinkrl.rewards.sandbox.session import PythonSession


@pytest.fixture
def session():
    s = PythonSession(SandboxLimits(wall_s=5.0, output_bytes=4096))
    yield s
    s.close()


def test_variables_persist_and_errors_do_not_end_the_session(session):
    assert session.run("x = 6 * 7").fresh
    out = session.run("print(x)")
    assert (out.stdout, out.error, out.fresh) == ("42\n", False, False)
    err = session.run("print('before'); 1 / 0")
    assert (
        err.error
        and err.stdout == "before\n"
        and err.stderr.splitlines()[-1] == "ZeroDivisionError: division by zero"
    )
    assert "<cell>" in err.stderr and "exec(" not in err.stderr  # the server's own frame is not shown
    assert session.run("print(x + 1)").stdout == "43\n" and session.starts == 1
    assert session.run("import sys; sys.exit(3)").error is False  # exit ends the block, not the session
    assert session.run("print(x)").stdout == "42\n"


def test_a_hanging_block_is_killed_at_its_limit_and_the_next_block_starts_fresh(session):
    session.run("x = 1")
    t0 = time.monotonic()
    out = session.run("while True: pass", timeout_s=1.0)
    assert out.timed_out and not out.error and 1.0 <= time.monotonic() - t0 < 4.0
    assert not session.alive  # the whole sandbox is gone
    after = session.run("print('x' in globals())")
    assert after.fresh and after.stdout == "False\n" and session.starts == 2


def test_ten_megabytes_of_output_are_read_counted_and_cut(session):
    t0 = time.monotonic()
    out = session.run("import sys\nsys.stdout.write('y' * 10_000_000)\nprint('end', file=sys.stderr)")
    assert not out.timed_out and not out.error and time.monotonic() - t0 < 4.0  # never blocked on a full pipe
    assert out.stdout_bytes == 10_000_000 and len(out.stdout) == 4096 and out.stderr == "end\n"


def test_a_block_that_ends_the_interpreter_is_a_crash(session):
    session.run("x = 1")
    out = session.run("import os; os._exit(7)")
    assert out.crashed and not out.timed_out
    assert session.run("print('x' in globals())").stdout == "False\n"


def test_forged_control_lines_and_stolen_input_cannot_desynchronise_the_host(session):
    """A block that writes fake 'done' lines on the control pipe, and one that reads stdin, only ever affect
    their own output: the host matches the block's random token and the next block still runs."""
    forge = (
        "import os\n"
        "for fd in range(3, 20):\n"
        "    try:\n"
        '        os.write(fd, b\'{"seq": "0", "ok": false}\\n{"seq": 1, "ok": true}\\n\')\n'
        "    except OSError:\n"
        "        pass\n"
        "print('forged')"
    )
    out = session.run(forge)
    assert out.stdout == "forged\n" and not out.error
    assert session.run("print(input.__name__, end='')").stdout == "input"
    stolen = session.run("import sys; print(repr(sys.stdin.read()))")
    assert stolen.stdout == "''\n"  # the host sends nothing before the block's control line
    assert session.run("print(1 + 1)").stdout == "2\n"


def test_the_session_sees_no_host_files_and_no_network(session):
    out = session.run(
        "import os, socket\nprint(os.path.exists('/home'), os.path.exists('/proc/self'), os.getcwd())\n"
        "s = socket.socket(); s.settimeout(0.2)\n"
        "try:\n    s.connect(('127.0.0.1', 22)); print('net')\nexcept OSError:\n    print('no net')"
    )
    assert out.stdout == "False False /tmp\nno net\n"
