"""Set-up helpers shared by the RL and SFT trainers: the policy from a ``model`` section, optimizer, lr schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from thinkrl.config import Config, ModelConfig
from thinkrl.core import disable_dropout, load_model_and_tokenizer
from thinkrl.core.lora import apply_lora
from thinkrl.data.datasets import load_prompts
from thinkrl.rewards import build_reward_funcs


def load_policy(m: ModelConfig) -> tuple[torch.nn.Module, Any]:
    """The model and tokenizer a ``model`` config section names, loaded on the CPU in ``m.dtype``
    (:func:`thinkrl.core.load_model_and_tokenizer`; ``demo`` is the built-in base model)."""
    if not m.path:
        raise ValueError("model.path is empty; set it to a Hugging Face model folder or name, or `demo`")
    return load_model_and_tokenizer(
        m.path, dtype=m.dtype, tokenizer_path=m.tokenizer_path, trust_remote_code=m.trust_remote_code,
        attn_implementation=m.attn_implementation,
    )  # fmt: skip


def prepare_policy(
    model: torch.nn.Module, tokenizer: Any, m: ModelConfig, device: torch.device
) -> torch.nn.Module:
    """The model as the RL trainer trains it: on ``device``, dropout off, activation checkpointing and LoRA
    adapters (``model.lora_r > 0``) as ``m`` says, in train mode. Gives ``tokenizer`` a pad token if it has none
    (many base models ship without one; the pad never reaches the loss)."""
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


def reward_pairs(
    cfg: Config, given: Sequence[Callable | tuple[Callable, float]] | None = None
) -> tuple[list[Callable], list[float]]:
    """(functions, weights): ``given`` callables or ``(callable, weight)`` pairs, else ``cfg.rewards`` built.

    >>> def one(prompts, completions, **kw): return [1.0] * len(completions)
    >>> reward_pairs(Config(), [one, (one, 0.5)])[1]
    [1.0, 0.5]
    """
    if given is None:
        return build_reward_funcs(cfg.rewards, cfg.grading)
    pairs = [f if isinstance(f, tuple) else (f, 1.0) for f in given]
    return [f for f, _ in pairs], [float(w) for _, w in pairs]


def load_rows(
    cfg: Config, train_rows: list[dict[str, Any]] | None = None, eval_rows: list[dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(training rows, held-out rows or None): the ones given, else read as ``cfg.data`` says."""
    d = cfg.data
    if train_rows is None:
        train_rows = load_prompts(
            d.train, split=d.split, question_key=d.question_key, answer_key=d.answer_key, max_rows=d.max_rows
        )
    if eval_rows is None and d.eval:
        eval_rows = load_prompts(d.eval, split="test", question_key=d.question_key, answer_key=d.answer_key)
    return train_rows, eval_rows


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


def build_scheduler(optimizer: torch.optim.Optimizer, t: Any, total_updates: int) -> Any:
    """The learning-rate schedule of a ``train`` section (``warmup_steps``, ``lr_schedule``) over
    ``total_updates`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(t.warmup_steps, total_updates, t.lr_schedule)
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
