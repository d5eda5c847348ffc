"""Math answer checking on math-verify, with a hard wall-clock limit per check that holds from any thread.

math-verify's own timeouts use SIGALRM (main thread only) and cannot stop a parse stuck inside C code (a
huge ``9^{9^{9}}`` in GMP). So checks that need math-verify run in grader worker processes
(``workers.py``): forked in milliseconds from one process that imported math-verify once, killed at their
limit and replaced at once. A check that hangs costs its limit once, side by side with other hung checks,
never a restart allowance and never in sequence. Plain numbers (the bulk of GSM8K/AIME/AMC answers) never
leave the process: they compare as exact fractions.

Answer policy (docs/rewards.md): a percent sign is a unit and is dropped on both sides (gold ``50\\%``
matches ``50``, not ``0.5``); when the gold is not a relation, ``x = 14`` reads as ``14`` but ``15 = 14``,
``x = 13 = 14`` or ``13 \\lor 14`` are wrong; inputs over :data:`MAX_CHECK_CHARS` are wrong without parsing.

>>> verify_math("The answer is \\\\boxed{18}.", "#### 18")
True
>>> verify_math("025", "25"), verify_math("27", 27.0), verify_math("26", "27"), verify_math("15 = 14", "14")
(True, True, False, False)
"""

from __future__ import annotations

import os
import re
import threading
from fractions import Fraction
from typing import Any

from thinkrl.rewards import stats
from thinkrl.rewards.extract import extract_boxed, extract_gsm8k
from thinkrl.rewards.pool import BoundedPool
from thinkrl.rewards.workers import Zygote

__all__ = [
    "answers_equivalent",
    "math_verify_stats",
    "normalize_gold",
    "verify_math",
    "verify_math_batch",
    "warm_up",
]

MAX_CHECK_CHARS = 20_000
"""Longest prediction or gold sent to math-verify (a MATH solution is under 6k characters); longer is wrong."""
MATH_WORKERS = min(2, os.cpu_count() or 1)
"""Checks that run at full priority at once, by default."""
WORKER_MEMORY_MB = 4096
"""Address-space limit of each math-verify worker (a power tower can ask GMP for any amount)."""

_DEC_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}((,\d{3})+|( \d{3})+)(\.\d+)?")
_PERCENT_RE = re.compile(
    r"(\d)\s*(?:\\,|\\ |~)?\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\\text\{\s*percent\s*\}|\\mathrm\{\\%\})"
)
_POOL_LOCK = threading.Lock()
_POOL: BoundedPool | None = None


def _pool(workers: int | None = None) -> BoundedPool:
    """This process's grader pool (a fresh one after a fork: the parent's workers are not ours)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.owner != os.getpid():
            _POOL = BoundedPool(
                lambda: Zygote.spawn("thinkrl.rewards.math_worker:check", memory_mb=WORKER_MEMORY_MB),
                workers=workers or MATH_WORKERS,
                min_budget_s=0.1,
            )
        elif workers:
            _POOL.workers = workers
        return _POOL


def warm_up(workers: int | None = None) -> None:
    """Start the math-verify process now (it imports sympy, seconds) instead of at the first check."""
    _pool(workers).zygote()


def math_verify_stats() -> dict[str, int]:
    """Counters of this process: checks, fast_path, helper_checks, timeouts, errors, too_long, helper_starts.

    ``timeouts`` and ``errors`` are checks scored wrong because math-verify hung, raised or crashed.
    """
    s = stats.snapshot()
    keys = ("checks", "fast_path", "helper_checks", "timeouts", "errors", "too_long")
    out = {k: s.get("math_" + k, 0) for k in keys}
    out["helper_starts"] = (
        _POOL.stats["zygote_starts"] if _POOL is not None and _POOL.owner == os.getpid() else 0
    )
    return out


def _as_text(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))  # AMC golds arrive as 27.0
    return str(x).strip()


def normalize_gold(gold: Any) -> str:
    """Gold answer in any of our data's shapes -> the answer text math-verify reads.

    GSM8K ``"... #### 1,018"`` -> ``"1018"``; a single ``"\\boxed{x}"`` -> ``"x"``; ``27.0`` -> ``"27"``;
    anything else (``"$x$"``, several boxes, bare LaTeX) is stripped and kept.

    >>> normalize_gold("so\\\\n#### 1,018"), normalize_gold(27.0), normalize_gold("\\\\boxed{\\\\frac12}")
    ('1018', '27', '\\\\frac12')
    """
    return _unwrap(_as_text(gold))


def _unwrap(s: str) -> str:
    s = s.strip()
    if "####" in s:
        return extract_gsm8k(s) or s
    if s.count("\\boxed") + s.count("\\fbox") == 1:
        return extract_boxed(s) or s
    return s


def drop_percent(s: str) -> str:
    """The text with every percent sign after a number removed (the answer policy: % is a unit).

    >>> drop_percent("50\\\\%"), drop_percent("\\\\boxed{12.5 \\\\%}"), drop_percent("5 percent")
    ('50', '\\\\boxed{12.5}', '5 percent')
    """
    return _PERCENT_RE.sub(r"\1", s) if "%" in s or "percent" in s else s


def _plain_number(s: str) -> Fraction | None:
    """Exact value of a plain decimal number ("025", "-3", "1,018", "1 000", "2.50", "$5"), else None."""
    s = s.strip().rstrip(".").strip()
    if s.startswith("$") and s.endswith("$") and len(s) >= 2:
        s = s[1:-1].strip()
    s = s.replace("\\$", "").lstrip("$").strip()
    if _THOUSANDS_RE.fullmatch(s):
        s = re.sub(r"[, ]", "", s)
    if len(s) > 60 or not _DEC_RE.fullmatch(s):
        return None
    return Fraction(s)


def verify_math_batch(
    preds: list[Any],
    golds: list[Any],
    timeout_s: float = 5.0,
    *,
    float_rounding: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
    workers: int | None = None,
) -> list[bool]:
    """``verify_math`` over pairs. Checks needing math-verify run in parallel, each under ``timeout_s``."""
    out: list[bool] = [False] * len(preds)
    slow: list[int] = []
    tasks: list[tuple[str, str, dict]] = []
    opts = {
        "float_rounding": float_rounding,
        "strict": strict,
        "allow_set_relation_comp": allow_set_relation_comp,
    }
    stats.count("math_checks", len(preds))
    for i, (p, g) in enumerate(zip(preds, golds)):
        if p is None or g is None:
            continue
        pt, gt = _as_text(p), _as_text(g)
        if len(pt) > MAX_CHECK_CHARS or len(gt) > MAX_CHECK_CHARS:
            stats.count("math_too_long")
            continue
        if "####" in pt or "####" in gt:  # GSM8K text: its final answer is the part after ####
            pt, gt = (extract_gsm8k(x) or x if "####" in x else x for x in (pt, gt))
        pt, gt = drop_percent(pt), drop_percent(gt)
        if not pt or not gt:
            continue
        pv, gv = _plain_number(_unwrap(pt)), _plain_number(_unwrap(gt))
        # equal numbers, or two different integers, are settled here; unequal decimals go to math-verify,
        # which rounds to float_rounding digits
        if pv is not None and gv is not None and (pv == gv or (pv.denominator == 1 and gv.denominator == 1)):
            stats.count("math_fast_path")
            out[i] = pv == gv
            continue
        slow.append(i)
        tasks.append((pt, gt, opts))
    if tasks:
        stats.count("math_helper_checks", len(tasks))
        try:
            outcomes = _pool(workers).map(tasks, timeout_s)
        except Exception:  # noqa: BLE001 - the grader could not start: every check is wrong, and counted
            stats.count("math_errors", len(tasks))
            return out
        for i, o in zip(slow, outcomes):
            out[i] = o.kind == "ok" and o.value is True
            stats.count("math_timeouts", int(o.kind == "timeout"))
            stats.count("math_errors", int(o.kind in ("error", "crash")))
    return out


def verify_math(pred: Any, gold: Any, timeout_s: float = 5.0, **options: Any) -> bool:
    """True when ``pred`` (an answer or a whole solution) is mathematically equal to ``gold``. Never raises.

    ``gold`` may be GSM8K text (``#### 18``), a MATH answer or ``\\boxed{}`` text, an AIME ``"025"`` or an
    AMC float ``27.0``. A check that raises or runs past ``timeout_s`` is False and is counted in
    ``math_verify_stats()``. ``options``: math-verify's ``float_rounding`` (6), ``strict`` (True),
    ``allow_set_relation_comp`` (False).

    >>> verify_math("\\\\frac{1}{2}", "0.5"), verify_math("$[1, 2)$", "[1,2)"), verify_math("x", "y")
    (True, True, False)
    """
    try:
        return verify_math_batch([pred], [gold], timeout_s, **options)[0]
    except Exception:  # noqa: BLE001 - e.g. a bad option name; the contract is "never raises"
        stats.count("math_errors")
        return False


def answers_equivalent(a: str, b: str, timeout_s: float = 5.0) -> bool:
    """Symmetric equivalence of two extracted answers, for majority-vote grouping (cons@k).

    >>> answers_equivalent("1/2", "\\\\frac{1}{2}"), answers_equivalent("3", "4")
    (True, False)
    """
    if a is None or b is None:
        return False
    if str(a).strip() == str(b).strip():
        return True
    fwd, back = verify_math_batch([a, b], [b, a], timeout_s)
    return fwd and back
