"""Sandbox setup: run as ``python -I -S -c <this file's text> <json>`` by the caller's own uid, outside the sandbox.

It enters new namespaces (user namespace first when we are not root), builds the filesystem view on an empty
tmpfs, pivots into it, drops to the run's uid (root) or loses all capabilities at exec (user namespace, where
the run's uid is the caller's, not 0), forbids privilege gain, then execs the boot script (``_boot.py``).
A fresh process, not a ``preexec_fn``: the trainer may have threads, and code between fork and exec in a
threaded process can deadlock. Standard library only; exits 125 with one line on stderr if any step fails.
"""

import ctypes
import json
import os
import sys

NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = (
    0x20000,
    0x4000000,
    0x8000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MNT_DETACH, PR_SET_NO_NEW_PRIVS = 2, 38
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217}


def main(cfg: dict) -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def check(ret: int, what: str) -> None:
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(src, dst, fstype, flags, data=None) -> None:
        enc = [None if x is None else x.encode() for x in (src, dst, fstype, data)]
        check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {src} on {dst}")

    uid, gid = cfg["uid"], cfg["gid"]
    flags = NEWNS | NEWUTS | NEWIPC | NEWPID | NEWNET | (NEWUSER if cfg["userns"] else 0)
    outer_uid, outer_gid = os.getuid(), os.getgid()
    check(libc.unshare(flags), "unshare")
    if cfg["userns"]:  # the caller's uid and gid, mapped to themselves: no uid 0 inside
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {outer_uid} 1"),
            ("gid_map", f"{gid} {outer_gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    name = b"sandbox"
    check(libc.sethostname(name, len(name)), "sethostname")
    mount("none", "/", None, REC | PRIVATE)
    root = cfg["root"]
    mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "size=1m,mode=0755")
    for op in cfg["ops"]:
        dst = root + op[1]
        if op[0] == "dir":
            os.mkdir(dst, 0o755)
        elif op[0] == "symlink":
            os.symlink(op[2], dst)
        elif op[0] == "bind":
            if not op[2]:
                os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
            mount(op[1], dst, None, BIND | REC)
            mount(None, dst, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV | op[3])
        elif op[0] == "cover":
            mount("tmpfs", dst, "tmpfs", RDONLY | NOSUID | NODEV | NOEXEC, "size=4k,mode=0555")
    os.mkdir(root + "/dev", 0o755)
    for dev in ("/dev/null", "/dev/urandom"):
        os.close(os.open(root + dev, os.O_CREAT | os.O_WRONLY, 0o644))
        mount(dev, root + dev, None, BIND)
    work = root + "/tmp"
    os.mkdir(work, 0o755)
    mount(
        "tmpfs",
        work,
        "tmpfs",
        NOSUID | NODEV | NOEXEC,
        f"size={cfg['disk_bytes']},mode=0700,uid={uid},gid={gid}",
    )
    for name, src in cfg[
        "files"
    ].items():  # the program (and nothing else of the host) goes into the work dir
        with open(src, "rb") as fin, open(os.path.join(work, name), "wb") as fout:
            fout.write(fin.read())
        os.chown(os.path.join(work, name), uid, gid)
    mount(None, root, None, REMOUNT | RDONLY | NOSUID | NODEV)
    os.chdir(root)
    nr = PIVOT_ROOT.get(os.uname().machine)
    if nr is not None:
        check(libc.syscall(nr, b".", b"."), "pivot_root")
        check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    else:  # no syscall number known: move the new root over / (as switch_root does); no capability survives
        mount(".", "/", None, 1 << 13)  # MS_MOVE
        check(libc.chroot(b"."), "chroot")
    os.chdir("/tmp")
    if not cfg["userns"]:  # root: become the run's own unprivileged uid (this clears every capability)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]))
    except BaseException as e:  # noqa: BLE001 - report every failure the same way
        sys.stderr.write(f"thinkrl-sandbox-setup: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        os._exit(125)
