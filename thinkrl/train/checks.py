"""The config checks that need thinkrl's registries: algorithm, reward, template and engine names.

``thinkrl.config`` sits at the bottom of the layers and cannot import the registries above it, so it checks
structure (types, ranges, combinations); this module checks names, and every RL run calls it before it loads
anything (the trainer, ``thinkrl config``, the pipeline's rl stages).
"""

from __future__ import annotations

from thinkrl.algorithms import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES
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
        (a.advantage, ADVANTAGES, "algorithm.advantage"),
        (a.loss, POLICY_LOSSES, "algorithm.loss"),
        (a.loss_agg, AGGREGATIONS, "algorithm.loss_agg"),
        (a.kl_estimator, KL_ESTIMATORS, "algorithm.kl_estimator"),
    ):
        check(name in registry, f"{field_name}={name!r} is unknown; valid: {', '.join(sorted(registry))}")
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
