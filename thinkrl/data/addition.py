"""The demo's RL task: add four one-digit numbers, e.g. "what is 3 plus 5 plus 8 plus 6" -> "22".

Why this task: a one-million-parameter model cannot add four numbers in one forward pass (its direct answers
are mostly guesses near the typical sum), but each step of a written chain ("3 plus 5 plus 8 plus 6. 3 plus 5
is 8, so 8 plus 8 plus 6. ...") is a copy and a small fact it learns well in pretraining. So thinking helps, a lot, and RL has a
mode to select. Problems are ordered tuples of four digits 1..9 (6,561 in all); a seeded shuffle puts a
fixed share in a held-out set that is never used for RL *and never appears in the pretraining corpus*.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

N_OPERANDS = 4
DIGITS = range(1, 10)


def question_text(operands: Sequence[int]) -> str:
    """The question in the phrasing the corpus pairs with worked chains.

    >>> question_text([3, 5, 8, 6])
    'what is 3 plus 5 plus 8 plus 6'
    """
    return "what is " + " plus ".join(str(x) for x in operands)


def chain_text(operands: Sequence[int]) -> str:
    """The worked chain: restate the sum, then add the leading pair and restate what is left, until one number
    remains. Every step reads only the sentence before it, which a tiny model can learn to copy.

    >>> chain_text([3, 5, 8, 6])
    '3 plus 5 plus 8 plus 6. 3 plus 5 is 8, so 8 plus 8 plus 6. 8 plus 8 is 16, so 16 plus 6. 16 plus 6 is 22.'
    """
    ops = list(operands)
    parts = [" plus ".join(map(str, ops)) + "."]
    while len(ops) > 1:
        total, rest = ops[0] + ops[1], ops[2:]
        step = f"{ops[0]} plus {ops[1]} is {total}"
        parts.append(step + ("." if not rest else ", so " + " plus ".join(map(str, [total, *rest])) + "."))
        ops = [total, *rest]
    return " ".join(parts)


def make_row(operands: Sequence[int]) -> dict:
    """One task row: ``question`` and ``answer`` (a string), plus the operands for analysis."""
    return {"question": question_text(operands), "answer": str(sum(operands)), "operands": list(operands)}


def all_problems() -> list[tuple[int, ...]]:
    """Every problem of the task, in a fixed order (6,561 tuples)."""
    return list(itertools.product(DIGITS, repeat=N_OPERANDS))


def heldout_problems(seed: int = 0, n_heldout: int = 500) -> set[tuple[int, ...]]:
    """The held-out operand tuples (the same for a seed everywhere: task rows, corpus exclusion, tests)."""
    problems = all_problems()
    random.Random(seed).shuffle(problems)
    return set(problems[:n_heldout])


def split_rows(seed: int = 0, n_heldout: int = 500) -> tuple[list[dict], list[dict]]:
    """(train_rows, heldout_rows): disjoint by construction, both in a seeded random order.

    >>> train, held = split_rows(seed=0, n_heldout=500)
    >>> len(train), len(held), held[0]["question"].startswith("what is ")
    (6061, 500, True)
    >>> {r["question"] for r in train}.isdisjoint(r["question"] for r in held)
    True
    """
    problems = all_problems()
    random.Random(seed).shuffle(problems)
    held, train = problems[:n_heldout], problems[n_heldout:]
    return [make_row(p) for p in train], [make_row(p) for p in held]
