"""The command line of one sandboxed run on each backend (``_setup.py`` for namespaces, ``bwrap``, or plain)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from thinkrl.rewards.sandbox.limits import Backend, SandboxLimits
from thinkrl.rewards.sandbox.view import interpreter_view, view_ops

_HERE = Path(__file__).resolve().parent
_SETUP = (_HERE / "_setup.py").read_text()
_BOOT = (_HERE / "_boot.py").read_text()
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
"""The whole environment a program gets."""


def limits_dict(limits: SandboxLimits, b: Backend) -> dict:
    # Unisolated, RLIMIT_NPROC would count every process of the trainer's uid: it is left unset there.
    return {
        "cpu_s": limits.cpu_s,
        "memory_mb": limits.memory_mb,
        "file_mb": limits.file_mb,
        "nproc": limits.nproc if b.name != "unisolated" else 0,
    }


def build_command(
    b: Backend, boot: dict, base: str, main: str, uid: int, gid: int, limits: SandboxLimits
) -> tuple[list[str], tuple[int, ...], str]:
    """(argv, extra fds to pass, cwd) of one run on backend ``b``."""
    inner = [b.interpreter, "-I", "-S", "-X", "utf8", "-c", _BOOT]
    disk = max(limits.disk_mb, 1) << 20
    if b.name == "namespaces":
        cfg = {
            "uid": uid, "gid": gid, "userns": b.userns, "root": os.path.join(base, "root"),
            "ops": view_ops(interpreter_view(b.interpreter)), "files": {"main.py": main}, "disk_bytes": disk,
            "argv": [*inner, json.dumps(boot)], "env": ENV,
        }  # fmt: skip
        return [b.interpreter, "-I", "-S", "-c", _SETUP, json.dumps(cfg)], (), base
    if b.name == "bubblewrap":
        assert b.bwrap is not None
        fd = os.open(main, os.O_RDONLY)
        boot = {**boot, "pid_fd": None}  # pids inside bubblewrap's namespace mean nothing to us
        return (
            [b.bwrap, *_bwrap_args(interpreter_view(b.interpreter), fd, disk), *inner, json.dumps(boot)],
            (fd,),
            base,
        )
    work = os.path.join(base, "work")
    return [*inner, json.dumps(boot)], (), work


def _bwrap_args(view, main_fd: int, disk: int) -> list[str]:
    args = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
    ]
    for op in view_ops(view):
        if op[0] == "dir":
            args += ["--dir", op[1]]
        elif op[0] == "symlink":
            args += ["--symlink", op[2], op[1]]
        elif op[0] == "bind":
            args += ["--ro-bind", op[1], op[1]]
        elif op[0] == "cover":
            args += ["--tmpfs", op[1], "--remount-ro", op[1]]
    args += ["--dev-bind", "/dev/null", "/dev/null", "--dev-bind", "/dev/urandom", "/dev/urandom"]
    args += [
        "--size",
        str(disk),
        "--perms",
        "0700",
        "--tmpfs",
        "/tmp",
        "--file",
        str(main_fd),
        "/tmp/main.py",
    ]
    args += ["--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    for k, v in ENV.items():
        args += ["--setenv", k, v]
    return [*args, "--"]
