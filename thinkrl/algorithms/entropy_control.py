"""Entropy control: the covariance-based losses Clip-Cov and KL-Cov, and an adaptive entropy coefficient.

Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models" (arXiv
2505.22617) show that under policy gradient the entropy change of a step is driven by the covariance between
a token's log-probability and its advantage: confident tokens with positive advantage collapse entropy.
Both losses pick the few tokens with the largest centred product ``(A - mean A)(logp - mean logp)`` and
restrain only those: Clip-Cov takes them out of the gradient, KL-Cov adds a penalty on their ratio. The
statistics are over the masked tokens of the batch the loss is called on (as verl and the authors' code,
which call it per micro-batch).

``adaptive_entropy_coef`` is Skywork-OR1's controller (arXiv 2505.22312 §3.2.5): it raises the entropy-bonus
coefficient while the entropy is below a target and lowers it otherwise.
"""

from __future__ import annotations

import math

import torch

from ._registry import masked_mean
from .ratios import (
    check_clip_range,
    check_loss_inputs,
    clip_metrics,
    importance_ratio,
    masked_loss,
    ppo_clip_metrics,
    ratio_metrics,
    refuse,
    token_advantages,
)


def _centred_product(adv: torch.Tensor, logp: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(A - mean A)(logp - mean logp) per token (N, T), means over the masked tokens; detached."""
    a = adv.detach().float()
    lp = logp.detach().float()
    return (a - masked_mean(a, m)) * (lp - masked_mean(lp, m))


def _take_count(fraction: float, eligible: torch.Tensor) -> torch.Tensor:
    """``max(floor(fraction * tokens), 1)`` as a 0-dim tensor, in float64 so it rounds as Python's ``int``."""
    return torch.floor(eligible.sum().double() * fraction).clamp(min=1)


def _first_by_rank(keys: torch.Tensor, eligible: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(N, T) bool: the ``count`` eligible entries with the smallest ``keys`` (ties: lower flat index first).

    A rank comparison instead of ``topk(k)`` keeps ``count`` a tensor: no host sync.
    """
    flat = torch.where(eligible, keys, torch.full_like(keys, math.inf)).flatten()
    order = flat.argsort(stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return (rank.view_as(keys) < count) & eligible


def clip_cov_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    ratio_level: str = "token",
    is_weights: torch.Tensor | None = None,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clip-Cov (arXiv 2505.22617 §4; verl ``loss_mode=clip_cov``): PPO's clipped loss, except that
    ``max(floor(clip_cov_ratio * tokens), 1)`` tokens, drawn at random among the masked tokens not already
    clipped by PPO whose centred product ``(A - mean A)(logp - mean logp)`` lies strictly inside
    ``(clip_cov_lb, clip_cov_ub)``, get loss 0 (no gradient).

    Defaults are the paper's and verl's (2e-4, 1, 5). ``generator`` draws the random choice: pass one seeded
    per step for a reproducible run (the sources use the global RNG, which is what ``None`` does). Token
    ratios only, no dual clip. Shapes as ``ppo_clip_loss``; metrics as ``ppo_clip_loss`` plus
    ``cov_selected_fraction`` (tokens taken out / masked tokens; verl reports it as ``pg_clipfrac``).

    >>> adv, mask = torch.tensor([2.0, -2.0]), torch.ones(2, 2)
    >>> lp = torch.tensor([[0.0, 0.0], [-2.0, -2.0]])  # on-policy; products (2)(1) = 2 on row 0, (-2)(-1) = 2
    >>> loss, m = clip_cov_loss(lp, lp, adv, mask, clip_cov_ratio=0.5)  # floor(0.5 * 4) = 2 of the 4
    >>> int((loss == 0).sum()), m["cov_selected_fraction"]
    (2, tensor(0.5000))
    """
    check_loss_inputs(logp, old_logp, advantages, mask)
    check_clip_range(clip_low, clip_high)
    refuse("clip_cov", dual_clip=dual_clip, ratio_level=ratio_level)
    if not 0 < clip_cov_ratio <= 1:
        raise ValueError(f"clip_cov_ratio must be in (0, 1], got {clip_cov_ratio}")
    if clip_cov_lb >= clip_cov_ub:
        raise ValueError(f"clip_cov_lb must be < clip_cov_ub, got {clip_cov_lb}, {clip_cov_ub}")
    m = mask.bool()
    adv = token_advantages(advantages).expand_as(logp)  # (N, T) detached
    ratio = importance_ratio(logp, old_logp, mask)  # (N, T)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    with torch.no_grad():
        cov = _centred_product(adv, logp, m)  # (N, T)
        eligible = m & ~(pg2 > pg1) & (cov > clip_cov_lb) & (cov < clip_cov_ub)
        draw = torch.rand(logp.shape, generator=generator, device=logp.device)
        selected = _first_by_rank(draw, eligible, _take_count(clip_cov_ratio, m))
    loss = torch.where(selected, torch.zeros_like(pg1), torch.maximum(pg1, pg2))
    loss = masked_loss(loss, mask, is_weights)

    metrics = ppo_clip_metrics(ratio, adv, logp, old_logp, mask, clip_low, clip_high)
    metrics["cov_selected_fraction"] = masked_mean(selected.float(), m)
    return loss, metrics


def kl_cov_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    ratio_level: str = "token",
    is_weights: torch.Tensor | None = None,
    kl_cov_ratio: float = 2e-4,
    kl_cov_coef: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL-Cov (arXiv 2505.22617 §4; verl ``loss_mode=kl_cov``): the unclipped ``-A r`` on every token, plus
    ``kl_cov_coef * |logp - old_logp|`` on the ``max(floor(kl_cov_ratio * tokens), 1)`` masked tokens with the
    largest centred product ``(A - mean A)(logp - mean logp)``.

    There is no PPO clip (as the source): the penalty alone holds the high-covariance tokens near the old
    policy. Defaults: ``kl_cov_ratio = 2e-4`` (verl's default; the authors' 32B run; their 7B run uses
    2e-3) and ``kl_cov_coef = 1`` (the authors' scripts; verl's config default ``ppo_kl_coef`` is 0.1).
    Token ratios only, no dual clip; ``clip_low``/``clip_high`` are not used. Metrics: the shared keys (clip
    fractions 0) and ``cov_selected_fraction``.

    >>> adv, mask = torch.tensor([2.0, -2.0]), torch.ones(2, 1)
    >>> lp, old = torch.log(torch.tensor([[2.0], [0.5]])), torch.zeros(2, 1)  # ratios 2 and 0.5
    >>> loss, m = kl_cov_loss(lp, old, adv, mask, kl_cov_ratio=0.5)  # 1 token: products (2)(0.69) on both,
    >>> loss  # ties go to the first: -2 * 2 + |ln 2| = -3.3069 ; -(-2) * 0.5 = 1
    tensor([[-3.3069],
            [ 1.0000]])
    """
    check_loss_inputs(logp, old_logp, advantages, mask)
    refuse("kl_cov", dual_clip=dual_clip, ratio_level=ratio_level)
    if not 0 < kl_cov_ratio <= 1:
        raise ValueError(f"kl_cov_ratio must be in (0, 1], got {kl_cov_ratio}")
    if kl_cov_coef < 0:
        raise ValueError(f"kl_cov_coef must be >= 0, got {kl_cov_coef}")
    m = mask.bool()
    adv = token_advantages(advantages).expand_as(logp)  # (N, T) detached
    ratio = importance_ratio(logp, old_logp, mask)  # (N, T)
    log_ratio = torch.where(m, logp - old_logp, torch.zeros_like(logp))
    with torch.no_grad():
        cov = _centred_product(adv, logp, m)  # (N, T)
        selected = _first_by_rank(-cov, m, _take_count(kl_cov_ratio, m))  # the largest products
    loss = -adv * ratio + torch.where(selected, kl_cov_coef * log_ratio.abs(), torch.zeros_like(logp))
    loss = masked_loss(loss, mask, is_weights)

    zero = torch.zeros((), device=logp.device)
    metrics = {
        **clip_metrics(zero.bool().expand_as(m), zero.bool().expand_as(m), mask),
        **ratio_metrics(ratio, logp, old_logp, mask),
        "cov_selected_fraction": masked_mean(selected.float(), m),
    }
    return loss, metrics


def adaptive_entropy_coef(
    coef: float,
    entropy: float | torch.Tensor,
    *,
    target: float = 0.2,
    delta: float = 1e-4,
    coef_min: float = 0.0,
    coef_max: float = 0.005,
) -> tuple[float, float]:
    """One step of Skywork-OR1's adaptive entropy control (arXiv 2505.22312 §3.2.5): returns
    ``(next_coef, next_applied_coef)`` from the current coefficient and this step's mean token entropy.

    ``next_coef = clip(coef + delta if entropy < target else coef - delta, coef_min, coef_max)``; the bonus
    applied at the next step is ``next_coef`` while the entropy is below the target and 0 otherwise, so the
    bonus only acts when entropy has collapsed. The learner keeps ``coef`` (a float) in its state, calls
    this once per step after the step's metrics are on the host, and uses ``next_applied_coef`` as the
    entropy coefficient of the next step; start from ``coef = 0``. Defaults are the Skywork-OR1 scripts'
    (target 0.2 nats, delta 1e-4, coef in [0, 0.005]); TRL ``use_adaptive_entropy`` uses the same rule
    (with ``<=``) and delta 0.005, coef_max 1.0.

    >>> adaptive_entropy_coef(0.0, 0.1, target=0.2, delta=0.001)  # below target: raise, apply
    (0.001, 0.001)
    >>> adaptive_entropy_coef(0.001, 0.5, target=0.2, delta=0.001)  # above target: lower, do not apply
    (0.0, 0.0)
    """
    e = float(entropy)
    if not math.isfinite(e):
        raise ValueError(f"entropy must be finite, got {e}: the policy's log-probs have diverged")
    if delta < 0 or not 0 <= coef_min <= coef_max:
        raise ValueError(
            f"need delta >= 0 and 0 <= coef_min <= coef_max; got delta={delta}, coef_min={coef_min}, "
            f"coef_max={coef_max}"
        )
    below = e < target
    nxt = min(max(coef + delta if below else coef - delta, coef_min), coef_max)
    return nxt, (nxt if below else 0.0)
