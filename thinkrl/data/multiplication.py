"""The tools demo's task: multiply two three-digit numbers, e.g. "what is 123 times 456" -> "56088".

Why this task: a one-million-parameter model cannot multiply two three-digit numbers in its head (its direct
answers are guesses of the right size), but it can copy the operands into ``print(123 * 456)`` and copy the
printed product into its answer. So the Python tool turns an impossible task into two copies, and RL has a
tool-using mode to select. Held-out pairs are drawn with a fixed seed and are never used for RL *and never
appear in the pretraining corpus* (``thinkrl.demo.tools_corpus`` excludes them).
"""

from __future__ import annotations

import random

LOW, HIGH = 100, 999
"""Operands are three-digit numbers (810,000 ordered pairs)."""


def question_text(a: int, b: int) -> str:
    """The question in the phrasing the corpus pairs with tool calls.

    >>> question_text(123, 456)
    'what is 123 times 456'
    """
    return f"what is {a} times {b}"


def tool_code(a: int, b: int) -> str:
    """The program the tool mode writes for a question: one copy of each operand.

    >>> tool_code(123, 456)
    'print(123 * 456)'
    """
    return f"print({a} * {b})"


def make_row(a: int, b: int) -> dict:
    """One task row: ``question`` and ``answer`` (a string), plus the operands for analysis."""
    return {"question": question_text(a, b), "answer": str(a * b), "operands": [a, b]}


def _pairs(rng: random.Random, n: int, exclude: set[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    seen = set(exclude)
    while len(out) < n:
        pair = (rng.randint(LOW, HIGH), rng.randint(LOW, HIGH))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def heldout_pairs(seed: int = 0, n_heldout: int = 500) -> set[tuple[int, int]]:
    """The held-out operand pairs (the same for a seed everywhere: task rows, corpus exclusion, tests).

    >>> len(heldout_pairs()), heldout_pairs() == heldout_pairs()
    (500, True)
    """
    return set(_pairs(random.Random(f"multiply-heldout-{seed}"), n_heldout, set()))


def split_rows(seed: int = 0, n_train: int = 5000, n_heldout: int = 500) -> tuple[list[dict], list[dict]]:
    """(train_rows, heldout_rows): disjoint by construction, both in a seeded random order.

    >>> train, held = split_rows()
    >>> len(train), len(held), held[0]["question"].startswith("what is ")
    (5000, 500, True)
    >>> {r["question"] for r in train}.isdisjoint(r["question"] for r in held)
    True
    """
    held = _pairs(random.Random(f"multiply-heldout-{seed}"), n_heldout, set())
    train = _pairs(random.Random(f"multiply-train-{seed}"), n_train, set(held))
    return [make_row(*p) for p in train], [make_row(*p) for p in held]
