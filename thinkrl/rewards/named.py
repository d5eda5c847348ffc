"""A reward function with the name it is logged under, and how it runs (in the scorer's process or a worker).

Registry rewards are ``NamedReward(key, function)``: the registry key is the name, the function keeps its own
``__name__``. Built-in rewards run in the scorer's process (their graders carry their own time limits); any
other callable runs in worker processes under ``grading.timeout_s`` (:class:`thinkrl.rewards.RewardScorer`).

>>> def length(prompts, completions, **columns): return [float(len(c)) for c in completions]
>>> r = NamedReward("len", length)
>>> r(["q"], ["abc"]), r.__name__, r.in_process
([3.0], 'len', False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class NamedReward:
    """``fn`` logged as ``name``; ``bound`` keyword arguments (grader settings) are passed on every call."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., list],
        *,
        in_process: bool = False,
        bound: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = self.__name__ = name
        self.fn = fn
        self.in_process = in_process
        """True: call it in the scorer's process (built-ins, reward models); False: in a worker process."""
        self.bound = dict(bound or {})

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list:
        return self.fn(prompts, completions, **self.bound, **columns)

    def with_settings(self, **bound: Any) -> NamedReward:
        """The same reward with grader settings bound (e.g. ``math_timeout_s``)."""
        return NamedReward(self.name, self.fn, in_process=self.in_process, bound={**self.bound, **bound})

    def __repr__(self) -> str:
        return f"NamedReward({self.name!r}, {getattr(self.fn, '__qualname__', self.fn)!r})"


def in_process(fn: Callable[..., list], name: str | None = None) -> NamedReward:
    """Mark a custom reward to run in the scorer's process (no worker, no timeout): for functions that hold a
    GPU model or are already bounded. ``name`` defaults to the function's ``__name__``."""
    return NamedReward(name or getattr(fn, "__name__", type(fn).__name__), fn, in_process=True)
