"""The outer loop both trainers share (GRPO and SFT): step, evaluate, log, checkpoint, resume.

A trainer subclasses :class:`TrainingLoop` and provides ``train_step()`` (one optimizer-update round, returns
its metrics), the attributes below, and, when it needs them, the hooks ``before_loop``, ``after_step``,
``postfix``, ``after_log`` and ``after_loop``. Checkpoints are written and read through the parallel edge (``thinkrl.train.parallel``), so one
process, data parallelism and FSDP share this code too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from thinkrl.config import save_config
from thinkrl.train.checkpoint import latest_checkpoint, set_rng_state
from thinkrl.train.logging import MetricsLogger


class TrainingLoop:
    """The loop, the checkpoint state and resume of a trainer (module docstring).

    Subclasses set: ``cfg`` (with ``train`` and ``log`` sections), ``model``, ``tokenizer``, ``optimizer``,
    ``scheduler``, ``parallel``, ``run_dir``, ``step``, ``total_steps``, ``data_position`` /
    ``seek_data`` (where the data stream stands), and call :meth:`start_run` at the end of ``__init__``.
    """

    cfg: Any
    model: torch.nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    parallel: Any
    run_dir: Path
    step: int
    progress_name = "train"
    log_every = 1

    @property
    def total_steps(self) -> int:
        raise NotImplementedError

    def train_step(self) -> dict[str, float]:
        raise NotImplementedError

    def data_position(self) -> tuple[int, int]:
        """(epoch, position within it) of the training data stream."""
        raise NotImplementedError

    def seek_data(self, epoch: int, pos: int) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------- hooks
    def before_loop(self) -> None:
        """Called once, before the first step of this call to :meth:`train`."""

    def after_loop(self) -> None:
        """Called once, after the last step of this call to :meth:`train` (release workers and the like)."""

    def after_log(self, step: int, metrics: dict[str, float]) -> None:
        """Called with each record just written to the metrics log (every rank; only rank 0 writes it)."""

    def after_step(self, last: bool) -> dict[str, float]:
        """Metrics to add to the step's record (e.g. an evaluation); ``last``: the final step."""
        return {}

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows after a step."""
        return {}

    reference: torch.nn.Module | None = None
    """A second model restored on resume when its checkpoint holds one (GRPO's KL reference)."""

    def save_reference(self) -> bool:
        """Whether checkpoints include :attr:`reference` (GRPO: when it is refreshed during the run)."""
        return False

    # ------------------------------------------------------------------------------------------------ loop
    def start_run(self) -> None:
        """Resume (``train.resume``), then open the run directory: rank 0 writes config.yaml and metrics."""
        if self.cfg.train.resume:  # every rank reads the checkpoint: run_dir must be on a file system all see
            self.resume()
        self.logger: MetricsLogger | _NullLogger = _NullLogger()
        if self.parallel.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.logger = MetricsLogger(self.run_dir, self.cfg.log, self.cfg, resume_step=self.step)

    def train(self) -> list[dict[str, float]]:
        """Run to ``total_steps`` (from the resumed step), checkpointing as configured. Returns the metrics."""
        t = self.cfg.train
        history: list[dict[str, float]] = []
        progress = None
        if self.cfg.log.progress and self.parallel.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=self.total_steps, initial=self.step, desc=self.progress_name, dynamic_ncols=True
            )
        self.before_loop()
        while self.step < self.total_steps:
            metrics = self.train_step()
            last = self.step == self.total_steps
            metrics.update(self.after_step(last))
            if self.step % self.log_every == 0 or last:
                self.logger.log(self.step, metrics)
                self.after_log(self.step, metrics)
            history.append({"step": self.step, **metrics})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(**self.postfix(metrics))
            if (t.save_every and self.step % t.save_every == 0) or last:
                self.save()
        if progress is not None:
            progress.close()
        self.after_loop()
        self.logger.close()
        self.parallel.barrier()  # no rank returns (or exits) before rank 0 has written the last checkpoint
        return history

    # ---------------------------------------------------------------------------------- checkpoint/resume
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds besides the weights and the optimizer (the RNG states are added on save)."""
        epoch, pos = self.data_position()
        return {
            "step": self.step,
            "data_epoch": epoch,
            "data_pos": pos,
            "scheduler": self.scheduler.state_dict(),
        }

    def save(self) -> Path | None:
        """Write a checkpoint of this step; the path on rank 0, None elsewhere (``checkpoint.py``)."""
        return self.parallel.save(
            self.run_dir, self.step, self.model, self.optimizer, self.tokenizer, self.state_dict(),
            reference=self.reference if self.save_reference() else None, keep_last=self.cfg.train.keep_last,
        )  # fmt: skip

    def resume(self) -> None:
        """Continue from the latest checkpoint in ``run_dir`` (a fresh start when there is none): weights,
        optimizer, scheduler, step, data position and every RNG state, so the run goes on as if never stopped."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return
        state = self.parallel.load(path, self.model, self.optimizer, reference=self.reference)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.seek_data(state["data_epoch"], state["data_pos"])
        set_rng_state(state["rng"])
        self.load_state(state)

    def load_state(self, state: dict[str, Any]) -> None:
        """Called by :meth:`resume` with the checkpoint's state: restore what a subclass's ``state_dict`` added."""


class _NullLogger:
    """The metrics logger of ranks other than 0: they compute the same metrics but write nothing."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
