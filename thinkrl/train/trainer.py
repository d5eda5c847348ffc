"""GRPO (DeepSeekMath §4.1, Algorithm 1; DeepSeek-R1 §2.2) for any Hugging Face causal LM.

    trainer = GRPOTrainer(load_config("configs/r1-zero.yaml", ["model.path=Qwen/Qwen2.5-0.5B"]))
    trainer.train()

One step, :meth:`GRPOTrainer.train_step`, reads as the paper's inner loop: sample G outputs per question with
the current policy (the collector, ``thinkrl/rollout/collect.py``) -> rewards -> group-relative advantages ->
old and reference log-probs -> mu epochs x minibatches of gradient steps (the learner, ``learner.py``) -> the
sampler gets the new weights. Departures from the paper's pseudo-code are settings: the loss aggregation, clip
bounds, KL estimator and advantage are chosen by name; with one minibatch and one epoch the update is exactly
on-policy, so pi_old = pi_theta (detached) and no old-log-prob pass is spent; DAPO's dynamic sampling and
overlong filtering are collector options.

Parallelism lives at the edge (``parallel.py``): under ``torchrun`` each rank samples a contiguous share of the
step's prompts, advantages and metrics are computed on the gathered rewards and gradients are summed with
global loss normalisers, so N ranks make the update one process makes (docs/scaling.md); ``train.fsdp``
shards parameters, gradients and optimizer state. With ``model.lora_r > 0`` only PEFT adapters train and the
reference is the base with adapters disabled (``thinkrl/core/lora.py``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from thinkrl.analysis.completions import CompletionLog, completion_records
from thinkrl.analysis.doctor import Doctor
from thinkrl.config import Config
from thinkrl.core import check_positions, resolve_device, seed_everything, timed
from thinkrl.core.lora import is_lora
from thinkrl.eval import PeriodicEvaluator
from thinkrl.eval.files import write_json
from thinkrl.rewards import RewardScorer
from thinkrl.rollout import CORRECTNESS_REWARDS, Collector, Prompts, build_engine, build_environment
from thinkrl.rollout.async_collector import AsyncCollector
from thinkrl.train.batch import batch_from_trajectories
from thinkrl.train.checks import check_config
from thinkrl.train.critic import build_critic
from thinkrl.train.learner import Learner, frozen_copy
from thinkrl.train.loop import TrainingLoop
from thinkrl.train.metrics import step_metrics, step_view
from thinkrl.train.parallel import build_parallel
from thinkrl.train.runs import reward_records
from thinkrl.train.setup import (
    build_optimizer,
    build_scheduler,
    load_policy,
    load_rows,
    prepare_policy,
    reward_pairs,
)


class GRPOTrainer(TrainingLoop):
    """GRPO for any Hugging Face causal LM. Everything not passed in is built from ``cfg``.

    Args:
        cfg: the resolved config (see ``thinkrl.config``).
        model, tokenizer: an already loaded policy and its tokenizer (else loaded from ``cfg.model``).
        reward_funcs: callables ``(prompts, completions, **columns) -> list[float | None]``, or
            ``(callable, weight)`` pairs (else built from ``cfg.rewards``).
        train_rows, eval_rows: prompt rows with ``question`` and ``answer`` keys (else from ``cfg.data``).
        engine: a rollout engine (else the one ``cfg.rollout.engine`` names, over ``model``).
    """

    progress_name = "grpo"

    def __init__(
        self,
        cfg: Config,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        reward_funcs: Sequence[Callable | tuple[Callable, float]] | None = None,
        train_rows: list[dict[str, Any]] | None = None,
        eval_rows: list[dict[str, Any]] | None = None,
        engine: Any = None,
    ):
        self.cfg = check_config(cfg)
        t, d = cfg.train, cfg.data
        # the scorer forks its reward workers now, before this process starts threads or touches a GPU
        self.scorer = RewardScorer(*reward_pairs(cfg, reward_funcs), cfg.grading)
        self.rewards_given = reward_funcs is not None  # the run's config.yaml records them by qualified name
        self.parallel = build_parallel(cfg)  # before anything loads: a bad world size fails on every rank
        seed_everything(t.seed)  # the same seed on every rank: data order and sampling seeds are global
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = self.parallel.device(resolve_device(t.device))
        if model is None:
            model, tokenizer = load_policy(cfg.model)
        if tokenizer is None:
            raise ValueError("GRPOTrainer got a model but no tokenizer; pass tokenizer=...")
        self.model, self.tokenizer = prepare_policy(model, tokenizer, cfg.model, self.device), tokenizer
        self.parallel.broadcast(self.model)  # every rank starts from rank 0's weights (and adapter init)
        # beta = 0 loads no reference (DAPO, Dr. GRPO); LoRA's is the base with adapters disabled
        reference = frozen_copy(self.model) if cfg.algorithm.beta > 0 and not is_lora(self.model) else None
        self.model, self.reference = self.parallel.wrap(self.model, reference)

        names = [f.name for f in self.scorer.funcs]
        self.accuracy_name = next((n for n in CORRECTNESS_REWARDS if n in names), None)
        self.train_rows, self.eval_rows = load_rows(cfg, train_rows, eval_rows)
        prompts = Prompts(
            self.train_rows, build_environment(cfg, tokenizer), tokenizer,
            seed=t.seed, max_tokens=d.max_prompt_tokens,
        )  # fmt: skip
        longest = max(map(len, prompts.ids))  # fails at start, not mid-rollout, when positions run out
        check_positions(self.model, longest, cfg.rollout.max_new_tokens, "rollout.max_new_tokens")
        self.evaluator = None  # held-out evaluation every eval.every_steps, built once (with the run's tool)
        if cfg.eval.every_steps and self.eval_rows:
            self.evaluator = PeriodicEvaluator.from_config(
                cfg, self.eval_rows, tokenizer, Path(t.output_dir) / "eval", env=prompts.env
            )
            self.evaluator.check_positions(self.model)  # now, not at the first evaluation
        custom_engine = engine is not None
        if engine is None:
            engine = build_engine(cfg, self.model, tokenizer)  # rollout.engine: builtin or vllm
        self.engine = self.parallel.wrap_engine(engine, self.model)
        self.collector = Collector(cfg, prompts, self.engine, self.scorer, tokenizer, self.parallel)
        if cfg.rollout.max_staleness:  # a generator process samples ahead (rollout/async_collector.py)
            self.collector = AsyncCollector(
                self.collector, self.model, self.scorer, tokenizer, self.parallel, custom_engine=custom_engine
            )
        # only what trains (all weights, or LoRA adapters) gets optimizer state and gradient all-reduces
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], t)
        a = cfg.algorithm
        self.scheduler = build_scheduler(self.optimizer, t, t.steps * a.ppo_epochs * a.num_minibatches)
        self.critic = build_critic(cfg, self.model, tokenizer, self.parallel)  # advantage=gae's, else None
        self.learner = Learner(
            cfg, self.model, self.reference, self.optimizer, self.scheduler, self.parallel, critic=self.critic
        )
        self.step = 0
        self.run_dir = Path(t.output_dir)
        self.start_run()
        self.collector.policy_version = self.step
        lg = cfg.log
        self.completion_log = self.doctor = None
        if self.parallel.is_main:
            self.completion_log = CompletionLog(
                self.run_dir, every=lg.completions_every, per_step=lg.completions_per_step,
                max_bytes=int(lg.completions_max_mb * 2**20), resume_step=self.step, seed=t.seed,
            )  # fmt: skip
            self.doctor = Doctor(cfg.doctor) if cfg.doctor.enabled else None
        # the isolation code rewards run under: said once, kept with the run, and in every step's metrics
        isolation = self.scorer.isolation()
        self.isolation_metrics = dict(isolation.get("metrics", {}))
        if self.parallel.is_main:
            print(f"[thinkrl] {isolation['summary']}", flush=True)
            write_json(self.run_dir / "isolation.json", isolation)

    # ------------------------------------------------------------------------------------------- the step
    def train_step(self) -> dict[str, float]:
        """One GRPO iteration (DeepSeekMath Algorithm 1, steps 5-11); returns the step's metrics."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        # sample G outputs per question with the current policy; compute their rewards
        traj, metrics = self.collector.collect(self.step, timings)
        if traj is None:  # DAPO: every group of every round had zero reward spread; nothing to learn from
            self.step += 1
            return {**metrics, "skipped": 1.0}
        # group-relative advantages, over every rank's rows
        view = step_view(traj, self.parallel)
        advantages = self.learner.advantages(view)
        batch = batch_from_trajectories(traj, advantages, self.tokenizer.pad_token_id)
        # log-probs of the sampled tokens under pi_old (skipped when on-policy) and pi_ref (skipped when beta=0);
        # with a critic, its values and the per-token GAE advantages
        with timed(timings, "old_logp"):
            self.learner.score_old(batch)
        self.log_completions(traj, batch.row_advantages())
        with timed(timings, "ref_logp"):
            self.learner.score_reference(batch)
        # mu epochs x minibatches: loss + beta * KL, backward, optimizer step
        with timed(timings, "train"):
            update = self.learner.update(batch, view, self.step)
        # the sampler gets the new policy; the reference follows it every ref_refresh_steps
        self.step += 1
        self.collector.sync_weights(self.step)
        self.learner.refresh_reference(self.step)
        lr = self.scheduler.get_last_lr()[0]
        metrics.update(step_metrics(view, update, timings, start, lr, self.accuracy_name))
        metrics.update(self.isolation_metrics)
        return metrics

    def log_completions(self, traj: Any, advantages: torch.Tensor) -> None:
        """Write a sample of this step's completions to ``RUN/completions.jsonl`` (``log.completions_*``;
        rank 0's rows under data parallelism)."""
        step = self.step + 1  # the step these completions train
        if self.completion_log is None or not self.completion_log.should_log(step):
            return
        decoded: dict[int, str] = {}  # the rows of a group share one prompt: decode it once
        prompts = [
            decoded.setdefault(id(ids), self.tokenizer.decode(ids, skip_special_tokens=True))
            for ids in traj.prompt_ids
        ]
        self.completion_log.write(
            step,
            completion_records(
                prompts=prompts, completions=traj.texts, rewards=traj.reward_parts, total=traj.rewards,
                advantages=advantages, lengths=traj.lengths, finish_reasons=traj.finish_reasons,
                group_ids=traj.group_ids, policy_version=traj.policy_version.tolist(),
                answers=[r.get("answer") for r in traj.rows], accuracy_name=self.accuracy_name,
            ),
        )  # fmt: skip

    # ------------------------------------------------------------------------------------ the loop's hooks
    @property
    def total_steps(self) -> int:
        return self.cfg.train.steps

    def before_loop(self) -> None:
        self._maybe_eval(force=self.step == 0)

    def after_loop(self) -> None:
        self.scorer.close()  # the reward worker processes

    def after_log(self, step: int, metrics: dict[str, float]) -> None:
        """The run doctor reads every logged step; a check that starts firing prints one warning line."""
        if self.doctor is not None:
            for line in self.doctor.observe(step, metrics):
                print(line, file=sys.stderr, flush=True)

    def after_step(self, last: bool) -> dict[str, float]:
        return self._maybe_eval(force=last)

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {
            "reward": f"{metrics.get('reward/mean', float('nan')):.3f}",
            "acc": f"{metrics.get('accuracy', float('nan')):.3f}",
            "len": f"{metrics.get('completion/len_mean', float('nan')):.1f}",
        }

    def _maybe_eval(self, force: bool = False) -> dict[str, float]:
        if self.evaluator is None or not (force or self.evaluator.should_run(self.step)):
            return {}
        with self.parallel.full_weights(self.model):  # every rank enters; rank 0 evaluates alone
            if not self.parallel.is_main:
                return {}
            self.engine.sync_weights()
            metrics = self.evaluator(self.engine, self.step)
        if self.step == 0:  # before any update: logged as its own record so curves start at the base model
            self.logger.log(0, metrics)
            return {}
        return metrics

    def data_position(self) -> tuple[int, int]:
        return self.collector.prompts.epoch, self.collector.prompts.pos

    def seek_data(self, epoch: int, pos: int) -> None:
        self.collector.prompts.seek(epoch, pos)

    def save_reference(self) -> bool:
        # before its first refresh the reference is the initial policy: model.path, not a checkpoint's business
        return self.reference is not None and 0 < self.cfg.algorithm.ref_refresh_steps <= self.step

    def recorded_rewards(self) -> list[dict[str, Any]] | None:
        return reward_records(self.scorer.funcs, self.scorer.weights) if self.rewards_given else None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "learner": self.learner.state_dict()}  # entropy controller, critic

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state.get("learner", {}))

    # ---------------------------------------------------------------------------------- what tests inspect
    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters that train (all, or the LoRA adapters)."""
        return self.learner.trainable

    @property
    def share_prompt(self) -> bool:
        return self.learner.share_prompt

    @property
    def dist(self) -> Any:
        """The parallel edge (``rank``, ``world_size``)."""
        return self.parallel
