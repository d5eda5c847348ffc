"""Evaluation during training: the trainer's held-out curve, with the metrics of ``thinkrl eval``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thinkrl.config import Config, EvalSampling
from thinkrl.eval.benchmarks import prepare_rows
from thinkrl.eval.files import SAMPLES_FILE
from thinkrl.eval.metrics import flat_metrics
from thinkrl.eval.runner import evaluate


def eval_sampling(cfg: Config) -> EvalSampling:
    """The run's ``eval`` section as :class:`~thinkrl.config.EvalSampling`, the fields it leaves null taken
    from the training run (``data.template`` / ``system_prompt``, ``rollout.max_new_tokens`` /
    ``stop_strings``), so the curve measures the policy as it is trained.

    >>> s = eval_sampling(Config())
    >>> s.k, s.max_new_tokens, s.template, s.stop_strings
    (4, 1024, 'r1', ['</answer>'])
    """
    ev, d, r = cfg.eval, cfg.data, cfg.rollout
    fields = {f.name: getattr(ev, f.name) for f in dataclasses.fields(EvalSampling)}
    return EvalSampling(**{
        **fields,
        "max_new_tokens": ev.max_new_tokens or r.max_new_tokens,
        "template": ev.template if ev.template is not None else d.template,
        "system_prompt": ev.system_prompt if ev.system_prompt is not None else d.system_prompt,
        "stop_strings": list(ev.stop_strings if ev.stop_strings is not None else r.stop_strings),
    })  # fmt: skip


class PeriodicEvaluator:
    """Evaluate held-out problems every ``every_steps`` steps with :func:`~thinkrl.eval.evaluate`.

    Every evaluation uses the same seed, so the curve over steps moves with the model, not the sampler. With
    ``out_dir`` each step's samples and summary go to ``out_dir/step_000100/``.

    Args:
        rows, tokenizer: the problems and the tokenizer that renders them.
        sampling: how to sample (default :class:`~thinkrl.config.EvalSampling`); ``settings`` override fields.
        every_steps: 0 disables; max_problems: evaluate only the first N rows.
        grader: as :func:`~thinkrl.eval.evaluate`'s; prefix: the metric names' prefix.
        reuse_samples: read a step's stored samples back instead of drawing them again (off by default: a
            run restarted from scratch in the same folder has other weights at the same step).
        env: a multi-turn environment to evaluate with (the run's Python tool, ``tools.enabled``); None: the
            single-turn protocol.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        tokenizer: Any,
        sampling: EvalSampling | None = None,
        *,
        every_steps: int,
        max_problems: int | None = None,
        out_dir: str | Path | None = None,
        grader: Any = None,
        prefix: str = "eval/",
        reuse_samples: bool = False,
        env: Any = None,
        **settings: Any,
    ):
        self.rows = prepare_rows(list(rows)[:max_problems] if max_problems is not None else rows)
        self.tokenizer = tokenizer
        self.sampling = dataclasses.replace(sampling or EvalSampling(), **settings)
        self.every_steps = every_steps
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.grader, self.prefix, self.reuse_samples = grader, prefix, reuse_samples
        self.env = env

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        rows: Sequence[dict[str, Any]],
        tokenizer: Any,
        out_dir: str | Path | None = None,
        env: Any = None,
    ) -> PeriodicEvaluator:
        """The evaluator ``cfg.eval`` describes (:func:`eval_sampling`, ``every_steps``, ``max_problems``),
        with the run's tool when ``tools.enabled``: ``env`` when the caller has built the run's environment
        already (the trainer's, so the sandbox is probed once), else built here."""
        from thinkrl.rollout import build_environment

        ev = cfg.eval
        if cfg.tools.enabled and env is None:
            env = build_environment(cfg, tokenizer)
        return cls(
            rows, tokenizer, eval_sampling(cfg), every_steps=ev.every_steps, max_problems=ev.max_problems,
            out_dir=out_dir, env=env if cfg.tools.enabled else None,
        )  # fmt: skip

    def check_positions(self, model: Any) -> None:
        """At the run's start, not at the first evaluation (a resume may raise ``eval.max_new_tokens``): the
        longest held-out prompt plus ``eval.max_new_tokens`` must fit ``model``'s positions
        (:func:`thinkrl.core.check_positions`)."""
        from thinkrl.core import check_positions, prompt_token_ids
        from thinkrl.data.templates import render_prompt

        s = self.sampling
        prompts = [
            render_prompt(s.template, r["question"], self.tokenizer, system=s.system_prompt)
            for r in self.rows
        ]
        longest = max(map(len, prompt_token_ids(self.tokenizer, prompts, s.template)), default=0)
        check_positions(model, longest, s.max_new_tokens or 0, "eval.max_new_tokens", "held-out prompt")

    def should_run(self, step: int, last: bool = False) -> bool:
        """True at step 0, every ``every_steps`` steps, and at the last step; never when every_steps is 0."""
        return self.every_steps > 0 and (step % self.every_steps == 0 or last)

    def __call__(self, engine: Any, step: int) -> dict[str, float]:
        """Evaluate with ``engine`` (already synced to the current weights); returns prefixed scalar metrics."""
        out = self.out_dir / f"step_{step:06d}" if self.out_dir is not None else None
        if out is not None and not self.reuse_samples:
            (out / SAMPLES_FILE).unlink(missing_ok=True)
        result = evaluate(
            engine, self.tokenizer, self.rows, self.sampling, out_dir=out, progress=False, grader=self.grader,
            env=self.env,
        )  # fmt: skip
        return flat_metrics(result.summary, self.prefix)


def evaluate_during_training(trainer: Any, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The trainer's hook: evaluate ``rows`` with ``trainer.engine`` at ``trainer.step`` using ``trainer.cfg``
    (see :meth:`PeriodicEvaluator.from_config`); files go to ``trainer.run_dir / "eval" / "step_NNNNNN"``.
    Returns ``{"eval/pass@1": ..., "eval/pass@1_se": ..., "eval/cons@K": ..., "eval/length_mean": ...}``."""
    trainer.engine.sync_weights()
    out = Path(trainer.run_dir) / "eval" if getattr(trainer, "run_dir", None) is not None else None
    evaluator = PeriodicEvaluator.from_config(trainer.cfg, rows, trainer.tokenizer, out_dir=out)
    return evaluator(trainer.engine, trainer.step)
