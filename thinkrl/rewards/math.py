"""Math answer checking on math-verify, with a time limit that works from any thread or process.

math-verify's own timeouts use SIGALRM (main thread only) and cannot stop a parse stuck inside C code
(a huge ``9^{9^{9^9}}`` in GMP). So checks that need math-verify run in a persistent helper process,
one per calling process, with math-verify's timeouts off; the parent waits ``timeout_s`` per check and, if
the helper hangs, kills it, counts a timeout, scores that check wrong and starts a fresh helper. Plain
numbers (the bulk of GSM8K/AIME/AMC answers) never leave the process: they compare as exact fractions.

>>> verify_math("The answer is \\\\boxed{18}.", "#### 18")
True
>>> verify_math("025", "25"), verify_math("27", 27.0), verify_math("26", "27")
(True, True, False)
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from typing import Any

from thinkrl.rewards.extract import extract_boxed, extract_gsm8k

__all__ = ["verify_math", "verify_math_batch", "answers_equivalent", "math_verify_stats", "normalize_gold"]

_STATS_LOCK = threading.Lock()
_STATS = {"checks": 0, "fast_path": 0, "helper_checks": 0, "timeouts": 0, "errors": 0, "helper_starts": 0}
_DEC_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}((,\d{3})+|( \d{3})+)(\.\d+)?")

# The helper: reads one JSON batch per line, writes one line per check ("1", "0" or "E <error>").
# Anchoring: text with math delimiters or a box is parsed as it is (whole solutions work); a bare gold is
# read as LaTeX ("$...$"); a bare prediction made only of digits, spaces, "." "," "+" "-" is read as an
# expression first, so "1 000" and "1,22" mean what math-verify's expression reader says, then as LaTeX.
_HELPER_SOURCE = r"""
import json, logging, re, sys
logging.disable(logging.WARNING)  # math-verify warns on every call that its own timeout is off
from math_verify import parse, verify
NUMLIKE = re.compile(r"[\\d\\s.,+-]+")
DELIM = re.compile(r"(?<!\\)\$|\\boxed|\\fbox|\\\(|\\\[")
def read(s, gold):
    if DELIM.search(s):
        return parse(s, parsing_timeout=None)
    if gold or not NUMLIKE.fullmatch(s):
        return parse("$" + s + "$", parsing_timeout=None)
    return parse(s, parsing_timeout=None) or parse("$" + s + "$", parsing_timeout=None)
out = sys.stdout
for line in sys.stdin:
    msg = json.loads(line)
    for pred, gold in msg["pairs"]:
        try:
            g, p = read(gold, True), read(pred, False)
            ok = bool(g) and bool(p) and verify(g, p, timeout_seconds=None, **msg["opts"])
            out.write("1\n" if ok else "0\n")
        except BaseException as e:  # any failure is a wrong answer, reported to the parent
            out.write("E " + type(e).__name__ + "\n")
        out.flush()
"""


def _count(key: str, n: int) -> None:
    with _STATS_LOCK:  # helpers report from their own threads
        _STATS[key] += n


def math_verify_stats() -> dict[str, int]:
    """Counters of this process since import: checks, fast_path, helper_checks, timeouts, errors, helper_starts.

    ``timeouts`` and ``errors`` are checks scored wrong because math-verify hung or raised.
    """
    with _STATS_LOCK:
        return dict(_STATS)


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


class _Helper:
    """One persistent math-verify process owned by one (pid) of the caller; restarted after a hang."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.buf = b""

    def _start(self) -> subprocess.Popen:
        _count("helper_starts", 1)
        # -I: no user site, no cwd on sys.path (so this package's math.py never shadows the stdlib's math).
        return subprocess.Popen(
            [sys.executable, "-I", "-c", _HELPER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the trainer's process group is the trainer's to handle
        )

    def _kill(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.proc, self.buf = None, b""

    def _readline(self, deadline: float) -> bytes | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None  # helper died
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def run(
        self, pairs: list[tuple[str, str]], opts: dict, timeout_s: float, first_timeout_s: float
    ) -> list[bool]:
        """Check pairs in order; a hang or crash scores that pair False and the rest go to a fresh helper."""
        results: list[bool] = []
        with self.lock:
            if self.pid != os.getpid():  # forked: the inherited pipe belongs to the parent
                self.proc, self.buf, self.pid = None, b"", os.getpid()
            while len(results) < len(pairs):
                fresh = self.proc is None or self.proc.poll() is not None
                if fresh:
                    self._kill()
                    self.proc = self._start()
                todo = pairs[len(results) :]
                try:
                    assert self.proc.stdin is not None
                    self.proc.stdin.write((json.dumps({"pairs": todo, "opts": opts}) + "\n").encode())
                    self.proc.stdin.flush()
                except OSError:
                    self._kill()
                    _count("errors", 1)
                    results.append(False)
                    continue
                for k in range(len(todo)):
                    # the first check of a fresh helper also pays for importing sympy and math-verify
                    limit = timeout_s + (first_timeout_s if fresh and k == 0 else 0.0)
                    line = self._readline(time.monotonic() + limit)
                    if line is None:
                        _count("timeouts", 1)
                        self._kill()
                        results.append(False)
                        break
                    if line.startswith(b"E"):
                        _count("errors", 1)
                    results.append(line.strip() == b"1")
        return results


_HELPERS = [_Helper() for _ in range(min(2, os.cpu_count() or 1))]
_SPLIT_AT = 64  # batches at least this big are split over the helpers (each is one core while it works)


def _run_helpers(pairs: list[tuple[str, str]], opts: dict, timeout_s: float) -> list[bool]:
    if len(pairs) < _SPLIT_AT or len(_HELPERS) == 1:
        return _HELPERS[0].run(pairs, opts, timeout_s, _STARTUP_ALLOWANCE_S)
    k = len(_HELPERS)
    parts = [pairs[i::k] for i in range(k)]  # interleaved: slow and fast checks spread evenly
    out: list[list[bool]] = [[] for _ in range(k)]

    def work(i: int) -> None:
        out[i] = _HELPERS[i].run(parts[i], opts, timeout_s, _STARTUP_ALLOWANCE_S)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res = [False] * len(pairs)
    for i in range(k):
        res[i::k] = out[i]
    return res


_STARTUP_ALLOWANCE_S = 30.0


def verify_math_batch(
    preds: list[Any],
    golds: list[Any],
    timeout_s: float = 5.0,
    *,
    float_rounding: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
) -> list[bool]:
    """``verify_math`` over pairs; one helper round-trip for all the pairs that are not plain numbers."""
    out: list[bool] = [False] * len(preds)
    slow: list[int] = []
    pairs: list[tuple[str, str]] = []
    for i, (p, g) in enumerate(zip(preds, golds)):
        _count("checks", 1)
        if p is None or g is None:
            continue
        pt, gt = _as_text(p), _as_text(g)
        if "####" in pt or "####" in gt:  # GSM8K text: its final answer is the part after ####
            pt, gt = (extract_gsm8k(x) or x if "####" in x else x for x in (pt, gt))
        if not pt or not gt:
            continue
        pv, gv = _plain_number(_unwrap(pt)), _plain_number(_unwrap(gt))
        # equal numbers, or two different integers, are settled here; unequal decimals go to math-verify,
        # which rounds to float_rounding digits
        if pv is not None and gv is not None and (pv == gv or (pv.denominator == 1 and gv.denominator == 1)):
            _count("fast_path", 1)
            out[i] = pv == gv
            continue
        slow.append(i)
        pairs.append((pt, gt))
    if pairs:
        _count("helper_checks", len(pairs))
        opts = {
            "float_rounding": float_rounding,
            "strict": strict,
            "allow_set_relation_comp": allow_set_relation_comp,
        }
        try:
            res = _run_helpers(pairs, opts, timeout_s)
        except Exception:  # noqa: BLE001 - never stop training over a grader failure
            _count("errors", len(pairs))
            res = [False] * len(pairs)
        for i, r in zip(slow, res):
            out[i] = r
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
        _count("errors", 1)
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
