"""The generator process of asynchronous RL: it samples batch after batch, each admitted only once the
learner has published weights at most ``k`` versions older (the semantics: ``async_collector.py``).

:func:`generator_main` is the process's entry (spawned by ``AsyncCollector``): it builds the engine, the reward
scorer and the collector from a :class:`GeneratorSpec`, then runs :func:`run_generator`, which holds the
admission rule and is tested with plain objects. The process dies with the learner (``PR_SET_PDEATHSIG`` on
Linux, and a parent check while it waits).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import queue as queue_lib
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from thinkrl.rollout.trajectories import Trajectories
from thinkrl.rollout.weight_sync import NcclWeights

POLL_S = 0.002
"""How often a waiting generator looks at the published version (and for a stop or a dead learner)."""


@dataclass
class GeneratedBatch:
    """What the generator hands the learner for one step."""

    step: int
    """The learner step that trains it (the batch's index in the data stream)."""
    trajectories: Trajectories | None
    """The scored batch; None when dynamic sampling kept nothing (the step is skipped, as synchronously)."""
    metrics: dict[str, float]
    """The collector's metrics (dynamic sampling, reward timeouts and errors)."""
    timings: dict[str, float]
    """The generator's stage seconds (``generate``, ``reward``): they overlap the learner's step."""
    data_position: tuple[int, int]
    """(epoch, position) of the data stream after this batch: what a checkpoint of step ``step + 1`` saves."""
    version: int
    """The weights that sampled it."""
    wait_s: float = 0.0
    """Seconds the generator waited for version ``step - k`` (the staleness bound holding it back)."""
    load_s: float = 0.0
    """Seconds it took to load the new weights (0 when none were newer)."""


@dataclass
class GeneratorFailed:
    """The generator raised: its traceback, re-raised in the learner."""

    traceback: str


@dataclass
class GeneratorSpec:
    """Everything the generator process is started with (pickled once)."""

    cfg: Any
    model: torch.nn.Module
    tokenizer: Any
    prompts: Any
    collector_class: type
    engine_builder: Callable[..., Any]
    reward_funcs: list[Any]
    reward_weights: list[float]
    grading: Any
    weights: Any
    start: int
    end: int
    max_staleness: int
    device: str
    threads: int | None
    parent_pid: int = field(default_factory=os.getpid)


class OneProcess:
    """The collector's ``Sharding`` inside the generator: it samples every row of a batch."""

    world_size = 1

    def shard(self, total: int) -> tuple[int, int]:
        return 0, total

    def gather_objects(self, obj: Any) -> list[Any]:
        return [obj]


def run_generator(
    collector: Any,
    engine: Any,
    weights: Any,
    params: list[torch.Tensor],
    put: Callable[[GeneratedBatch], bool],
    *,
    start: int,
    end: int,
    max_staleness: int,
    version: int,
    stopped: Callable[[], bool],
    poll_s: float = POLL_S,
) -> None:
    """Generate batches ``start .. end - 1`` in order; batch j starts once ``weights.version >= j -
    max_staleness`` and is sampled by the newest version then (module docstring). ``version`` is what
    ``params`` hold now; ``put`` hands a batch over (False: stop); ``stopped()`` ends a wait."""
    for j in range(start, end):
        began = time.perf_counter()
        while weights.version < j - max_staleness:
            if stopped():
                return
            time.sleep(poll_s)
        wait_s, load_s = time.perf_counter() - began, 0.0
        if weights.version > version:
            began = time.perf_counter()
            version = weights.load_into(params)
            engine.sync_weights()  # an engine with its own copy (vLLM) takes it from the model now
            load_s = time.perf_counter() - began
        collector.policy_version = version
        timings: dict[str, float] = {}
        traj, metrics = collector.collect(j, timings)
        position = (collector.prompts.epoch, collector.prompts.pos)
        if not put(GeneratedBatch(j, traj, metrics, timings, position, version, wait_s, load_s)):
            return


def generator_main(spec: GeneratorSpec, out: Any, stop: Any) -> None:
    """Entry of the generator process: build the engine, scorer and collector, then :func:`run_generator`."""
    _exit_with_parent(spec.parent_pid)

    def stopped() -> bool:
        return stop.is_set() or os.getppid() != spec.parent_pid

    def put(item: Any) -> bool:
        data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)  # tensors by value: no shared-memory fds
        while not stopped():
            try:
                out.put(data, timeout=0.1)
                return True
            except queue_lib.Full:
                pass
        return False

    scorer = None
    try:
        from thinkrl.rewards import RewardScorer

        if spec.threads:
            torch.set_num_threads(spec.threads)
        scorer = RewardScorer(spec.reward_funcs, spec.reward_weights, spec.grading)
        device = torch.device(spec.device)
        model = spec.model.to(device)
        named = trainable(model)
        spec.weights.layout.check(named)
        if isinstance(spec.weights, NcclWeights):
            spec.weights.connect(1, device, spec.start)
        engine = spec.engine_builder(spec.cfg, model, spec.tokenizer)
        collector = spec.collector_class(spec.cfg, spec.prompts, engine, scorer, spec.tokenizer, OneProcess())
        run_generator(
            collector, engine, spec.weights, [p for _, p in named], put, start=spec.start, end=spec.end,
            max_staleness=spec.max_staleness, version=spec.start, stopped=stopped,
        )  # fmt: skip
    except BaseException:
        put(GeneratorFailed(traceback.format_exc()))
        raise
    finally:
        if scorer is not None:
            scorer.close()


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters that train, by name: what the weight sync publishes."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _exit_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the learner dies (Linux), even by ``kill -9``."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the waits still check the parent
        pass
    if os.getppid() != parent_pid:  # the learner died before the line above
        os._exit(0)
