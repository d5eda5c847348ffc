"""Weight sync from the learner to a generator in another process: each optimizer step publishes the trainable
tensors under a version number (the learner step whose update produced them); the generator loads the latest
version between batches.

- :class:`SharedWeights` (one machine): one flat shared-memory buffer per dtype, a version counter and a lock.
  A publish is one copy into the buffer, a load one copy out; nothing is pickled after the start, so the cost
  is two memory copies of the trainable weights (``async/weight_sync_s`` and ``async/generator_load_s``).
- :class:`NcclWeights` (two GPUs): a broadcast from the learner's GPU into a staging copy on the generator's
  GPU, received by a thread of the generator, then copied into its model between batches. **Never run**: this
  project has had no machine with two GPUs; it is written against the ``torch.distributed`` API and guarded.

Both keep only the tensors that train (every parameter, or a LoRA policy's adapters): frozen weights never
change, so the generator's start-up copy of the model already holds them.

>>> import torch
>>> learner = [torch.ones(2, 3), torch.zeros(4)]
>>> shared = SharedWeights([("a", learner[0]), ("b", learner[1])])
>>> _ = shared.publish(learner, version=7)
>>> generator = [torch.empty(2, 3), torch.empty(4)]
>>> shared.version, shared.load_into(generator), generator[0].sum().item()
(7, 7, 6.0)
"""

from __future__ import annotations

import ctypes
import datetime
import multiprocessing
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

NOTHING = -1
"""The version before anything was published."""
_TIMEOUT = datetime.timedelta(minutes=30)


def _layout(named: Sequence[tuple[str, torch.Tensor]]) -> tuple[list[str], list[tuple], list[str], list[int]]:
    """Names, shapes, dtype keys and each tensor's offset within the flat buffer of its dtype."""
    names, shapes, dtypes, offsets = [], [], [], []
    totals: dict[str, int] = {}
    for name, t in named:
        key = str(t.dtype).removeprefix("torch.")
        names.append(name)
        shapes.append(tuple(t.shape))
        dtypes.append(key)
        offsets.append(totals.get(key, 0))
        totals[key] = totals.get(key, 0) + t.numel()
    return names, shapes, dtypes, offsets


class _Layout:
    """What both ends agree on: the names, shapes and dtypes of the published tensors, in order."""

    def __init__(self, named: Sequence[tuple[str, torch.Tensor]]):
        if not named:
            raise ValueError("no tensors to publish: the model has no trainable parameters")
        self.names, self.shapes, self.dtypes, self.offsets = _layout(named)
        self.sizes = {k: 0 for k in self.dtypes}
        for shape, key, offset in zip(self.shapes, self.dtypes, self.offsets):
            self.sizes[key] = max(self.sizes[key], offset + _numel(shape))
        self.nbytes = sum(n * getattr(torch, k).itemsize for k, n in self.sizes.items())

    def check(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        """Fail with the first difference when ``named`` does not match what is published."""
        names, shapes, dtypes, _ = _layout(named)
        if (names, shapes, dtypes) == (self.names, self.shapes, self.dtypes):
            return
        for i, (a, b) in enumerate(
            zip(zip(names, shapes, dtypes), zip(self.names, self.shapes, self.dtypes))
        ):
            if a != b:
                raise ValueError(f"weight sync: tensor {i} is {a} here but {b} on the learner's side")
        raise ValueError(f"weight sync: {len(names)} tensors here, {len(self.names)} on the learner's side")

    def views(self, buffers: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [
            buffers[key][offset : offset + _numel(shape)].view(shape)
            for shape, key, offset in zip(self.shapes, self.dtypes, self.offsets)
        ]


def _numel(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class SharedWeights:
    """The learner's trainable tensors in shared memory, with a version counter (module docstring).

    Build it in the learner's process from ``(name, tensor)`` pairs and pass it to the generator process as an
    argument of ``multiprocessing``'s ``Process`` (the buffers travel as shared memory, the counter and the lock
    as the context's own objects). One writer, any number of readers; a reader never sees half a publish.

    Args:
        named: the tensors to publish, in the order :meth:`publish` and :meth:`load_into` receive them.
        context: the ``multiprocessing`` context the generator is started with (``spawn`` by default).
    """

    def __init__(self, named: Sequence[tuple[str, torch.Tensor]], context: Any = None):
        context = context or multiprocessing.get_context("spawn")
        self.layout = _Layout(named)
        self.buffers = {
            key: torch.empty(n, dtype=getattr(torch, key)).share_memory_()
            for key, n in self.layout.sizes.items()
        }
        self._version = context.Value(ctypes.c_longlong, NOTHING, lock=False)
        self._lock = context.Lock()
        self._views: list[torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_views"] = None  # views of the buffers are rebuilt on the other side
        return state

    @property
    def version(self) -> int:
        """The latest published version (``NOTHING`` = -1 before the first publish); read without the lock."""
        return int(self._version.value)

    def _buffer_views(self) -> list[torch.Tensor]:
        if self._views is None:
            self._views = self.layout.views(self.buffers)
        return self._views

    def publish(self, tensors: Sequence[torch.Tensor], version: int) -> float:
        """Copy ``tensors`` (the learner's, on any device) in as ``version``; returns the seconds it took."""
        start = time.perf_counter()
        views = self._buffer_views()
        with self._lock, torch.no_grad():
            for dst, src in zip(views, tensors, strict=True):
                dst.copy_(src.detach())
            self._version.value = version
        return time.perf_counter() - start

    def load_into(self, tensors: Sequence[torch.Tensor]) -> int:
        """Copy the latest version into ``tensors`` (the generator's, on any device); returns that version."""
        views = self._buffer_views()
        with self._lock, torch.no_grad():
            for dst, src in zip(tensors, views, strict=True):
                dst.copy_(src)
            return int(self._version.value)

    def close(self) -> None:
        """Nothing to release: the shared memory goes with the last process that maps it."""


class NcclWeights:
    """Learner GPU -> generator GPU by NCCL broadcast (module docstring). **Untested**: written from the
    ``torch.distributed`` documentation; no machine with two GPUs has run it.

    The learner (rank 0) calls :meth:`connect` then :meth:`publish` after each step: one broadcast of the version,
    then one per dtype of the flattened tensors. The generator (rank 1) calls :meth:`connect`, which starts a
    thread that is always waiting in the matching broadcasts and receives into a staging buffer on its GPU, so a
    publish never waits for a batch to finish; :meth:`load_into` copies the staged version into the model.
    """

    def __init__(self, named: Sequence[tuple[str, torch.Tensor]], host: str = "127.0.0.1", port: int = 0):
        import torch.distributed as dist

        if not (torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()):
            raise RuntimeError(
                "asynchronous.weight_sync=nccl needs CUDA and a torch built with NCCL; use weight_sync=shm"
            )
        self.layout = _Layout(named)
        self.host, self.port = host, port or _free_port()
        self._version = NOTHING
        self._group: Any = None
        self._staging: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"layout": self.layout, "host": self.host, "port": self.port}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._version, self._group, self._staging = NOTHING, None, {}
        self._lock, self._thread = threading.Lock(), None

    @property
    def version(self) -> int:
        return self._version

    def connect(self, rank: int, device: torch.device, version: int) -> None:
        """Join the two-process NCCL group (rank 0 the learner, rank 1 the generator) on ``device``; both
        start holding the same weights, ``version`` (the generator's came with its copy of the model)."""
        import torch.distributed as dist

        self._version = version
        torch.cuda.set_device(device)
        store = dist.TCPStore(self.host, self.port, 2, is_master=rank == 0, timeout=_TIMEOUT)
        self._group = dist.ProcessGroupNCCL(store, rank, 2)
        self.device = device
        if rank == 1:
            self._staging = {
                k: torch.empty(n, dtype=getattr(torch, k), device=device)
                for k, n in self.layout.sizes.items()
            }
            self._thread = threading.Thread(target=self._receive, name="thinkrl-weight-receiver", daemon=True)
            self._thread.start()

    def publish(self, tensors: Sequence[torch.Tensor], version: int) -> float:
        start = time.perf_counter()
        self._broadcast(torch.tensor([version], dtype=torch.long, device=self.device))
        for key in self.layout.sizes:
            flat = torch.cat(
                [t.detach().reshape(-1) for t, k in zip(tensors, self.layout.dtypes) if k == key]
            )
            self._broadcast(flat)
        torch.cuda.synchronize(self.device)
        self._version = version
        return time.perf_counter() - start

    def _receive(self) -> None:
        """The generator's receiver thread (a daemon: it ends with the process)."""
        version = torch.empty(1, dtype=torch.long, device=self.device)
        incoming = {k: torch.empty_like(v) for k, v in self._staging.items()}
        while True:
            self._broadcast(version)
            for key in self.layout.sizes:
                self._broadcast(incoming[key])
            torch.cuda.synchronize(self.device)
            with self._lock:
                for key, buf in incoming.items():
                    self._staging[key].copy_(buf)
                self._version = int(version.item())

    def load_into(self, tensors: Sequence[torch.Tensor]) -> int:
        with self._lock, torch.no_grad():
            for dst, src in zip(tensors, self.layout.views(self._staging), strict=True):
                dst.copy_(src)
            return self._version

    def close(self) -> None:
        """Drop the group (the generator's receiver ends with its process)."""
        self._group = None

    def _broadcast(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self._group.broadcast([t], opts).wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
