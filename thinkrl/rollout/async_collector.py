"""Asynchronous RL: a generator process samples the next batches while the learner trains on this one.

    collector = AsyncCollector(Collector(cfg, prompts, engine, scorer, tokenizer, parallel), model, scorer,
                               tokenizer, parallel)     # GRPOTrainer does this when rollout.max_staleness >= 1
    traj, metrics = collector.collect(step)             # batch `step`, sampled by weights >= step - k
    ...                                                 # the learner's update
    collector.sync_weights(step + 1)                    # publish the new weights to the generator

The semantics, with ``k = rollout.max_staleness`` (docs/scaling.md, "Asynchronous RL", says the same):

- **Versions.** The weights after learner step s are version s (a run starts at version 0, a resumed run at
  its checkpoint's step). Every row of the :class:`Trajectories` carries the version that sampled it.
- **Batches in data order.** Batch j is the j-th draw of ``prompts_per_step`` prompts from the seeded data
  stream, sampled with step j's seeds: exactly what the synchronous loop samples at step j, except for the
  weights. The learner trains batch j at step j.
- **Admission control, not discarding.** The generator starts batch j only once version j - k is published,
  and first loads the newest version. Every sample of batch j is therefore at most k versions old when step j
  trains on it (staleness = j - version, in [0, k]); no sample is ever dropped or resampled for being stale.
- **Per sample = per group = per batch.** Weights are loaded only between batches, so a batch is sampled by
  one version: a group never straddles a weight update (partial rollouts, which would, are not implemented).
- **No bias against slow prompts.** Which prompts form batch j is fixed by the data order before anything is
  generated, and the learner waits for the whole batch; it never takes the first groups to finish, and the
  staleness bound is enforced before a generation starts, not on its result. A long completion makes the
  learner wait; it cannot be left out.
- **Buffer.** At most ``asynchronous.buffer_batches`` (default k) finished batches wait for the learner; the
  staleness bound alone never lets more than k pile up.
- **Resume.** The buffer is not checkpointed. The data position saved with a checkpoint is the one after the
  batches the learner consumed, so after a crash the generator regenerates the lost batches from there, with
  the same prompts and sampling seeds, under the checkpoint's weights (staleness 0 for them): no prompt is lost
  or trained twice.

The generator is a ``spawn``-ed process with its own copy of the model (passed once at start as shared memory),
its own engine (``rollout.engine``: built-in, or vLLM where it is installed), its own reward scorer and the
collector's own class (``async_gen.py``); the weights come through :mod:`thinkrl.rollout.weight_sync`.
"""

from __future__ import annotations

import copy
import pickle
import queue as queue_lib
import time
import warnings
import weakref
from typing import Any

import torch

from thinkrl.core import timed
from thinkrl.rollout.async_gen import (
    GeneratedBatch,
    GeneratorFailed,
    GeneratorSpec,
    generator_main,
    trainable,
)
from thinkrl.rollout.trajectories import Trajectories
from thinkrl.rollout.weight_sync import NcclWeights, SharedWeights


class AsyncCollector:
    """The learner's end of asynchronous RL: the collector's interface (``collect``, ``sync_weights``,
    ``prompts``, ``policy_version``) over a generator process (module docstring).

    Args:
        collector: the synchronous collector; its class, config, prompts and settings are the generator's.
        model: the policy as the learner trains it (its trainable parameters are published).
        scorer: the reward scorer (its functions, weights and grading are rebuilt in the generator).
        tokenizer: the policy's tokenizer.
        parallel: the parallel edge (``world_size`` > 1 is refused).
        custom_engine: True when the trainer was given an engine object (refused: it cannot move process).
    """

    def __init__(
        self,
        collector: Any,
        model: torch.nn.Module,
        scorer: Any,
        tokenizer: Any,
        parallel: Any,
        *,
        custom_engine: bool = False,
    ):
        from thinkrl.rollout import ENGINES

        cfg = collector.cfg
        self.cfg, self.prompts, self.collector = cfg, collector.prompts, collector
        self.max_staleness = cfg.rollout.max_staleness
        self.end = cfg.train.steps
        self.model, self.scorer, self.tokenizer = model, scorer, tokenizer
        self.policy_version = collector.policy_version
        k = self.max_staleness
        if parallel.world_size > 1:
            raise ValueError(
                f"rollout.max_staleness={k} with {parallel.world_size} processes: asynchronous generation runs "
                "one generator beside one learner and does not coordinate data-parallel ranks; set "
                "rollout.max_staleness=0, or train in one process"
            )
        if custom_engine:
            raise ValueError(
                f"rollout.max_staleness={k} with an engine object passed to the trainer: the generator "
                "process builds its own engine and cannot take one that lives in this process; register a "
                "builder in thinkrl.rollout.ENGINES and set rollout.engine to its name, or set "
                "rollout.max_staleness=0"
            )
        self.engine_builder = ENGINES[cfg.rollout.engine]
        _check_picklable(self.engine_builder, f"rollout.engine={cfg.rollout.engine!r}'s builder")
        for f in scorer.funcs:
            _check_picklable(f, f"the reward {f.name!r}")
        _check_picklable(collector.prompts, "the training prompts and their environment")
        a = cfg.algorithm
        if k and a.tis_cap is None and getattr(a, "is_correction", None) in (None, "", "none"):
            warnings.warn(
                f"rollout.max_staleness={k} with no off-policy correction: samples up to {k} updates old are "
                "trained as if on-policy; set algorithm.tis_cap (e.g. 2.0) or algorithm.is_correction",
                stacklevel=2,
            )
        learner_device = next(model.parameters()).device
        self.device = _generator_device(cfg.asynchronous.generator_device, learner_device)
        if self.device.type == "cuda" and (self.device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"asynchronous.generator_device={cfg.asynchronous.generator_device!r}, but torch sees "
                f"{torch.cuda.device_count()} CUDA device(s); set asynchronous.generator_device=cpu or a visible GPU"
            )
        if cfg.asynchronous.weight_sync == "nccl" and (
            learner_device.type != "cuda" or self.device.type != "cuda" or self.device == learner_device
        ):
            raise ValueError(
                f"asynchronous.weight_sync=nccl needs the learner and the generator on two different GPUs "
                f"(learner {learner_device}, generator {self.device}); use weight_sync=shm"
            )
        self.weights: Any = None
        self._proc: Any = None
        self._queue: Any = None
        self._finalizer: Any = None
        self._published = -1
        self._publish_s = 0.0
        self._expected = 0  # the batch the learner is waiting for

    # ------------------------------------------------------------------------------ the collector's interface
    def collect(
        self, step: int, timings: dict[str, float] | None = None
    ) -> tuple[Trajectories | None, dict[str, float]]:
        """Batch ``step`` as the generator made it, and its metrics (the collector's plus ``async/*``).
        ``timings`` gets the generator's ``generate`` / ``reward`` seconds and the learner's ``wait``."""
        timings = {} if timings is None else timings
        if step >= self.end:
            raise RuntimeError(
                f"asked for batch {step}, but the generator makes train.steps={self.end} batches (0..{self.end - 1})"
            )
        if self._proc is None:
            self._start(step)
        elif self._published < step:  # a skipped step: these weights are version `step` as well
            self.sync_weights(step)
        self._expected = step
        with timed(timings, "wait"):
            item = self._next()
        if item.step != step:
            raise RuntimeError(
                f"the generator sent batch {item.step} for step {step}; batches must come in order"
            )
        self.prompts.seek(*item.data_position)  # what a checkpoint of this step saves: consumed batches only
        timings.update(item.timings)
        metrics = {**item.metrics, **self._metrics(step, item)}
        if step == self.end - 1:
            self.close()  # the generator made its last batch and exits
        return item.trajectories, metrics

    def sync_weights(self, version: int) -> None:
        """Publish the learner's weights as ``version`` (the generator loads them before its next batch)."""
        self.policy_version = version
        if self._finalizer is None or not self._finalizer.alive or not self._proc.is_alive():
            return  # not started (it starts from these weights), finished, or dead (the next collect says why)
        self._publish_s = self.weights.publish(self._params, version)
        self._published = version

    def buffered(self) -> int:
        """Finished batches waiting for the learner."""
        return self._queue.qsize() if self._queue is not None else 0

    def close(self) -> None:
        """Stop the generator process (also done when this object is collected or the interpreter exits)."""
        if self._finalizer is not None:
            self._finalizer()

    # ------------------------------------------------------------------------------------------- internals
    def _start(self, step: int) -> None:
        import torch.multiprocessing as mp

        cfg, k = self.cfg, self.max_staleness
        context = mp.get_context("spawn")
        named = trainable(self.model)
        self._params = [p for _, p in named]
        if cfg.asynchronous.weight_sync == "nccl":
            self.weights = NcclWeights(named)
        else:
            self.weights = SharedWeights(named, context)
            self.weights.publish([p for _, p in named], step)
        self._published = step
        self.policy_version = step
        copy_ = copy.deepcopy(self.model).to("cpu")  # travels as shared memory; the generator's from then on
        spec = GeneratorSpec(
            cfg=cfg, model=copy_, tokenizer=self.tokenizer, prompts=self.prompts,
            collector_class=type(self.collector), engine_builder=self.engine_builder,
            reward_funcs=list(self.scorer.funcs), reward_weights=list(self.scorer.weights),
            grading=self.scorer.grading, weights=self.weights, start=step, end=self.end, max_staleness=k,
            device=str(self.device), threads=cfg.asynchronous.generator_threads or cfg.train.num_threads,
        )  # fmt: skip
        self._queue = context.Queue(maxsize=cfg.asynchronous.buffer_batches or k)
        stop = context.Event()
        # not a daemon: vLLM's engine starts processes of its own, which daemons may not
        self._proc = context.Process(
            target=generator_main, args=(spec, self._queue, stop), name="thinkrl-generator"
        )
        self._proc.start()
        del spec, copy_
        if isinstance(self.weights, NcclWeights):
            self.weights.connect(0, next(self.model.parameters()).device, step)
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, stop, self._queue, self.weights)

    def _next(self) -> GeneratedBatch:
        while True:
            try:
                item = pickle.loads(self._queue.get(timeout=0.2))
            except queue_lib.Empty:
                if not self._proc.is_alive():
                    code = self._proc.exitcode
                    how = (
                        f"was killed by signal {-code} (out of memory?)"
                        if code < 0
                        else f"exited (code {code})"
                    )
                    raise RuntimeError(
                        f"the generator process {how} before sending batch {self._expected}; its output above, "
                        "if any, says why"
                    ) from None
                continue
            if isinstance(item, GeneratorFailed):
                self.close()
                raise RuntimeError(f"the generator process failed:\n{item.traceback}")
            return item

    def _metrics(self, step: int, item: GeneratedBatch) -> dict[str, float]:
        """``async/*``: the staleness histogram of the batch's samples, the buffer, and the sync costs."""
        out = {
            "async/buffered": float(self.buffered()),
            "async/generator_wait_s": item.wait_s,
            "async/generator_load_s": item.load_s,
            "async/weight_sync_s": self._publish_s,
        }
        if item.trajectories is not None:
            out.update(staleness_metrics(step, item.trajectories.policy_version, self.max_staleness))
        return out


def staleness_metrics(step: int, versions: torch.Tensor, max_staleness: int) -> dict[str, float]:
    """``async/staleness_mean``, ``_max`` and the histogram ``async/staleness/i`` (fraction of samples
    i versions old, i = 0..k) of samples trained at ``step``; raises if one is older than ``max_staleness``.

    >>> staleness_metrics(5, torch.tensor([4, 4, 5, 3]), 2)["async/staleness/1"]
    0.5
    """
    stale = (step - versions).flatten().float()
    if len(stale) and (stale.max() > max_staleness or stale.min() < 0):
        raise RuntimeError(
            f"step {step} got samples of versions {sorted(set(versions.flatten().tolist()))}: outside the "
            f"bound rollout.max_staleness={max_staleness} (a bug in the generator's admission control)"
        )
    out = {
        "async/staleness_mean": float(stale.mean()) if len(stale) else 0.0,
        "async/staleness_max": float(stale.max()) if len(stale) else 0.0,
    }
    for i in range(max_staleness + 1):
        out[f"async/staleness/{i}"] = float((stale == i).float().mean()) if len(stale) else 0.0
    return out


def _shutdown(proc: Any, stop: Any, out: Any, weights: Any) -> None:
    stop.set()
    deadline = time.monotonic() + 10.0
    while proc.is_alive() and time.monotonic() < deadline:
        try:  # drain: a child blocked on a full pipe cannot exit
            out.get(timeout=0.05)
        except (queue_lib.Empty, OSError, ValueError):
            pass
    if proc.is_alive():
        proc.kill()
    proc.join()
    weights.close()
    out.close()
    out.cancel_join_thread()


def _check_picklable(obj: Any, what: str) -> None:
    try:
        pickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - every pickling failure has the same fix
        raise ValueError(
            f"rollout.max_staleness > 0 starts a generator process that receives {what} by pickling, which "
            f"fails ({type(e).__name__}: {e}); define it at module level (not a lambda or closure), or set "
            "rollout.max_staleness=0"
        ) from None


def _generator_device(name: str, learner: torch.device) -> torch.device:
    """``asynchronous.generator_device`` resolved against the learner's device."""
    if name != "auto":
        return torch.device(name)
    if learner.type == "cuda" and (learner.index or 0) == 0 and torch.cuda.device_count() > 1:
        return torch.device("cuda", 1)
    return learner
