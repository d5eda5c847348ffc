"""Reward names -> reward functions, and building the configured rewards (``cfg.rewards``) in one call.

A name is a registry key (:data:`REWARDS`), a factory key taking kwargs (:data:`REWARD_FACTORIES`), or the
user's own ``module:function`` / ``path/to/file.py:function``. With kwargs, a user's function is a factory:
it is called with them and must return the reward. ``kwargs.name`` sets the logged name.

>>> sorted(REWARDS)[:4]
['accuracy', 'code', 'code_partial', 'countdown']
>>> get_reward("format")(["q"], ["<think>a</think><answer>1</answer>"])
[1.0]
>>> build_reward("format", {"path": "x"})
Traceback (most recent call last):
...
ValueError: reward 'format' takes no kwargs (got: path); remove them (rewards that take kwargs: reward_model, module:function)
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from thinkrl.rewards.accuracy import accuracy_reward, exact_match_reward
from thinkrl.rewards.code import code_partial_reward, code_reward
from thinkrl.rewards.countdown import countdown_reward
from thinkrl.rewards.format import format_reward, format_think_reward, tag_count_reward
from thinkrl.rewards.language import language_consistency_reward
from thinkrl.rewards.named import NamedReward
from thinkrl.rewards.reward_model import RewardModelReward
from thinkrl.rewards.routing import routed_reward
from thinkrl.rewards.settings import bound_settings, default_grading

RewardFn = Callable[..., list]

REWARDS: dict[str, NamedReward] = {
    name: NamedReward(name, fn, in_process=True)
    for name, fn in (
        ("format", format_reward),
        ("format_think", format_think_reward),
        ("tag_count", tag_count_reward),
        ("accuracy", accuracy_reward),
        ("exact_match", exact_match_reward),
        ("countdown", countdown_reward),
        ("code", code_reward),
        ("code_partial", code_partial_reward),
        ("language_consistency", language_consistency_reward),
        ("routed", routed_reward),
    )
}
"""Registry key -> built-in reward (run in the scorer's process: each grader bounds its own time)."""

REWARD_FACTORIES: dict[str, Callable[..., RewardFn]] = {"reward_model": RewardModelReward}
"""Registry key -> a class or function that builds the reward from keyword arguments (``RewardSpec.kwargs``)."""


def is_custom(name: str) -> bool:
    """Is ``name`` a user's ``module:function`` rather than a registry key?"""
    return ":" in name


def get_reward(name: str) -> NamedReward:
    """The built-in reward registered as ``name``; ValueError listing the valid names otherwise."""
    if name in REWARD_FACTORIES:
        raise ValueError(
            f"reward {name!r} needs kwargs ({', '.join(reward_kwargs(name))}); build it with "
            f"build_reward({name!r}, kwargs), or in a config as {{name: {name}, kwargs: {{...}}}}"
        )
    try:
        return REWARDS[name]
    except KeyError:
        valid = ", ".join(sorted([*REWARDS, *REWARD_FACTORIES]))
        raise ValueError(
            f"unknown reward {name!r}; valid names: {valid}, or your own module:function"
        ) from None


def reward_kwargs(name: str) -> list[str]:
    """The keyword arguments a factory reward accepts; [] for plain rewards.

    >>> reward_kwargs("reward_model")[:3], reward_kwargs("format")
    (['path', 'score_on', 'template'], [])
    """
    factory = REWARD_FACTORIES.get(name)
    if factory is None:
        return []
    return [p.name for p in inspect.signature(factory).parameters.values() if p.kind is not p.VAR_KEYWORD]


def load_custom(spec: str) -> Callable[..., Any]:
    """The function named by ``module:function`` or ``path/to/file.py:function``; ValueError naming the fix.

    Modules are looked up on ``sys.path`` and in the current directory.
    """
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise ValueError(
            f"reward {spec!r}: write a custom reward as module:function or path/file.py:function"
        )
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            path = Path(mod_name).expanduser().resolve()
            if not path.is_file():
                raise ImportError(f"no file {path}")
            mod_spec = importlib.util.spec_from_file_location(f"thinkrl_user_reward_{path.stem}", path)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module  # so that its functions pickle and its dataclasses work
            mod_spec.loader.exec_module(module)
        else:
            added = os.getcwd() not in sys.path
            if added:
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(mod_name)
            finally:
                if added:
                    sys.path.remove(os.getcwd())
    except Exception as e:  # noqa: BLE001 - anything the user's module raises while importing
        raise ValueError(
            f"reward {spec!r}: cannot import {mod_name!r} ({type(e).__name__}: {e}); give a module on the Python "
            "path (or in the current directory) or a file path, e.g. my_rewards.py:my_reward"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ValueError(
            f"reward {spec!r}: {mod_name} has no function {attr!r}; its callables: {', '.join(names)}"
        )
    return fn


def check_reward_kwargs(name: str, kwargs: Mapping[str, Any] | None) -> None:
    """ValueError, naming the fix, for an unknown reward name, an unknown kwarg or a missing required one."""
    kwargs = kwargs or {}
    if is_custom(name):
        load_custom(name)
        return
    if name not in REWARD_FACTORIES:
        get_reward(name)  # raises for an unknown name
        if kwargs:
            raise ValueError(
                f"reward {name!r} takes no kwargs (got: {', '.join(sorted(kwargs))}); remove them "
                f"(rewards that take kwargs: {', '.join(sorted(REWARD_FACTORIES))}, module:function)"
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


def build_reward(name: str, kwargs: Mapping[str, Any] | None = None, grading: Any = None) -> RewardFn:
    """The reward ``name``, ready to call: a built-in with the ``grading`` settings bound (time limits, the
    sandbox; defaults when None), a factory reward built with ``kwargs``, or the user's ``module:function``."""
    check_reward_kwargs(name, kwargs)
    kwargs = dict(kwargs or {})
    if is_custom(name):
        logged = kwargs.pop("name", None) or name.rpartition(":")[2]
        fn = load_custom(name)
        return NamedReward(logged, fn(**kwargs) if kwargs else fn)
    if name in REWARD_FACTORIES:
        return REWARD_FACTORIES[name](**kwargs)
    bound = bound_settings(name, grading if grading is not None else default_grading())
    return REWARDS[name].with_settings(**bound) if bound else REWARDS[name]


def build_reward_funcs(specs: Sequence[Any], grading: Any = None) -> tuple[list[RewardFn], list[float]]:
    """``cfg.rewards`` (objects with ``name``, ``weight``, ``kwargs``) as (functions, weights), built once.

    ConfigError names the entry for a bad name, bad kwargs, a reward that cannot be built, or two rewards
    logged under one name (their metrics would overwrite each other).
    """
    from thinkrl.config import ConfigError

    names = [spec.kwargs.get("name", spec.name.rpartition(":")[2]) for spec in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"rewards: {', '.join(twice)} listed more than once; merge the entries, or give them distinct "
            "kwargs.name"
        )
    funcs = []
    for i, spec in enumerate(specs):
        try:
            funcs.append(build_reward(spec.name, spec.kwargs, grading))
        except ValueError as e:
            raise ConfigError(f"rewards[{i}] ({spec.name}): {e}") from None
    return funcs, [spec.weight for spec in specs]
