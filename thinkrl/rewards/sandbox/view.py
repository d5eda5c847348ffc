"""The filesystem a sandboxed program sees: the interpreter, its standard library and shared libraries, read-only.

Computed once per interpreter, outside the sandbox, by running that interpreter on a probe that imports every
extension module of its standard library and lists the files it has mapped (``/proc/self/maps``). The view is:

- the interpreter binary (the file only, not its folder: ``/usr/bin`` holds more than Python);
- the standard library folder, with any ``site-packages`` / ``dist-packages`` inside it covered by an empty
  read-only tmpfs (installed packages, this project included, stay out);
- every folder holding a shared library the interpreter mapped, and ``/etc/ld.so.cache`` (the loader's index;
  nothing else of ``/etc``);
- the symlinks on the way to these paths (``/lib -> usr/lib``, the ELF loader's ``/lib64/...``), as symlinks.

:func:`view_ops` turns this into a list of operations that the setup script (``_setup.py``) or bubblewrap
replays on an empty tmpfs root.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from dataclasses import dataclass
from functools import lru_cache

# Imports every extension module of the standard library (so their shared libraries get mapped), then prints
# what a sandbox needs to know about this interpreter. Runs outside the sandbox, on our own interpreter.
_PROBE = r"""
import importlib, json, os, sys, sysconfig
dyn = [p for p in sys.path if p.endswith("lib-dynload")]
for d in dyn:
    for f in sorted(os.listdir(d)):
        if f.endswith(".so") and not f.startswith(("_test", "xx", "_ctypes_test")):
            try:
                importlib.import_module(f.split(".")[0])
            except BaseException:
                pass
maps = set()
with open("/proc/self/maps") as fh:
    for line in fh:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            maps.add(parts[5].strip())
paths = sysconfig.get_paths()
print(json.dumps({"executable": os.path.realpath(sys.executable), "stdlib": [paths["stdlib"], paths["platstdlib"]],
                  "path": [p for p in sys.path if os.path.exists(p)], "maps": sorted(maps),
                  "version": list(sys.version_info[:2])}))
"""

_PACKAGE_DIRS = ("site-packages", "dist-packages")
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_ST_TO_MS = {  # statvfs flags -> mount flags; a read-only remount of a bind must keep these (locked in userns)
    os.ST_NOSUID: _MS_NOSUID,
    os.ST_NODEV: _MS_NODEV,
    os.ST_NOEXEC: _MS_NOEXEC,
    os.ST_NOATIME: _MS_NOATIME,
    os.ST_NODIRATIME: _MS_NODIRATIME,
    os.ST_RELATIME: _MS_RELATIME,
}


@dataclass(frozen=True)
class InterpreterView:
    """What one interpreter needs inside the sandbox."""

    executable: str
    """Real path of the interpreter binary."""
    files: tuple[str, ...]
    """Single files bound read-only (the binary, the loader cache)."""
    dirs: tuple[str, ...]
    """Folders bound read-only (standard library, shared-library folders); none inside another."""
    covered: tuple[str, ...]
    """Folders inside ``dirs`` hidden by an empty read-only tmpfs (installed packages)."""
    symlinks: tuple[tuple[str, str], ...]
    """(path, target) symlinks recreated on the way to the bound paths."""
    version: tuple[int, int]


def _elf_interpreter(path: str) -> str | None:
    """The PT_INTERP path (the dynamic loader) of an ELF file, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
                return None
            end = "<" if head[5] == 1 else ">"
            phoff, phentsize, phnum = (
                struct.unpack(end + "Q", head[32:40])[0],
                *struct.unpack(end + "HH", head[54:58]),
            )
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                p_type, _, p_offset, _, _, p_filesz = struct.unpack(end + "IIQQQQ", f.read(40))
                if p_type == 3:  # PT_INTERP
                    f.seek(p_offset)
                    return f.read(p_filesz).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def _walk_links(path: str, links: dict[str, str], depth: int = 0) -> str:
    """Real path of ``path``, recording every symlink met on the way (path -> target as written)."""
    if depth > 16:
        raise OSError(f"too many levels of symlinks under {path}")
    cur = "/"
    for comp in [c for c in path.split("/") if c]:
        nxt = os.path.join(cur, comp)
        if os.path.islink(nxt):
            target = os.readlink(nxt)
            links[nxt] = target
            cur = _walk_links(os.path.normpath(os.path.join(cur, target)), links, depth + 1)
        else:
            cur = nxt
    return cur


def _under(path: str, parents: set[str] | tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


@lru_cache(maxsize=8)
def interpreter_view(interpreter: str) -> InterpreterView:
    """Probe ``interpreter`` (runs it once, ~0.2 s) and return its view. OSError if it cannot be probed."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"}
    try:
        out = subprocess.run(
            [interpreter, "-I", "-S", "-c", _PROBE], capture_output=True, env=env, timeout=60, check=True
        ).stdout
        info = json.loads(out)
    except (subprocess.SubprocessError, ValueError) as e:
        raise OSError(f"cannot probe the interpreter {interpreter}: {e}") from None
    links: dict[str, str] = {}
    exe = _walk_links(info["executable"], links)
    files = {exe}
    dirs = {_walk_links(p, links) for p in info["stdlib"] + info["path"] if os.path.isdir(p)}
    exe_dir = os.path.dirname(exe)
    for m in info["maps"]:
        if not os.path.exists(m):
            continue
        real = _walk_links(m, links)
        parent = os.path.dirname(real)
        if parent == exe_dir:  # a library beside the binary: bind the file, not the bin folder
            files.add(real)
        else:
            dirs.add(parent)
    loader = _elf_interpreter(exe)
    if loader and os.path.exists(loader):
        files.add(_walk_links(loader, links))
    if os.path.exists("/etc/ld.so.cache"):
        files.add(_walk_links("/etc/ld.so.cache", links))
    top = tuple(sorted(d for d in dirs if not any(o != d and _under(d, (o,)) for o in dirs)))
    files_out = tuple(sorted(f for f in files if not _under(f, top)))
    covered = tuple(
        sorted(
            os.path.join(d, name)
            for d in {*top, *(_walk_links(p, {}) for p in info["stdlib"])}
            for name in _PACKAGE_DIRS
            if os.path.isdir(os.path.join(d, name)) and _under(d, top)
        )
    )
    kept_links = tuple(sorted((p, t) for p, t in links.items() if not _under(p, top)))
    return InterpreterView(exe, files_out, top, covered, kept_links, tuple(info["version"]))


def mount_flags(path: str) -> int:
    """Mount flags of the mount holding ``path`` that a read-only bind remount must keep."""
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if f & st)


def view_ops(view: InterpreterView) -> list[list]:
    """Operations that build the view on an empty root, in order.

    ``["dir", path]``, ``["symlink", path, target]``, ``["bind", path, is_dir, flags]`` (read-only, flags to
    keep), ``["cover", path]`` (an empty read-only tmpfs). Paths are absolute host paths, replayed under the
    new root at the same place.
    """
    ops: list[list] = []
    made: set[str] = {"/"}

    def mkdirs(path: str) -> None:
        parts = [c for c in path.split("/") if c]
        for i in range(1, len(parts) + 1):
            p = "/" + "/".join(parts[:i])
            if p not in made:
                made.add(p)
                ops.append(["dir", p])

    for path, target in view.symlinks:
        mkdirs(os.path.dirname(path))
        ops.append(["symlink", path, target])
        made.add(path)
    for d in view.dirs:
        mkdirs(d)
    for f in view.files:
        mkdirs(os.path.dirname(f))
    for d in view.dirs:
        ops.append(["bind", d, True, mount_flags(d)])
    for f in view.files:
        ops.append(["bind", f, not stat.S_ISREG(os.stat(f).st_mode) and os.path.isdir(f), mount_flags(f)])
    for c in view.covered:
        ops.append(["cover", c])
    return ops
