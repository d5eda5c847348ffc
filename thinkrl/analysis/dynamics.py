"""Text statistics that show how reasoning changes during RL.

Reflection words are the ones the DeepSeek-R1 Nature paper counts to show reflection emerging
("wait", "mistake", "however", "but", "retry", "error", "verify", "wrong", "evaluate", "check").
"""

from __future__ import annotations

import re

REFLECTION_WORDS = (
    "wait",
    "mistake",
    "however",
    "but",
    "retry",
    "error",
    "verify",
    "wrong",
    "evaluate",
    "check",
)
_REFLECTION_RE = re.compile(r"\b(" + "|".join(REFLECTION_WORDS) + r")\b", re.IGNORECASE)


def reflection_count(text: str) -> int:
    """Occurrences of reflection words (whole words, any case).

    >>> reflection_count("Wait, let me check. But 3+4=7.")
    3
    """
    return len(_REFLECTION_RE.findall(text))


def reflection_rate(texts: list[str]) -> float:
    """Share of texts that contain at least one reflection word."""
    return sum(1 for t in texts if _REFLECTION_RE.search(t)) / max(len(texts), 1)
