"""Sandbox boot: the first code that runs inside the sandbox, as ``python -I -S -X utf8 -c <this text> <json>``.

It sets the run's rlimits (hard limits too, so the program cannot raise them), forks once so the program is
PID 1 of the new PID namespace (when there is one: its death then kills everything it started), tells the
caller the program's pid on ``pid_fd``, and exits with the program's status.

The program runs as ``__main__`` from ``/tmp/main.py`` (the work dir). With ``calls`` (function-call tests),
each call expression is then evaluated in the program's namespace and its value is written to ``result_fd``
as one JSON line: ``{"i": k, "v": <value>}`` or ``{"i": k, "e": "ErrorName"}``. Only plain data encodes
(``type(x) is int`` etc.; no subclasses, no custom objects): a value with a forged ``__eq__`` cannot cross.
The caller compares values outside, against expected values that never enter the sandbox; so anything the
program does to this code (it runs in the same process) can only change its own answers, never a verdict.
Standard library only; any Python 3.8+.
"""

import json
import os
import resource
import sys

MAX_DEPTH = 64


def encode(x, depth=0):
    """Plain data as JSON-safe tagged data; TypeError for anything else (subclasses included)."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str or t is int or t is float:
        return x
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t is tuple:
        return {"t": [encode(v, depth + 1) for v in x]}
    if t is set or t is frozenset:
        return {"s" if t is set else "f": [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is bytes:
        return {"b": x.hex()}
    if t is complex:
        return {"c": [x.real, x.imag]}
    raise TypeError(f"result of type {t.__name__} is not plain data")


def set_limits(lim):
    mb = 1 << 20
    pairs = [
        (resource.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 1),
        (resource.RLIMIT_AS, lim["memory_mb"] * mb, lim["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, lim["file_mb"] * mb, lim["file_mb"] * mb),
        (resource.RLIMIT_NOFILE, 64, 64),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if lim.get("nproc"):
        pairs.append((resource.RLIMIT_NPROC, lim["nproc"], lim["nproc"]))
    for res, soft, hard in pairs:
        resource.setrlimit(res, (soft, hard))


def run_program(cfg):
    import builtins
    import types

    mod = types.ModuleType("__main__")
    mod.__file__ = "main.py"
    mod.__builtins__ = builtins
    sys.modules["__main__"] = mod
    sys.argv = ["main.py"]
    with open("main.py", encoding="utf-8", errors="surrogateescape") as f:
        source = f.read()
    exec(compile(source, "main.py", "exec"), mod.__dict__)
    result_fd = cfg.get("result_fd")
    for i, call in enumerate(cfg.get("calls") or ()):
        try:
            value = eval(compile(call, f"<test {i}>", "eval"), mod.__dict__)
            line = json.dumps({"i": i, "v": encode(value)}, allow_nan=True)
        except BaseException as e:  # noqa: BLE001 - any failure of the call is a failed case
            line = json.dumps({"i": i, "e": type(e).__name__})
        try:
            os.write(result_fd, (line + "\n").encode("utf-8", "surrogatepass"))
        except OSError:
            break


def main(cfg):
    set_limits(cfg["limits"])
    pid_fd = cfg.get("pid_fd")
    pid = os.fork()
    if pid == 0:
        if pid_fd is not None:
            os.close(pid_fd)
        code = 0
        try:
            run_program(cfg)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                sys.stderr.write(f"{e.code}\n")
        except BaseException:  # noqa: BLE001 - the program's error, reported as Python would
            import traceback

            traceback.print_exc()
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code & 255)
    if pid_fd is not None:
        try:
            os.write(pid_fd, str(pid).encode())
        except OSError:
            pass
        os.close(pid_fd)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 255 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
