"""The reward protocol: a reward is a plain callable, as in TRL.

    reward(prompts: list[str], completions: list[str], **columns) -> list[float | None]

``columns`` holds every dataset column for the same rows (e.g. ``answer=[...]``, ``verifier=[...]``).
``None`` means "this reward does not apply to this row" (it then counts as 0 in the weighted sum and is
left out of that reward's logged mean). A reward that raises is reported with its name and the row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

RewardFn = Callable[..., list]


class RewardError(RuntimeError):
    """A reward function raised or returned something malformed; the message names the function and row."""


def reward_name(fn: RewardFn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


@dataclass
class RewardOutput:
    """Rewards of N completions."""

    total: torch.Tensor
    """(N,) float32: sum over functions of weight * score (None counts as 0)."""
    per_function: dict[str, torch.Tensor]
    """name -> (N,) float32 raw scores, NaN where the function returned None."""


def check_batch(who: str, prompts: Sequence, n: int, columns: Mapping[str, Sequence]) -> None:
    """ValueError naming ``who`` unless there is one prompt and one value of each column per completion."""
    if len(prompts) != n:
        raise ValueError(f"{who}: {len(prompts)} prompts for {n} completions; pass one prompt per completion")
    for key, col in columns.items():
        if len(col) != n:
            raise ValueError(f"{who}: column {key!r} has {len(col)} rows for {n} completions")


def compute_rewards(
    funcs: Sequence[RewardFn],
    weights: Sequence[float] | None,
    prompts: list[str],
    completions: list[str],
    **columns: Sequence,
) -> RewardOutput:
    """Call every reward function once on the whole batch and combine them with weights.

    >>> def one(prompts, completions, **kw): return [1.0] * len(completions)
    >>> out = compute_rewards([one], [0.5], ["q"], ["a"])
    >>> out.total.tolist(), out.per_function["one"].tolist()
    ([0.5], [1.0])
    """
    n = len(completions)
    check_batch("compute_rewards", prompts, n, columns)
    weights = list(weights) if weights is not None else [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ValueError(
            f"compute_rewards: {len(weights)} weights for {len(funcs)} reward functions; give one weight each"
        )
    total = torch.zeros(n, dtype=torch.float32)
    per_function: dict[str, torch.Tensor] = {}
    for fn, w in zip(funcs, weights):
        name = reward_name(fn)
        try:
            scores = fn(prompts, completions, **columns)
        except Exception as e:  # find the row that breaks it, so the user can fix data or function
            bad = _first_failing_row(fn, prompts, completions, columns)
            where = f" on row {bad} (completion {completions[bad][:80]!r})" if bad is not None else ""
            raise RewardError(f"reward function {name!r} raised {type(e).__name__}: {e}{where}") from e
        if len(scores) != n:
            raise RewardError(f"reward function {name!r} returned {len(scores)} scores for {n} completions")
        raw = torch.full((n,), float("nan"))
        for i, s in enumerate(scores):
            if s is None:
                continue
            s = float(s)
            if not math.isfinite(s):
                raise RewardError(
                    f"reward function {name!r} returned {s} for row {i}; rewards must be finite or None"
                )
            raw[i] = s
        per_function[name] = raw
        total += w * torch.nan_to_num(raw, nan=0.0)
    return RewardOutput(total=total, per_function=per_function)


def _first_failing_row(fn: RewardFn, prompts: list[str], completions: list[str], columns: dict) -> int | None:
    for i in range(len(completions)):
        try:
            fn([prompts[i]], [completions[i]], **{k: [v[i]] for k, v in columns.items()})
        except Exception:
            return i
    return None
