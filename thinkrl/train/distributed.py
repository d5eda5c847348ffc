"""Data-parallel helpers: one process per device, launched by ``torchrun``; no-ops in a single process.

    torchrun --nproc-per-node 2 -m thinkrl train configs/gsm8k-small.yaml

Every rank holds the whole model (with ``train.fsdp``, a shard of it: ``thinkrl/train/fsdp.py``). The
trainer gives rank r a contiguous share of each step's prompts, sums gradients across ranks after
accumulation (:func:`all_reduce_grads`) and reduces loss normalisers and metrics with
:func:`all_reduce_sum` / :func:`all_gather_tensor`, so N ranks compute the update one process computes on
the same global batch (design and limits: docs/scaling.md).

The backend is NCCL on CUDA and gloo on CPU. A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) never
touches ``torch.distributed``: every function here then returns its input.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from thinkrl.config import Config, ConfigError

BUCKET_NUMEL = 1 << 25
"""Most gradient elements flattened into one all-reduce (128 MiB in fp32): few calls, bounded extra memory."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    """Global rank, 0..world_size-1; rank 0 writes files."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this node: the CUDA device index."""

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``).

    Idempotent: a group that is already initialised is reused. Without those variables (or with
    ``WORLD_SIZE=1``) nothing is initialised and rank 0 of 1 is returned.

    Args:
        device: the trainer's ``train.device``; ``cuda`` (or ``auto`` with CUDA visible) selects NCCL and
            the device ``cuda:LOCAL_RANK``, else gloo.
        timeout_s: how long a collective waits for the slowest rank (rank 0's eval and checkpoint writes
            happen while the others wait at the next collective).

    >>> init_distributed("cpu") if "WORLD_SIZE" not in os.environ else DistInfo()
    DistInfo(rank=0, world_size=1, local_rank=0)
    """
    if env_world_size() <= 1:
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def check_world_size(cfg: Config, w: int) -> None:
    """Reject settings that cannot run on ``w`` processes, before any process group is joined (so every rank
    fails alike), each with the fix in the message."""
    r = cfg.rollout
    if cfg.train.fsdp and w == 1:
        raise ConfigError(
            "train.fsdp=true needs more than one process: launch with `torchrun --nproc-per-node N` "
            "(N > 1), or set train.fsdp=false for one process"
        )
    if r.prompts_per_step % w:
        raise ConfigError(
            f"rollout.prompts_per_step={r.prompts_per_step} does not divide by the {w} data-parallel ranks "
            f"(each rank samples whole groups); set it to a multiple of {w}, e.g. "
            f"{-(-r.prompts_per_step // w) * w}, or launch {math.gcd(r.prompts_per_step, w)} processes"
        )


def env_world_size() -> int:
    """The number of processes ``torchrun`` launched (``WORLD_SIZE``), known before joining the group."""
    return max(int(os.environ.get("WORLD_SIZE", "1")), 1)


def is_active() -> bool:
    """True when this process is in a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs, evaluates and saves."""
    return not is_active() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_active():
        dist.barrier()


def _comm_device(t: torch.Tensor) -> torch.device:
    # NCCL only moves CUDA tensors; gloo takes CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``t`` over all ranks, as a new tensor on ``t``'s device (``t`` is kept).

    >>> all_reduce_sum(torch.tensor([1.0, 2.0])).tolist()  # one process: the input
    [1.0, 2.0]
    """
    return _all_reduce(t, dist.ReduceOp.SUM)


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
    if not is_active():
        return t.clone()
    buf = t.detach().to(_comm_device(t), copy=True)
    dist.all_reduce(buf, op=op)
    return buf.to(t.device)


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (L_r, ...) of every rank along dim 0 in rank order; the L_r may differ.

    >>> all_gather_tensor(torch.arange(3)).tolist()
    [0, 1, 2]
    """
    if not is_active():
        return t.clone()
    dev = _comm_device(t)
    local = t.detach().to(dev)
    sizes = [torch.zeros((), dtype=torch.long, device=dev) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(local.shape[0], device=dev))
    lens = [int(s) for s in sizes]
    # all_gather needs equal shapes: pad every share to the longest, then cut the padding back off.
    pad = local.new_zeros((max(lens), *local.shape[1:]))
    pad[: local.shape[0]] = local
    parts = [torch.empty_like(pad) for _ in lens]
    dist.all_gather(parts, pad)
    return torch.cat([p[:n] for p, n in zip(parts, lens)]).to(t.device)


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank (any picklable value: tensors, strings, dataclasses), in rank order.

    >>> all_gather_objects({"texts": ["a"]})  # one process: a list of the input
    [{'texts': ['a']}]
    """
    if not is_active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)  # pickled; on NCCL moved through the current CUDA device
    return out


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``t`` over all ranks, as a new tensor on ``t``'s device.

    >>> all_reduce_max(torch.tensor(3)).item()
    3
    """
    return _all_reduce(t, dist.ReduceOp.MAX)


def broadcast_parameters(model: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``model`` from rank ``src`` to all ranks (in place)."""
    if not is_active():
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            buf = t.data.to(_comm_device(t))
            dist.broadcast(buf, src)
            if buf.data_ptr() != t.data.data_ptr():
                t.data.copy_(buf)


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """SUM the ``.grad`` of ``params`` over ranks in a few flattened all-reduces (in place).

    A parameter without a gradient on this rank (e.g. a rank with no rows in a minibatch) contributes
    zeros and receives the others' sum, so every rank ends with the same gradients for every parameter.
    FSDP shards (DTensor parameters, ``train.fsdp``) are skipped: FSDP already reduce-scattered them.
    """
    params = [p for p in params if not isinstance(p, DTensor)]
    if not is_active() or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    # Buckets of one dtype and device, each flattened into one buffer: one collective per bucket.
    buckets: dict[tuple[torch.dtype, torch.device], list[list[torch.Tensor]]] = {}
    for p in params:
        groups = buckets.setdefault((p.grad.dtype, p.grad.device), [[]])
        if groups[-1] and sum(g.numel() for g in groups[-1]) + p.grad.numel() > BUCKET_NUMEL:
            groups.append([])
        groups[-1].append(p.grad)
    for groups in buckets.values():
        for grads in groups:
            flat = torch.cat([g.reshape(-1) for g in grads])
            flat = flat.to(_comm_device(flat))
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global L2 norm of the gradients of ``params`` before clipping (0-dim); scales them to at most
    ``max_norm`` when ``max_norm > 0``. For FSDP shards (DTensors) the norm is over the whole model.

    >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
    >>> clip_grad_norm([p], 1.0).item(), [round(g, 4) for g in p.grad.tolist()]
    (5.0, [0.6, 0.8])
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads)  # torch.nn.utils.clip_grad_norm_ in two halves
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def shard_range(total: int, info: DistInfo) -> tuple[int, int]:
    """``[start, end)`` of rank ``info.rank``'s contiguous share of ``total`` items; when they do not divide,
    the first ``total % world_size`` ranks hold one more.

    >>> shard_range(8, DistInfo(rank=1, world_size=2))
    (4, 8)
    >>> [shard_range(3, DistInfo(rank=r, world_size=2)) for r in range(2)]
    [(0, 2), (2, 3)]
    """
    per, extra = divmod(total, info.world_size)
    start = info.rank * per + min(info.rank, extra)
    return start, start + per + (info.rank < extra)


def destroy() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
