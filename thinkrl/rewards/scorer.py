"""Score completions with several rewards under hard time bounds, counting timeouts and errors per reward.

Built-in rewards run in this process: each bounds its own time (math checks in killable workers, programs in
the sandbox, linear-time extraction with a size cap). Any other callable -- a Python function passed in, or a
config's ``module:function`` -- runs in worker processes forked once from this process (so lambdas and
closures work: nothing but rows and scores is pickled), ``grading.rows_per_call`` rows per call, each call
under ``grading.timeout_s``. A timed-out call's rows score ``grading.on_timeout`` (0 or None) and are counted
in ``reward/timeouts/<name>``; a call that raises follows ``grading.on_error``.

>>> scorer = RewardScorer([get_reward("format"), lambda prompts, completions, **c: [1.0] * len(completions)])
>>> r = scorer.score(["q", "q"], ["<think>a</think><answer>1</answer>", "no"])
>>> r.total.tolist(), sorted(r.per_function), r.metrics()["reward/timeouts/<lambda>"]
([2.0, 1.0], ['<lambda>', 'format'], 0.0)
>>> scorer.close()

Make the scorer before the trainer starts threads or touches the GPU: its worker zygote is a fork of this
process, made once, at construction.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from thinkrl.rewards import stats
from thinkrl.rewards.accuracy import accuracy_reward
from thinkrl.rewards.base import RewardError, RewardOutput, _first_failing_row, check_batch
from thinkrl.rewards.code import code_partial_reward, code_reward
from thinkrl.rewards.code_tests import TestsFormatError
from thinkrl.rewards.math_grader import warm_up
from thinkrl.rewards.named import NamedReward
from thinkrl.rewards.pool import BoundedPool
from thinkrl.rewards.registry import build_reward_funcs, get_reward
from thinkrl.rewards.routing import routed_reward
from thinkrl.rewards.sandbox import SandboxError, SandboxUnavailable
from thinkrl.rewards.settings import ON_TIMEOUT, default_grading, sandbox_for, validate_grading
from thinkrl.rewards.workers import Zygote

__all__ = ["RewardResult", "RewardScorer", "get_reward"]

log = logging.getLogger("thinkrl.rewards")
_NAMES_THE_FIX = (TestsFormatError, SandboxUnavailable, SandboxError)  # raised as they are: clear already


@dataclass
class RewardResult(RewardOutput):
    """Rewards of N completions, with what went wrong per reward function (a :class:`RewardOutput`)."""

    timeouts: dict[str, int] = field(default_factory=dict)
    """name -> rows that scored the on_timeout value because the reward ran past its limit (or its worker
    died), or whose grader check did (math-verify limit, a program killed at its wall-clock limit)."""
    errors: dict[str, int] = field(default_factory=dict)
    """name -> rows whose reward raised (with on_error zero/none) or whose grader check failed."""
    seconds: dict[str, float] = field(default_factory=dict)
    """name -> wall-clock seconds spent (custom rewards run side by side, so these overlap)."""
    unisolated_runs: int = 0
    """Programs run without a sandbox during this call (only with grading.sandbox.allow_unisolated)."""

    def metrics(self) -> dict[str, float]:
        """``reward/timeouts/<name>``, ``reward/errors/<name>``, ``reward/seconds/<name>``, and
        ``reward/unisolated_runs`` when any."""
        out: dict[str, float] = {}
        for name in self.per_function:
            out[f"reward/timeouts/{name}"] = float(self.timeouts.get(name, 0))
            out[f"reward/errors/{name}"] = float(self.errors.get(name, 0))
            out[f"reward/seconds/{name}"] = float(self.seconds.get(name, 0.0))
        if self.unisolated_runs:
            out["reward/unisolated_runs"] = float(self.unisolated_runs)
        return out


def _as_named(fn: Any) -> NamedReward:
    if isinstance(fn, NamedReward):
        return fn
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return NamedReward(name, fn, in_process=bool(getattr(fn, "in_process", False)))


def _checked_scores(fn: NamedReward, n: int, scores: Any) -> list[float | None]:
    scores = list(scores)
    if len(scores) != n:
        raise ValueError(f"returned {len(scores)} scores for {n} rows")
    out: list[float | None] = []
    for i, s in enumerate(scores):
        if s is None:
            out.append(None)
            continue
        v = float(s)
        if not math.isfinite(v):
            raise ValueError(f"returned {v} for row {i}; rewards must be finite or None")
        out.append(v)
    return out


class RewardScorer:
    """Rewards with weights and grading settings (``thinkrl.config.GradingConfig``; defaults when None).

    ``funcs``: callables ``(prompts, completions, **columns) -> list[float | None]`` (built-ins from
    :func:`build_reward` / :func:`get_reward`, your own functions, ``in_process(fn)`` for one that must stay
    in this process). Names (``__name__``) must be distinct: they key the metrics.
    """

    def __init__(
        self, funcs: Sequence[Any], weights: Sequence[float] | None = None, grading: Any = None
    ) -> None:
        self.grading = grading if grading is not None else default_grading()
        validate_grading(self.grading)
        self.funcs = [_as_named(f) for f in funcs]
        self.weights = list(weights) if weights is not None else [1.0] * len(self.funcs)
        if len(self.weights) != len(self.funcs):
            raise ValueError(
                f"RewardScorer: {len(self.weights)} weights for {len(self.funcs)} reward functions"
            )
        names = [f.name for f in self.funcs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"RewardScorer: two rewards named {', '.join(twice)}; give them distinct names")
        self._custom = [i for i, f in enumerate(self.funcs) if not f.in_process]
        self._pool: BoundedPool | None = None
        if self._custom:
            self._pool = self._fork_pool()
        self._sandbox = sandbox_for(self.grading)
        for f in self.funcs:
            if f.fn in (code_reward, code_partial_reward):
                f.bound.get("code_sandbox", self._sandbox).chosen()  # refuse now, not at the first code row
            if f.fn in (accuracy_reward, routed_reward):
                warm_up(self.grading.workers)  # math-verify imports in the background meanwhile

    def _fork_pool(self) -> BoundedPool:
        funcs = self.funcs

        def handler(task: tuple) -> list[float | None]:
            i, prompts, completions, columns = task
            return _checked_scores(funcs[i], len(completions), funcs[i](prompts, completions, **columns))

        return BoundedPool(Zygote.fork(handler), workers=self.grading.workers, min_budget_s=1.0)

    def isolation(self) -> dict[str, Any]:
        """The sandbox in force for code rewards (:meth:`thinkrl.rewards.sandbox.Sandbox.report`): print its
        ``summary`` at start, save the dict in the run folder, log its ``metrics``."""
        return self._sandbox.report()

    @classmethod
    def from_config(cls, cfg: Any) -> RewardScorer:
        """The scorer of a config: ``cfg.rewards`` built with ``cfg.grading``."""
        funcs, weights = build_reward_funcs(cfg.rewards, cfg.grading)
        return cls(funcs, weights, cfg.grading)

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        columns: Mapping[str, Sequence] | None = None,
    ) -> RewardResult:
        """Every reward on every row, combined with the weights (None counts as 0 in ``total``)."""
        prompts, completions = list(prompts), list(completions)
        columns = {k: list(v) for k, v in (columns or {}).items()}
        n = len(completions)
        check_batch("RewardScorer.score", prompts, n, columns)
        scores: dict[int, list[float | None]] = {}
        timeouts: dict[str, int] = {}
        errors: dict[str, int] = {}
        seconds: dict[str, float] = {}
        unisolated = self._sandbox.unisolated_runs
        t0 = time.monotonic()
        if self._custom and n:
            self._score_custom(prompts, completions, columns, scores, timeouts, errors)
        custom_s = time.monotonic() - t0
        for i in self._custom:
            seconds[self.funcs[i].name] = custom_s
        for i, fn in enumerate(self.funcs):
            if i in scores or not fn.in_process:
                continue
            before, t = stats.snapshot(), time.monotonic()
            scores[i] = self._call_in_process(fn, prompts, completions, columns)
            d = stats.delta(before)
            seconds[fn.name] = time.monotonic() - t
            timeouts[fn.name] = d.get("math_timeouts", 0) + d.get("sandbox_timeouts", 0)
            errors[fn.name] = d.get("math_errors", 0)
        total = torch.zeros(n, dtype=torch.float32)
        per_function: dict[str, torch.Tensor] = {}
        for i, (fn, w) in enumerate(zip(self.funcs, self.weights)):
            raw = torch.tensor(
                [math.nan if s is None else s for s in scores.get(i, [])] or [], dtype=torch.float32
            )
            raw = raw if raw.numel() == n else torch.full((n,), math.nan)
            per_function[fn.name] = raw
            total += w * torch.nan_to_num(raw, nan=0.0)
        ran_unisolated = self._sandbox.unisolated_runs - unisolated
        if ran_unisolated:
            log.warning(
                "%d programs ran WITHOUT a sandbox this step (grading.sandbox.allow_unisolated=true): they could "
                "read this machine's files and reach the network", ran_unisolated,
            )  # fmt: skip
        return RewardResult(total, per_function, timeouts, errors, seconds, ran_unisolated)

    def _call_in_process(
        self, fn: NamedReward, prompts: list, completions: list, columns: dict
    ) -> list[float | None]:
        try:
            return _checked_scores(fn, len(completions), fn(prompts, completions, **columns))
        except _NAMES_THE_FIX:
            raise
        except Exception as e:  # noqa: BLE001 - find the row that breaks it, so the user can fix data or function
            raise self._error(fn, e, prompts, completions, columns) from e

    @staticmethod
    def _error(fn: NamedReward, e: Exception, prompts: list, completions: list, columns: dict) -> RewardError:
        bad = _first_failing_row(fn, prompts, completions, columns)
        where = f" on row {bad} (completion {str(completions[bad])[:80]!r})" if bad is not None else ""
        return RewardError(f"reward function {fn.name!r} raised {type(e).__name__}: {e}{where}")

    def _score_custom(
        self,
        prompts: list,
        completions: list,
        columns: dict,
        scores: dict[int, list[float | None]],
        timeouts: dict[str, int],
        errors: dict[str, int],
    ) -> None:
        if self._pool is None:  # used again after close(): fork the workers anew
            self._pool = self._fork_pool()
        n, g = len(completions), self.grading
        size = g.rows_per_call or n
        spans = [(s, min(n, s + size)) for s in range(0, n, size)]
        tasks, where = [], []
        for i in self._custom:
            for s, e in spans:
                tasks.append((i, prompts[s:e], completions[s:e], {k: v[s:e] for k, v in columns.items()}))
                where.append((i, s, e))
        fallback = ON_TIMEOUT[g.on_timeout]
        on_error = None if g.on_error == "raise" else ON_TIMEOUT[g.on_error]
        for i in self._custom:
            scores[i] = [None] * n
            timeouts[self.funcs[i].name] = errors[self.funcs[i].name] = 0
        for (i, s, e), out in zip(where, self._pool.map(tasks, g.timeout_s)):
            name = self.funcs[i].name
            if out.kind == "ok":
                scores[i][s:e] = out.value
                continue
            if out.kind == "error" and g.on_error == "raise":
                raise RewardError(
                    f"reward function {name!r} raised {out.value} on rows {s}..{e - 1} (set grading.on_error=zero "
                    "to score such rows 0 and count them instead)"
                )
            bucket = timeouts if out.kind == "timeout" else errors
            bucket[name] += e - s
            scores[i][s:e] = [fallback if out.kind in ("timeout", "crash") else on_error] * (e - s)

    def close(self) -> None:
        """Stop the worker processes (a later :meth:`score` forks new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
