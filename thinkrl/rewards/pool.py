"""Run reward functions in parallel worker processes, with a time limit per chunk of rows.

Rows are cut into contiguous chunks, each chunk is one task, and results are put back in row order, so
the output is the same as a serial call whatever the scheduling (reward functions here are deterministic).
A chunk that runs past its limit, or whose worker dies, scores ``fallback`` (0.0) on its rows, is counted
in ``stats``, and the pool is rebuilt: a hung grader never stops training.

>>> with RewardPool(num_workers=2, timeout_s=60) as pool:
...     fmt = pool.wrap("format")
...     fmt(["q"] * 2, ["<think>a</think><answer>1</answer>", "x"]), fmt.__name__
([1.0, 0.0], 'format')
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any


def _run_chunk(fn: Callable | str, prompts: list, completions: list, columns: dict) -> list:
    if isinstance(fn, str):
        from thinkrl.rewards import get_reward

        fn = get_reward(fn)
    return list(fn(prompts, completions, **columns))


class RewardPool:
    """A process pool for reward functions (spawned workers: safe next to torch and CUDA in the parent)."""

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 120.0,
        chunk_size: int | None = None,
        fallback: float = 0.0,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"RewardPool: num_workers={num_workers}; use 1 or more")
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self.fallback = fallback
        self.stats = {"calls": 0, "chunks": 0, "chunk_timeouts": 0, "worker_deaths": 0, "restarts": 0}
        self._ex: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._ex is None:
            self._ex = ProcessPoolExecutor(self.num_workers, mp_context=mp.get_context("spawn"))
        return self._ex

    def _restart(self) -> None:
        ex, self._ex = self._ex, None
        if ex is None:
            return
        self.stats["restarts"] += 1
        for p in list(getattr(ex, "_processes", {}).values()):  # hung workers do not stop on shutdown()
            p.kill()
        ex.shutdown(wait=False, cancel_futures=True)

    def run(self, fn: Callable | str, prompts: list, completions: list, **columns: Any) -> list:
        """Call ``fn`` (a function importable by name, or a registry name) on all rows, chunked over workers."""
        n = len(completions)
        self.stats["calls"] += 1
        if n == 0:
            return []
        size = self.chunk_size or max(1, math.ceil(n / self.num_workers))
        bounds = [(s, min(n, s + size)) for s in range(0, n, size)]
        ex = self._executor()
        t0 = time.monotonic()
        futs = [
            ex.submit(
                _run_chunk, fn, prompts[s:e], completions[s:e], {k: list(v[s:e]) for k, v in columns.items()}
            )
            for s, e in bounds
        ]
        out: list = []
        broken = False
        for k, ((s, e), fut) in enumerate(zip(bounds, futs)):
            self.stats["chunks"] += 1
            # chunk k starts once the k // workers chunks queued before it on its worker are done
            deadline = t0 + self.timeout_s * (k // self.num_workers + 1)
            try:
                res = fut.result(timeout=max(0.0, deadline - time.monotonic()))
                if len(res) != e - s:
                    raise ValueError(f"returned {len(res)} scores for {e - s} rows")
                out.extend(res)
            except FutureTimeout:
                self.stats["chunk_timeouts"] += 1
                broken = True
                out.extend([self.fallback] * (e - s))
            except BrokenProcessPool:
                self.stats["worker_deaths"] += 1
                broken = True
                out.extend([self.fallback] * (e - s))
        if broken:
            self._restart()
        return out

    def wrap(self, fn: Callable | str) -> Callable[..., list]:
        """A reward function that runs ``fn`` through this pool, with ``fn``'s name."""
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", "reward")

        def reward(prompts: list, completions: list, **columns: Any) -> list:
            return self.run(fn, prompts, completions, **columns)

        reward.__name__ = name
        return reward

    def close(self) -> None:
        """Stop the workers."""
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)
            self._ex = None

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
