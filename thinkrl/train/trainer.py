"""The GRPO loop (DeepSeekMath §4, DeepSeek-R1 §2.2), one step read top to bottom:

    prompts -> engine.generate(n=G) -> rewards -> advantages per group
            -> [old / reference log-probs] -> ppo_epochs x minibatches: loss + beta*KL -> AdamW -> metrics

    trainer = GRPOTrainer(load_config("configs/demo.yaml"))
    trainer.train()

Departures from the paper's pseudo-code, all settings: the loss aggregation (``algorithm.loss_agg``), clip
bounds, KL estimator and advantage are chosen by name; with one minibatch and one epoch the update is exactly
on-policy, so pi_old = pi_theta (detached) and no separate old-log-prob pass is spent.

Under ``torchrun`` each rank samples a contiguous share of the step's prompts, advantages and metrics are
computed on the all-gathered rewards, and gradients are summed across ranks with global loss normalisers,
so N ranks make the update one process makes on the same batch (docs/scaling.md). With ``model.lora_r > 0``
only PEFT adapters train and the reference is the base with adapters disabled (``thinkrl/core/lora.py``).
With ``train.fsdp`` parameters, gradients and optimizer state are sharded over the ranks (``fsdp.py``).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from thinkrl.algorithms import (
    aggregate_loss,
    compute_advantages,
    kl_penalty,
    policy_loss,
    truncated_is_weights,
    zero_spread_groups,
)
from thinkrl.config import Config, save_config
from thinkrl.core import prompt_token_ids, resolve_device, seed_everything
from thinkrl.core.lora import LoraCheckpointView, load_adapter_weights, reference_mode
from thinkrl.data.datasets import load_prompts
from thinkrl.data.templates import render_prompt
from thinkrl.rewards.base import compute_rewards, reward_name
from thinkrl.rollout.base import Rollout, SamplingParams, cat_rollouts, select_rows
from thinkrl.train import distributed as dist
from thinkrl.train import fsdp
from thinkrl.train.batch import TrainBatch, build_batch, forward_logprobs
from thinkrl.train.checkpoint import (
    latest_checkpoint,
    load_model_weights,
    load_trainer_state,
    save_checkpoint,
    set_rng_state,
)
from thinkrl.train.checks import check_config
from thinkrl.train.logging import MetricsLogger
from thinkrl.train.metrics import StepView, gather_step, step_metrics, timed
from thinkrl.train.setup import build_optimizer, build_reward_funcs, load_policy, lr_lambda, prepare_policy

# Rewards whose mean is reported as "accuracy" (the first one present in the config).
ACCURACY_REWARDS = ("accuracy", "exact_match", "countdown", "code", "routed")


class GRPOTrainer:
    """GRPO for any Hugging Face causal LM. Everything not passed in is built from ``cfg``.

    Args:
        cfg: the resolved config (see ``thinkrl.config``).
        model, tokenizer: an already loaded policy and its tokenizer (else loaded from ``cfg.model``).
        reward_funcs: callables ``(prompts, completions, **columns) -> list[float | None]``, or
            ``(callable, weight)`` pairs (else built from ``cfg.rewards``).
        train_rows, eval_rows: prompt rows with ``question`` and ``answer`` keys (else from ``cfg.data``).
        engine: a rollout engine (else the built-in engine over ``model``).
    """

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
        t = cfg.train
        dist.check_world_size(cfg, dist.env_world_size())  # before joining: a bad config fails on every rank
        self.dist = dist.init_distributed(t.device)
        seed_everything(t.seed)  # the same seed on every rank: data order and sampling seeds are global
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = resolve_device(t.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        if model is None:
            model, tokenizer = load_policy(cfg.model)
        if tokenizer is None:
            raise ValueError("GRPOTrainer got a model but no tokenizer; pass tokenizer=...")
        self.model, self.tokenizer = prepare_policy(model, tokenizer, cfg.model, self.device), tokenizer
        self.lora = cfg.model.lora_r > 0
        # the KV-cache path of a shared prompt does not combine with activation checkpointing
        self.share_prompt = t.share_prompt and not cfg.model.gradient_checkpointing
        self.logprob_kw = dict(
            share_prompt=self.share_prompt, fused_head=t.fused_lm_head, autocast=t.autocast
        )
        dist.broadcast_parameters(self.model)  # every rank starts from rank 0's weights (and adapter init)
        # beta = 0 loads no reference model (DAPO, Dr. GRPO); LoRA uses the base with adapters disabled;
        # else a frozen copy of the initial policy.
        self.reference = self._frozen_copy(self.model) if cfg.algorithm.beta > 0 and not self.lora else None
        self.fsdp = t.fsdp
        if self.fsdp:  # before the optimizer: it holds the shards; the reference is sharded too (1/N each)
            self.model = fsdp.shard_model(self.model)
            if self.reference is not None:
                self.reference = fsdp.shard_model(self.reference)

        if reward_funcs is None:
            self.reward_funcs, self.reward_weights = build_reward_funcs(cfg)
        else:
            pairs = [f if isinstance(f, tuple) else (f, 1.0) for f in reward_funcs]
            self.reward_funcs, self.reward_weights = [f for f, _ in pairs], [float(w) for _, w in pairs]
        names = [reward_name(f) for f in self.reward_funcs]
        self.accuracy_name = next((n for n in ACCURACY_REWARDS if n in names), None)

        d = cfg.data
        self.train_rows = (
            train_rows
            if train_rows is not None
            else load_prompts(
                d.train,
                split=d.split,
                question_key=d.question_key,
                answer_key=d.answer_key,
                max_rows=d.max_rows,
            )
        )
        self.eval_rows = eval_rows
        if self.eval_rows is None and d.eval:
            self.eval_rows = load_prompts(
                d.eval, split="test", question_key=d.question_key, answer_key=d.answer_key
            )
        self.train_prompts = [
            render_prompt(d.template, r["question"], tokenizer, d.system_prompt) for r in self.train_rows
        ]
        self.train_prompt_ids = prompt_token_ids(
            tokenizer, self.train_prompts, d.template, d.max_prompt_tokens
        )

        if engine is None:
            from thinkrl.rollout import build_engine

            engine = build_engine(cfg, self.model, tokenizer)  # rollout.engine: builtin or vllm
        self.engine = fsdp.GatheredEngine(engine, self.model) if self.fsdp else engine

        # only what trains (all weights, or LoRA adapters) gets optimizer state and gradient all-reduces
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.trainable, t)
        total_updates = t.steps * cfg.algorithm.ppo_epochs * cfg.algorithm.num_minibatches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(t.warmup_steps, total_updates, t.lr_schedule)
        )
        self.step = 0
        self.data_epoch, self.data_pos = 0, 0
        self._order = self._epoch_order(0)
        self.run_dir = Path(t.output_dir)
        self.is_main = dist.is_main()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if t.resume:  # every rank reads the checkpoint: run_dir must be on a file system they all see
            self._resume()
        self.logger: MetricsLogger | _NullLogger = _NullLogger()
        if self.is_main:  # rank 0 alone writes the run directory
            save_config(cfg, self.run_dir / "config.yaml")
            self.logger = MetricsLogger(self.run_dir, cfg.log, cfg, resume_step=self.step)

    # ----------------------------------------------------------------------------------------- set-up helpers
    @staticmethod
    def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
        ref = copy.deepcopy(model).eval()
        ref.requires_grad_(False)
        return ref

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.train_rows)))
        random.Random(self.cfg.train.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def _next_prompt_indices(self, k: int) -> list[int]:
        """The next ``k`` rows of a seeded shuffle, reshuffled each epoch; the position is saved in checkpoints."""
        out = []
        while len(out) < k:
            if self.data_pos >= len(self._order):
                self.data_epoch, self.data_pos = self.data_epoch + 1, 0
                self._order = self._epoch_order(self.data_epoch)
            take = self._order[self.data_pos : self.data_pos + k - len(out)]
            out.extend(take)
            self.data_pos += len(take)
        return out

    # ------------------------------------------------------------------------------------------- the step
    def sampling_params(self, round_: int, first_row: int = 0) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            n=r.group_size,
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_new_tokens=r.max_new_tokens,
            stop_strings=list(r.stop_strings),
            # A seed per (run, step, round): sampling is reproducible and resumes exactly without engine state.
            seed=self.cfg.train.seed * 1_000_003 + self.step * 101 + round_,
            first_row=first_row,  # a rank's rows draw the random numbers one process would give them
        )

    def generate_and_score(
        self, timings: dict[str, float]
    ) -> tuple[Rollout, torch.Tensor, dict[str, torch.Tensor], list[int], dict]:
        """Sample G completions for each of P prompts and score them; with dynamic sampling, drop groups whose
        rewards are all equal and sample more prompts (at most ``max_sampling_rounds`` rounds).

        Data parallel with dynamic sampling: each rank samples and scores its share of a round, then every rank
        gathers the whole round, keeps the groups one process keeps and, at the end, takes its contiguous share
        of them, so the rows are in one process's order (docs/scaling.md)."""
        r, a = self.cfg.rollout, self.cfg.algorithm
        gather_rounds = a.dynamic_sampling and self.dist.enabled
        parts, rewards, per_fn, row_ids = [], [], [], []
        kept_groups = dropped_groups = 0
        for round_ in range(a.max_sampling_rounds if a.dynamic_sampling else 1):
            idx = self._next_prompt_indices(r.prompts_per_step)  # the global order, the same on every rank
            lo, hi = dist.shard_range(len(idx), self.dist)  # this rank's contiguous share of whole groups
            with timed(timings, "generate"):
                rollout = self.engine.generate(
                    [self.train_prompt_ids[i] for i in idx[lo:hi]],
                    self.sampling_params(round_, lo * r.group_size),
                )
                rollout = rollout.to("cpu")
            with timed(timings, "reward"):
                out = self._score(rollout, idx[lo:hi])
            total, fns = out.total, out.per_function
            # data parallel + dynamic sampling: every rank sees the whole round, so keeps what one process keeps
            if gather_rounds:
                rollout, total, fns = _gather_round(rollout, total, fns, self.tokenizer.pad_token_id)
            else:
                idx = idx[lo:hi]
            if a.dynamic_sampling:
                keep = ~zero_spread_groups(total, rollout.group_ids)
                dropped_groups += len(idx) - int(keep.sum()) // r.group_size
                rows = keep.nonzero().squeeze(-1)
                rows = rows[: max(0, (r.prompts_per_step - kept_groups) * r.group_size)]
                if rows.numel() == 0:
                    continue
                kept_idx = [idx[g] for g in torch.unique(rollout.group_ids[rows]).tolist()]
                rollout, total = select_rows(rollout, rows), total[rows]
                fns = {k: v[rows] for k, v in fns.items()}
                idx = kept_idx
            parts.append(rollout)
            rewards.append(total)
            per_fn.append(fns)
            row_ids.extend(idx)
            kept_groups += len(idx)
            if kept_groups >= r.prompts_per_step:
                break
        extra = {}
        if a.dynamic_sampling:
            extra = {"dynamic/dropped_groups": dropped_groups, "dynamic/rounds": round_ + 1}
        # every group of every round had zero spread (or, data parallel, fewer kept groups than ranks: a rank
        # would train on nothing): train on nothing, but log it. The same decision on every rank.
        if kept_groups < (self.dist.world_size if gather_rounds else 1):
            return None, None, {}, [], extra
        rollout = cat_rollouts(parts, self.tokenizer.pad_token_id)
        total = torch.cat(rewards)
        merged = {k: torch.cat([p[k] for p in per_fn]) for k in per_fn[0]}
        if gather_rounds:  # this rank's contiguous share of the kept groups (shares differ by at most one)
            lo, hi = dist.shard_range(kept_groups, self.dist)
            rows = ((rollout.group_ids >= lo) & (rollout.group_ids < hi)).nonzero().squeeze(-1)
            rollout, total, row_ids = select_rows(rollout, rows), total[rows], row_ids[lo:hi]
            merged = {k: v[rows] for k, v in merged.items()}
        return rollout, total, merged, row_ids, extra

    def _score(self, rollout: Rollout, idx: list[int]):
        groups = rollout.group_ids.tolist()
        rows = [self.train_rows[idx[g]] for g in groups]
        columns = {k: [row.get(k) for row in rows] for k in rows[0]}  # every data column, question included
        columns["finish_reason"] = rollout.finish_reasons
        columns["completion_length"] = rollout.lengths.tolist()
        prompts = [self.train_prompts[idx[g]] for g in groups]
        return compute_rewards(self.reward_funcs, self.reward_weights, prompts, rollout.texts, **columns)

    @torch.no_grad()
    def _score_tokens(self, model: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
        """Log-probs (N, T) under ``model`` for all rows, in micro-batches."""
        out = torch.zeros_like(batch.sampler_logp)
        chunks: list[torch.Tensor | None] = list(
            _length_sorted_chunks(batch, self.cfg.train.micro_batch_size, self.share_prompt)
        )
        if self.fsdp:  # FSDP forwards are collectives: a rank with fewer rows runs row 0 again, discarded
            chunks += [None] * (int(dist.all_reduce_max(torch.tensor(len(chunks)))) - len(chunks))
        for rows in chunks:
            sub = batch.rows(torch.tensor([0]) if rows is None else rows)
            logp, _ = forward_logprobs(model, sub, self.cfg.rollout.temperature, **self.logprob_kw)
            if rows is not None:
                out[rows, : logp.shape[1]] = logp.float().cpu()
        return out

    def train_step(self) -> dict[str, float]:
        a = self.cfg.algorithm
        timings: dict[str, float] = {}
        step_start = time.perf_counter()

        # 1-2. sample G completions per prompt and score them with the rule rewards
        rollout, rewards, per_fn, row_ids, metrics = self.generate_and_score(timings)
        if rollout is None:
            self.step += 1
            return {**metrics, "skipped": 1.0}

        # 3. group-relative advantages, on the whole step's rewards: groups never span ranks, and gathering
        # makes batch-wide statistics (reinforce_pp's whitening) global too
        step_view = gather_step(rollout, rewards, per_fn, self.dist, self.cfg.rollout.prompts_per_step)
        advantages = compute_advantages(
            a.advantage, step_view.rewards, step_view.group_ids, eps=a.adv_eps, std_unbiased=a.std_unbiased
        )[step_view.first_row : step_view.first_row + len(rewards)]
        truncated = torch.tensor([f == "length" for f in rollout.finish_reasons])
        loss_mask = rollout.completion_mask.clone()
        if a.mask_truncated:  # DAPO overlong filtering: a cut-off answer is neither right nor wrong
            loss_mask[truncated] = False
        batch = build_batch(rollout, advantages, self.tokenizer.pad_token_id, loss_mask)

        # 4. old and reference log-probs (the old pass is skipped when the update is on-policy)
        on_policy = a.ppo_epochs == 1 and a.num_minibatches == 1
        with timed(timings, "old_logp"):
            if not on_policy:
                batch.old_logp = self._score_tokens(self.model, batch)
        with timed(timings, "ref_logp"):
            if self.reference is not None:
                batch.ref_logp = self._score_tokens(self.reference, batch)
            elif self.lora and a.beta > 0:  # the base model is the initial policy: no second copy
                with reference_mode(self.model):
                    batch.ref_logp = self._score_tokens(self.model, batch)

        # 5. ppo_epochs x num_minibatches optimizer steps
        with timed(timings, "train"):
            update = self._update(batch, on_policy, step_view)

        # 6. sync the engine, refresh the reference, metrics
        self.engine.sync_weights()
        self.step += 1
        if self.reference is not None and a.ref_refresh_steps and self.step % a.ref_refresh_steps == 0:
            self.reference.load_state_dict(self.model.state_dict())
        metrics.update(
            step_metrics(
                step_view, update, timings, step_start, self.scheduler.get_last_lr()[0], self.accuracy_name
            )
        )
        return metrics

    def _update(self, batch: TrainBatch, on_policy: bool, view: StepView) -> dict[str, torch.Tensor]:
        cfg, a = self.cfg, self.cfg.algorithm
        n, lo, n_local = len(view.rewards), view.first_row, len(batch)
        mb_size = n // a.num_minibatches
        sums: dict[str, torch.Tensor] = {}
        tokens_seen = torch.zeros(())
        grad_norms = []
        gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + self.step)
        for _epoch in range(a.ppo_epochs):
            # minibatches are drawn from the global rows, so every rank count forms the same minibatches
            perm = torch.randperm(n, generator=gen) if not on_policy else torch.arange(n)
            for m in range(a.num_minibatches):
                mb_global = perm[m * mb_size : (m + 1) * mb_size]
                mb_rows = mb_global[(mb_global >= lo) & (mb_global < lo + n_local)] - lo  # this rank's rows
                # normalisers of the whole (global) minibatch: accumulation over micro-batches and ranks then
                # sums to the loss of one big batch
                num_seqs = float(len(mb_global))
                num_tokens = float(dist.all_reduce_sum(batch.mask[mb_rows].sum()).clamp(min=1))
                self.optimizer.zero_grad(set_to_none=True)
                chunks = (
                    _length_sorted_chunks(batch.rows(mb_rows), cfg.train.micro_batch_size, self.share_prompt)
                    if len(mb_rows)
                    else []
                )
                micros = [batch.rows(mb_rows[rows]) for rows in chunks]
                if self.fsdp:  # FSDP passes are collectives: every rank runs as many (padding adds nothing)
                    micros = fsdp.pad_micro_batches(micros, batch)
                for micro in micros:
                    stats = self._micro_step(micro, on_policy, num_seqs, num_tokens)
                    for k, v in stats.items():  # on the model's device: no host sync per micro-batch
                        sums[k] = sums[k] + v if k in sums else v
                    tokens_seen = tokens_seen + micro.mask.sum()
                # SUM: the normalisers above are already global (FSDP shards were reduce-scattered in backward)
                dist.all_reduce_grads(self.trainable)
                grad_norms.append(dist.clip_grad_norm(self.trainable, cfg.train.max_grad_norm))
                self.optimizer.step()
                self.scheduler.step()
        # token-weighted metric sums and the loss (already globally normalised) summed over ranks: one collective
        keys = sorted(sums)
        local = torch.stack([sums[k].float() for k in keys]).cpu() if keys else torch.zeros(0)  # the one copy
        totals = dist.all_reduce_sum(torch.cat([tokens_seen.float().view(1), local]))
        sums, tokens_seen = dict(zip(keys, totals[1:])), totals[0]
        out = {k: v / tokens_seen.clamp(min=1) for k, v in sums.items() if k != "loss"}
        out["loss"] = sums["loss"] / (a.ppo_epochs * a.num_minibatches)
        out["grad_norm"] = torch.stack([g.detach().float().cpu() for g in grad_norms]).mean()
        return out

    def _micro_step(
        self, micro: TrainBatch, on_policy: bool, num_seqs: float, num_tokens: float
    ) -> dict[str, torch.Tensor]:
        """Forward, loss, backward for one micro-batch; returns token-weighted metric sums (0-dim tensors)."""
        a, r = self.cfg.algorithm, self.cfg.rollout
        logp, entropy = forward_logprobs(
            self.model, micro, r.temperature, with_entropy=True, entropy_grad=a.entropy_coef > 0,
            **self.logprob_kw,
        )  # fmt: skip
        mask = micro.mask.to(logp.device)
        old_logp = logp.detach() if on_policy else micro.old_logp.to(logp.device)
        is_weights = None
        if a.tis_cap is not None:
            is_weights = truncated_is_weights(old_logp, micro.sampler_logp.to(logp.device), a.tis_cap)
        per_token, pl_metrics = policy_loss(
            a.loss, logp, old_logp, micro.advantages.to(logp.device), mask,
            clip_low=a.clip_low, clip_high=a.clip_high, dual_clip=a.dual_clip,
            ratio_level=a.ratio_level, is_weights=is_weights,
        )  # fmt: skip
        kl = None
        if micro.ref_logp is not None:
            kl = kl_penalty(logp, micro.ref_logp.to(logp.device), a.kl_estimator)
            per_token = per_token + a.beta * kl
        if a.entropy_coef > 0:
            per_token = per_token - a.entropy_coef * entropy
        loss = aggregate_loss(
            per_token, mask, a.loss_agg, num_seqs=num_seqs, num_tokens=num_tokens, max_len=r.max_new_tokens
        )
        loss.backward()
        with torch.no_grad():  # left on the device: _update copies all of a step's sums to the host at once
            n_tok = mask.sum()
            stats = {k: v.detach().float() * n_tok for k, v in pl_metrics.items()}
            stats["entropy"] = (entropy.detach() * mask).sum()
            # engine vs trainer on the same tokens: 0 up to numerics for the built-in engine
            stats["logprob_mismatch"] = (
                (logp.detach() - micro.sampler_logp.to(logp.device)).abs() * mask
            ).sum()
            if kl is not None:
                stats["kl"] = (kl.detach() * mask).sum()
            stats["loss"] = loss.detach()
        return stats

    # ------------------------------------------------------------------------------------------ the loop
    def train(self) -> list[dict[str, float]]:
        """Run ``train.steps`` steps (from the resumed step), checkpointing as configured. Returns the metrics."""
        t = self.cfg.train
        history = []
        progress = None
        if self.cfg.log.progress and self.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(total=t.steps, initial=self.step, desc="grpo", dynamic_ncols=True)
        self._maybe_eval(force=self.step == 0)
        while self.step < t.steps:
            metrics = self.train_step()
            metrics.update(self._maybe_eval(force=self.step == t.steps))
            self.logger.log(self.step, metrics)
            history.append({"step": self.step, **metrics})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(
                    reward=f"{metrics.get('reward/mean', float('nan')):.3f}",
                    acc=f"{metrics.get('accuracy', float('nan')):.3f}",
                    len=f"{metrics.get('completion/len_mean', float('nan')):.1f}",
                )
            if (t.save_every and self.step % t.save_every == 0) or self.step == t.steps:
                self.save()
        if progress is not None:
            progress.close()
        self.logger.close()
        dist.barrier()  # no rank returns (or exits) before rank 0 has written the last checkpoint
        return history

    def _maybe_eval(self, force: bool = False) -> dict[str, float]:
        ev = self.cfg.eval
        if not ev.every_steps or not self.eval_rows:
            return {}
        if not force and self.step % ev.every_steps != 0:
            return {}
        from thinkrl.eval.runner import evaluate_during_training

        # FSDP: every rank gathers the weights (a collective), then rank 0 evaluates alone
        with fsdp.gathered(self.model):
            if not self.is_main:  # the others go on
                return {}
            metrics = evaluate_during_training(self, self.eval_rows)
        if self.step == 0:  # before any update: logged as its own record so curves start at the base model
            self.logger.log(0, metrics)
            return {}
        return metrics

    # ----------------------------------------------------------------------------------- checkpoint/resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data_epoch": self.data_epoch,
            "data_pos": self.data_pos,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def save(self) -> Path | None:
        """Write a checkpoint of this step (rank 0 only; other ranks return None). A LoRA policy is saved
        merged (a plain HF folder) with its adapter in ``adapter/``. With FSDP every rank takes part."""
        refreshed = self.reference is not None and self.cfg.algorithm.ref_refresh_steps > 0
        if self.fsdp:
            return fsdp.save_checkpoint(
                self.run_dir, self.step, self.model, self.optimizer, self.tokenizer, self.state_dict(),
                reference=self.reference if refreshed else None, keep_last=self.cfg.train.keep_last,
            )  # fmt: skip
        if not self.is_main:
            return None
        model = LoraCheckpointView(self.model) if self.lora else self.model
        return save_checkpoint(
            self.run_dir, self.step, model, self.tokenizer, self.state_dict(),
            reference=self.reference if refreshed else None, keep_last=self.cfg.train.keep_last,
        )  # fmt: skip

    def _resume(self) -> None:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return  # nothing saved yet: a fresh start, which resume=true also allows
        sharded = (path / fsdp.SHARDED_DIR).is_dir()  # written with train.fsdp: any rank count, FSDP or not
        if self.lora:  # the base comes from model.path; only the adapter was trained
            load_adapter_weights(self.model, path)
        elif sharded or self.fsdp:  # model and optimizer shards
            fsdp.load_sharded(path, self.model, self.optimizer)
        else:
            load_model_weights(self.model, path)
        if (path / "reference").exists() and self.reference is not None:
            (fsdp.load_full_weights if self.fsdp else load_model_weights)(self.reference, path / "reference")
        state = load_trainer_state(path)
        if not (sharded or self.fsdp):
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.data_epoch, self.data_pos = state["step"], state["data_epoch"], state["data_pos"]
        self._order = self._epoch_order(self.data_epoch)
        set_rng_state(state["rng"])


def _gather_round(
    rollout: Rollout, total: torch.Tensor, per_fn: dict[str, torch.Tensor], pad_id: int
) -> tuple[Rollout, torch.Tensor, dict[str, torch.Tensor]]:
    """Every rank's scored share of a sampling round, concatenated in rank order: the whole round, as one
    process samples it (group ids 0..P-1 in the global prompt order). One collective."""
    shares = dist.all_gather_objects((rollout, total, per_fn))
    whole = cat_rollouts([s[0] for s in shares], pad_id)
    return whole, torch.cat([s[1] for s in shares]), {k: torch.cat([s[2][k] for s in shares]) for k in per_fn}


def _length_sorted_chunks(batch: TrainBatch, size: int, by_group: bool = False) -> list[torch.Tensor]:
    """Row indices in chunks of ``size``: grouped by completion length so micro-batches carry little padding,
    or, with ``by_group``, by prompt first (so a shared prompt forward serves as many rows as possible)."""
    lengths = batch.attention_mask[:, -batch.completion_ids.shape[1] :].sum(-1)
    order = torch.argsort(lengths, descending=True, stable=True)
    if by_group and batch.group_ids is not None:
        order = order[torch.argsort(batch.group_ids[order], stable=True)]
    return [order[i : i + size] for i in range(0, len(order), size)]


class _NullLogger:
    """The metrics logger of ranks other than 0: they compute the same metrics but write nothing."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
