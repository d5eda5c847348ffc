"""Set-up helpers shared by the RL and SFT trainers: seeding, device, model loading, dropout, lr schedule."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from thinkrl.config import Config, ModelConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in ``model`` (modules and attention-dropout config fields) to 0."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "attn_pdrop", "hidden_dropout", "resid_pdrop", "embd_pdrop", "dropout"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)
    for module in model.modules():  # attention layers that copied the rate at construction
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device(name)


def load_model_and_tokenizer(cfg: Config) -> tuple[torch.nn.Module, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from ``cfg.model`` (``demo`` = the built-in base model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cfg.model.path
    if not path:
        raise ValueError("model.path is empty; set it to a Hugging Face model folder or name, or `demo`")
    if path == "demo":
        from thinkrl.demo import DEMO_BASE_PATH

        path = str(DEMO_BASE_PATH)
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, cfg.model.dtype),
        "trust_remote_code": cfg.model.trust_remote_code,
    }
    if cfg.model.attn_implementation:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(
        cfg.model.tokenizer_path or path, trust_remote_code=cfg.model.trust_remote_code
    )
    return model, tokenizer


def prepare_policy(
    model: torch.nn.Module, tokenizer: Any, m: ModelConfig, device: torch.device
) -> torch.nn.Module:
    """The model as the RL trainer trains it: on ``device``, dropout off, activation checkpointing and LoRA
    adapters (``model.lora_r > 0``) as ``m`` says, in train mode. Gives ``tokenizer`` a pad token if it has none
    (many base models ship without one; the pad never reaches the loss)."""
    from thinkrl.train.lora import apply_lora

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device)
    if m.disable_dropout:
        disable_dropout(model)
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if m.lora_r > 0:
        if m.gradient_checkpointing:  # frozen embeddings: checkpointed blocks need an input grad
            model.enable_input_require_grads()
        model = apply_lora(model, m)
    return model.train()


def tokenize_prompts(tokenizer: Any, prompts: list[str], template: str, limit: int) -> list[list[int]]:
    """Token ids of rendered prompts; a prompt over ``limit`` tokens is an error naming the row, never cut."""
    # A chat template already holds the special tokens; plain text gets the tokenizer's usual BOS.
    special = template != "chat"
    ids = [tokenizer(p, add_special_tokens=special)["input_ids"] for p in prompts]
    for i, p in enumerate(ids):
        if len(p) > limit:
            raise ValueError(
                f"prompt of row {i} has {len(p)} tokens > data.max_prompt_tokens={limit}; raise the limit "
                "or drop long rows from the dataset (prompts are never cut silently)"
            )
    return ids


def build_reward_funcs(cfg: Config) -> tuple[list[Callable], list[float]]:
    """``cfg.rewards`` as (functions, weights); rewards with ``kwargs`` (a reward model) are built here, once.

    ConfigError names the entry for a bad name, bad kwargs, a reward model that cannot be loaded, or two
    rewards logged under one name (their metrics would overwrite each other).
    """
    from thinkrl.config import ConfigError
    from thinkrl.rewards import build_reward

    names = [spec.kwargs.get("name", spec.name) for spec in cfg.rewards]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"rewards: {', '.join(twice)} listed more than once; merge the entries, or give reward models "
            "distinct kwargs.name"
        )
    funcs = []
    for i, spec in enumerate(cfg.rewards):
        try:
            funcs.append(build_reward(spec.name, spec.kwargs))
        except ValueError as e:
            raise ConfigError(f"rewards[{i}] ({spec.name}): {e}") from None
    return funcs, [spec.weight for spec in cfg.rewards]


def build_optimizer(params: list[torch.nn.Parameter], t: Any) -> torch.optim.Optimizer:
    """AdamW over ``params`` with ``t.lr``, ``t.adam_betas`` and ``t.weight_decay`` (a ``train`` config section).

    Fused (one kernel for every tensor: 2.6x faster ``step()`` on CPU for a 4M model, benchmarks/NOTES.md P4)
    when all parameters are plain floating-point tensors on one CPU or CUDA device type; else torch's default
    (sharded FSDP parameters, other devices). Both compute the same update up to float rounding (tested).
    """
    fused = (
        len({p.device.type for p in params}) == 1
        and params[0].device.type in ("cpu", "cuda")
        and all(p.is_floating_point() and type(p.data) is torch.Tensor for p in params)
    )
    return torch.optim.AdamW(
        params, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay, fused=fused or None
    )


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """Multiplier of the base lr after ``i`` optimizer steps: linear warm-up, then constant or cosine to 10%."""

    def f(i: int) -> float:
        if warmup and i < warmup:
            return (i + 1) / warmup
        if schedule == "cosine" and total > warmup:
            progress = min((i - warmup) / (total - warmup), 1.0)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return f
