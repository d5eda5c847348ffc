"""Wall-clock timing of the stages of a step (``time/*`` metrics)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[key]``.

    >>> t = {}
    >>> with timed(t, "generate"):
    ...     pass
    >>> list(t)
    ['generate']
    """
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
