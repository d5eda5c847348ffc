"""The learner: advantages -> old / reference log-probs -> epochs x minibatches of gradient steps.

Every formula is a pure function of ``thinkrl.algorithms``, chosen by name (``algorithm.advantage``, ``loss``,
``loss_agg``, ``kl_estimator``, ``is_correction``), so a loss added to that package's registry is selectable
here unchanged; its own options come from ``algorithm.loss_options``. Normalisers are global (every rank's rows
of a minibatch), so accumulation over micro-batches and ranks sums to the loss of one big batch; everything
that depends on the number of processes goes through ``parallel``.

State beyond the weights (checkpointed through :meth:`Learner.state_dict`): the adaptive entropy coefficient
and the critic with its optimizer (PPO, ``algorithm.advantage=gae``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from thinkrl.algorithms import (
    adaptive_entropy_coef,
    aggregate_loss,
    compute_advantages,
    is_correction,
    kl_penalty,
    loss_options,
    policy_loss,
    truncated_is_weights,
    value_loss,
)
from thinkrl.config import Config
from thinkrl.core.lora import is_lora, reference_mode
from thinkrl.train.batch import TrainBatch, forward_logprobs, forward_with_values
from thinkrl.train.checks import is_bounds
from thinkrl.train.critic import Critic, explained_variance, gae_targets, value_sums
from thinkrl.train.metrics import StepView
from thinkrl.train.setup import build_optimizer

# update metrics that are already normalised over the minibatch (summed, then averaged over optimizer steps)
_PER_STEP = ("loss", "value_loss")


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
        critic: PPO's value model (``thinkrl.train.critic``), or None; it gets its own AdamW (``critic.lr``).
    """

    def __init__(
        self,
        cfg: Config,
        model: torch.nn.Module,
        reference: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        parallel: Any,
        critic: Critic | None = None,
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
        # the policy's log-probs are those of the distribution the sampler drew from (top-k / top-p truncated);
        # the reference's stay full: the KL is then KL(sampling policy || reference)
        self.truncation = dict(top_k=cfg.rollout.top_k, top_p=cfg.rollout.top_p)
        self.is_bounds = is_bounds(cfg)
        # the entropy bonus: constant, or Skywork-OR1's controller (its coefficient, and what the next step applies)
        self.entropy_coef = self.a.entropy_coef
        self.entropy_applied = self.a.entropy_coef if self.a.entropy_target is None else 0.0
        self.critic, self.critic_optimizer = critic, None
        if critic is not None:
            critic_train = dataclasses.replace(cfg.train, lr=cfg.critic.lr)
            self.critic_optimizer = build_optimizer(list(critic.parameters()), critic_train)

    # --------------------------------------------------------------------------------------- before the update
    def advantages(self, view: StepView) -> torch.Tensor:
        """(N_local,) advantages of this rank's rows, computed over every rank's (``view``): groups never span
        ranks, and batch-wide statistics (reinforce_pp's whitening) must see all of them. With a critic the
        advantages are per token and need its values: zeros here, replaced by :meth:`score_old`."""
        a = self.a
        if self.critic is not None:
            return torch.zeros(len(view.rewards))[view.mine]
        adv = compute_advantages(
            a.advantage, view.rewards, view.group_ids, eps=a.adv_eps, std_unbiased=a.std_unbiased
        )
        return adv[view.mine]

    def score_old(self, batch: TrainBatch) -> None:
        """pi_old's log-probs into ``batch.old_logp`` (nothing to do when the update is on-policy); with a
        critic also its values (``old_values``), and the GAE advantages and returns."""
        if not self.on_policy:
            batch.old_logp = self._score(batch, self._policy_logprobs)
        if self.critic is not None:
            batch.old_values = self._score(batch, self._critic_values)
            gae_targets(batch, self.a, self.parallel.sum)

    def score_reference(self, batch: TrainBatch) -> None:
        """The reference policy's log-probs into ``batch.ref_logp`` (nothing to do when beta = 0)."""
        if self.reference is not None:
            batch.ref_logp = self._score(batch, self._logprobs_of(self.reference))
        elif self.lora_reference:
            with reference_mode(self.model):
                batch.ref_logp = self._score(batch, self._logprobs_of(self.model))

    def _logprobs_of(self, model: torch.nn.Module) -> Callable[[TrainBatch], torch.Tensor]:
        return lambda sub: forward_logprobs(model, sub, self.cfg.rollout.temperature, **self.logprob_kw)[0]

    def _policy_logprobs(self, sub: TrainBatch) -> torch.Tensor:
        r = self.cfg.rollout
        return forward_logprobs(self.model, sub, r.temperature, **self.logprob_kw, **self.truncation)[0]

    def _critic_values(self, sub: TrainBatch) -> torch.Tensor:
        c, kw = self.critic, self.logprob_kw
        if c.shared:  # the head on the policy's trunk: the policy's forward
            return forward_with_values(
                self.model, c.head_values, sub, self.cfg.rollout.temperature, share_prompt=kw["share_prompt"],
                autocast=kw["autocast"], **self.truncation,
            )[2]  # fmt: skip
        return c.values(sub, share_prompt=kw["share_prompt"], autocast=kw["autocast"])

    @torch.no_grad()
    def _score(self, batch: TrainBatch, fn: Callable[[TrainBatch], torch.Tensor]) -> torch.Tensor:
        """``fn``'s (n, t) values (log-probs or critic values) for all rows, in micro-batches: (N, T)."""
        out = torch.zeros_like(batch.sampler_logp)
        chunks = length_sorted_chunks(batch, self.cfg.train.micro_batch_size, self.share_prompt)
        # a rank with fewer chunks than another (FSDP: forwards are collectives) runs row 0 again, discarded
        for rows in self.parallel.pad_passes(chunks, lambda: None):
            sub = batch.rows(torch.tensor([0]) if rows is None else rows)
            values = fn(sub)
            if rows is not None:
                out[rows, : values.shape[1]] = values.float().cpu()
        return out

    # ------------------------------------------------------------------------------------------- the update
    def update(self, batch: TrainBatch, view: StepView, step: int) -> dict[str, torch.Tensor]:
        """``ppo_epochs`` x ``num_minibatches`` optimizer steps on ``batch`` (this rank's rows of ``view``);
        returns the update's metrics (0-dim tensors, reduced over ranks)."""
        a, t = self.a, self.cfg.train
        n, lo, n_local = len(view.rewards), view.first_row, len(batch)
        sums: dict[str, torch.Tensor] = {}
        extremes: dict[str, torch.Tensor] = {}  # maxima (and negated minima) of the IS ratio
        tokens_seen = torch.zeros(())
        grad_norms, critic_norms = [], []
        gen = torch.Generator().manual_seed(t.seed * 7919 + step)
        options = self._loss_options(step)
        # during the critic's warm-up only the critic steps
        train_policy = self.critic is None or step >= self.cfg.critic.warmup_steps
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
                if self.critic_optimizer is not None:
                    self.critic_optimizer.zero_grad(set_to_none=True)
                mb = batch.rows(mb_rows) if len(mb_rows) else None
                chunks = (
                    length_sorted_chunks(mb, t.micro_batch_size, self.share_prompt) if mb is not None else []
                )
                micros = [batch.rows(mb_rows[rows]) for rows in chunks]
                for micro in self.parallel.pad_passes(micros, lambda: _empty_rows(batch)):
                    stats, peaks = self._micro_step(micro, num_seqs, num_tokens, options, train_policy)
                    for k, v in stats.items():  # on the model's device: no host sync per micro-batch
                        sums[k] = sums[k] + v if k in sums else v
                    for k, v in peaks.items():
                        extremes[k] = torch.maximum(extremes[k], v) if k in extremes else v
                    tokens_seen = tokens_seen + micro.mask.sum()
                # SUM: the normalisers above are already global
                self.parallel.reduce_grads(self.trainable)
                grad_norms.append(self.parallel.clip_grad_norm(self.trainable, t.max_grad_norm))
                if train_policy:
                    self.optimizer.step()
                    self.scheduler.step()
                if self.critic is not None:
                    critic_norms.append(self._step_critic())
        # token-weighted metric sums and the loss (already globally normalised) summed over ranks: one collective
        keys = sorted(sums)
        local = torch.stack([sums[k].float() for k in keys]).cpu() if keys else torch.zeros(0)  # the one copy
        totals = self.parallel.sum(torch.cat([tokens_seen.float().view(1), local]))
        sums, tokens_seen = dict(zip(keys, totals[1:])), totals[0]
        out = {k: v / tokens_seen.clamp(min=1) for k, v in sums.items() if k not in _PER_STEP}
        for k in _PER_STEP:  # the mean over the minibatches that trained
            if k in sums:
                out[k] = sums[k] / len(grad_norms)
        out["grad_norm"] = torch.stack([g.detach().float().cpu() for g in grad_norms]).mean()
        if extremes:
            names = sorted(extremes)
            peak = self.parallel.max(torch.stack([extremes[k].float() for k in names]).cpu())
            out.update({k: -v if k.endswith("_min") else v for k, v in zip(names, peak)})
        if self.critic is not None:
            out["critic_grad_norm"] = torch.stack([g.detach().float().cpu() for g in critic_norms]).mean()
            explained_variance(out)
        if a.entropy_target is not None:
            out["entropy_coef"] = torch.tensor(self.entropy_applied)
            self.entropy_coef, self.entropy_applied = adaptive_entropy_coef(
                self.entropy_coef, out["entropy"], target=a.entropy_target, delta=a.entropy_coef_delta,
                coef_min=a.entropy_coef_min, coef_max=a.entropy_coef_max,
            )  # fmt: skip
        return out

    def _loss_options(self, step: int) -> dict[str, Any]:
        """``algorithm.loss_options``, plus clip_cov's random draw seeded from (train.seed, step), so a resumed
        run takes out the same tokens."""
        options: dict[str, Any] = dict(self.a.loss_options)
        if "generator" in loss_options(self.a.loss):
            device = next(self.model.parameters()).device
            seed = self.cfg.train.seed * 7919 + step + 2**32  # apart from the minibatch order's seeds
            options["generator"] = torch.Generator(device=device).manual_seed(seed)
        return options

    def _step_critic(self) -> torch.Tensor:
        """The critic's optimizer step (its gradients summed over ranks and clipped); its gradient norm."""
        params = list(self.critic.parameters())
        self.parallel.reduce_grads(params)
        norm = self.parallel.clip_grad_norm(params, self.cfg.train.max_grad_norm)
        self.critic_optimizer.step()
        return norm

    def _micro_step(
        self, micro: TrainBatch, num_seqs: float, num_tokens: float, options: dict[str, Any], train_policy: bool
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        """Forward, loss, backward for one micro-batch; returns token-weighted metric sums and the IS ratio's
        extremes (0-dim tensors)."""
        a, r = self.a, self.cfg.rollout
        values = None
        if self.critic is not None and self.critic.shared:  # one forward: log-probs and the head's values
            kw = self.logprob_kw
            logp, entropy, values = forward_with_values(
                self.model, self.critic.head_values, micro, r.temperature, entropy_grad=self.entropy_applied > 0,
                share_prompt=kw["share_prompt"], autocast=kw["autocast"], **self.truncation,
            )  # fmt: skip
        else:
            logp, entropy = forward_logprobs(
                self.model, micro, r.temperature, with_entropy=True, entropy_grad=self.entropy_applied > 0,
                **self.logprob_kw, **self.truncation,
            )  # fmt: skip
            if self.critic is not None:
                values = self._critic_values(micro)
        mask = micro.mask.to(logp.device)
        old_logp = logp.detach() if self.on_policy else micro.old_logp.to(logp.device)
        is_weights, is_metrics = self._is_weights(old_logp, micro.sampler_logp.to(logp.device), mask)
        per_token, pl_metrics = policy_loss(
            a.loss, logp, old_logp, micro.advantages.to(logp.device), mask,
            clip_low=a.clip_low, clip_high=a.clip_high, dual_clip=a.dual_clip,
            ratio_level=a.ratio_level, is_weights=is_weights, **options,
        )  # fmt: skip
        kl = None
        if micro.ref_logp is not None:
            kl = kl_penalty(logp, micro.ref_logp.to(logp.device), a.kl_estimator)
            per_token = per_token + a.beta * kl
        if self.entropy_applied > 0:
            per_token = per_token - self.entropy_applied * entropy
        loss = aggregate_loss(
            per_token, mask, a.loss_agg, num_seqs=num_seqs, num_tokens=num_tokens, max_len=r.max_new_tokens
        )
        total = loss if train_policy else torch.zeros((), device=loss.device)
        if values is not None:
            v_loss, v_metrics = value_loss(
                values, micro.old_values.to(values.device), micro.returns.to(values.device), mask,
                clip_range=self.cfg.critic.value_clip,
            )  # fmt: skip
            v_loss = aggregate_loss(v_loss, mask, "token_mean", num_tokens=num_tokens)
            total = total + self.cfg.critic.vf_coef * v_loss
        total.backward()
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
            peaks = {}
            for k, v in is_metrics.items():  # extremes stay extremes; means are token-weighted like the rest
                if k.endswith(("_max", "_min")):  # a minimum travels negated, so every peak reduces by max
                    peak = (-v if k.endswith("_min") else v).float()
                    peaks[k] = torch.where(n_tok > 0, peak, torch.full_like(peak, -1e30))  # empty: no vote
                else:
                    stats[k] = v.float() * n_tok
            if values is not None:
                stats.update(value_sums(v_loss, v_metrics, values, micro.returns.to(values.device), mask))
        return stats, peaks

    def _is_weights(
        self, old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The off-policy correction's weights (``tis_cap`` or ``is_correction``) of pi_old against the
        sampler, and its metrics; (None, {}) when neither is set."""
        a = self.a
        if a.tis_cap is not None:
            return truncated_is_weights(old_logp, sampler_logp, a.tis_cap), {}
        if a.is_correction is not None:
            return is_correction(a.is_correction, old_logp, sampler_logp, mask, **self.is_bounds)
        return None, {}

    # ------------------------------------------------------------------------------------------- its state
    def state_dict(self) -> dict[str, Any]:
        """What the learner adds to a checkpoint: the adaptive entropy coefficient, the critic and its
        optimizer (empty for a run that has neither)."""
        state: dict[str, Any] = {}
        if self.a.entropy_target is not None:
            state["entropy_coef"] = (self.entropy_coef, self.entropy_applied)
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
            state["critic_optimizer"] = self.critic_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` from a checkpoint."""
        if self.a.entropy_target is not None and "entropy_coef" in state:
            self.entropy_coef, self.entropy_applied = state["entropy_coef"]
        if self.critic is not None:
            if "critic" not in state:
                raise ValueError(
                    "the checkpoint has no critic (written by a run without algorithm.advantage=gae): resume "
                    "with the run's own algorithm settings, or start a new output_dir"
                )
            try:
                self.critic.load_state_dict(state["critic"])
            except RuntimeError as e:  # another critic.model than the run was written with
                raise ValueError(
                    f"the checkpoint's critic does not fit critic.model={self.cfg.critic.model!r} (was the run "
                    f"started with another critic.model?): {str(e).splitlines()[0]}"
                ) from None
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])

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
