"""Verifiable rewards: plain callables ``(prompts, completions, **columns) -> list[float | None]``.

>>> sorted(REWARDS)[:4]
['accuracy', 'code', 'code_partial', 'countdown']
>>> get_reward("format")(["q"], ["<think>a</think><answer>1</answer>"])
[1.0]

Rewards that need construction (a reward model: which model, what to score) are factories, built from a
config's ``kwargs`` by :func:`build_reward`; plain rewards take no kwargs.

>>> build_reward("format", {"path": "x"})
Traceback (most recent call last):
...
ValueError: reward 'format' takes no kwargs (got: path); remove them (rewards that take kwargs: reward_model)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from thinkrl.rewards.accuracy import accuracy_reward, exact_match_reward
from thinkrl.rewards.code import code_partial_reward, code_reward
from thinkrl.rewards.countdown import countdown_reward
from thinkrl.rewards.format import format_reward, format_think_reward, tag_count_reward
from thinkrl.rewards.language import language_consistency_reward
from thinkrl.rewards.pool import RewardPool
from thinkrl.rewards.reward_model import RewardModelReward
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


REWARD_FACTORIES: dict[str, Callable[..., RewardFn]] = {"reward_model": RewardModelReward}
"""Registry name -> a class or function that builds the reward from keyword arguments (``RewardSpec.kwargs``)."""


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``; ValueError listing the valid names otherwise."""
    if name in REWARD_FACTORIES:
        raise ValueError(
            f"reward {name!r} needs kwargs ({', '.join(reward_kwargs(name))}); build it with "
            f"build_reward({name!r}, kwargs), or in a config as {{name: {name}, kwargs: {{...}}}}"
        )
    try:
        return REWARDS[name]
    except KeyError:
        valid = ", ".join(sorted([*REWARDS, *REWARD_FACTORIES]))
        raise ValueError(f"unknown reward {name!r}; valid names: {valid}") from None


def reward_kwargs(name: str) -> list[str]:
    """The keyword arguments a factory reward accepts; [] for plain rewards.

    >>> reward_kwargs("reward_model")[:3], reward_kwargs("format")
    (['path', 'score_on', 'template'], [])
    """
    factory = REWARD_FACTORIES.get(name)
    if factory is None:
        return []
    return [p.name for p in inspect.signature(factory).parameters.values() if p.kind is not p.VAR_KEYWORD]


def check_reward_kwargs(name: str, kwargs: Mapping[str, Any] | None) -> None:
    """ValueError, naming the fix, for an unknown reward name, an unknown kwarg or a missing required one."""
    kwargs = kwargs or {}
    if name not in REWARD_FACTORIES:
        get_reward(name)  # raises for an unknown name
        if kwargs:
            raise ValueError(
                f"reward {name!r} takes no kwargs (got: {', '.join(sorted(kwargs))}); remove them "
                f"(rewards that take kwargs: {', '.join(sorted(REWARD_FACTORIES))})"
            )
        return
    params = inspect.signature(REWARD_FACTORIES[name]).parameters
    valid = reward_kwargs(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"reward {name!r}: unknown kwargs {', '.join(unknown)}; valid kwargs: {', '.join(valid)}"
        )
    missing = [k for k in valid if params[k].default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ValueError(
            f"reward {name!r} needs kwargs {', '.join(missing)} (valid kwargs: {', '.join(valid)})"
        )


def build_reward(name: str, kwargs: Mapping[str, Any] | None = None) -> RewardFn:
    """The reward ``name``: a factory reward built with ``kwargs``, or a plain one (which takes none)."""
    check_reward_kwargs(name, kwargs)
    if name in REWARD_FACTORIES:
        return REWARD_FACTORIES[name](**dict(kwargs or {}))
    return REWARDS[name]


_FROM_BASE = ("RewardError", "RewardOutput", "compute_rewards", "reward_name")


def __getattr__(name: str) -> Any:
    # base.py imports torch (seconds); reward workers and the sandbox never need it, so load it on first use.
    if name in _FROM_BASE:
        from thinkrl.rewards import base

        return getattr(base, name)
    raise AttributeError(f"module 'thinkrl.rewards' has no attribute {name!r}")


__all__ = [
    "REWARDS",
    "REWARD_FACTORIES",
    "RewardError",
    "RewardFn",
    "RewardModelReward",
    "RewardOutput",
    "RewardPool",
    "build_reward",
    "check_reward_kwargs",
    "compute_rewards",
    "get_reward",
    "kimi_length_penalty",
    "overlong_penalty",
    "overlong_reward",
    "reward_kwargs",
]
