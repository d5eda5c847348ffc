"""Policy-gradient surrogate losses, per token, before aggregation.

Every loss in ``POLICY_LOSSES`` has the signature

    fn(logp (N,T), old_logp (N,T), advantages (N,) or (N,T), mask (N,T), *, clip_low, clip_high, dual_clip,
       ratio_level, is_weights, **options) -> (per_token_loss (N,T), metrics: dict[str, 0-dim tensor])

``options`` are the loss's own hyper-parameters (``loss_options(name)`` lists them, with the source's
defaults); the shared keywords are the same for all. ``per_token_loss`` is 0 on padded positions
(``mask == 0``); reducing it to a scalar is ``aggregation.aggregate_loss``'s job (token-mean vs seq-mean is a
separate setting, as in verl). Metrics are detached 0-dim tensors: no ``.item()`` here, so logging costs one
host sync per step. Every loss reports ``clip_fraction``, ``low_clip_fraction``, ``high_clip_fraction``,
``ratio_mean``, ``ratio_max`` and ``ppo_kl`` (0 where a loss has no such clip), so logs keep their keys.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from ._registry import lookup, masked_mean
from .entropy_control import clip_cov_loss, kl_cov_loss
from .ratios import (
    LOG_RATIO_CLAMP,
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

PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

_SHARED = ("clip_low", "clip_high", "dual_clip", "ratio_level", "is_weights")


def ppo_clip_loss(
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate as in GRPO/DAPO/GSPO: ``-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)``.

    ``clip_high > clip_low`` is DAPO's clip-higher (0.2 / 0.28). ``dual_clip = c > 1`` (Ye et al. 2020,
    arXiv 1912.09729; verl ``clip_ratio_c``) bounds the loss of negative-advantage tokens whose ratio
    exploded: ``loss = min(loss, -c A)`` where ``A < 0`` (written exactly as verl's
    ``torch.where(A < 0, torch.min(-A c, max(pg1, pg2)), max(pg1, pg2))``). ``is_weights`` (N, T)
    multiplies the per-token loss (truncated importance sampling, detached).

    Shapes: logp, old_logp, mask (N, T); advantages (N,) (or (N, T)). Returns ((N, T), metrics) with
    metrics ``clip_fraction`` (= low + high), ``low_clip_fraction`` (r < 1 - clip_low and A < 0),
    ``high_clip_fraction`` (r > 1 + clip_high and A > 0), ``ratio_mean``, ``ratio_max``, ``ppo_kl``, and
    ``dual_clip_fraction`` when ``dual_clip`` is set; all token-weighted masked means.

    >>> lp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5 against old_logp = 0
    >>> loss, m = ppo_clip_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    >>> loss  # -min(1.5, 1.2) = -1.2 ; -min(0.5, 0.8) = -0.5
    tensor([[-1.2000, -0.5000]])
    >>> m["clip_fraction"]
    tensor(0.5000)
    """
    check_loss_inputs(logp, old_logp, advantages, mask)
    check_clip_range(clip_low, clip_high)
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(
            f"dual_clip must be > 1 (it caps the ratio of negative-advantage tokens), got {dual_clip}"
        )
    adv = token_advantages(advantages)  # (N, 1) or (N, T)
    ratio = importance_ratio(logp, old_logp, mask, ratio_level)  # (N, T)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(pg1, pg2)  # -min(rA, clip(r)A): pessimistic bound
    if dual_clip is not None:
        pg3 = -adv * dual_clip
        dual_active = (adv < 0) & (loss > pg3)
        loss = torch.where(adv < 0, torch.minimum(loss, pg3), loss)
    loss = masked_loss(loss, mask, is_weights)

    metrics = ppo_clip_metrics(ratio, adv, logp, old_logp, mask, clip_low, clip_high)
    if dual_clip is not None:
        metrics["dual_clip_fraction"] = masked_mean(dual_active.float().detach(), mask.bool())
    return loss, metrics


def _no_clip_metrics(ratio: torch.Tensor, logp, old_logp, mask) -> dict[str, torch.Tensor]:
    """The shared metric keys for a loss without a hard clip: clip fractions are 0."""
    zero = torch.zeros((), device=logp.device)
    return {
        "clip_fraction": zero,
        "low_clip_fraction": zero,
        "high_clip_fraction": zero,
        **ratio_metrics(ratio, logp, old_logp, mask),
    }


def reinforce_loss(
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Unclipped policy gradient: ``-A * r``. On-policy (``old_logp = logp.detach()``, r = 1) its gradient is
    REINFORCE's ``-A grad logp``. ``clip_low`` and ``clip_high`` are accepted (one signature per registry)
    and ignored; ``dual_clip`` raises (it would silently do nothing). The clip-fraction metrics are
    reported as 0 so logs have the same keys.

    >>> lp = torch.log(torch.tensor([[1.5, 0.5]]))
    >>> reinforce_loss(lp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2))[0]
    tensor([[-3., -1.]])
    """
    check_loss_inputs(logp, old_logp, advantages, mask)
    refuse("reinforce", dual_clip=dual_clip)
    ratio = importance_ratio(logp, old_logp, mask, ratio_level)  # (N, T)
    loss = masked_loss(-token_advantages(advantages) * ratio, mask, is_weights)
    return loss, _no_clip_metrics(ratio, logp, old_logp, mask)


def cispo_loss(
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585 eq. 4-5): ``-sg(clip(r, 1 - clip_low, 1 + clip_high)) * A * logp``.

    PPO's clip zeroes the gradient of a clipped token; CISPO clips the (detached) importance weight instead,
    so every token keeps a policy gradient ``w A grad logp`` with ``w <= 1 + clip_high``. Rare tokens whose
    ratio spikes (the "fork" tokens of long reasoning) still get updated. MiniMax-M1 sets no lower bound
    (``clip_low >= 1``) and tunes the upper one; TRL's ``loss_type="cispo"`` caps at ``epsilon_high``
    (ScaleRL recommends 5.0), i.e. ``clip_low=1, clip_high=epsilon_high - 1``; verl's ``cispo`` uses
    ``clip_ratio_low/high`` exactly as here. With ``ratio_level="sequence"`` the weight is GSPO's ``s_i``.
    The source aggregates per token (``token_mean``).

    Shapes as ``ppo_clip_loss``. Metrics: ``low_clip_fraction`` (w was raised to 1 - clip_low),
    ``high_clip_fraction`` (w was capped), whatever the advantage's sign (verl's ``pg_clipfrac``; TRL's
    ``cispo_clip_ratio`` counts capped tokens with A > 0 only), plus the ratio statistics.

    >>> lp = torch.log(torch.tensor([[2.0, 0.5]])).requires_grad_(True)  # ratios 2 and 0.5
    >>> loss, m = cispo_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    >>> loss.sum().backward()
    >>> lp.grad  # -sg(w) A with w = clip(2, 0.8, 1.2) = 1.2 and clip(0.5, 0.8, 1.2) = 0.8: never 0
    tensor([[-1.2000, -0.8000]])
    """
    check_loss_inputs(logp, old_logp, advantages, mask)
    check_clip_range(clip_low, clip_high)
    refuse("cispo", dual_clip=dual_clip)
    adv = token_advantages(advantages)  # (N, 1) or (N, T)
    ratio = importance_ratio(logp, old_logp, mask, ratio_level).detach()  # (N, T)
    weight = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (N, T) detached
    loss = masked_loss(-weight * adv * logp, mask, is_weights)
    metrics = {
        **clip_metrics(ratio < 1.0 - clip_low, ratio > 1.0 + clip_high, mask),
        **ratio_metrics(ratio, logp, old_logp, mask),
    }
    return loss, metrics


def sapo_loss(
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
    sapo_tau_pos: float = 1.0,
    sapo_tau_neg: float = 1.05,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAPO (Soft Adaptive Policy Optimization, Qwen, arXiv 2511.20347): ``-f(r) A`` with the soft gate
    ``f(r) = sigmoid(tau (r - 1)) * 4 / tau``, ``tau = sapo_tau_pos`` where ``A > 0`` else ``sapo_tau_neg``.

    Instead of PPO's hard cut, the gradient weight ``f'(r) r = 4 sigmoid(z) (1 - sigmoid(z)) r``
    (z = tau (r - 1)) is 1 on-policy and goes smoothly to 0 as the ratio moves far from 1, faster for a
    larger tau. ``sapo_tau_neg > sapo_tau_pos`` damps negative-advantage tokens harder, which the paper
    finds stabilises training (defaults 1.0 / 1.05 as TRL ``sapo_temperature_pos/neg`` and verl
    ``tau_pos/tau_neg``). The source aggregates per sequence (``seq_mean_token_mean``). ``clip_low`` and
    ``clip_high`` are not used.

    Shapes as ``ppo_clip_loss``. Metrics: the clip fractions are 0 (no hard clip, as verl reports);
    ``gate_weight_mean`` is the masked mean of the gradient weight ``f'(r) r`` (1 when on-policy).

    >>> loss, m = sapo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    >>> loss, m["gate_weight_mean"]  # r = 1: f = sigmoid(0) * 4 / 1 = 2; weight 4 * 0.25 * 1 = 1
    (tensor([[-2., -2.]]), tensor(1.))
    """
    check_loss_inputs(logp, old_logp, advantages, mask)
    refuse("sapo", dual_clip=dual_clip)
    if sapo_tau_pos <= 0 or sapo_tau_neg <= 0:
        raise ValueError(f"sapo_tau_pos and sapo_tau_neg must be > 0, got {sapo_tau_pos}, {sapo_tau_neg}")
    adv = token_advantages(advantages)  # (N, 1) or (N, T)
    ratio = importance_ratio(logp, old_logp, mask, ratio_level)  # (N, T)
    pos = torch.tensor(sapo_tau_pos, dtype=ratio.dtype, device=ratio.device)
    neg = torch.tensor(sapo_tau_neg, dtype=ratio.dtype, device=ratio.device)
    tau = torch.where(adv > 0, pos, neg)  # (N, 1) or (N, T)
    z = torch.sigmoid(tau * (ratio - 1.0))  # (N, T)
    loss = masked_loss(-z * (4.0 / tau) * adv, mask, is_weights)
    metrics = _no_clip_metrics(ratio, logp, old_logp, mask)
    with torch.no_grad():
        metrics["gate_weight_mean"] = masked_mean((4.0 * z * (1.0 - z) * ratio).detach().float(), mask.bool())
    return loss, metrics


def gmpo_loss(
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GMPO (Geometric-Mean Policy Optimization, arXiv 2507.20673 eq. 4): per completion,
    ``-A * (prod_t |min(r_t A, clip(r_t, e^-clip_low, e^clip_high) A)|)^(1/|o|) * sgn(A) / |A|``, i.e.
    ``-A * exp(mean_t sgn(A) min(sgn(A) log r_t, sgn(A) clamp(log r_t, -clip_low, clip_high)))``.

    The geometric mean of the token ratios is less sensitive to one outlier token than GRPO's arithmetic
    mean, so the paper clips wider, in log space: ``clip_low = clip_high = 0.4`` (its default range
    (e^-0.4, e^0.4)); verl ``loss_mode=geo_mean`` takes ``clip_ratio_low/high`` the same way. The result is
    one loss per completion; it is returned on every masked token of that completion, so aggregate with
    ``seq_mean_token_mean`` to get the paper's ``1/G sum_i`` (verl does the same mean over sequences).
    ``advantages`` (N, T) are averaged over each row's tokens first. ``is_weights`` (N, T) enter as their
    per-completion geometric mean (as verl). Token ratios only (``ratio_level="token"``), no dual clip.

    Metrics: ``high_clip_fraction`` (log r > clip_high, A > 0), ``low_clip_fraction`` (log r < -clip_low,
    A < 0): the tokens whose ratio the pessimistic min really replaced (verl counts every token outside the
    band), plus the token ratio statistics.

    >>> lp = torch.log(torch.tensor([[4.0, 1.0]])).requires_grad_(True)  # log r = ln 4 (clipped to 0.2), 0
    >>> loss, m = gmpo_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    >>> loss.detach()  # -exp((0.2 + 0) / 2) = -exp(0.1) on both tokens of the completion
    tensor([[-1.1052, -1.1052]])
    >>> loss.sum().backward()  # summed over 2 tokens: d/dlogp_1 = 2 * -exp(0.1) / 2; the clipped token: 0
    >>> lp.grad
    tensor([[ 0.0000, -1.1052]])
    """
    check_loss_inputs(logp, old_logp, advantages, mask)
    check_clip_range(clip_low, clip_high)
    refuse("gmpo", dual_clip=dual_clip, ratio_level=ratio_level)
    m = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    lengths = m.sum(-1).clamp(min=1)  # (N,)
    adv = advantages.detach()
    seq_adv = torch.where(m, adv, zero).sum(-1) / lengths if adv.dim() == 2 else adv  # (N,)
    sign = torch.sign(seq_adv).unsqueeze(-1)  # (N, 1)
    log_ratio = torch.where(m, logp - old_logp, zero)  # (N, T)
    clipped = log_ratio.clamp(-clip_low, clip_high)
    pessimistic = sign * torch.minimum(sign * log_ratio, sign * clipped)  # (N, T)
    seq_log_ratio = pessimistic.sum(-1) / lengths  # (N,) log of the geometric mean
    seq_loss = -seq_adv * torch.exp(seq_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # (N,)
    if is_weights is not None:
        log_w = torch.where(m, torch.log(is_weights.detach() + 1e-10), zero)
        seq_loss = seq_loss * torch.exp(log_w.sum(-1) / lengths)
    loss = masked_loss(seq_loss.unsqueeze(-1).expand_as(logp), mask, None)

    with torch.no_grad():
        lr = log_ratio.detach()
        a = seq_adv.unsqueeze(-1)
        metrics = {
            **clip_metrics((lr < -clip_low) & (a < 0), (lr > clip_high) & (a > 0), mask),
            **ratio_metrics(torch.exp(lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)), logp, old_logp, mask),
        }
    return loss, metrics


POLICY_LOSSES: dict[str, PolicyLossFn] = {
    "ppo_clip": ppo_clip_loss,
    "reinforce": reinforce_loss,
    "cispo": cispo_loss,
    "sapo": sapo_loss,
    "gmpo": gmpo_loss,
    "clip_cov": clip_cov_loss,
    "kl_cov": kl_cov_loss,
}


def get_policy_loss_fn(name: str) -> PolicyLossFn:
    """The loss registered as ``name``; ``ValueError`` listing ``POLICY_LOSSES`` otherwise."""
    return lookup(POLICY_LOSSES, name, "policy loss")


@functools.cache
def _options_of(fn: PolicyLossFn) -> dict[str, object]:
    params = inspect.signature(fn).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _SHARED
    }


def loss_options(name: str) -> dict[str, object]:
    """The loss's own keyword options beyond the shared signature, with their (source) defaults.

    >>> loss_options("sapo")
    {'sapo_tau_pos': 1.0, 'sapo_tau_neg': 1.05}
    >>> loss_options("ppo_clip")
    {}
    """
    return dict(_options_of(get_policy_loss_fn(name)))


def policy_loss(
    name: str,
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
    **options: object,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token policy loss (N, T) and detached 0-dim metrics for the loss registered as ``name``.

    logp: (N, T) current policy token log-probs (with grad); old_logp: (N, T) behaviour policy (no grad);
    advantages: (N,) one per completion; mask: (N, T) 1 on completion tokens; is_weights: (N, T) or None.
    ``options``: the loss's own hyper-parameters (``loss_options(name)``); an option the loss does not
    take raises ``ValueError`` naming the ones it does.

    >>> loss, metrics = policy_loss("ppo_clip", torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1.0]),
    ...                             torch.tensor([[1, 0]]))
    >>> loss, sorted(metrics)[:3]
    (tensor([[-1.,  0.]]), ['clip_fraction', 'high_clip_fraction', 'low_clip_fraction'])
    >>> policy_loss("cispo", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), tau=1.0)
    Traceback (most recent call last):
    ...
    ValueError: policy loss 'cispo' takes no option(s) ['tau']; its options: none
    """
    fn = get_policy_loss_fn(name)
    valid = _options_of(fn)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"policy loss {name!r} takes no option(s) {unknown}; its options: {sorted(valid) or 'none'}"
        )
    return fn(
        logp,
        old_logp,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        ratio_level=ratio_level,
        is_weights=is_weights,
        **options,
    )
