"""FSDP2 (``torch.distributed.fsdp.fully_shard``): shard parameters, gradients and AdamW state over the ranks.

    torchrun --nproc-per-node 4 -m thinkrl train configs/r1-zero.yaml train.fsdp=true

:func:`shard_model` wraps every decoder layer, then the root (embeddings, final norm, lm-head), so a rank
holds 1/N of every weight and all-gathers one layer at a time in forward and backward. The update is the
one data parallelism makes (docs/scaling.md): FSDP reduce-scatters each micro-batch's gradients with SUM
semantics (the trainer's losses are already fractions of the global loss), AdamW steps on each rank's
shards. Three things need care, because every forward and backward of a sharded model is a collective:

* Generation: ranks decode different numbers of steps (rows finish early), so a per-layer all-gather
  would pair up with another rank's different call. :class:`GatheredEngine` all-gathers the whole model
  once before ``generate`` and frees it after (:func:`gathered`): no collective while decoding.
* Training: a rank may hold fewer rows of a minibatch than another; the parallel edge
  (``parallel.FSDP.pad_passes``) gives it empty micro-batches (mask all zero: zero loss, zero gradient) so
  every rank runs as many passes.
* Checkpoints: :func:`save_checkpoint` writes model and optimizer shards with ``torch.distributed.checkpoint``
  (:func:`save_sharded`, DCP: any rank count can load them) plus a plain Hugging Face folder gathered on rank 0.
* Rank 0's evaluation: the trainer enters :func:`gathered` on every rank, then only rank 0 generates.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from thinkrl.train import distributed as dist

SHARDED_DIR = "sharded"
"""Sub-folder of a checkpoint with the DCP shards of the model and optimizer (one file per rank)."""

_GATHERED = "_thinkrl_gathered"  # attribute set on a root module while its full parameters are gathered


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers model: modules whose class is in ``model._no_split_modules``
    (``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, ``GPT2Block``, ...)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"train.fsdp=true found no decoder layers in {type(model).__name__} (no module of a class in "
            f"_no_split_modules={sorted(names)}); use a transformers causal LM or set train.fsdp=false"
        )
    return layers


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """Shard ``model`` in place over all ranks of the process group: each decoder layer is one FSDP unit,
    the rest (embeddings, final norm, lm-head; tied weights stay together) is the root unit.

    Call after the ranks agree on the weights (``distributed.broadcast_parameters``) and before the
    optimizer is built: afterwards ``model.parameters()`` are DTensor shards. Gradients are SUMmed over
    ranks (divide factor 1), as :func:`distributed.all_reduce_grads` does without FSDP.
    """
    import torch.distributed as tdist
    from torch.distributed.device_mesh import init_device_mesh

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (tdist.get_world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for m in _units(model):
        m.set_gradient_divide_factor(1.0)
        # a plain SUM reduce-scatter: with factor 1 FSDP would ask for PREMUL_SUM, which gloo lacks
        m.set_force_sum_reduction_for_comms(True)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """True for a model wrapped by :func:`shard_model`."""
    return isinstance(model, FSDPModule)


def _units(model: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block every rank holds ``model``'s full parameters and forwards run without collectives,
    so ranks may call the model different numbers of times (generation, rank 0's evaluation).

    Entering and leaving are collectives: every rank must enter. Nested use is a no-op. Costs one full
    copy of the parameters per rank for the duration (no gradients, no optimizer state).
    """
    if not is_sharded(model) or getattr(model, _GATHERED, False):
        yield model
        return
    units = _units(model)
    for m in units:  # the same order on every rank: the all-gathers pair up
        m.unshard()
    for m in units:  # keep them: a per-layer reshard would make the next forward all-gather again
        m.set_reshard_after_forward(False, recurse=False)
    setattr(model, _GATHERED, True)
    try:
        yield model
    finally:
        setattr(model, _GATHERED, False)
        for m in units:  # FSDP's defaults: layers free after forward, the root after backward
            m.set_reshard_after_forward(m is not model, recurse=False)
            m.reshard()


class GatheredEngine:
    """A rollout engine over a sharded model: each ``generate`` runs inside :func:`gathered`.

    Every other attribute is the wrapped engine's.
    """

    def __init__(self, engine: Any, model: torch.nn.Module):
        self.engine, self.model = engine, model

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with gathered(self.model):
            return self.engine.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def _full_options() -> StateDictOptions:
    # full tensors, moved to CPU as they are gathered; only rank 0 keeps them (the others get {})
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on rank 0's CPU, ``{}`` on other ranks. A collective: every rank calls it."""
    return get_model_state_dict(model, options=_full_options())


class FullStateView:
    """What ``checkpoint.save_checkpoint`` writes for a sharded model: ``save_pretrained(path)`` writes the
    gathered full weights as a plain Hugging Face folder (rank 0)."""

    def __init__(self, model: torch.nn.Module, state_dict: dict[str, torch.Tensor]):
        self.model, self.state_dict = model, state_dict

    def save_pretrained(self, path: str | Path, safe_serialization: bool = True) -> None:
        self.model.save_pretrained(path, state_dict=self.state_dict, safe_serialization=safe_serialization)


def save_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write the model and optimizer shards of every rank to ``path/sharded`` (DCP). A collective."""
    import torch.distributed.checkpoint as dcp

    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.save(state, checkpoint_id=str(path / SHARDED_DIR), no_dist=not dist.is_active())


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load ``path/sharded`` into a sharded model and its optimizer (in place), resharding if the checkpoint
    was written by another number of ranks. A collective."""
    import torch.distributed.checkpoint as dcp

    if not (path / SHARDED_DIR).is_dir():
        raise FileNotFoundError(
            f"{path / SHARDED_DIR} is missing: checkpoint {path} was not written with train.fsdp=true; "
            "resume it with train.fsdp=false or start a fresh run"
        )
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    with warnings.catch_warnings():  # one process reading shards is intended (DCP warns about it)
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(path / SHARDED_DIR), no_dist=not dist.is_active())
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


def load_full_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a plain Hugging Face folder's safetensors weights into a sharded ``model`` (each rank keeps its
    shard)."""
    from thinkrl.train.checkpoint import read_model_weights

    set_model_state_dict(
        model, read_model_weights(model, path), options=StateDictOptions(full_state_dict=True, strict=False)
    )


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    *,
    reference: torch.nn.Module | None = None,
    keep_last: int = 2,
    run_id: str = "",
) -> Path | None:
    """Checkpoint ``step`` of a sharded run; a collective, every rank calls it. Returns the path on rank 0.

    Every rank writes its model and optimizer shards to ``sharded/``; rank 0 then writes the gathered
    weights as a plain Hugging Face folder and ``trainer_state`` (without the optimizer: it is in the shards)
    and commits the checkpoint atomically with ``checkpoint.save_checkpoint``.
    """
    from thinkrl.train import checkpoint

    if dist.is_main():
        checkpoint.staging_dir(run_dir, step, clear=True)
    dist.barrier()  # the staging folder exists and is empty before any rank writes into it
    tmp = checkpoint.staging_dir(run_dir, step)
    save_sharded(tmp, model, optimizer)
    weights = full_state_dict(model)
    ref_weights = full_state_dict(reference) if reference is not None else {}
    path = None
    if dist.is_main():
        path = checkpoint.save_checkpoint(
            run_dir, step, FullStateView(model, weights), tokenizer, trainer_state,
            reference=FullStateView(reference, ref_weights) if reference is not None else None,
            keep_last=keep_last, staged=True, run_id=run_id,
        )  # fmt: skip
    dist.barrier()  # no rank reads or resumes before the checkpoint is committed
    return path
