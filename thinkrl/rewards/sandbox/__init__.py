"""Run untrusted, model-written Python in a throwaway sandbox; one design for root and for a normal user.

What the program gets, on every isolating backend:

- **filesystem**: an empty read-only root holding only the interpreter, its standard library and the shared
  libraries it maps (``view.py``), ``/dev/null`` and ``/dev/urandom``, and ``/tmp``: a fresh, private tmpfs
  (size-limited) that holds ``main.py`` and is its working directory and ``HOME``. No project, data,
  ``/home``, ``/root``, ``/mnt``, host ``/tmp``, ``/proc``, and of ``/etc`` only the loader cache.
- **network**: a new, empty network namespace (no interface up): nothing is reachable, not even the host's
  loopback.
- **processes**: the program is PID 1 of its own PID namespace; when it ends or is killed, the kernel kills
  everything it started (detached daemons included); it cannot see or signal any process outside.
- **identity**: as root, a fresh unprivileged uid per run; as a normal user, the user's own uid inside a user
  namespace (no uid 0 inside); either way no capabilities, and ``no_new_privs``.
- **limits** (rlimits, hard values too, so it cannot raise them): CPU seconds, address space, file size,
  open files, processes, no core dumps; and a wall-clock limit after which the whole run is SIGKILLed.

Backends, tried in this order by ``backend="auto"``: ``namespaces`` (root: direct; a normal user:
unprivileged user namespaces), then ``bubblewrap`` (``bwrap`` on PATH). If none works, code rewards are
REFUSED (:class:`SandboxUnavailable`, naming the fixes) unless the config opts in with
``allow_unisolated=True``: then programs run with rlimits and a stripped environment only, and every use is
counted so that the caller can warn at every step. :func:`isolation` says what is in force.

>>> r = run_python("print(int(input()) * 2)", stdin="21\\n")
>>> r.returncode, r.stdout, r.timed_out
(0, '42\\n', False)
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from thinkrl.rewards.sandbox.command import ENV, build_command, limits_dict
from thinkrl.rewards.sandbox.limits import Backend, SandboxError, SandboxLimits, SandboxResult

BACKENDS = ("auto", "namespaces", "bubblewrap")
_UID_BASE = 1_500_000_000  # far above any real account; root gives every run its own uid from here
_RUN_COUNTER = itertools.count()
_SETUP_FAILED = 125


class SandboxUnavailable(RuntimeError):
    """No isolating backend works here and unisolated runs were not allowed; the message names the fixes."""


def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _interpreters() -> list[str]:
    """Interpreters to try: ours first (same Python as the trainer), then the system's."""
    out: list[str] = []
    for c in (sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"):
        if c and os.path.exists(c) and os.path.realpath(c) not in out:
            out.append(os.path.realpath(c))
    return out


class Sandbox:
    """A sandbox policy: which backend, and whether unisolated runs are allowed. Probed once, on first use.

    ``backend``: ``auto`` (namespaces, else bubblewrap), ``namespaces`` or ``bubblewrap`` (only that one).
    ``allow_unisolated``: run without isolation when no backend works (warned about at every use) instead
    of refusing.
    """

    def __init__(self, backend: str = "auto", allow_unisolated: bool = False) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"sandbox backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.backend = backend
        self.allow_unisolated = allow_unisolated
        self._chosen: Backend | None = None
        self._refusal: str | None = None
        self._tried: list[str] = []
        self._lock = threading.Lock()
        self.unisolated_runs = 0
        """Runs made without isolation (only with ``allow_unisolated``); the caller warns when it grows."""

    def __getstate__(self) -> dict[str, Any]:
        # the asynchronous generator process receives the tool environment, and its sandbox, by pickling: the
        # policy and the probe's result travel, the lock is the receiving process's own
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _candidates(self) -> list[Backend]:
        cands: list[Backend] = []
        root = os.geteuid() == 0
        if self.backend in ("auto", "namespaces"):
            cands += [Backend("namespaces", i, userns=not root) for i in _interpreters()]
        bwrap = _bwrap_path()
        if self.backend in ("auto", "bubblewrap") and bwrap:
            cands += [Backend("bubblewrap", i, bwrap=bwrap) for i in _interpreters()]
        return cands

    def chosen(self) -> Backend:
        """The backend in force; SandboxUnavailable if none works and unisolated runs are not allowed."""
        with self._lock:
            if self._chosen is None and self._refusal is None:
                for cand in self._candidates():
                    why = _probe(cand)
                    if why is None:
                        self._chosen = cand
                        break
                    self._tried.append(f"{cand.name} ({cand.interpreter}): {why}")
                if self._chosen is None:
                    if self.allow_unisolated:
                        self._chosen = Backend("unisolated", _interpreters()[0])
                    else:
                        self._refusal = _refusal_message(self.backend, self._tried)
            if self._refusal is not None:
                raise SandboxUnavailable(self._refusal)
            assert self._chosen is not None
            return self._chosen

    def report(self) -> dict[str, object]:
        """The isolation in force, as plain data (print it, save it in the run folder, log it).

        Keys: ``backend`` (namespaces / bubblewrap / unisolated / refused), ``isolated`` (bool),
        ``filesystem``, ``network``, ``processes``, ``identity``, ``interpreter``, ``warning`` (str or
        None), ``summary`` (one line), ``tried`` (backends that failed, with why), ``metrics``
        (``{"sandbox/isolated": 1.0 or 0.0}``).
        """
        try:
            b = self.chosen()
        except SandboxUnavailable as e:
            return {
                "backend": "refused", "isolated": False, "warning": str(e), "tried": list(self._tried),
                "summary": "sandbox: REFUSED (code rewards cannot run): " + str(e)[:160],
                "metrics": {"sandbox/isolated": 0.0},
            }  # fmt: skip
        iso = b.name != "unisolated"
        rep: dict[str, object] = {
            "backend": b.name,
            "isolated": iso,
            "filesystem": "interpreter + stdlib read-only, private /tmp"
            if iso
            else "host (everything readable)",
            "network": "none (empty network namespace)" if iso else "host network",
            "processes": "own PID namespace (all killed at the end)"
            if iso
            else "host (detached ones survive)",
            "identity": _identity(b),
            "interpreter": b.interpreter,
            "warning": None if iso else "code runs WITHOUT isolation (sandbox.allow_unisolated=true)",
            "tried": list(self._tried),
        }
        rep["summary"] = (
            f"sandbox: {b.name}, isolated={iso}, uid: {rep['identity']}, interpreter {b.interpreter}"
            + ("" if iso else " -- WARNING: no isolation")
        )
        rep["metrics"] = {"sandbox/isolated": float(iso)}
        return rep


def _identity(b: Backend) -> str:
    if b.name == "unisolated":
        return "the trainer's own uid"
    if b.name == "bubblewrap" and os.geteuid() == 0:
        return (
            "root without capabilities (bubblewrap as root: process limits not enforced; prefer namespaces)"
        )
    if b.name == "bubblewrap" or b.userns:
        return "the caller's uid in a user namespace, no capabilities"
    return "a fresh unprivileged uid per run"


def _refusal_message(backend: str, tried: list[str]) -> str:
    why = "; ".join(tried) or "no backend available"
    return (
        f"no sandbox backend works here (backend={backend!r}; tried: {why}). Code rewards run model-written "
        "programs and are refused without isolation. Fix one of: (1) enable unprivileged user namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1 on Debian/Ubuntu kernels, user.max_user_namespaces > 0, "
        "or kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04+); (2) install bubblewrap "
        "(apt-get install bubblewrap / dnf install bubblewrap); (3) run as root; or (4) accept the risk with "
        "the config field grading.sandbox.allow_unisolated=true (warned about at every step)."
    )


_DEFAULT: Sandbox | None = None


def default_sandbox() -> Sandbox:
    """The process-wide sandbox with default policy (auto backend, unisolated refused)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Sandbox()
    return _DEFAULT


def isolation(sandbox: Sandbox | None = None) -> dict[str, object]:
    """What isolation code rewards get here (probes once, a few sandbox starts); see :meth:`Sandbox.report`."""
    return (sandbox or default_sandbox()).report()


def _probe(b: Backend) -> str | None:
    """None if ``b`` runs a program with the view it promises; else why not."""
    src = (
        "import os, socket\nprint(6 * 7)\n"
        "assert not os.path.exists('/proc/self') and not os.path.exists('/home')\n"
        "s = socket.socket()\ns.settimeout(0.2)\n"
        "try:\n    s.connect(('127.0.0.1', 9))\n    print('net')\nexcept OSError:\n    pass\n"
    )
    try:
        r = _run(b, src, "", SandboxLimits(wall_s=30), None)
    except (OSError, SandboxError) as e:
        return str(e).strip()
    if r.stdout.strip() != "42" or r.returncode != 0:
        return (r.stderr.strip().splitlines() or [f"exit {r.returncode}, output {r.stdout[:80]!r}"])[-1]
    return None


def run_python(
    source: str,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    calls: list[str] | None = None,
    sandbox: Sandbox | None = None,
) -> SandboxResult:
    """Run ``source`` as ``main.py`` in a fresh sandbox; never raises for anything the program does.

    ``calls``: expressions evaluated in the program's namespace after it ran; their plain-data values come
    back in ``results`` (see ``_boot.py``). Raises SandboxUnavailable when code may not run here, and
    SandboxError when the sandbox itself failed to start.
    """
    sandbox = sandbox or default_sandbox()
    b = sandbox.chosen()
    if b.name == "unisolated":
        sandbox.unisolated_runs += 1
    return _run(b, source, stdin, limits or SandboxLimits(), calls)


def _run(
    b: Backend, source: str, stdin: str, limits: SandboxLimits, calls: list[str] | None
) -> SandboxResult:
    root = os.geteuid() == 0
    uid = _UID_BASE + (os.getpid() % 100_000) * 1000 + next(_RUN_COUNTER) % 1000 if root else os.getuid()
    gid = uid if root else os.getgid()
    base = tempfile.mkdtemp(prefix="thinkrl-sbx-")
    t0 = time.monotonic()
    proc = None
    inner_pid = None
    timed_out = False
    try:
        for d in ("root", "work", "io"):
            os.mkdir(os.path.join(base, d), 0o700)
        main = os.path.join(base, "work", "main.py")
        Path(main).write_text(source, encoding="utf-8", errors="surrogatepass")
        io = os.path.join(base, "io")
        Path(io, "in").write_text(stdin, encoding="utf-8", errors="surrogatepass")
        with (
            open(Path(io, "in"), "rb") as fin,
            open(Path(io, "out"), "wb") as fout,
            open(Path(io, "err"), "wb") as ferr,
            open(Path(io, "res"), "wb") as fres,
        ):
            r, w = os.pipe()
            boot = {
                "limits": limits_dict(limits, b),
                "pid_fd": w,
                "result_fd": fres.fileno(),
                "calls": calls,
            }
            try:
                argv, fds, cwd = build_command(b, boot, base, main, uid, gid, limits)
                proc = subprocess.Popen(
                    argv, cwd=cwd, env=ENV, stdin=fin, stdout=fout, stderr=ferr,
                    pass_fds=(w, fres.fileno(), *fds), start_new_session=True,
                )  # fmt: skip
            finally:
                os.close(w)
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            with os.fdopen(r, "rb") as rf:
                os.set_blocking(rf.fileno(), False)
                try:
                    inner_pid = int(rf.read() or b"0") or None
                except (ValueError, TypeError, BlockingIOError):
                    inner_pid = None
        err = _read(Path(io, "err"), limits.output_bytes)
        if not timed_out and proc.returncode == _SETUP_FAILED and err.startswith("thinkrl-sandbox-setup:"):
            raise SandboxError(err.strip())
        return SandboxResult(
            None if timed_out else proc.returncode,
            _read(Path(io, "out"), limits.output_bytes),
            err,
            timed_out,
            time.monotonic() - t0,
            _read(Path(io, "res"), limits.output_bytes).splitlines(),
        )
    finally:
        if proc is not None:
            if inner_pid and b.name == "namespaces" and (timed_out or _is_namespace_init(inner_pid)):
                _kill(inner_pid)  # PID 1 of the namespace: its death takes every process in it down
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group, even if the leader already exited
            except (ProcessLookupError, PermissionError):
                pass
            _kill(proc.pid)
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _is_namespace_init(pid: int) -> bool:
    """Is ``pid`` (still) PID 1 of a nested PID namespace? Guards against killing a reused pid."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) >= 2 and ids[-1] == "1"
    except OSError:
        pass
    return False


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


__all__ = [
    "BACKENDS",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "default_sandbox",
    "isolation",
    "run_python",
]
