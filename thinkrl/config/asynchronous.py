"""The ``asynchronous`` section: how the generator process of asynchronous RL runs (``rollout.max_staleness``
>= 1 turns it on; docs/scaling.md, "Asynchronous RL")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from thinkrl.config.loading import ConfigError


@dataclass
class AsyncConfig:
    """The generator process that runs ahead of the learner when ``rollout.max_staleness`` >= 1. Ignored at
    ``rollout.max_staleness: 0`` (the synchronous loop: generate, then train)."""

    buffer_batches: int | None = None
    """Most generated batches waiting for the learner; null = ``rollout.max_staleness``, the most the staleness
    bound lets the generator run ahead (so a larger buffer never fills). A buffer smaller than the staleness is
    rejected: the bound could never be reached."""
    generator_threads: int | None = None
    """Torch threads of the generator process; null = ``train.num_threads``. The learner and the generator run
    at the same time: together they should not exceed the free cores (on 2 cores: 1 and 1)."""
    generator_device: str = "auto"
    """Where the generator process samples: ``cpu``, ``cuda`` or ``cuda:N``; ``auto`` = the learner's device,
    or ``cuda:1`` when the learner is on ``cuda:0`` and a second GPU is visible."""
    weight_sync: str = "shm"
    """How the learner's weights reach the generator after each optimizer step: ``shm`` (one shared-memory
    buffer per dtype and a version counter: a copy in, a copy out, nothing pickled) or ``nccl`` (a broadcast from
    the learner's GPU to the generator's, which must be another GPU; written but never run: this project has had
    no multi-GPU machine)."""


def check_async(cfg: Any) -> None:
    """The ranges and combinations of ``rollout.max_staleness`` and the ``asynchronous`` section.

    >>> from thinkrl.config import Config
    >>> cfg = Config()
    >>> cfg.rollout.max_staleness = 2
    >>> cfg.asynchronous.buffer_batches = 1
    >>> check_async(cfg)
    Traceback (most recent call last):
    ...
    thinkrl.config.loading.ConfigError: rollout.max_staleness=2 is larger than asynchronous.buffer_batches=1: \
the generator could never run 2 versions ahead; set asynchronous.buffer_batches >= 2 (or null), or lower \
rollout.max_staleness
    """
    k, a = cfg.rollout.max_staleness, cfg.asynchronous

    def check(cond: bool, message: str) -> None:
        if not cond:
            raise ConfigError(message)

    check(
        k >= 0,
        f"rollout.max_staleness={k} must be >= 0: 0 trains each batch with the weights that sampled it (the "
        "synchronous loop), k >= 1 lets a generator process sample with weights up to k updates old",
    )
    check(
        a.buffer_batches is None or a.buffer_batches >= 1, "asynchronous.buffer_batches must be >= 1 or null"
    )
    check(
        k == 0 or a.buffer_batches is None or a.buffer_batches >= k,
        f"rollout.max_staleness={k} is larger than asynchronous.buffer_batches={a.buffer_batches}: the "
        f"generator could never run {k} versions ahead; set asynchronous.buffer_batches >= {k} (or null), or "
        "lower rollout.max_staleness",
    )
    check(
        a.generator_threads is None or a.generator_threads >= 1,
        f"asynchronous.generator_threads={a.generator_threads} must be >= 1 or null (= train.num_threads)",
    )
    check(
        re.fullmatch(r"auto|cpu|cuda(:\d+)?", a.generator_device) is not None,
        f"asynchronous.generator_device={a.generator_device!r}; valid: auto, cpu, cuda, cuda:N",
    )
    check(a.weight_sync in ("shm", "nccl"), f"asynchronous.weight_sync={a.weight_sync!r}; valid: shm, nccl")
    check(
        k == 0 or not cfg.train.fsdp,
        f"rollout.max_staleness={k} with train.fsdp=true: the generator process needs the whole model, which "
        "FSDP ranks hold only in shards; set rollout.max_staleness=0 (or train.fsdp=false in one process)",
    )
