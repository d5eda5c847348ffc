"""Off-policy corrections: importance weights between the trainer's and the sampler's log-probs.

The sampler (an inference engine with its own kernels, or a generator a few policy versions behind the
learner in asynchronous RL) and the trainer give the same tokens different probabilities. Weighting each
token's loss by ``rho = pi_trainer / pi_sampler`` corrects for it; the variants trade bias for variance:

* truncation (TIS, Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
  training"): ``min(rho, high)`` keeps every token but bounds the weight;
* masking (MIS; IcePop, Ling team, "Every Step Evolves", arXiv 2510.18855): ``rho`` inside ``[low, high]``,
  0 outside, so tokens whose probabilities disagree too much contribute nothing;
* per sequence: one weight per completion from the product of its token ratios ``exp(sum_t log rho_t)``
  (unbiased for the sequence, higher variance; TRL ``sequence_*``, verl ``rollout_is=sequence``).

Registry ``IS_CORRECTIONS``; every entry is
``fn(trainer_logp (N,T), sampler_logp (N,T), mask (N,T), *, low, high) -> (weights (N,T), metrics)``,
weights detached and 0 on padding, passed to ``policy_loss(..., is_weights=weights)``. Metric keys
(``is_`` prefix, so they do not collide with the policy loss's): ``is_ratio_mean``, ``is_ratio_min``,
``is_ratio_max`` (the raw ratio each token sees, before truncation/masking, token-weighted),
``is_truncated_fraction`` or ``is_masked_fraction``, ``is_mismatch_k3`` (``E[rho - log rho - 1]``,
KL(sampler || trainer) estimated on the sampled tokens) and ``is_logprob_abs_diff`` (mean
``|trainer_logp - sampler_logp|``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._registry import lookup, masked_mean
from .ratios import LOG_RATIO_CLAMP

ISCorrectionFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def truncated_is_weights(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Detached ``min(exp(trainer_logp - sampler_logp), cap)`` (N, T) from two (N, T) log-prob tensors.

    The sampler (e.g. vLLM, bf16 kernels) and the trainer compute slightly different probabilities for the
    same policy; weighting each token's loss by pi_trainer / pi_sampler corrects the off-policy gap, and
    truncating at ``cap`` bounds the variance (TIS, Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"; TRL ``vllm_importance_sampling_cap``, default 2).
    ``is_correction("token_tis", ...)`` is the same weight with a mask and metrics.

    >>> trainer, sampler = torch.log(torch.tensor([[0.6, 0.9]])), torch.log(torch.tensor([[0.3, 0.9]]))
    >>> truncated_is_weights(trainer, sampler, cap=1.5)  # min(0.6 / 0.3, 1.5), min(1, 1.5)
    tensor([[1.5000, 1.0000]])
    """
    if trainer_logp.shape != sampler_logp.shape:
        raise ValueError(f"shapes differ: {tuple(trainer_logp.shape)} vs {tuple(sampler_logp.shape)}")
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    log_w = (trainer_logp.detach() - sampler_logp.detach()).clamp(max=LOG_RATIO_CLAMP)  # exp stays finite
    return torch.exp(log_w).clamp(max=cap)


def _log_ratios(
    trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, level: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token log-ratios (N, T), 0 on padding, and the log-ratio each token's weight uses (its own or the row
    sum)."""
    if (
        trainer_logp.dim() != 2
        or sampler_logp.shape != trainer_logp.shape
        or mask.shape != trainer_logp.shape
    ):
        raise ValueError(
            f"trainer_logp, sampler_logp and mask must all be (N, T); got {tuple(trainer_logp.shape)}, "
            f"{tuple(sampler_logp.shape)}, {tuple(mask.shape)}"
        )
    m = mask.bool()
    diff = (trainer_logp.detach() - sampler_logp.detach()).float()
    token = torch.where(m, diff, torch.zeros_like(diff))  # padding may hold -inf/NaN from an engine
    if level == "token":
        used = token
    else:  # the product of the row's token ratios, on every token of the row
        used = token.sum(-1, keepdim=True).expand_as(token)
    return token, used.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _check_bounds(low: float | None, high: float | None) -> None:
    if low is not None and low < 0:
        raise ValueError(f"low must be >= 0 or None, got {low}")
    if high is not None and high <= 0:
        raise ValueError(f"high must be > 0 or None, got {high}")
    if low is not None and high is not None and low > high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")


@torch.no_grad()
def _metrics(
    token_log_ratio: torch.Tensor, rho: torch.Tensor, changed: torch.Tensor, m: torch.Tensor, key: str
) -> dict[str, torch.Tensor]:
    inf = torch.tensor(float("inf"), device=rho.device)
    any_token = m.any()
    return {
        "is_ratio_mean": masked_mean(rho, m),
        "is_ratio_min": torch.where(any_token, torch.where(m, rho, inf).amin(), torch.zeros_like(inf)),
        "is_ratio_max": torch.where(any_token, torch.where(m, rho, -inf).amax(), torch.zeros_like(inf)),
        key: masked_mean(changed.float(), m),
        "is_mismatch_k3": masked_mean(torch.expm1(token_log_ratio) - token_log_ratio, m),
        "is_logprob_abs_diff": masked_mean(token_log_ratio.abs(), m),
    }


def _truncated(level: str, trainer_logp, sampler_logp, mask, low, high):
    _check_bounds(low, high)
    m = mask.bool()
    token, used = _log_ratios(trainer_logp, sampler_logp, mask, level)
    rho = torch.exp(used)  # (N, T)
    weights = rho if low is None and high is None else rho.clamp(min=low, max=high)
    changed = weights != rho
    weights = torch.where(m, weights, torch.zeros_like(weights))
    return weights, _metrics(token, rho, changed, m, "is_truncated_fraction")


def _masked(level: str, trainer_logp, sampler_logp, mask, low, high):
    _check_bounds(low, high)
    m = mask.bool()
    token, used = _log_ratios(trainer_logp, sampler_logp, mask, level)
    rho = torch.exp(used)  # (N, T)
    outside = torch.zeros_like(m)
    if low is not None:
        outside = outside | (rho < low)
    if high is not None:
        outside = outside | (rho > high)
    weights = torch.where(m & ~outside, rho, torch.zeros_like(rho))
    return weights, _metrics(token, rho, outside & m, m, "is_masked_fraction")


def token_tis(
    trainer_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    low: float | None = None,
    high: float | None = 2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level truncated IS: ``clamp(rho_t, low, high)`` per token (TRL ``token_truncate`` with
    ``vllm_importance_sampling_clip_min/max``, cap 2 by default in the TIS write-up; verl ``rollout_is=token``
    with ``rollout_is_threshold`` 2, upper bound only). ``None`` drops that bound.

    >>> w, m = token_tis(torch.log(torch.tensor([[0.6, 0.9]])), torch.log(torch.tensor([[0.2, 0.9]])),
    ...                  torch.ones(1, 2))
    >>> w, m["is_truncated_fraction"]  # rho = 3 -> 2 ; rho = 1
    (tensor([[2., 1.]]), tensor(0.5000))
    """
    return _truncated("token", trainer_logp, sampler_logp, mask, low, high)


def seq_tis(
    trainer_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    low: float | None = None,
    high: float | None = 2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sequence-level truncated IS: ``clamp(prod_t rho_t, low, high)`` on every token of the completion (TRL
    ``sequence_truncate``; verl ``rollout_is=sequence``, threshold 2). The log of the product is clamped to
    [-20, 20] before ``exp``.

    >>> w, _ = seq_tis(torch.log(torch.tensor([[0.6, 0.5]])), torch.log(torch.tensor([[0.4, 0.5]])),
    ...                torch.ones(1, 2))
    >>> w  # rho = 1.5 * 1 = 1.5 for the whole completion, below the cap
    tensor([[1.5000, 1.5000]])
    """
    return _truncated("sequence", trainer_logp, sampler_logp, mask, low, high)


def token_mask(
    trainer_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    low: float | None = 0.5,
    high: float | None = 5.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level masked IS, IcePop (arXiv 2510.18855 eq. 2): ``M(rho_t) = rho_t`` if
    ``low <= rho_t <= high`` else 0 (TRL ``token_mask``; verl ``rollout_rs=token_k1`` masks the same band but
    leaves the weight 1). The paper leaves the band ``[alpha, beta]`` a hyper-parameter; the defaults
    (0.5, 5) are those of the IcePop implementations (e.g. prime-rl's ``icepop_ratio_low/high``).

    >>> trainer = torch.log(torch.tensor([[0.9, 0.9, 0.1]]))
    >>> sampler = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    >>> w, m = token_mask(trainer, sampler, torch.ones(1, 3))
    >>> w, m["is_masked_fraction"]  # rho = 9 (> 5, masked), 1.5 (kept), 1/3 (< 0.5, masked)
    (tensor([[0.0000, 1.5000, 0.0000]]), tensor(0.6667))
    """
    return _masked("token", trainer_logp, sampler_logp, mask, low, high)


def seq_mask(
    trainer_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    low: float | None = 0.5,
    high: float | None = 5.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sequence-level masked IS: the completion's ``prod_t rho_t`` on its tokens if it lies in
    ``[low, high]``, else the whole completion gets 0 (TRL ``sequence_mask``, its default mode, with
    ``clip_max`` 3 and no lower bound).

    >>> w, m = seq_mask(torch.log(torch.tensor([[0.9, 0.9], [0.5, 0.5]])),
    ...                 torch.log(torch.tensor([[0.1, 0.9], [0.5, 0.5]])), torch.ones(2, 2))
    >>> w, m["is_masked_fraction"]  # row 0: rho = 9 * 1 > 5, masked ; row 1: rho = 1
    (tensor([[0., 0.],
            [1., 1.]]), tensor(0.5000))
    """
    return _masked("sequence", trainer_logp, sampler_logp, mask, low, high)


IS_CORRECTIONS: dict[str, ISCorrectionFn] = {
    "token_tis": token_tis,
    "seq_tis": seq_tis,
    "token_mask": token_mask,
    "seq_mask": seq_mask,
}


def is_correction(
    name: str,
    trainer_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    mask: torch.Tensor,
    **bounds: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Importance weights (N, T), detached, and metrics from the correction registered as ``name``.

    ``bounds``: ``low`` and/or ``high`` (each correction has its source's defaults; ``None`` drops a bound).

    >>> w, _ = is_correction("token_tis", torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1, 0]]))
    >>> w
    tensor([[1., 0.]])
    """
    fn = lookup(IS_CORRECTIONS, name, "importance-sampling correction")
    unknown = sorted(set(bounds) - {"low", "high"})
    if unknown:
        raise ValueError(f"is_correction takes the bounds 'low' and 'high' only; got {unknown}")
    return fn(trainer_logp, sampler_logp, mask, **bounds)
