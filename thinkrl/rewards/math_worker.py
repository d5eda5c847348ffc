"""One math-verify check, as run inside a grader worker process (imported only there: it imports sympy).

Anchoring: text with math delimiters or a box is parsed as it is (whole solutions work); bare text, gold or
prediction alike, is read as LaTeX (``$...$``): ``13, 14`` is a set, never the last of its numbers (which is
what math-verify's expression reader would return).

Answer policy applied to the parsed prediction when the gold is not itself a relation (docs/rewards.md):
``x = 14`` is read as ``14`` (one variable on the left), but any other relation (``15 = 14``,
``x = 13 = 14``, ``x \\le 14``) and logical connectives (``13 \\lor 14``) are not an answer.
"""

from __future__ import annotations

import logging
import re

from math_verify import parse, verify
from sympy import Symbol, Tuple
from sympy.core.relational import Equality, Relational
from sympy.logic.boolalg import Boolean

logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call that its own timeout is off

_DELIM = re.compile(r"(?<!\\)\$|\\boxed|\\fbox|\\\(|\\\[")
_CONNECTIVES = re.compile(r"\\(lor|vee|land|wedge|lnot|neg)(?![A-Za-z])")
_RELATION_TEXT = re.compile(
    r"=|<|>|\\(le|ge|leq|geq|neq|ne|lt|gt|approx|sim|equiv|in|subset|subseteq)(?![A-Za-z])"
)


def _read(s: str) -> list:
    if _DELIM.search(s):
        return parse(s, parsing_timeout=None)
    return parse("$" + s + "$", parsing_timeout=None)


def _is_relation(x: object) -> bool:
    return isinstance(x, (Relational, Boolean)) and not isinstance(x, Symbol)


def _names(x: object) -> bool:
    """A variable, or a tuple of variables (``(x, y) = (5, 8)``)."""
    return isinstance(x, Symbol) or (isinstance(x, Tuple) and all(isinstance(e, Symbol) for e in x))


def _as_answer(parsed: list) -> list:
    """The prediction's candidates under the answer policy: ``VAR = value`` becomes ``value``; other relations go."""
    out = []
    for cand in parsed:
        if isinstance(cand, Equality) and _names(cand.lhs) and not _is_relation(cand.rhs):
            out.append(cand.rhs)
        elif isinstance(cand, str):
            if (
                "=" not in cand
                and "\\le" not in cand
                and "\\ge" not in cand
                and "<" not in cand
                and ">" not in cand
            ):
                out.append(cand)
        elif not _is_relation(cand):
            out.append(cand)
    return out


def check(task: tuple[str, str, dict]) -> bool:
    """Is the prediction equal to the gold? ``task`` = (prediction, gold, math-verify options)."""
    pred, gold, opts = task
    g = _read(gold)
    if not g:
        return False
    if not _RELATION_TEXT.search(gold) and not any(_is_relation(c) for c in g if not isinstance(c, str)):
        if _CONNECTIVES.search(pred) and not _CONNECTIVES.search(gold):
            return False
        p = _as_answer(_read(pred))
    else:
        p = _read(pred)
    return bool(p) and bool(verify(g, p, timeout_seconds=None, **opts))


def _warm_up() -> None:
    """Run each parse path once in the zygote, so forked workers start with sympy's lazy imports done."""
    for pred, gold in (("\\frac{1}{2}", "0.5"), ("x = 14", "14"), ("$[1, 2)$", "(1,2]"), ("1,000", "1000")):
        check((pred, gold, {"float_rounding": 6, "strict": True, "allow_set_relation_comp": False}))


_warm_up()
