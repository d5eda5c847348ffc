"""Helpers shared by ``thinkrl.algorithms``: registry lookup (a wrong name lists valid ones), masked mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]``; raise ``ValueError`` naming the valid keys otherwise.

    >>> lookup({"a": 1}, "a", "thing")
    1
    >>> lookup({"a": 1}, "b", "thing")
    Traceback (most recent call last):
    ...
    ValueError: unknown thing 'b'; valid names: ['a']
    """
    try:
        return registry[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name (a list from a YAML typo)
        raise ValueError(f"unknown {kind} {name!r}; valid names: {sorted(registry)}") from None


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (N, T) over the 1-entries of ``mask`` (N, T); 0 for an empty mask, never NaN.

    ``torch.where`` rather than ``values * mask`` so a NaN/inf on a padded position cannot leak in.
    Returns a 0-dim tensor in ``values.dtype``.
    """
    m = mask.bool()
    total = torch.where(m, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / m.sum().clamp(min=1).to(values.dtype)
