"""Counters of grading events in this process (timeouts, errors, sandbox runs), safe across threads.

Graders count what happens inside one reward call (a math check that hit its limit, a program killed at its
wall-clock limit); :class:`thinkrl.rewards.scorer.RewardScorer` takes the difference around each call and
reports it per reward function.

>>> before = snapshot(); count("math_timeouts", 2); delta(before)["math_timeouts"]
2
"""

from __future__ import annotations

import threading
from collections import Counter

_LOCK = threading.Lock()
_COUNTS: Counter[str] = Counter()


def count(key: str, n: int = 1) -> None:
    """Add ``n`` to counter ``key``."""
    if n:
        with _LOCK:
            _COUNTS[key] += n


def snapshot() -> dict[str, int]:
    """All counters now."""
    with _LOCK:
        return dict(_COUNTS)


def delta(before: dict[str, int]) -> dict[str, int]:
    """Counters that grew since ``before`` (a :func:`snapshot`), by how much."""
    now = snapshot()
    return {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}
