"""Run untrusted, model-written Python in a throwaway sandbox process.

Layers, each used where the kernel and our privileges allow (probed once per process, see ``isolation()``):

- always: a fresh temporary working directory; a new session and process group; an environment of only
  PATH/LANG/HOME; ``python -I -S`` (no site-packages, no user paths); stdin/stdout/stderr to files, so output
  is bounded by the file-size limit, not by our memory; rlimits set in the child before the code runs: CPU
  seconds, address space, file size, process count, open files, no core dumps; a wall-clock timeout after
  which the whole process group is SIGKILLed.
- ``netns``: a new, empty network namespace (only a downed loopback): no socket reaches anything.
- ``pidns``: the code runs as PID 1 of a new PID namespace; it cannot see or signal any process outside, and
  when it ends (or is killed) the kernel kills everything it forked.
- ``mountns``: a new mount namespace where the repository, home directories and the caller's cwd are covered
  by empty read-only tmpfs, and /tmp, /var/tmp, /dev/shm are fresh private tmpfs (the work dir is bound in).
- ``uid``: when we are root, the code runs as a fresh unprivileged uid (one per run, so process-count limits
  and signals never reach another run): /etc/shadow and root-only files are unreadable, system files are
  read-only, and RLIMIT_NPROC is enforced (the kernel does not enforce it for root).

Namespaces need root (or unprivileged user namespaces, which we then use). Without them the fallback still
has the always-on layers, which bound time, memory, disk and processes, but it does NOT stop network access,
reading world-readable files, or signalling other processes of the same user. ``isolation()`` says which
layers are active; the code reward logs it.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18
_UID_BASE = 1_500_000_000  # far above any real account; one uid per run
_RUN_COUNTER = itertools.count()
_INNER_DIR = "/tmp/sandbox"

# Runs in the sandbox: fork once so the code is PID 1 of the new PID namespace (where there is one); report the
# child's pid to the parent on fd 3 so the parent can kill it; exit with the child's status.
_BOOT = r"""
import os, runpy, sys
fd = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(fd)
    sys.argv = ["main.py"]
    try:
        runpy.run_path("main.py", run_name="__main__")
    except SystemExit as e:
        code = e.code
        if code is None: code = 0
        elif not isinstance(code, int): sys.stderr.write(str(code) + "\n"); code = 1
        sys.stdout.flush(); sys.stderr.flush(); os._exit(code & 255)
    except BaseException:
        import traceback; traceback.print_exc(); sys.stdout.flush(); sys.stderr.flush(); os._exit(1)
    sys.stdout.flush(); sys.stderr.flush(); os._exit(0)
try: os.write(fd, str(pid).encode())
except OSError: pass
os.close(fd)
_, status = os.waitpid(pid, 0)
os._exit(os.waitstatus_to_exitcode(status) & 255 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    wall_s: float = 10.0
    """Wall-clock seconds before the whole run is killed."""
    cpu_s: int = 5
    """CPU seconds per process (RLIMIT_CPU)."""
    memory_mb: int = 512
    """Address space per process (RLIMIT_AS)."""
    file_mb: int = 16
    """Largest file any process may write, stdout and stderr included (RLIMIT_FSIZE)."""
    nproc: int = 32
    """Processes the run's uid may have (RLIMIT_NPROC); enforced when we can give the run its own uid."""
    output_bytes: int = 1 << 20
    """stdout/stderr bytes read back."""


@dataclass
class SandboxResult:
    """What one run did."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


@dataclass(frozen=True)
class _Plan:
    namespaces: bool
    user_ns: bool  # we are not root: create a user namespace to be allowed the others
    drop_uid: bool
    interpreter: str
    hide: tuple[str, ...]


def _world_executable(path: str) -> bool:
    """Can an unrelated uid exec ``path``? (o+x on the file and o+x on every directory above it)."""
    p = Path(path)
    try:
        if not (p.stat().st_mode & stat.S_IXOTH):
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


def _hidden_paths() -> tuple[str, ...]:
    repo = Path(__file__).resolve().parents[2]
    cands = {str(repo), os.getcwd(), str(Path.home()), "/root", "/home"}
    tmp = os.path.realpath(tempfile.gettempdir())
    # never cover the temp dir's own ancestors (the work dir lives there) or the root
    return tuple(sorted(p for p in cands if os.path.isdir(p) and p != "/" and not tmp.startswith(p + "/")))


def _interpreters() -> list[str]:
    cands = [os.path.realpath(sys.executable), getattr(sys, "_base_executable", ""), "/usr/bin/python3"]
    out = []
    for c in cands:
        if c and os.path.exists(c) and os.path.realpath(c) not in out:
            out.append(os.path.realpath(c))
    return out


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _preexec(plan: _Plan, limits: SandboxLimits, workdir: str, uid: int):
    """The function the child runs after fork, before exec. Raises (so Popen fails) if a planned layer fails."""

    def setup() -> None:
        libc = _libc()
        if plan.namespaces:
            flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | (_CLONE_NEWUSER if plan.user_ns else 0)
            outer_uid, outer_gid = os.getuid(), os.getgid()
            _check(libc.unshare(flags), "unshare")
            if plan.user_ns:  # map ourselves to root inside, to be allowed to mount
                for name, text in (
                    ("setgroups", "deny"),
                    ("uid_map", f"0 {outer_uid} 1"),
                    ("gid_map", f"0 {outer_gid} 1"),
                ):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
            _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount private")
            ro = _MS_RDONLY | _MS_NOSUID | _MS_NODEV
            for p in plan.hide:
                _check(libc.mount(b"tmpfs", p.encode(), b"tmpfs", ro, b"size=4k"), f"hide {p}")
            wfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
            size = f"size={max(limits.file_mb * 4, 16)}m,mode=1777".encode()
            for p in ("/tmp", "/var/tmp", "/dev/shm"):
                if os.path.isdir(p):
                    _check(
                        libc.mount(b"tmpfs", p.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, size), f"tmpfs {p}"
                    )
            os.mkdir(_INNER_DIR, 0o755)
            _check(
                libc.mount(f"/proc/self/fd/{wfd}".encode(), _INNER_DIR.encode(), None, _MS_BIND, None), "bind"
            )
            os.close(wfd)
            os.chdir(_INNER_DIR)
        mb = 1 << 20
        for res, val in (
            (resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1)),
            (resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb)),
            (resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb)),
            (resource.RLIMIT_NOFILE, (256, 256)),
            (resource.RLIMIT_CORE, (0, 0)),
        ):
            resource.setrlimit(res, val)
        if plan.drop_uid:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return setup


def _launch(plan: _Plan, workdir: str, limits: SandboxLimits, uid: int, stdin, stdout, stderr) -> tuple:
    r, w = os.pipe()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": _INNER_DIR if plan.namespaces else workdir,
    }
    try:
        proc = subprocess.Popen(
            [plan.interpreter, "-I", "-S", "-c", _BOOT, str(w)],
            cwd=workdir,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(w,),
            start_new_session=True,
            preexec_fn=_preexec(plan, limits, workdir, uid),  # noqa: PLW1509 - single-threaded reward workers
        )
    finally:
        os.close(w)
    return proc, r


def _new_workdir(plan: _Plan, uid: int) -> str:
    d = tempfile.mkdtemp(prefix="thinkrl-sbx-")
    if plan.drop_uid:
        os.chown(d, uid, uid)
    return d


def _try_plan(plan: _Plan) -> bool:
    uid = _UID_BASE + os.getpid() % 100_000
    d = _new_workdir(plan, uid)
    try:
        Path(d, "main.py").write_text("print(6 * 7)\n")
        if plan.drop_uid:
            os.chown(Path(d, "main.py"), uid, uid)
        with open(os.devnull, "rb") as fin, tempfile.TemporaryFile() as out:
            proc, r = _launch(plan, d, SandboxLimits(), uid, fin, out, subprocess.DEVNULL)
            os.close(r)
            proc.wait(timeout=30)
            out.seek(0)
            return proc.returncode == 0 and out.read().strip() == b"42"
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(d, ignore_errors=True)


@lru_cache(maxsize=1)
def _plan() -> _Plan:
    root = os.geteuid() == 0
    hide = _hidden_paths()
    interps = _interpreters()
    candidates = []
    for ns in (True, False):
        if root:
            for interp in interps:
                if _world_executable(interp):
                    candidates.append(_Plan(ns, False, True, interp, hide if ns else ()))
        candidates.append(_Plan(ns, not root, False, interps[0], hide if ns else ()))
    for plan in candidates:
        if _try_plan(plan):
            return plan
    return _Plan(False, False, False, interps[0], ())


def isolation() -> dict[str, object]:
    """The layers this process's sandbox uses (probed once; costs a few sandbox starts the first time).

    Keys: netns, pidns, mountns, uid (bools), interpreter (str), hidden (list of covered paths).
    """
    p = _plan()
    return {
        "netns": p.namespaces,
        "pidns": p.namespaces,
        "mountns": p.namespaces,
        "uid": p.drop_uid,
        "interpreter": p.interpreter,
        "hidden": list(p.hide),
    }


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(source: str, stdin: str = "", limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``source`` as ``main.py`` in a fresh sandbox; never raises for anything the code does.

    >>> r = run_python("print(int(input()) * 2)", stdin="21\\n")
    >>> r.returncode, r.stdout, r.timed_out
    (0, '42\\n', False)
    """
    limits = limits or SandboxLimits()
    plan = _plan()
    uid = _UID_BASE + (os.getpid() % 100_000) * 1000 + next(_RUN_COUNTER) % 1000
    workdir = _new_workdir(plan, uid)
    iodir = tempfile.mkdtemp(prefix="thinkrl-sbx-io-")  # outside the work dir: the code cannot reach these
    t0 = time.monotonic()
    proc = None
    inner_pid = None
    timed_out = False
    try:
        main = Path(workdir, "main.py")
        main.write_text(source, encoding="utf-8", errors="surrogatepass")
        if plan.drop_uid:
            os.chown(main, uid, uid)
        Path(iodir, "in").write_text(stdin, encoding="utf-8", errors="surrogatepass")
        with (
            open(Path(iodir, "in"), "rb") as fin,
            open(Path(iodir, "out"), "wb") as fout,
            open(Path(iodir, "err"), "wb") as ferr,
        ):
            try:
                proc, r = _launch(plan, workdir, limits, uid, fin, fout, ferr)
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult(None, "", f"sandbox failed to start: {e}", False, time.monotonic() - t0)
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
        return SandboxResult(
            None if timed_out else proc.returncode,
            _read(Path(iodir, "out"), limits.output_bytes),
            _read(Path(iodir, "err"), limits.output_bytes),
            timed_out,
            time.monotonic() - t0,
        )
    finally:
        if proc is not None:
            if inner_pid and (timed_out or _is_sandbox_init(inner_pid)):
                _kill(inner_pid)  # PID 1 of the namespace: its death takes every process in it down
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group, even if the leader already exited
            except (ProcessLookupError, PermissionError):
                pass
            _kill(proc.pid)
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(iodir, ignore_errors=True)


def _is_sandbox_init(pid: int) -> bool:
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
