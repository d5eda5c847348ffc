"""Verifiable rewards: plain callables ``(prompts, completions, **columns) -> list[float | None]``.

>>> sorted(REWARDS)[:4]
['accuracy', 'code', 'code_partial', 'countdown']
>>> get_reward("format")(["q"], ["<think>a</think><answer>1</answer>"])
[1.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from thinkrl.rewards.accuracy import accuracy_reward, exact_match_reward
from thinkrl.rewards.code import code_partial_reward, code_reward
from thinkrl.rewards.countdown import countdown_reward
from thinkrl.rewards.format import format_reward, format_think_reward, tag_count_reward
from thinkrl.rewards.language import language_consistency_reward
from thinkrl.rewards.pool import RewardPool
from thinkrl.rewards.routing import routed_reward
from thinkrl.rewards.shaping import kimi_length_penalty, overlong_penalty, overlong_reward

RewardFn = Callable[..., list]  # the same alias as base.RewardFn, without importing torch

REWARDS: dict[str, RewardFn] = {
    fn.__name__: fn
    for fn in (
        format_reward,
        format_think_reward,
        tag_count_reward,
        accuracy_reward,
        exact_match_reward,
        countdown_reward,
        code_reward,
        code_partial_reward,
        language_consistency_reward,
        routed_reward,
    )
}
"""Registry name -> reward function; every function's ``__name__`` is its registry name."""


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``; ValueError listing the valid names otherwise."""
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; valid names: {', '.join(sorted(REWARDS))}") from None


_FROM_BASE = ("RewardError", "RewardOutput", "compute_rewards", "reward_name")


def __getattr__(name: str) -> Any:
    # base.py imports torch (seconds); reward workers and the sandbox never need it, so load it on first use.
    if name in _FROM_BASE:
        from thinkrl.rewards import base

        return getattr(base, name)
    raise AttributeError(f"module 'thinkrl.rewards' has no attribute {name!r}")


__all__ = [
    "REWARDS",
    "RewardError",
    "RewardFn",
    "RewardOutput",
    "RewardPool",
    "compute_rewards",
    "get_reward",
    "kimi_length_penalty",
    "overlong_penalty",
    "overlong_reward",
]
