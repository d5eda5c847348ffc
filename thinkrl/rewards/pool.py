"""Tasks under a hard wall-clock limit each, where a hung task costs its limit once, in parallel.

A :class:`BoundedPool` runs tasks on ``workers`` worker processes forked by a
:class:`~thinkrl.rewards.workers.Zygote`. Each task has a deadline ``limit_s`` after its
start; past it the worker is SIGKILLed and the task is a timeout. A task still running after a short budget
(a few times the typical task's CPU time, or idle for a few times that) while others wait is *set aside*: its worker is stopped (SIGSTOP) and a
fresh worker takes its place; when no task waits any more, every task set aside resumes (SIGCONT) with the
rest of its limit. The time a task spends stopped does not count against its limit. So hung tasks wait out
their limits side by side instead of one after another: a batch with hangs costs about its clean time plus
one limit (plus the short budgets), and a slow but honest check is never starved into a timeout.


>>> from thinkrl.rewards.workers import Zygote
>>> pool = BoundedPool(Zygote.fork(lambda x: x * 2), workers=2)
>>> [o.value for o in pool.map([1, 2, 3], limit_s=10)]
[2, 4, 6]
>>> pool.close()
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thinkrl.rewards.workers import Outcome, Worker, Zygote, recv_message, send_message

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process so far; 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class _Run:
    """A task on a worker; ``start`` moves forward by the time the task was stopped (set aside)."""

    worker: Worker
    task: int
    start: float
    cpu0: float = 0.0  # the worker's CPU time when the task began
    paused_at: float | None = None

    def cpu(self) -> float:
        return _cpu_seconds(self.worker.pid) - self.cpu0

    def pause(self, now: float) -> None:
        try:
            os.kill(self.worker.pid, signal.SIGSTOP)
            self.paused_at = now
        except ProcessLookupError:  # it just ended: its reply is on the way
            pass

    def resume(self, now: float) -> None:
        if self.paused_at is not None:
            try:
                os.kill(self.worker.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.start += now - self.paused_at
            self.paused_at = None


class BoundedPool:
    """Tasks on forked workers, each with a wall-clock limit; see the module docstring.

    ``zygote``: a :class:`Zygote`, or a function making one (then a dead zygote is replaced).
    ``workers``: tasks run at full priority at once. ``max_aside``: tasks moved aside at once (each is a
    process until its deadline). ``min_budget_s``: the shortest time a task runs before it may be moved
    aside. ``start_timeout_s``: how long to wait for a zygote that is still importing.
    """

    def __init__(
        self,
        zygote: Zygote | Callable[[], Zygote],
        workers: int = 2,
        max_aside: int = 64,
        min_budget_s: float = 0.25,
        start_timeout_s: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}; use 1 or more")
        self._make = zygote if callable(zygote) and not isinstance(zygote, Zygote) else None
        self._zygote = zygote if isinstance(zygote, Zygote) else None
        self.workers, self.max_aside = workers, max_aside
        self.min_budget_s, self.start_timeout_s = min_budget_s, start_timeout_s
        self._idle: list[Worker] = []
        self._recent: deque[float] = deque(maxlen=256)
        self._lock = threading.Lock()
        self.owner = os.getpid()
        self.stats = {
            "tasks": 0,
            "timeouts": 0,
            "crashes": 0,
            "errors": 0,
            "moved_aside": 0,
            "zygote_starts": 0,
        }

    def zygote(self) -> Zygote:
        if self._zygote is None or (self._make is not None and not self._zygote.alive()):
            if self._make is None:
                raise OSError("the worker zygote exited")
            if self._zygote is not None:
                self._zygote.close()
            self._zygote = self._make()
            self.stats["zygote_starts"] += 1
        return self._zygote

    def _worker(self) -> Worker:
        if self._idle:
            return self._idle.pop()
        try:
            return self.zygote().new_worker(self.start_timeout_s)
        except OSError:
            if self._make is None:
                raise
            self._zygote = None  # it died: one fresh zygote, once
            return self.zygote().new_worker(self.start_timeout_s)

    def budget(self, limit_s: float) -> float:
        """CPU seconds a task uses before it may be set aside: twice the 90th percentile of recent tasks (so
        about 5% of honest tasks are), at least ``min_budget_s``, at most a quarter of the limit. CPU, not wall
        time: a machine loaded by other work slows every task alike and must not make honest tasks look hung."""
        recent = sorted(self._recent)
        p90 = recent[int(0.9 * (len(recent) - 1))] if recent else 0.0
        return min(limit_s / 4, max(self.min_budget_s, 2 * p90))

    @staticmethod
    def _looks_stuck(run: _Run, now: float, budget: float) -> bool:
        """Past its CPU budget, or waiting (sleep, I/O: under 5% CPU) for 4 budgets of wall time."""
        cpu, wall = run.cpu(), now - run.start
        return cpu >= budget or (wall >= 4 * budget and cpu < 0.05 * wall)

    def map(self, tasks: list[Any], limit_s: float) -> list[Outcome]:
        """Run every task; each ends ok, error, timeout (after ``limit_s``) or crash. Order is kept."""
        with self._lock:
            if os.getpid() != self.owner:
                raise RuntimeError("a BoundedPool belongs to the process that made it; make one per process")
            return self._map(tasks, limit_s)

    def _map(self, tasks: list[Any], limit_s: float) -> list[Outcome]:
        out: list[Outcome | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        running: dict[int, _Run] = {}  # socket fileno -> task in progress at full speed
        aside: dict[int, _Run] = {}  # tasks moved aside: stopped while others wait, then resumed
        self.stats["tasks"] += len(tasks)

        def finish(fd: int, outcome: Outcome, reuse: bool) -> None:
            run = running.pop(fd, None) or aside.pop(fd)
            out[run.task] = outcome
            if reuse and len(self._idle) < self.workers:
                self._idle.append(run.worker)
            else:
                run.worker.kill()

        try:
            while pending or running or aside:
                while pending and len(running) < self.workers:
                    w, i = self._worker(), pending.popleft()
                    try:
                        send_message(w.sock, tasks[i])
                    except OSError:  # an idle worker that died meanwhile: the task goes back in line
                        w.kill()
                        pending.appendleft(i)
                        continue
                    running[w.sock.fileno()] = _Run(w, i, time.monotonic(), _cpu_seconds(w.pid))
                now = time.monotonic()
                if not pending:  # nothing waits any more: the tasks set aside resume, their clocks too
                    for run in aside.values():
                        run.resume(now)
                budget = self.budget(limit_s)
                wake = [
                    r.start + limit_s for r in (*running.values(), *aside.values()) if r.paused_at is None
                ]
                if pending and running:  # poll the CPU time of running tasks against the budget
                    wake.append(now + max(0.02, budget / 4))
                timeout = max(0.0, min(wake) - now) if wake else None
                poller = select.poll()  # not select(): the trainer may hold more than 1024 descriptors
                for fd in (*running, *aside):
                    poller.register(fd, select.POLLIN)
                ready = [fd for fd, _ in poller.poll(None if timeout is None else 1000 * timeout)]
                for fd in ready:
                    run = running.get(fd) or aside[fd]
                    run.worker.sock.settimeout(max(1.0, limit_s))
                    try:
                        alive, msg = recv_message(run.worker.sock)
                    except (OSError, pickle.UnpicklingError, EOFError):
                        alive, msg = False, None
                    took = time.monotonic() - run.start
                    if not alive:
                        self.stats["crashes"] += 1
                        finish(fd, Outcome("crash", "the worker process died", took), reuse=False)
                        continue
                    kind, value = msg
                    if kind == "ok":
                        self._recent.append(run.cpu())
                    else:
                        self.stats["errors"] += 1
                    finish(fd, Outcome(kind, value, took), reuse=fd in running)
                now = time.monotonic()
                for table in (running, aside):
                    for fd, run in list(table.items()):
                        if run.paused_at is None and now - run.start >= limit_s:
                            self.stats["timeouts"] += 1
                            finish(fd, Outcome("timeout", None, now - run.start), reuse=False)
                for fd, run in list(running.items()):
                    if pending and len(aside) < self.max_aside and self._looks_stuck(run, now, budget):
                        run.pause(now)
                        aside[fd] = running.pop(fd)
                        self.stats["moved_aside"] += 1
        except BaseException:
            for run in (*running.values(), *aside.values()):
                run.worker.kill()
            raise
        return [o if o is not None else Outcome("error", "not run") for o in out]

    def close(self) -> None:
        """Stop every worker and the zygote."""
        for w in self._idle:
            w.kill()
        self._idle.clear()
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None

    def __enter__(self) -> BoundedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
