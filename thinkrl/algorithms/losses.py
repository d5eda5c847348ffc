"""Policy-gradient surrogate losses, per token, before aggregation.

Every loss in ``POLICY_LOSSES`` has the signature

    fn(logp (N,T), old_logp (N,T), advantages (N,) or (N,T), mask (N,T), *, clip_low, clip_high, dual_clip,
       ratio_level, is_weights) -> (per_token_loss (N,T), metrics: dict[str, 0-dim tensor])

``per_token_loss`` is 0 on padded positions (``mask == 0``); reducing it to a scalar is
``aggregation.aggregate_loss``'s job (token-mean vs seq-mean is a separate setting, as in verl).
Metrics are detached 0-dim tensors: no ``.item()`` here, so logging costs one host sync per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._registry import lookup, masked_mean

PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

# exp(20) ~ 4.9e8: far past any clip range, and far from float32 overflow (exp(88)); verl clamps the same.
_LOG_RATIO_CLAMP = 20.0


def importance_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, ratio_level: str = "token"
) -> torch.Tensor:
    """Importance ratio pi_theta / pi_old per token, (N, T) -> (N, T).

    ``"token"`` (PPO/GRPO): ``r_t = exp(logp_t - old_logp_t)``.
    ``"sequence"`` (GSPO, arXiv 2507.18071 eq. 7 and the GSPO-token variant eq. 13):
    ``s_i = exp(mean_t over the masked tokens of (logp - old_logp))`` (length-normalised sequence ratio) and
    ``s_{i,t} = sg(s_i) * exp(logp_t - sg(logp_t))``: its value is ``s_i`` on every token, its gradient
    w.r.t. ``logp_t`` is ``s_i``. Averaged over the sequence's tokens this is exactly the gradient of
    ``s_i`` itself (``s_i * mean_t grad logp_t``), while clipping acts on the whole sequence at once.
    Log-ratios are clamped to [-20, 20] before ``exp``.

    >>> lp, old, m = torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1, 1]])
    >>> importance_ratio(lp, old, m, "sequence")  # exp((0 - 1) / 2) on both tokens
    tensor([[0.6065, 0.6065]])
    """
    log_ratio = logp - old_logp  # (N, T)
    if ratio_level == "token":
        return torch.exp(log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    if ratio_level == "sequence":
        m = mask.bool()
        lengths = m.sum(-1).clamp(min=1)  # (N,)  empty rows: ratio 1, contribute nothing anyway
        seq_log_ratio = torch.where(m, log_ratio, torch.zeros_like(log_ratio)).sum(-1) / lengths  # (N,)
        seq_log_ratio = seq_log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP).detach()
        return torch.exp(seq_log_ratio.unsqueeze(-1) + logp - logp.detach())  # (N, T)
    raise ValueError(f"unknown ratio_level {ratio_level!r}; valid names: ['sequence', 'token']")


def _check_shapes(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> None:
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp, old_logp and mask must all be (N, T); got {tuple(logp.shape)}, {tuple(old_logp.shape)}, "
            f"{tuple(mask.shape)}"
        )
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages must be (N,) or (N, T) with N={logp.shape[0]}; got {tuple(advantages.shape)}"
        )


def _token_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1) so it broadcasts over tokens; (N, T) unchanged. Always detached."""
    adv = advantages.detach()
    return adv.unsqueeze(-1) if adv.dim() == 1 else adv


@torch.no_grad()
def _ratio_metrics(
    ratio: torch.Tensor, logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """ratio_mean / ratio_max over masked tokens and ppo_kl = masked mean of (old_logp - logp)."""
    m = mask.bool()
    r = ratio.float()
    ratio_max = torch.where(m, r, torch.zeros_like(r)).amax() if r.numel() else r.new_zeros(())
    return {
        "ratio_mean": masked_mean(r, m),
        "ratio_max": ratio_max,
        "ppo_kl": masked_mean((old_logp - logp).float(), m),
    }


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
    _check_shapes(logp, old_logp, advantages, mask)
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(
            f"dual_clip must be > 1 (it caps the ratio of negative-advantage tokens), got {dual_clip}"
        )
    m = mask.bool()
    adv = _token_advantages(advantages)  # (N, 1) or (N, T)
    ratio = importance_ratio(logp, old_logp, mask, ratio_level)  # (N, T)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(pg1, pg2)  # -min(rA, clip(r)A): pessimistic bound
    if dual_clip is not None:
        pg3 = -adv * dual_clip
        dual_active = (adv < 0) & (loss > pg3)
        loss = torch.where(adv < 0, torch.minimum(loss, pg3), loss)
    if is_weights is not None:
        loss = loss * is_weights.detach()
    loss = torch.where(m, loss, torch.zeros_like(loss))

    with torch.no_grad():
        r = ratio.detach()
        low = (r < 1.0 - clip_low) & (adv < 0)
        high = (r > 1.0 + clip_high) & (adv > 0)
        metrics = {
            "clip_fraction": masked_mean((low | high).float(), m),
            "low_clip_fraction": masked_mean(low.float(), m),
            "high_clip_fraction": masked_mean(high.float(), m),
            **_ratio_metrics(r, logp.detach(), old_logp, m),
        }
        if dual_clip is not None:
            metrics["dual_clip_fraction"] = masked_mean(dual_active.float(), m)
    return loss, metrics


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
    REINFORCE's ``-A grad logp``. ``clip_low``, ``clip_high`` and ``dual_clip`` are accepted (one signature
    per registry) and ignored; the clip-fraction metrics are reported as 0 so logs have the same keys.

    >>> lp = torch.log(torch.tensor([[1.5, 0.5]]))
    >>> reinforce_loss(lp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2))[0]
    tensor([[-3., -1.]])
    """
    _check_shapes(logp, old_logp, advantages, mask)
    m = mask.bool()
    ratio = importance_ratio(logp, old_logp, mask, ratio_level)  # (N, T)
    loss = -_token_advantages(advantages) * ratio
    if is_weights is not None:
        loss = loss * is_weights.detach()
    loss = torch.where(m, loss, torch.zeros_like(loss))
    zero = torch.zeros((), device=logp.device)
    metrics = {
        "clip_fraction": zero,
        "low_clip_fraction": zero,
        "high_clip_fraction": zero,
        **_ratio_metrics(ratio.detach(), logp.detach(), old_logp, m),
    }
    return loss, metrics


POLICY_LOSSES: dict[str, PolicyLossFn] = {"ppo_clip": ppo_clip_loss, "reinforce": reinforce_loss}


def get_policy_loss_fn(name: str) -> PolicyLossFn:
    """The loss registered as ``name``; ``ValueError`` listing ``POLICY_LOSSES`` otherwise."""
    return lookup(POLICY_LOSSES, name, "policy loss")


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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token policy loss (N, T) and detached 0-dim metrics for the loss registered as ``name``.

    logp: (N, T) current policy token log-probs (with grad); old_logp: (N, T) behaviour policy (no grad);
    advantages: (N,) one per completion; mask: (N, T) 1 on completion tokens; is_weights: (N, T) or None.

    >>> loss, metrics = policy_loss("ppo_clip", torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1.0]),
    ...                             torch.tensor([[1, 0]]))
    >>> loss, sorted(metrics)[:3]
    (tensor([[-1.,  0.]]), ['clip_fraction', 'high_clip_fraction', 'low_clip_fraction'])
    """
    return get_policy_loss_fn(name)(
        logp,
        old_logp,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        ratio_level=ratio_level,
        is_weights=is_weights,
    )
