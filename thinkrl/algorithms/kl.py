"""Per-token KL estimators between the policy and the frozen reference (Schulman, "Approximating KL
Divergence", http://joschu.net/blog/kl-approx.html). With samples y ~ pi_theta and
``log_ratio = logp - ref_logp``:

* ``k1 = log_ratio``: unbiased for KL(pi || ref), high variance, can be negative.
* ``k2 = 0.5 * log_ratio**2``: biased, low variance, always >= 0; its gradient is that of the true KL.
* ``k3 = exp(-log_ratio) + log_ratio - 1``: unbiased, always >= 0, low variance. This is the estimator of
  DeepSeekMath eq. 4 and DeepSeek-R1 eq. 2, and TRL's ``per_token_kl`` (verl ``low_var_kl``).

k3's exponent is clamped to [-20, 20] (as verl does): one token whose policy probability collapsed
relative to the reference would otherwise give exp(>88) = inf in float32 and a NaN gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._registry import lookup

KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_K3_CLAMP = 20.0


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = logp - ref_logp. (N, T), (N, T) -> (N, T)."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2. (N, T), (N, T) -> (N, T)."""
    return 0.5 * (logp - ref_logp).square()


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1, with ``ref - logp`` clamped to [-20, 20]. (N, T) -> (N, T)."""
    d = (ref_logp - logp).clamp(-_K3_CLAMP, _K3_CLAMP)
    return torch.exp(d) - d - 1


KL_ESTIMATORS: dict[str, KLFn] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def get_kl_estimator(name: str) -> KLFn:
    """The estimator registered as ``name``; ``ValueError`` listing ``KL_ESTIMATORS`` otherwise."""
    return lookup(KL_ESTIMATORS, name, "KL estimator")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate (N, T) from token log-probs ``logp`` and ``ref_logp`` (N, T).

    Gradients flow through ``logp``; ``ref_logp`` should come from the frozen model (no grad).
    Padded positions are not masked here: the caller aggregates with the completion mask.

    >>> lp, ref = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.25]]))
    >>> kl_penalty(lp, ref, "k3")  # exp(ln 0.5) - ln 0.5 - 1 = 0.5 + 0.6931 - 1
    tensor([[0.1931]])
    """
    return get_kl_estimator(estimator)(logp, ref_logp)
