"""Verifiable rewards: plain callables ``(prompts, completions, **columns) -> list[float | None]``.

Built-ins are looked up by registry key (``registry.py``); :class:`RewardScorer` runs a set of rewards with
hard time limits and counts timeouts and errors; :func:`isolation` says how code rewards are sandboxed.

>>> get_reward("format")(["q"], ["<think>a</think><answer>1</answer>"])
[1.0]

``import thinkrl.rewards`` does not import torch: the scorer and ``compute_rewards`` load it on first use.
"""

from __future__ import annotations

from typing import Any

from thinkrl.rewards.named import NamedReward, in_process
from thinkrl.rewards.registry import (
    REWARD_FACTORIES,
    REWARDS,
    RewardFn,
    build_reward,
    build_reward_funcs,
    check_reward_kwargs,
    get_reward,
    load_custom,
    reward_kwargs,
)
from thinkrl.rewards.reward_model import RewardModelReward
from thinkrl.rewards.sandbox import SandboxUnavailable, isolation
from thinkrl.rewards.settings import validate_grading
from thinkrl.rewards.shaping import kimi_length_penalty, overlong_penalty, overlong_reward

_LAZY = {
    "RewardError": "base",
    "RewardOutput": "base",
    "compute_rewards": "base",
    "reward_name": "base",
    "RewardScorer": "scorer",
    "RewardResult": "scorer",
}


def __getattr__(name: str) -> Any:
    # base.py and scorer.py import torch (seconds); workers and the sandbox never need it: load on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"thinkrl.rewards.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'thinkrl.rewards' has no attribute {name!r}")


__all__ = [
    "REWARDS",
    "REWARD_FACTORIES",
    "NamedReward",
    "RewardError",
    "RewardFn",
    "RewardModelReward",
    "RewardOutput",
    "RewardResult",
    "RewardScorer",
    "SandboxUnavailable",
    "build_reward",
    "build_reward_funcs",
    "check_reward_kwargs",
    "compute_rewards",
    "get_reward",
    "in_process",
    "isolation",
    "kimi_length_penalty",
    "load_custom",
    "overlong_penalty",
    "overlong_reward",
    "reward_kwargs",
    "validate_grading",
]
