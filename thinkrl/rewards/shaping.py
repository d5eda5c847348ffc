"""Length shaping: DAPO's soft overlong penalty and Kimi k1.5's length penalty.

Both are plain functions of token counts; ``overlong_reward`` wraps the first as a reward function.

>>> overlong_penalty([100, 900, 950, 1100], max_len=1000, buffer=100)
[0.0, 0.0, -0.5, -1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from thinkrl.rewards.extract import as_text
from thinkrl.rewards.named import NamedReward


def overlong_penalty(lengths: Sequence[int], max_len: int, buffer: int) -> list[float]:
    """DAPO (arXiv 2503.14476, eq. 13) soft overlong punishment, per completion of ``lengths`` tokens.

    0 up to ``max_len - buffer`` tokens; then falls linearly to -1 at ``max_len``; -1 beyond ``max_len``.

    >>> overlong_penalty([1000], max_len=1000, buffer=0)
    [0.0]
    """
    if buffer < 0 or buffer > max_len:
        raise ValueError(f"overlong_penalty: buffer={buffer} must be in [0, max_len={max_len}]")
    free = max_len - buffer
    out = []
    for n in lengths:
        if n <= free:
            out.append(0.0)
        elif n <= max_len:
            out.append((free - n) / buffer)
        else:
            out.append(-1.0)
    return out


def kimi_length_penalty(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """Kimi k1.5 (arXiv 2501.12599, §2.3.3) length reward within ONE group of answers to the same prompt.

    ``lam = 0.5 - (len - min_len) / (max_len - min_len)``; correct answers get ``lam``, wrong ones
    ``min(0, lam)``: shorter correct answers are preferred, long wrong ones are pushed down. All-equal lengths
    give 0.

    >>> kimi_length_penalty([10, 20, 30], [True, True, False])
    [0.5, 0.0, -0.5]
    """
    if len(lengths) != len(correct):
        raise ValueError(f"kimi_length_penalty: {len(lengths)} lengths for {len(correct)} correctness flags")
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    out = []
    for n, ok in zip(lengths, correct):
        lam = 0.5 - (n - lo) / (hi - lo)
        out.append(lam if ok else min(0.0, lam))
    return out


def overlong_reward(
    max_len: int, buffer: int, length_fn: Callable[[str], int] | None = None, name: str = "overlong"
) -> NamedReward:
    """A reward function giving the DAPO overlong penalty, logged as ``name``.

    Lengths come from the column ``completion_length`` (token counts; the trainer knows them) when present,
    else from ``length_fn(completion_text)`` (e.g. ``lambda s: len(tok.encode(s))``).

    >>> fn = overlong_reward(10, 4, length_fn=len)
    >>> fn(["q", "q"], ["abcdef", "abcdefgh"]), fn.__name__
    ([0.0, -0.5], 'overlong')
    """
    overlong_penalty([], max_len, buffer)  # validate now, not at the first batch

    def reward(prompts: list[str], completions: list[Any], **columns: Any) -> list[float]:
        lengths = columns.get("completion_length")
        if lengths is None:
            if length_fn is None:
                raise ValueError(
                    "overlong reward needs token counts: pass a column 'completion_length' or build it with "
                    "overlong_reward(max_len, buffer, length_fn=lambda s: len(tokenizer.encode(s)))"
                )
            lengths = [length_fn(as_text(c)) for c in completions]
        return overlong_penalty([int(n) for n in lengths], max_len, buffer)

    return NamedReward(name, reward, in_process=True)
