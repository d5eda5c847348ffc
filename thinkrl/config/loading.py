"""YAML files and ``key=value`` overrides into typed config dataclasses (OmegaConf's merging, our messages)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or combination is invalid; the message names the field and the fix."""


def load_structured(schema: type[T], path: str | Path | None, overrides: list[str] | None) -> T:
    """Merge ``schema``'s defaults <- a YAML file <- dotted overrides with OmegaConf; any parse or type error
    becomes a :class:`ConfigError` that names the key (and, for an unknown key, the valid ones).

    >>> from thinkrl.config import Config
    >>> load_structured(Config, None, ["train.lr=2e-5"]).train.lr
    2e-05
    >>> load_structured(Config, None, ["train.lrr=2e-5"])
    Traceback (most recent call last):
    ...
    thinkrl.config.loading.ConfigError: invalid config: unknown key 'train.lrr'; valid keys under 'train': steps, lr, weight_decay, adam_betas, max_grad_norm, warmup_steps, lr_schedule, share_prompt, fused_lm_head, autocast, micro_batch_size, seed, output_dir, save_every, keep_last, resume, overwrite, resume_force, device, num_threads, fsdp
    """
    layers = [OmegaConf.structured(schema)]
    try:
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {str(p)!r} does not exist; pass a YAML file (see configs/)")
            layers.append(OmegaConf.load(p))
        for o in overrides or []:
            if "=" not in o:
                raise ConfigError(f"override {o!r} is not key=value (e.g. train.lr=1e-5)")
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(OmegaConf.merge(*layers))
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {explain_error(e, schema)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"invalid YAML in the config or an override ({e}); quote values with braces or colons"
        ) from None
    assert isinstance(cfg, schema)
    return cfg


def explain_error(e: OmegaConfBaseException, schema: type) -> str:
    """An OmegaConf error as one line naming the key; an unknown key lists the valid keys beside it."""
    key = getattr(e, "full_key", None) or ""
    msg = str(e).splitlines()[0]
    if "not in struct" in msg or ("Key '" in msg and "not" in msg):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        valid = _valid_keys(schema, parent)
        return f"unknown key {key!r}; valid keys under {parent or 'the top level'!r}: {', '.join(valid)}"
    return f"{key}: {msg}" if key else msg


def _valid_keys(schema: type, dotted: str) -> list[str]:
    obj: Any = schema
    for part in filter(None, dotted.split(".")):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            return [f.name for f in dataclasses.fields(schema)]
        factory = fields[part].default_factory
        value = factory() if factory is not dataclasses.MISSING else None
        obj = type(value) if dataclasses.is_dataclass(value) else None
        if obj is None:
            return []
    return [f.name for f in dataclasses.fields(obj)]


def config_to_yaml(cfg: Any) -> str:
    """A resolved config (any config dataclass) as YAML, as saved in every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write :func:`config_to_yaml` of ``cfg`` to ``path``."""
    Path(path).write_text(config_to_yaml(cfg))
