"""One typed config tree for every command, loaded from YAML and overridable on the command line.

    cfg = load_config("configs/r1-zero.yaml", ["algorithm.beta=0.0", "rollout.group_size=16"])

- ``schema.py``: the dataclasses (every field documented, the paper's defaults);
- ``loading.py``: defaults <- YAML <- ``key=value`` overrides (OmegaConf's merging, our error messages);
- ``checks.py``: structural validation (ranges, combinations) with fix-it messages.

Names that live in thinkrl's registries (algorithm, reward and template names) are checked a layer up, by
``thinkrl.train.checks.check_config``, which every run calls before it starts.
"""

from __future__ import annotations

from pathlib import Path

from thinkrl.config.checks import check, check_eval_sampling, check_model_dtype, check_train_fields, validate
from thinkrl.config.loading import ConfigError, config_to_yaml, explain_error, load_structured, save_config
from thinkrl.config.schema import (
    AlgorithmConfig,
    AsyncConfig,
    Config,
    CriticConfig,
    DataConfig,
    DoctorConfig,
    EvalConfig,
    EvalSampling,
    GradingConfig,
    LogConfig,
    ModelConfig,
    RewardSpec,
    RolloutConfig,
    SandboxConfig,
    ToolsConfig,
    TrainConfig,
)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- ``key=value`` overrides, then :func:`validate`.

    >>> cfg = load_config(None, ["rollout.group_size=4", "algorithm.beta=0"])
    >>> cfg.rollout.group_size, cfg.algorithm.beta
    (4, 0.0)
    """
    cfg = load_structured(Config, path, overrides)
    validate(cfg)
    return cfg


__all__ = [
    "AlgorithmConfig",
    "AsyncConfig",
    "Config",
    "ConfigError",
    "CriticConfig",
    "DataConfig",
    "DoctorConfig",
    "EvalConfig",
    "EvalSampling",
    "GradingConfig",
    "LogConfig",
    "ModelConfig",
    "RewardSpec",
    "RolloutConfig",
    "SandboxConfig",
    "ToolsConfig",
    "TrainConfig",
    "check",
    "check_eval_sampling",
    "check_model_dtype",
    "check_train_fields",
    "config_to_yaml",
    "explain_error",
    "load_config",
    "load_structured",
    "save_config",
    "validate",
]
