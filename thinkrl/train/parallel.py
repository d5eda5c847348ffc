"""The parallel edge: one object answers everything that depends on how many processes train and how they hold
the weights, so the collector and the learner never ask which mode they run in.

| method | SingleProcess | DataParallel (``torchrun``) | FSDP (``train.fsdp``) |
| --- | --- | --- | --- |
| ``shard(total)`` | ``(0, total)`` | this rank's contiguous share | as DataParallel |
| ``gather_objects`` / ``gather_rows`` | the input | every rank's, in rank order | as DataParallel |
| ``sum(t)`` / ``max(t)`` | ``t`` | all-reduce SUM / MAX | as DataParallel |
| ``broadcast(model)`` / ``wrap(model, reference)`` | as is | rank 0's weights / as is | + sharded (1/N each) |
| ``wrap_engine`` / ``full_weights`` | as is / no-op | as is / no-op | all-gathers the weights while generating |
| ``pad_passes(items, filler)`` | ``items`` | ``items`` | as many as the rank with the most |
| ``reduce_grads`` | no-op | all-reduce SUM | no-op (reduce-scattered in backward) |
| ``save`` / ``load`` | rank 0 writes | rank 0 writes | every rank writes its shards |

Why these make N ranks compute the update of one process, and the limits: docs/scaling.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from thinkrl.config import Config
from thinkrl.core.lora import LoraCheckpointView, is_lora, load_adapter_weights
from thinkrl.train import distributed as dist
from thinkrl.train import fsdp
from thinkrl.train.checkpoint import load_model_weights, load_trainer_state, save_checkpoint


def build_parallel(cfg: Config) -> SingleProcess:
    """The edge for this launch: one process, or ``torchrun``'s ranks (joined here), sharded with
    ``train.fsdp``. Settings that cannot run on this many processes fail first, alike on every rank."""
    world = dist.env_world_size()
    dist.check_world_size(cfg, world)
    if world == 1:
        return SingleProcess()
    info = dist.init_distributed(cfg.train.device)
    return FSDP(info) if cfg.train.fsdp else DataParallel(info)


class SingleProcess:
    """One process holds everything: every method is the identity or does nothing."""

    rank = 0
    world_size = 1
    is_main = True
    """Whether this rank logs, evaluates and writes the run directory."""

    def device(self, device: torch.device) -> torch.device:
        """This rank's device of the kind ``device`` names."""
        return device

    def shard(self, total: int) -> tuple[int, int]:
        """``[start, end)`` of this rank's contiguous share of ``total`` items.

        >>> SingleProcess().shard(8)
        (0, 8)
        """
        return 0, total

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank (any picklable value), in rank order."""
        return [obj]

    def gather_rows(self, columns: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """Per-row columns ``{name: (N_local,)}`` of every rank in rank order (dtypes kept), and the global
        index of this rank's first row.

        >>> SingleProcess().gather_rows({"rewards": torch.tensor([1.0, 0.0])})
        ({'rewards': tensor([1., 0.])}, 0)
        """
        return columns, 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``t`` over ranks."""
        return t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise maximum of ``t`` over ranks."""
        return t

    def broadcast(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's weights (and adapter initialisation), in place."""

    def wrap(self, model: torch.nn.Module, reference: torch.nn.Module | None) -> tuple[Any, Any]:
        """The policy and the reference as this mode holds them (call before the optimizer is built)."""
        return model, reference

    def wrap_engine(self, engine: Any, model: torch.nn.Module) -> Any:
        """A rollout engine that samples from the policy as this mode holds it."""
        return engine

    def full_weights(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """Within the block ``model`` runs without collectives (rank 0's evaluation); every rank enters it."""
        return contextlib.nullcontext(model)

    def pad_passes(self, items: list[Any], filler: Callable[[], Any]) -> list[Any]:
        """``items`` (forward passes), extended by ``filler()`` until every rank runs as many."""
        return items

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """SUM the gradients of ``params`` over ranks, in place."""

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """The global gradient norm before clipping; clips to ``max_norm`` when it is > 0."""
        return dist.clip_grad_norm(params, max_norm)

    def barrier(self) -> None:
        """Wait for every rank."""

    def save(
        self,
        run_dir: Path,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        tokenizer: Any,
        state: dict[str, Any],
        *,
        reference: torch.nn.Module | None = None,
        keep_last: int = 2,
        run_id: str = "",
    ) -> Path | None:
        """Checkpoint ``step`` of run ``run_id`` (``checkpoint.save_checkpoint``): the policy as a plain Hugging
        Face folder (a LoRA policy merged, its adapter in ``adapter/``), ``state`` with the optimizer's; rank 0
        writes."""
        if not self.is_main:
            return None
        view = LoraCheckpointView(model) if is_lora(model) else model
        return save_checkpoint(
            run_dir, step, view, tokenizer, {**state, "optimizer": optimizer.state_dict()},
            reference=reference, keep_last=keep_last, run_id=run_id,
        )  # fmt: skip

    def load(
        self,
        path: Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        reference: torch.nn.Module | None = None,
    ) -> dict[str, Any]:
        """Load checkpoint ``path`` into the policy (any rank count wrote it), the optimizer and the
        reference (when it was saved); returns the trainer state (step, data position, scheduler, RNG)."""
        sharded = (path / fsdp.SHARDED_DIR).is_dir()  # written with train.fsdp, by any number of ranks
        if is_lora(model):  # the base comes from model.path; only the adapter was trained
            load_adapter_weights(model, path)
        elif sharded:  # model and optimizer shards, resharded to this rank count
            fsdp.load_sharded(path, model, optimizer)
        else:
            load_model_weights(model, path)
        if reference is not None and (path / "reference").exists():
            load_model_weights(reference, path / "reference")
        state = load_trainer_state(path)
        if not sharded:
            optimizer.load_state_dict(state["optimizer"])
        return state


class DataParallel(SingleProcess):
    """Every rank holds the whole model and a share of each step's prompts; gradients are summed."""

    def __init__(self, info: dist.DistInfo):
        self.info = info
        self.rank, self.world_size, self.local_rank = info.rank, info.world_size, info.local_rank
        self.is_main = info.rank == 0

    def device(self, device: torch.device) -> torch.device:
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def shard(self, total: int) -> tuple[int, int]:
        return dist.shard_range(total, self.info)

    def gather_objects(self, obj: Any) -> list[Any]:
        return dist.all_gather_objects(obj)

    def gather_rows(self, columns: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        # one collective: the columns side by side in float64 (exact for every value they hold), then the
        # rank of each row, which places this rank's rows in the global order
        names = list(columns)
        n = len(columns[names[0]])
        rank = torch.full((n,), float(self.rank), dtype=torch.float64)
        table = dist.all_gather_tensor(torch.stack([*(columns[k].double() for k in names), rank], dim=1))
        gathered = {k: table[:, i].to(columns[k].dtype) for i, k in enumerate(names)}
        return gathered, int((table[:, len(names)] < self.rank).sum())

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return dist.all_reduce_sum(t)

    def max(self, t: torch.Tensor) -> torch.Tensor:
        return dist.all_reduce_max(t)

    def broadcast(self, model: torch.nn.Module) -> None:
        dist.broadcast_parameters(model)

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        dist.all_reduce_grads(params)  # FSDP's sharded parameters are skipped: FSDP reduced them

    def barrier(self) -> None:
        dist.barrier()


class FSDP(DataParallel):
    """Parameters, gradients and AdamW state sharded over the ranks (``thinkrl/train/fsdp.py``). Every
    forward and backward is a collective, hence the padding and the gathered weights for generation."""

    def wrap(self, model: torch.nn.Module, reference: torch.nn.Module | None) -> tuple[Any, Any]:
        return fsdp.shard_model(model), fsdp.shard_model(reference) if reference is not None else None

    def wrap_engine(self, engine: Any, model: torch.nn.Module) -> Any:
        return fsdp.GatheredEngine(engine, model)

    def full_weights(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        return fsdp.gathered(model)

    def pad_passes(self, items: list[Any], filler: Callable[[], Any]) -> list[Any]:
        most = int(dist.all_reduce_max(torch.tensor(len(items))))
        return items if len(items) == most else [*items, *[filler()] * (most - len(items))]

    def save(
        self, run_dir, step, model, optimizer, tokenizer, state, *, reference=None, keep_last=2, run_id=""
    ):
        return fsdp.save_checkpoint(
            run_dir, step, model, optimizer, tokenizer, state, reference=reference, keep_last=keep_last,
            run_id=run_id,
        )  # fmt: skip

    def load(self, path, model, optimizer, *, reference=None):
        fsdp.load_sharded(path, model, optimizer)
        if reference is not None and (path / "reference").exists():
            fsdp.load_full_weights(reference, path / "reference")
        return load_trainer_state(path)
