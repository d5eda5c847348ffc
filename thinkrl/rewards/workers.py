"""Worker processes with a hard wall-clock limit per task, where a hung task costs its limit once, in parallel.

A :class:`Zygote` is a process that holds the code (math-verify already imported, or the user's reward
functions) and forks a fresh worker in milliseconds on request, so replacing a killed worker is cheap and
never pays an import again. Two kinds:

- ``Zygote.spawn(handler)``: a fresh interpreter that imports ``"module:function"`` (nothing of the caller's
  state; used for the math grader);
- ``Zygote.fork(handler)``: a fork of the calling process, made once, so that any callable works, lambdas and
  closures included (nothing is pickled but the rows and the scores).

:class:`thinkrl.rewards.pool.BoundedPool` runs tasks on such workers with a hard limit per task.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LEN = struct.Struct("!Q")
_PR_SET_PDEATHSIG = 1
_PKG_PARENT = str(Path(__file__).resolve().parents[2])  # the folder holding the thinkrl package


@dataclass(frozen=True)
class Outcome:
    """How one task ended: ``ok`` (``value`` is the result), ``error`` (``value`` is the message),
    ``timeout`` (killed at its limit) or ``crash`` (the worker died: OOM, segfault, ``os._exit``)."""

    kind: str
    value: Any = None
    seconds: float = 0.0


def send_message(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_message(sock: socket.socket) -> tuple[bool, Any]:
    """(True, message) or (False, None) at end of stream."""
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return False, None
    body = _recv_exact(sock, _LEN.unpack(head)[0])
    return (False, None) if body is None else (True, pickle.loads(body))


def _worker_loop(sock: socket.socket, handler: Callable[[Any], Any]) -> None:
    while True:
        alive, task = recv_message(sock)
        if not alive:
            os._exit(0)
        try:
            reply: tuple[str, Any] = ("ok", handler(task))
            send_message(sock, reply)
        except BaseException as e:  # noqa: BLE001 - every failure of the task goes back as a message
            send_message(sock, ("error", f"{type(e).__name__}: {e}"))


def serve_zygote(ctrl: socket.socket, handler: Callable[[Any], Any]) -> None:
    """Fork one worker per request on ``ctrl`` (a socket end arrives with each request); never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    libc = ctypes.CDLL(None)
    me = os.getpid()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, 16, 1)
        except OSError:
            os._exit(0)
        if not msg or not fds:
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            try:
                ctrl.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote gone (caller gone): so are we
                if os.getppid() != me:
                    os._exit(0)
                _worker_loop(socket.socket(fileno=fds[0]), handler)
            finally:
                os._exit(0)
        os.close(fds[0])
        ctrl.sendall(_LEN.pack(pid))


def _zygote_main(fd: int, spec: str, memory_mb: int) -> None:
    """Entry of a spawned zygote: import ``module:function`` then serve."""
    import importlib
    import resource

    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    mod, _, name = spec.partition(":")
    handler = getattr(importlib.import_module(mod), name)
    serve_zygote(socket.socket(fileno=fd), handler)


class Zygote:
    """A process that forks workers; see the module docstring. Use :meth:`spawn` or :meth:`fork`."""

    def __init__(self, ctrl: socket.socket, pid: int, proc: subprocess.Popen | None) -> None:
        self.ctrl, self.pid, self._proc = ctrl, pid, proc
        self.owner = os.getpid()

    @classmethod
    def spawn(cls, handler: str, memory_mb: int = 0) -> Zygote:
        """A fresh interpreter that imports ``handler`` (``"module:function"``); returns at once."""
        ours, theirs = socket.socketpair()
        src = (
            f"import sys; sys.path.insert(0, {_PKG_PARENT!r}); from thinkrl.rewards.workers import _zygote_main; "
            f"_zygote_main({theirs.fileno()}, {handler!r}, {memory_mb})"
        )
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", src], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the trainer's group is the trainer's to handle
        )  # fmt: skip
        theirs.close()
        return cls(ours, proc.pid, proc)

    @classmethod
    def fork(cls, handler: Callable[[Any], Any]) -> Zygote:
        """A fork of this process serving ``handler`` (any callable: nothing is pickled)."""
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                os.setsid()
                serve_zygote(theirs, handler)
            finally:
                os._exit(0)
        theirs.close()
        return cls(ours, pid, None)

    def new_worker(self, timeout_s: float) -> Worker:
        """Fork a worker (waits up to ``timeout_s`` for the zygote, which may still be importing)."""
        ours, theirs = socket.socketpair()
        try:
            self.ctrl.settimeout(timeout_s)
            socket.send_fds(self.ctrl, [b"w"], [theirs.fileno()])
            head = _recv_exact(self.ctrl, _LEN.size)
        except OSError as e:
            ours.close()
            raise OSError(f"worker zygote did not answer: {e}") from None
        finally:
            theirs.close()
        if head is None:
            ours.close()
            raise OSError("worker zygote exited")
        return Worker(_LEN.unpack(head)[0], ours)

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def close(self) -> None:
        self.ctrl.close()
        if os.getpid() != self.owner:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self._proc is not None:
            self._proc.wait()
        else:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


@dataclass
class Worker:
    pid: int
    sock: socket.socket

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.sock.close()
