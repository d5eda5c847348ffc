"""A persistent Python session in the sandbox: code blocks run one after another in one namespace.

A tool-using trajectory calls Python several times and expects its variables to persist (ReTool's
interpreter); :class:`PythonSession` keeps one sandboxed interpreter alive for that. It is the same sandbox as
:func:`~thinkrl.rewards.sandbox.run_python` (filesystem view, no network, own PID namespace, fresh uid,
rlimits: the module docstring of ``thinkrl.rewards.sandbox``); only the program differs: a small server
(``_SERVER``) that reads code blocks from stdin, runs each with ``exec`` in one namespace and, after each,
writes one line on a control pipe. The host reads the block's stdout and stderr from their pipes while it runs,
keeps at most ``output_bytes`` of each (and counts the rest), and gives each block its own wall-clock limit.

What happens when a block misbehaves:

- raises: the traceback (without the server's own frame) is its stderr, ``error=True``; the session goes on;
- runs past ``timeout_s``: the whole sandbox is killed (everything it started dies with it), ``timed_out=True``;
  the next block starts a new, empty session (``fresh=True`` in its result: the variables are gone);
- ends the interpreter (``os._exit``, a crash, the CPU rlimit): ``crashed=True``; the next block starts anew;
- prints 10 MB: the host keeps reading (so the program never blocks on a full pipe), stores ``output_bytes``
  and reports the total in ``stdout_bytes``;
- writes on the control pipe itself: lines are matched to the block by a random token the host sends with
  it, so a stale or guessed line is ignored; a flood of them ends the session (``crashed``). A program can only ever change
  its own session's outputs, never the host's.

>>> with PythonSession() as s:
...     first, second = s.run("x = 6 * 7"), s.run("print(x)")
>>> second.stdout, second.error, first.fresh, second.fresh
('42\\n', False, True, False)
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from thinkrl.rewards.sandbox import _RUN_COUNTER, _UID_BASE, Sandbox, _is_namespace_init, default_sandbox
from thinkrl.rewards.sandbox.command import ENV, build_command, limits_dict
from thinkrl.rewards.sandbox.limits import SandboxError, SandboxLimits

_CONTROL_LIMIT = 1 << 16  # bytes of control lines one block may produce before the session is ended
_START_TIMEOUT_S = 30.0  # a sandbox that has not answered its first block by then failed to start

# The program the sandbox runs: a loop over length-prefixed code blocks on stdin. It never reads what the
# host did not send and writes its answer only after the block's output is flushed, so every byte a block
# printed is in the pipes before the host sees the line that ends it.
_SERVER = r"""
import builtins, io, os, sys
CONTROL = {control_fd}
namespace = {{"__name__": "__main__", "__builtins__": builtins}}
stdout, stderr, source = sys.stdout, sys.stderr, sys.stdin.buffer
os.write(CONTROL, b'{{"seq": "0", "ok": true}}\n')
while True:
    header = source.readline()
    if not header:
        break
    seq, size = header.split()
    code = source.read(int(size)).decode("utf-8", "surrogateescape")
    sys.stdin = io.StringIO("")
    ok = True
    try:
        exec(compile(code, "<cell>", "exec"), namespace)
    except SystemExit:
        pass
    except BaseException as e:
        import traceback
        ok = False
        traceback.print_exception(type(e), e, e.__traceback__.tb_next, file=stderr)
    sys.stdout, sys.stderr = stdout, stderr
    for stream in (stdout, stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(CONTROL, b'{{"seq": "%s", "ok": %s}}\n' % (seq, b"true" if ok else b"false"))
"""


@dataclass
class CallResult:
    """What one code block did."""

    stdout: str
    """What it printed (the first ``output_bytes`` bytes, decoded with replacement)."""
    stderr: str
    """Its error output: the traceback when it raised (the first ``output_bytes`` bytes)."""
    error: bool
    """It raised an exception."""
    timed_out: bool
    """It ran past its time limit and the session was killed."""
    crashed: bool
    """The interpreter ended during the block (``os._exit``, a signal, the CPU or memory limit)."""
    seconds: float
    """Wall-clock time of the block (the session's start included when ``fresh``)."""
    fresh: bool
    """The block ran in a new session (the first block, or the first after a timeout or crash)."""
    stdout_bytes: int = 0
    """Bytes it printed in all (more than were kept when over ``output_bytes``)."""
    stderr_bytes: int = 0
    """Bytes of error output in all."""

    @property
    def failed(self) -> bool:
        """Anything but a clean run: raised, timed out or crashed."""
        return self.error or self.timed_out or self.crashed


class PythonSession:
    """One sandboxed Python interpreter whose namespace persists across :meth:`run` calls.

    Args:
        limits: the sandbox's rlimits (``cpu_s`` counts the whole session's CPU time, ``memory_mb`` each
            process's address space); ``wall_s`` is the default per-block limit of :meth:`run`.
        sandbox: the backend policy (default: the process-wide :func:`default_sandbox`, which refuses to run
            without isolation unless told otherwise).

    The interpreter starts on the first :meth:`run` and again after a timeout or crash; :meth:`close` (or the
    ``with`` block) kills it and everything it started.
    """

    def __init__(self, limits: SandboxLimits | None = None, sandbox: Sandbox | None = None):
        self.limits = limits or SandboxLimits()
        self.sandbox = sandbox or default_sandbox()
        self.starts = 0
        """Interpreters started so far (1 + restarts after timeouts and crashes)."""
        self._proc: subprocess.Popen | None = None
        self._base: str | None = None
        self._pid_r: int | None = None
        self._control: int | None = None
        self._seq = "0"

    def __enter__(self) -> PythonSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the modules it needs may be gone
            pass

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def run(self, code: str, timeout_s: float | None = None) -> CallResult:
        """Run ``code`` in the session; never raises for anything the code does.

        Raises ``SandboxUnavailable`` when code may not run here and ``SandboxError`` when the sandbox itself
        failed to start.
        """
        t0 = time.monotonic()
        fresh = not self.alive
        if fresh:
            self._start()
            t_ready = time.monotonic()
        self._seq = secrets.token_hex(8)
        data = code.encode("utf-8", "surrogatepass")
        try:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(f"{self._seq} {len(data)}\n".encode() + data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the interpreter is gone: the read below sees it and reports a crash
        limit = self.limits.wall_s if timeout_s is None else timeout_s
        # the sandbox's own start does not count against the block
        out, err, status = self._collect((t_ready if fresh else t0) + limit)
        seconds = time.monotonic() - t0
        if status is None or status == "crashed":
            self._kill()
        return CallResult(
            stdout=out[0].decode("utf-8", "replace"),
            stderr=err[0].decode("utf-8", "replace"),
            error=status == "error",
            timed_out=status is None,
            crashed=status == "crashed",
            seconds=seconds,
            fresh=fresh,
            stdout_bytes=out[1],
            stderr_bytes=err[1],
        )

    def close(self) -> None:
        """Kill the interpreter and everything it started; the session can still run again (fresh)."""
        self._kill()

    # ------------------------------------------------------------------------------------------- internals
    def _start(self) -> None:
        b = self.sandbox.chosen()
        if b.name == "unisolated":
            self.sandbox.unisolated_runs += 1
        root = os.geteuid() == 0
        uid = _UID_BASE + (os.getpid() % 100_000) * 1000 + next(_RUN_COUNTER) % 1000 if root else os.getuid()
        gid = uid if root else os.getgid()
        self._base = tempfile.mkdtemp(prefix="thinkrl-session-")
        for d in ("root", "work"):
            os.mkdir(os.path.join(self._base, d), 0o700)
        pid_r, pid_w = os.pipe()
        control_r, control_w = os.pipe()
        main = os.path.join(self._base, "work", "main.py")
        Path(main).write_text(_SERVER.format(control_fd=control_w))
        boot = {"limits": limits_dict(self.limits, b), "pid_fd": pid_w, "result_fd": None, "calls": None}
        fds: tuple[int, ...] = ()
        try:
            argv, fds, cwd = build_command(b, boot, self._base, main, uid, gid, self.limits)
            self._proc = subprocess.Popen(
                argv, cwd=cwd, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(pid_w, control_w, *fds), start_new_session=True,
            )  # fmt: skip
        except BaseException:
            for fd in (pid_r, control_r):
                os.close(fd)
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
            raise
        finally:
            for fd in (pid_w, control_w, *fds):
                os.close(fd)
        self._pid_r, self._control = pid_r, control_r
        self._backend = b.name
        self.starts += 1
        self._seq = "0"  # the server's ready line carries the token "0"
        _, err, status = self._collect(time.monotonic() + _START_TIMEOUT_S)
        if status != "ok":
            self._kill()
            text = err[0].decode("utf-8", "replace").strip()
            raise SandboxError(f"the Python session did not start: {text or 'no answer'}")

    def _collect(self, deadline: float) -> tuple[tuple[bytes, int], tuple[bytes, int], str | None]:
        """Read the block's stdout/stderr until its control line arrives: (kept bytes, total) of each and
        ``ok`` / ``error`` / ``crashed``, or None when the deadline passed."""
        assert self._proc is not None and self._control is not None
        cap = self.limits.output_bytes
        bufs = {"out": bytearray(), "err": bytearray()}
        totals = {"out": 0, "err": 0}
        control = bytearray()
        sel = selectors.DefaultSelector()
        streams = {"out": self._proc.stdout, "err": self._proc.stderr}
        for name, stream in streams.items():
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ, name)
        os.set_blocking(self._control, False)
        sel.register(self._control, selectors.EVENT_READ, "control")
        status: str | None = None
        try:
            while status is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(timeout=min(left, 1.0)):
                    name = key.data
                    chunk = _read_some(key.fd)
                    if chunk is None:  # nothing after all (a spurious wake-up)
                        continue
                    if name == "control":
                        if not chunk:
                            status = "crashed"
                            break
                        control += chunk
                        status = self._control_status(control)
                        if status is None and len(control) > _CONTROL_LIMIT:
                            status = "crashed"
                    elif chunk:
                        totals[name] += len(chunk)
                        room = cap - len(bufs[name])
                        if room > 0:
                            bufs[name] += chunk[:room]
                    else:
                        sel.unregister(key.fd)
            # what the block printed before its control line is in the pipes already; a child process that
            # keeps printing must not hold the host here, so the drain stops at a bound
            drain_until = time.monotonic() + 0.05
            for name, stream in streams.items():
                if status not in ("ok", "error"):
                    break
                while (chunk := _read_some(stream.fileno())) and time.monotonic() < drain_until:
                    totals[name] += len(chunk)
                    room = cap - len(bufs[name])
                    if room > 0:
                        bufs[name] += chunk[:room]
        finally:
            sel.close()
        return (bytes(bufs["out"]), totals["out"]), (bytes(bufs["err"]), totals["err"]), status

    def _control_status(self, control: bytearray) -> str | None:
        """``ok`` / ``error`` from the control line of the current block; None while it has not come."""
        for line in bytes(control).split(b"\n")[:-1]:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("seq") == self._seq and type(msg.get("ok")) is bool:
                return "ok" if msg["ok"] else "error"
        return None

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            inner = None
            if self._pid_r is not None:
                os.set_blocking(self._pid_r, False)
                try:
                    inner = int(os.read(self._pid_r, 32) or b"0") or None
                except (ValueError, BlockingIOError, OSError):
                    inner = None
            if inner and self._backend == "namespaces" and _is_namespace_init(inner):
                _signal(inner)  # PID 1 of the namespace: its death takes every process in it down
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            _signal(proc.pid)
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        for fd in (self._pid_r, self._control):
            if fd is not None:
                os.close(fd)
        self._pid_r = self._control = None
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None


def _read_some(fd: int) -> bytes | None:
    """Up to 64 KiB from ``fd``: b"" at end of file, None when nothing is there yet."""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _signal(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
