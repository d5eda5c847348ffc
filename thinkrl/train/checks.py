"""The config checks that need thinkrl's registries: algorithm, reward, template and engine names, and the
algorithm settings that only the functions themselves can judge (loss options, IS bounds).

``thinkrl.config`` sits at the bottom of the layers and cannot import the registries above it, so it checks
structure (types, ranges, combinations); this module checks names, and every RL run calls it before it loads
anything (the trainer, ``thinkrl config``, the pipeline's rl stages).
"""

from __future__ import annotations

import torch

from thinkrl.algorithms import (
    ADVANTAGES,
    AGGREGATIONS,
    CRITIC_ADVANTAGES,
    IS_CORRECTIONS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    is_correction,
    loss_options,
    policy_loss,
)
from thinkrl.config import Config, ConfigError, check
from thinkrl.data.templates import check_template
from thinkrl.rewards import check_reward_kwargs, validate_grading
from thinkrl.rollout import ENGINES


def check_config(cfg: Config) -> Config:
    """Reject names that no registry holds, with the valid ones in the message; returns ``cfg``.

    >>> from thinkrl.config import load_config
    >>> check_config(load_config(None, ["algorithm.kl_estimator=k4"]))
    Traceback (most recent call last):
    ...
    thinkrl.config.loading.ConfigError: algorithm.kl_estimator='k4' is unknown; valid: k1, k2, k3
    """
    a = cfg.algorithm
    for name, registry, field_name in (
        (cfg.rollout.engine, ENGINES, "rollout.engine"),
        (a.advantage, {**ADVANTAGES, **CRITIC_ADVANTAGES}, "algorithm.advantage"),
        (a.loss, POLICY_LOSSES, "algorithm.loss"),
        (a.loss_agg, AGGREGATIONS, "algorithm.loss_agg"),
        (a.kl_estimator, KL_ESTIMATORS, "algorithm.kl_estimator"),
    ):
        check(name in registry, f"{field_name}={name!r} is unknown; valid: {', '.join(sorted(registry))}")
    check_algorithm(cfg)
    for i, spec in enumerate(cfg.rewards):
        try:
            check_reward_kwargs(spec.name, spec.kwargs)
        except ValueError as e:
            raise ConfigError(f"rewards[{i}]: {e}") from None
    validate_grading(cfg.grading)
    for field_name, template in (("data.template", cfg.data.template), ("eval.template", cfg.eval.template)):
        if template is None:
            continue
        try:
            check_template(template)
        except ValueError as e:
            raise ConfigError(f"{field_name}: {e}") from None
    return cfg


def check_algorithm(cfg: Config) -> None:
    """The algorithm settings as the functions that use them judge them: the loss, its options, the clip and
    ratio settings and the IS correction each run once on a one-token batch, so a setting a loss cannot
    honour (``dual_clip`` on anything but ppo_clip, GSPO's sequence ratio with gmpo or the covariance
    losses, an option of another loss, a bound out of range) fails here with the function's own message.

    >>> from thinkrl.config import load_config
    >>> check_config(load_config(None, ["algorithm.loss=cispo", "algorithm.dual_clip=3"]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    thinkrl.config.loading.ConfigError: algorithm.loss='cispo': policy loss 'cispo' has no dual clip ...
    """
    a, r = cfg.algorithm, cfg.rollout
    # every ADVANTAGES estimator compares a completion with its group: a group of one always gets 0
    check(
        r.group_size >= 2 or a.advantage not in ADVANTAGES,
        f"rollout.group_size={r.group_size} with algorithm.advantage={a.advantage!r}: a group-relative advantage "
        "needs G >= 2 samples per prompt (every advantage would be 0); set rollout.group_size=2 or more, or "
        f"use a critic ({', '.join(sorted(CRITIC_ADVANTAGES))})",
    )
    if a.advantage in CRITIC_ADVANTAGES:
        check(
            not a.dynamic_sampling,
            "algorithm.dynamic_sampling=true with a critic (algorithm.advantage="
            f"{a.advantage}): R - V(s) is not 0 when a group's rewards are equal, so no group is without "
            "signal; set algorithm.dynamic_sampling=false",
        )
        check(
            not cfg.train.fsdp and cfg.model.lora_r == 0,
            "algorithm.advantage=gae (a critic) is not supported with train.fsdp or LoRA (model.lora_r > 0) yet; "
            "use full fine-tuning in one process or with data parallelism",
        )
    own = {k for k in loss_options(a.loss) if k != "generator"}  # the generator is the learner's, per step
    unknown = sorted(set(a.loss_options) - own)
    check(
        not unknown,
        f"algorithm.loss_options has {unknown}, which algorithm.loss={a.loss!r} does not take; its options: "
        f"{', '.join(sorted(own)) or 'none'} (docs/algorithms.md)",
    )
    one = torch.ones(1, 1)
    extra = {"generator": torch.Generator()} if "generator" in loss_options(a.loss) else {}
    try:
        policy_loss(
            a.loss, torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), one, clip_low=a.clip_low,
            clip_high=a.clip_high, dual_clip=a.dual_clip, ratio_level=a.ratio_level, **a.loss_options, **extra,
        )  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"algorithm.loss={a.loss!r}: {e}") from None
    if a.is_correction is not None:
        check(
            a.is_correction in IS_CORRECTIONS,
            f"algorithm.is_correction={a.is_correction!r} is unknown; valid: {', '.join(sorted(IS_CORRECTIONS))}",
        )
        try:
            is_correction(a.is_correction, torch.zeros(1, 1), torch.zeros(1, 1), one, **is_bounds(cfg))
        except ValueError as e:
            raise ConfigError(f"algorithm.is_low/is_high: {e}") from None


def is_bounds(cfg: Config) -> dict[str, float]:
    """The IS-correction bounds the config sets (``is_low``, ``is_high``); unset ones keep the correction's
    default.

    >>> from thinkrl.config import load_config
    >>> is_bounds(load_config(None, ["algorithm.is_correction=token_mask", "algorithm.is_high=3"]))
    {'high': 3.0}
    """
    a = cfg.algorithm
    return {k: v for k, v in (("low", a.is_low), ("high", a.is_high)) if v is not None}
