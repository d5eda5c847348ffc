"""The outer loop both trainers share (GRPO and SFT): step, evaluate, log, checkpoint, resume.

A trainer subclasses :class:`TrainingLoop` and provides ``train_step()`` (one optimizer-update round, returns
its metrics), the attributes below, and, when it needs them, the hooks ``before_loop``, ``after_step``,
``postfix``, ``after_log`` and ``after_loop``. Checkpoints are written and read through the parallel edge
(``thinkrl.train.parallel``), so one process, data parallelism and FSDP share this code too.

Nothing goes wrong silently here: a fresh run refuses a folder that holds a run (``runs.py``), a resume takes
the newest checkpoint of this run that passes its checksums (a bad one is reported, set aside and counted in
``checkpoint/fallbacks``), a skipped step is a warning counted in ``skipped_steps``, and a reward that
applies to no row is a warning the first time it happens (timeouts and errors: the run doctor's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from thinkrl.core import warn
from thinkrl.train.checkpoint import CheckpointError, set_rng_state
from thinkrl.train.logging import MetricsLogger
from thinkrl.train.runs import (
    RunFolderError,
    check_identity,
    claim_run_dir,
    find_resume_point,
    identity,
    new_run_id,
    read_run_id,
    write_run_id,
)

_REWARDS_NOTE = "registry names; other callables as module:qualname"


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

    def recorded_rewards(self) -> list[dict[str, Any]] | None:
        """The ``rewards`` the run's config.yaml records when the run does not use ``cfg.rewards`` (GRPO:
        rewards passed as Python callables, by registry or qualified name); None: ``cfg.rewards`` is what runs."""
        return None

    def recorded_config(self) -> dict[str, Any]:
        """The resolved config as the run folder's config.yaml records it (with the rewards actually used)."""
        config = OmegaConf.to_container(OmegaConf.structured(self.cfg))
        assert isinstance(config, dict)
        rewards = self.recorded_rewards()
        if rewards is not None:
            config["rewards"] = rewards
        return config

    # ------------------------------------------------------------------------------------------------ loop
    def start_run(self) -> None:
        """Claim the run directory (fresh) or resume (``train.resume``), then open it: rank 0 writes run.json,
        config.yaml and metrics."""
        self.skipped_steps, self.notes, self._warned = 0, {}, set()
        config = self.recorded_config()
        self.identity = identity(config)
        if self.cfg.train.resume:  # every rank reads the checkpoint: run_dir must be on a file system all see
            self.resume()
        else:
            self.run_id = self._on_main(self._claim)
        self.logger: MetricsLogger | _NullLogger = _NullLogger()
        if self.parallel.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_id(self.run_dir, self.run_id, self.progress_name)
            text = OmegaConf.to_yaml(OmegaConf.create(config))
            if self.recorded_rewards() is not None:
                text = f"# rewards: those passed to the trainer ({_REWARDS_NOTE})\n{text}"
            (self.run_dir / "config.yaml").write_text(text)
            self.logger = MetricsLogger(self.run_dir, self.cfg.log, self.cfg, resume_step=self.step)

    def _claim(self) -> str:
        claim_run_dir(self.run_dir, overwrite=self.cfg.train.overwrite, what=self.progress_name)
        return new_run_id()

    def _on_main(self, fn: Any) -> Any:
        """``fn()`` run by rank 0 alone (it reads or renames run files); its result, or its error, on every rank."""
        result = error = None
        if self.parallel.is_main:
            try:
                result = fn()
            except (RunFolderError, CheckpointError) as e:
                error = e
        result, error = self.parallel.gather_objects((result, error))[0]
        if error is not None:
            raise error
        return result

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
            metrics.update(self.notes)  # once: what the resume found
            self.notes = {}
            self.speak_up(metrics)
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

    def speak_up(self, metrics: dict[str, Any]) -> None:
        """Warn about what a step's metrics show went wrong: a skipped step (counted in ``skipped_steps``) every
        time, a reward that applied to no row the first time. (A reward that times out or raises is counted in
        ``reward/timeouts/<name>`` / ``reward/errors/<name>``, which the run doctor reports.)"""
        if metrics.get("skipped"):
            self.skipped_steps += 1
            if self.parallel.is_main:
                why = ", ".join(f"{k}={v:g}" for k, v in metrics.items() if k.startswith("dynamic/"))
                warn(
                    f"step {self.step} was skipped: nothing to train on ({why}; every sampled group's rewards "
                    f"were all equal, so every advantage is 0); {self.skipped_steps} skipped so far. Easier "
                    "prompts, a larger rollout.group_size or more algorithm.max_sampling_rounds give groups with "
                    "reward spread"
                )
        if self.skipped_steps:
            metrics["skipped_steps"] = float(self.skipped_steps)
        unused = [k for k, v in metrics.items() if k.startswith("reward/") and k.count("/") == 1 and v != v]
        for key in unused if self.parallel.is_main else []:  # NaN: the mean over no rows
            if key not in self._warned:
                self._warned.add(key)
                warn(
                    f"reward {key.removeprefix('reward/')!r} returned None (not applicable) for every row at step "
                    f"{self.step}: it adds nothing to the reward. Check that the data has the columns it reads and "
                    "that it is the reward this task needs"
                )

    # ---------------------------------------------------------------------------------- checkpoint/resume
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds besides the weights and the optimizer (the RNG states are added on save)."""
        epoch, pos = self.data_position()
        return {
            "step": self.step,
            "data_epoch": epoch,
            "data_pos": pos,
            "scheduler": self.scheduler.state_dict(),
            "skipped_steps": self.skipped_steps,
            "identity": self.identity,
        }

    def save(self) -> Path | None:
        """Write a checkpoint of this step; the path on rank 0, None elsewhere (``checkpoint.py``)."""
        return self.parallel.save(
            self.run_dir, self.step, self.model, self.optimizer, self.tokenizer, self.state_dict(),
            reference=self.reference if self.save_reference() else None, keep_last=self.cfg.train.keep_last,
            run_id=self.run_id,
        )  # fmt: skip

    def resume(self) -> None:
        """Continue from the newest good checkpoint of this run in ``run_dir`` (a fresh start when it has
        none): weights, optimizer, scheduler, step, data position and every RNG state, so the run goes on as if
        never stopped. Bad checkpoints are reported and skipped; another run's or config's are refused."""
        t = self.cfg.train
        known = read_run_id(self.run_dir)
        point = self._on_main(lambda: find_resume_point(self.run_dir, known, force=t.resume_force))
        if point is None:
            self.run_id = known or self._on_main(new_run_id)
            if self.parallel.is_main:
                print(f"[thinkrl] resume: no checkpoint in {self.run_dir}; starting from step 0", flush=True)
            return
        say = warn if self.parallel.is_main else (lambda message: None)
        for path, why in point.skipped:
            say(f"checkpoint {path.name.partition('.')[0]} is unusable ({why}); set aside as {path}")
        for path in point.foreign:
            say(f"checkpoint {path} was written by another run (its manifest's run id); not resumed from")
        if point.skipped:
            say(f"resuming from the previous good checkpoint, {point.path}")
            self.notes["checkpoint/fallbacks"] = float(len(point.skipped))
        changes = check_identity(point.path, self.identity, force=t.resume_force)
        if changes:
            say(f"resuming {point.path} with a changed config (train.resume_force): {'; '.join(changes)}")
        self.run_id = point.run_id
        state = self.parallel.load(point.path, self.model, self.optimizer, reference=self.reference)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.skipped_steps = int(state.get("skipped_steps", 0))
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
