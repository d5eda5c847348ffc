"""The learner: advantages -> old / reference log-probs -> epochs x minibatches of gradient steps.

Every formula is a pure function of ``thinkrl.algorithms``, chosen by name (``algorithm.advantage``, ``loss``,
``loss_agg``, ``kl_estimator``), so a loss added to that package's registry is selectable here unchanged.
Normalisers are global (every rank's rows of a minibatch), so accumulation over micro-batches and ranks sums
to the loss of one big batch; everything that depends on the number of processes goes through ``parallel``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from thinkrl.algorithms import (
    aggregate_loss,
    compute_advantages,
    kl_penalty,
    policy_loss,
    truncated_is_weights,
)
from thinkrl.config import Config
from thinkrl.core.lora import is_lora, reference_mode
from thinkrl.train.batch import TrainBatch, forward_logprobs
from thinkrl.train.metrics import StepView


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode that takes no gradients (the KL reference)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


class Learner:
    """One GRPO update of ``model`` from a batch of scored samples (:meth:`advantages`, :meth:`score_old`,
    :meth:`score_reference`, :meth:`update`).

    Args:
        cfg: the run config (``algorithm``, ``rollout.temperature`` / ``max_new_tokens``, ``train``).
        model: the policy (a LoRA policy's reference is its base with adapters disabled).
        reference: a frozen copy of the initial policy, or None (beta = 0, or LoRA).
        optimizer, scheduler: step once per minibatch.
        parallel: the parallel edge (``thinkrl.train.parallel``).
    """

    def __init__(
        self,
        cfg: Config,
        model: torch.nn.Module,
        reference: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        parallel: Any,
    ):
        self.cfg, self.a = cfg, cfg.algorithm
        self.model, self.reference, self.optimizer, self.scheduler = model, reference, optimizer, scheduler
        self.parallel = parallel
        self.trainable = [p for group in optimizer.param_groups for p in group["params"]]
        # the base model is the initial policy: a LoRA reference costs no second copy
        self.lora_reference = reference is None and is_lora(model) and self.a.beta > 0
        # with one minibatch and one epoch pi_old = pi_theta (detached): no separate old-log-prob pass
        self.on_policy = self.a.ppo_epochs == 1 and self.a.num_minibatches == 1
        # the KV-cache path of a shared prompt does not combine with activation checkpointing
        self.share_prompt = cfg.train.share_prompt and not cfg.model.gradient_checkpointing
        self.logprob_kw = dict(
            share_prompt=self.share_prompt, fused_head=cfg.train.fused_lm_head, autocast=cfg.train.autocast
        )

    # --------------------------------------------------------------------------------------- before the update
    def advantages(self, view: StepView) -> torch.Tensor:
        """(N_local,) advantages of this rank's rows, computed over every rank's (``view``): groups never span
        ranks, and batch-wide statistics (reinforce_pp's whitening) must see all of them."""
        a = self.a
        adv = compute_advantages(
            a.advantage, view.rewards, view.group_ids, eps=a.adv_eps, std_unbiased=a.std_unbiased
        )
        return adv[view.mine]

    def score_old(self, batch: TrainBatch) -> None:
        """pi_old's log-probs into ``batch.old_logp`` (nothing to do when the update is on-policy)."""
        if not self.on_policy:
            batch.old_logp = self._score_tokens(self.model, batch)

    def score_reference(self, batch: TrainBatch) -> None:
        """The reference policy's log-probs into ``batch.ref_logp`` (nothing to do when beta = 0)."""
        if self.reference is not None:
            batch.ref_logp = self._score_tokens(self.reference, batch)
        elif self.lora_reference:
            with reference_mode(self.model):
                batch.ref_logp = self._score_tokens(self.model, batch)

    @torch.no_grad()
    def _score_tokens(self, model: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
        """Log-probs (N, T) under ``model`` for all rows, in micro-batches."""
        out = torch.zeros_like(batch.sampler_logp)
        chunks = length_sorted_chunks(batch, self.cfg.train.micro_batch_size, self.share_prompt)
        # a rank with fewer chunks than another (FSDP: forwards are collectives) runs row 0 again, discarded
        for rows in self.parallel.pad_passes(chunks, lambda: None):
            sub = batch.rows(torch.tensor([0]) if rows is None else rows)
            logp, _ = forward_logprobs(model, sub, self.cfg.rollout.temperature, **self.logprob_kw)
            if rows is not None:
                out[rows, : logp.shape[1]] = logp.float().cpu()
        return out

    # ------------------------------------------------------------------------------------------- the update
    def update(self, batch: TrainBatch, view: StepView, step: int) -> dict[str, torch.Tensor]:
        """``ppo_epochs`` x ``num_minibatches`` optimizer steps on ``batch`` (this rank's rows of ``view``);
        returns the update's metrics (0-dim tensors, reduced over ranks)."""
        a, t = self.a, self.cfg.train
        n, lo, n_local = len(view.rewards), view.first_row, len(batch)
        sums: dict[str, torch.Tensor] = {}
        tokens_seen = torch.zeros(())
        grad_norms = []
        gen = torch.Generator().manual_seed(t.seed * 7919 + step)
        for _epoch in range(a.ppo_epochs):
            # minibatches are drawn from the global rows, so every rank count forms the same minibatches
            perm = torch.randperm(n, generator=gen) if not self.on_policy else torch.arange(n)
            # every row once per epoch, sizes within one of each other (dynamic sampling may keep fewer rows
            # than planned, even fewer than num_minibatches: the empty ones only advance the lr schedule)
            for mb_global in torch.tensor_split(perm, a.num_minibatches):
                if len(mb_global) == 0:
                    self.scheduler.step()
                    continue
                mb_rows = mb_global[(mb_global >= lo) & (mb_global < lo + n_local)] - lo  # this rank's rows
                # normalisers of the whole (global) minibatch
                num_seqs = float(len(mb_global))
                num_tokens = float(self.parallel.sum(batch.mask[mb_rows].sum()).clamp(min=1))
                self.optimizer.zero_grad(set_to_none=True)
                mb = batch.rows(mb_rows) if len(mb_rows) else None
                chunks = (
                    length_sorted_chunks(mb, t.micro_batch_size, self.share_prompt) if mb is not None else []
                )
                micros = [batch.rows(mb_rows[rows]) for rows in chunks]
                for micro in self.parallel.pad_passes(micros, lambda: _empty_rows(batch)):
                    stats = self._micro_step(micro, num_seqs, num_tokens)
                    for k, v in stats.items():  # on the model's device: no host sync per micro-batch
                        sums[k] = sums[k] + v if k in sums else v
                    tokens_seen = tokens_seen + micro.mask.sum()
                # SUM: the normalisers above are already global
                self.parallel.reduce_grads(self.trainable)
                grad_norms.append(self.parallel.clip_grad_norm(self.trainable, t.max_grad_norm))
                self.optimizer.step()
                self.scheduler.step()
        # token-weighted metric sums and the loss (already globally normalised) summed over ranks: one collective
        keys = sorted(sums)
        local = torch.stack([sums[k].float() for k in keys]).cpu() if keys else torch.zeros(0)  # the one copy
        totals = self.parallel.sum(torch.cat([tokens_seen.float().view(1), local]))
        sums, tokens_seen = dict(zip(keys, totals[1:])), totals[0]
        out = {k: v / tokens_seen.clamp(min=1) for k, v in sums.items() if k != "loss"}
        out["loss"] = sums["loss"] / len(grad_norms)  # the mean over the minibatches that trained
        out["grad_norm"] = torch.stack([g.detach().float().cpu() for g in grad_norms]).mean()
        return out

    def _micro_step(self, micro: TrainBatch, num_seqs: float, num_tokens: float) -> dict[str, torch.Tensor]:
        """Forward, loss, backward for one micro-batch; returns token-weighted metric sums (0-dim tensors)."""
        a, r = self.a, self.cfg.rollout
        logp, entropy = forward_logprobs(
            self.model, micro, r.temperature, with_entropy=True, entropy_grad=a.entropy_coef > 0,
            **self.logprob_kw,
        )  # fmt: skip
        mask = micro.mask.to(logp.device)
        old_logp = logp.detach() if self.on_policy else micro.old_logp.to(logp.device)
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
        with torch.no_grad():  # left on the device: update() copies all of a step's sums to the host at once
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

    # -------------------------------------------------------------------------------------------- after it
    def refresh_reference(self, step: int) -> None:
        """Replace the reference with the policy every ``ref_refresh_steps`` steps (R1: 400)."""
        every = self.a.ref_refresh_steps
        if self.reference is not None and every and step % every == 0:
            self.reference.load_state_dict(self.model.state_dict())


def length_sorted_chunks(batch: TrainBatch, size: int, by_group: bool = False) -> list[torch.Tensor]:
    """Row indices in chunks of ``size``: grouped by completion length so micro-batches carry little padding,
    or, with ``by_group``, by prompt first (so a shared prompt forward serves as many rows as possible)."""
    lengths = batch.attention_mask[:, -batch.completion_ids.shape[1] :].sum(-1)
    order = torch.argsort(lengths, descending=True, stable=True)
    if by_group and batch.group_ids is not None:
        order = order[torch.argsort(batch.group_ids[order], stable=True)]
    return [order[i : i + size] for i in range(0, len(order), size)]


def _empty_rows(batch: TrainBatch) -> TrainBatch:
    """Row 0 of ``batch`` with its loss mask cleared: a forward and backward that add exactly nothing (a
    padding pass, when another rank runs more micro-batches)."""
    empty = batch.rows(torch.tensor([0]))
    empty.mask = torch.zeros_like(empty.mask)
    return empty
