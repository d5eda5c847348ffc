"""LoRA through PEFT: train low-rank adapters, keep the base frozen, and use the base as the reference.

    model = apply_lora(model, cfg.model)          # a peft.PeftModel; only adapter weights require grad
    with reference_mode(model):                   # adapters off: the initial policy, no second copy
        ref_logp = forward_logprobs(model, batch, temperature)

A LoRA policy starts as the base model exactly (PEFT initialises B = 0), so "the base with adapters
disabled" is the initial policy: the KL reference of GRPO costs no memory. Checkpoints hold the adapters
(``adapter/``, loadable with ``PeftModel.from_pretrained``) and the merged weights as a plain Hugging Face
folder (``W + scale * B @ A``, loadable with ``AutoModelForCausalLM.from_pretrained``), see
:class:`LoraCheckpointView`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

ADAPTER_DIR = "adapter"
"""Sub-folder of a checkpoint that holds the PEFT adapter (adapter_config.json, adapter_model.safetensors)."""


def _peft() -> Any:
    try:
        import peft
    except ImportError as e:
        raise ImportError(
            "model.lora_r > 0 needs PEFT: `pip install thinkrl[peft]` (or `pip install peft`)"
        ) from e
    return peft


def is_lora(model: torch.nn.Module) -> bool:
    """True for a model wrapped by :func:`apply_lora` (a ``peft.PeftModel``)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def apply_lora(model: torch.nn.Module, cfg: Any) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters of rank ``cfg.lora_r`` on ``cfg.lora_target_modules`` (a ``model``
    config section: ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``).

    Only adapter weights keep ``requires_grad``; the base weights are frozen. The wrapped model computes
    exactly what ``model`` computed (B is initialised to 0). Seed first: A is initialised randomly.
    """
    peft = _peft()
    targets: Any = list(cfg.lora_target_modules) if cfg.lora_target_modules else "all-linear"
    config = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT wrapper (adapters injected, still active), else ``model``.

    The rollout engine calls it directly: its ``forward`` signature is the architecture's own.
    """
    return model.get_base_model() if is_lora(model) else model


@contextlib.contextmanager
def reference_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, ``model`` computes the base model (adapters disabled): the reference policy."""
    with model.disable_adapter():
        yield model


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter folded in (``W + delta``), under the base's own keys.

    Computed without touching the training weights (merging in place and unmerging would leave rounding).
    """
    from peft.tuners.lora import LoraLayer

    inner = base_model(model)
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in inner.named_modules():
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                weight = base.weight.detach().clone()
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        weight += module.get_delta_weight(adapter).to(weight.dtype)
                merged[f"{name}.weight"] = weight
                if getattr(base, "bias", None) is not None:
                    merged[f"{name}.bias"] = base.bias.detach().clone()
        for key, value in inner.state_dict().items():
            if "lora_" in key or ".base_layer." in key:
                continue
            merged.setdefault(key, value.detach())
    return merged


class LoraCheckpointView:
    """What ``save_checkpoint`` writes for a LoRA policy: ``save_pretrained(path)`` puts the merged model
    (a plain HF folder) at ``path`` and the adapter at ``path/adapter``."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def save_pretrained(self, path: str | Path, safe_serialization: bool = True) -> None:
        inner = base_model(self.model)
        inner.save_pretrained(
            path, state_dict=merged_state_dict(self.model), safe_serialization=safe_serialization
        )
        self.model.save_pretrained(Path(path) / ADAPTER_DIR, safe_serialization=safe_serialization)


def load_adapter_weights(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Load the adapter saved in ``checkpoint/adapter`` into the LoRA ``model`` (in place)."""
    from safetensors.torch import load_file

    peft = _peft()
    path = Path(checkpoint) / ADAPTER_DIR / "adapter_model.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: checkpoint {checkpoint} was not written by a LoRA run (model.lora_r > 0); "
            "resume it with model.lora_r=0 or start a fresh run"
        )
    result = peft.set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"adapter in {checkpoint} does not match the model: unexpected {unexpected}")
