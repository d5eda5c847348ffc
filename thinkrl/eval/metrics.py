"""Evaluation metrics as in DeepSeek-R1: pass@1 over k samples, unbiased pass@k, cons@k; plain Python + numpy.

Definitions (DeepSeek-R1, arXiv 2501.12948, section 3.1 "Evaluation Setup"):

- pass@1 = mean over problems of (correct samples / samples), k samples per problem at temperature 0.6,
  top-p 0.95. Its uncertainty is taken over problems (the samples of one problem are not independent).
- pass@k = Chen et al. 2021's unbiased estimator 1 - C(n-c, k) / C(n, k) from n >= k samples, c correct.
- cons@k = the majority answer among k samples is correct; equal answers (by a verifier, so ``0.5`` and
  ``\\frac12`` are one vote) are grouped first.

Nothing here knows about models or files: :func:`summarize` turns per-sample records into the summary dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: the chance that at least one of k samples drawn without replacement
    from n samples, c of them correct, is correct (Chen et al. 2021, eq. 1): ``1 - C(n-c, k) / C(n, k)``.

    Computed as the product ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which never forms the huge binomials.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 3, 2)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not (0 <= c <= n):
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(
            f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}; generate at least k samples per problem"
        )
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_1(correct: Sequence[bool | float]) -> float:
    """Mean correctness of one problem's samples (R1's pass@1 for that problem).

    >>> pass_at_1([True, False, False, True])
    0.5
    """
    if len(correct) == 0:
        raise ValueError("pass_at_1: no samples")
    return float(np.mean(np.asarray(correct, dtype=np.float64)))


def majority_vote(
    answers: Sequence[str | None], equivalent: Callable[[str, str], bool] | None = None
) -> tuple[str | None, list[int]]:
    """The most common answer and the indices of the samples that gave it (an equivalent answer).

    ``None`` answers (nothing extracted) do not vote. Answers are grouped greedily in sample order: each joins
    the first earlier group whose representative (its first member) it is ``equivalent`` to; exact string
    matches never call ``equivalent``. Ties go to the group that appeared first, so the vote is deterministic.
    Returns ``(None, [])`` when no sample has an answer.

    >>> majority_vote(["1", "2", "2", None, None, None])
    ('2', [1, 2])
    >>> majority_vote(["1", "2", "2", "1"])  # tie: "1" came first
    ('1', [0, 3])
    >>> majority_vote(["0.5", "1/2", "3"], equivalent=lambda a, b: eval(a) == eval(b))
    ('0.5', [0, 1])
    """
    reps: list[str] = []  # representative answer of each group
    members: list[list[int]] = []
    by_string: dict[str, int] = {}  # exact answer -> group, so duplicates cost no verifier call
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        g = by_string.get(ans)
        if g is None and equivalent is not None:
            g = next((j for j, rep in enumerate(reps) if _safe_equivalent(equivalent, ans, rep)), None)
        if g is None:
            g = len(reps)
            reps.append(ans)
            members.append([])
        by_string[ans] = g
        members[g].append(i)
    if not reps:
        return None, []
    best = max(range(len(reps)), key=lambda j: (len(members[j]), -j))  # most votes, then first seen
    return reps[best], members[best]


def _safe_equivalent(equivalent: Callable[[str, str], bool], a: str, b: str) -> bool:
    try:
        return bool(equivalent(a, b))
    except Exception:  # a verifier crash on odd strings means "not shown equal", never a failed eval
        return False


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion p measured on n independent trials: sqrt(p (1 - p) / n).

    >>> binomial_se(0.5, 100)
    0.05
    """
    if n <= 0:
        raise ValueError("binomial_se: n must be positive")
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-problem scores: sample std (ddof=1) / sqrt(m); 0 for m < 2.

    With one 0/1 sample per problem this is the binomial standard error (up to the m/(m-1) Bessel factor).

    >>> round(standard_error([0.0, 1.0, 1.0, 0.0]), 6)
    0.288675
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return 0.0
    return float(v.std(ddof=1) / math.sqrt(v.size))


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem scores (problems resampled with replacement).

    Seeded, so the same values give the same interval.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_resamples, v.size))
    means = v[idx].mean(axis=1)  # (n_resamples,)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def default_pass_ks(n: int) -> list[int]:
    """The k of pass@k reported by default for n samples: powers of two up to n, and n itself.

    >>> default_pass_ks(16), default_pass_ks(6), default_pass_ks(1)
    ([1, 2, 4, 8, 16], [1, 2, 4, 6], [1])
    """
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return ks + ([n] if ks[-1] != n else [])


def length_stats(lengths: Iterable[int]) -> dict[str, float]:
    """Mean, median, 90th percentile, min and max of completion lengths (tokens).

    >>> length_stats([1, 2, 3, 10])["length_mean"]
    4.0
    """
    v = np.asarray(list(lengths), dtype=np.float64)
    if v.size == 0:
        return {}
    return {
        "length_mean": float(v.mean()),
        "length_median": float(np.median(v)),
        "length_p90": float(np.quantile(v, 0.9)),
        "length_min": float(v.min()),
        "length_max": float(v.max()),
    }


def summarize(
    samples: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    *,
    n: int,
    pass_ks: Sequence[int] | None = None,
    cons_k: int | None = None,
    equivalent: Callable[[str, str, dict[str, Any]], bool] | None = None,
    breakdown_keys: Sequence[str] = ("level", "subject"),
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics from per-sample records.

    ``samples`` are dicts with ``id``, ``sample_idx``, ``correct``, ``extracted``, ``length``, ``finish_reason``
    and optionally ``format_ok``; only those with ``sample_idx < n`` for problems in ``rows`` count, so a folder
    holding more samples serves a smaller k without regenerating. Every problem in ``rows`` must have its
    n samples. ``equivalent(a, b, row)`` groups answers for cons@k (None: exact string match).

    Returns ``{"metrics": {...}, "by_<key>": {value: {...}}, "per_problem": [...]}`` where metrics holds
    ``pass@1`` (+ ``pass@1_se``, ``pass@1_ci95``), ``pass@k`` for each k, ``cons@k`` (+ ``_se``), length
    statistics, ``truncation_rate``, ``format_rate``, ``no_answer_rate``.
    """
    pass_ks = sorted(set(pass_ks)) if pass_ks else default_pass_ks(n)
    cons_k = n if cons_k is None else cons_k
    if max(pass_ks) > n or cons_k > n or min(pass_ks) < 1 or cons_k < 1:
        raise ValueError(f"pass@k {pass_ks} and cons@{cons_k} need 1 <= k <= n = {n} samples per problem")
    by_problem: dict[str, dict[int, dict[str, Any]]] = {str(r["id"]): {} for r in rows}
    for s in samples:
        pid = str(s["id"])
        if pid in by_problem and s["sample_idx"] < n:
            by_problem[pid][s["sample_idx"]] = s
    per_problem = []
    for row in rows:
        got = by_problem[str(row["id"])]
        if len(got) != n:
            raise ValueError(
                f"problem {row['id']!r} has {len(got)} of {n} samples; finish the generation first"
            )
        ordered = [got[i] for i in range(n)]
        correct = [bool(s["correct"]) for s in ordered]
        c = sum(correct)
        eq = None if equivalent is None else (lambda a, b, _row=row: equivalent(a, b, _row))
        _, voters = majority_vote([s.get("extracted") for s in ordered[:cons_k]], eq)
        rec = {
            "id": str(row["id"]),
            "num_correct": c,
            "pass@1": c / n,
            f"cons@{cons_k}": float(bool(voters) and correct[voters[0]]),
            **{f"pass@{k}": pass_at_k(n, c, k) for k in pass_ks if k != 1},
        }
        for key in breakdown_keys:
            if row.get(key) is not None:
                rec[key] = row[key]
        per_problem.append(rec)

    flat = [s for p in rows for s in (by_problem[str(p["id"])][i] for i in range(n))]
    out: dict[str, Any] = {"metrics": _aggregate(per_problem, pass_ks, cons_k, seed)}
    lengths = [int(s["length"]) for s in flat]
    m = out["metrics"]
    m.update(length_stats(lengths))
    if flat:
        corr = [x for x, s in zip(lengths, flat) if s["correct"]]
        wrong = [x for x, s in zip(lengths, flat) if not s["correct"]]
        m["length_mean_correct"] = float(np.mean(corr)) if corr else None
        m["length_mean_incorrect"] = float(np.mean(wrong)) if wrong else None
        m["truncation_rate"] = float(np.mean([s["finish_reason"] == "length" for s in flat]))
        m["no_answer_rate"] = float(np.mean([s.get("extracted") is None for s in flat]))
        fmt = [bool(s["format_ok"]) for s in flat if s.get("format_ok") is not None]
        m["format_rate"] = float(np.mean(fmt)) if fmt else None
    for key in breakdown_keys:
        groups: dict[str, list[dict[str, Any]]] = {}
        for rec in per_problem:
            if key in rec:
                groups.setdefault(str(rec[key]), []).append(rec)
        if groups:
            out[f"by_{key}"] = {
                g: _aggregate(recs, pass_ks, cons_k, seed) for g, recs in sorted(groups.items())
            }
    out["per_problem"] = per_problem
    return out


def _aggregate(
    per_problem: list[dict[str, Any]], pass_ks: Sequence[int], cons_k: int, seed: int
) -> dict[str, Any]:
    """Means over problems, with a standard error and a bootstrap interval next to pass@1 and cons@k."""
    m: dict[str, Any] = {"num_problems": len(per_problem)}
    if not per_problem:
        return m
    p1 = [r["pass@1"] for r in per_problem]
    m["pass@1"] = float(np.mean(p1))
    m["pass@1_se"] = standard_error(p1)
    m["pass@1_ci95"] = list(bootstrap_ci(p1, seed=seed))
    for k in pass_ks:
        if k != 1:
            m[f"pass@{k}"] = float(np.mean([r[f"pass@{k}"] for r in per_problem]))
    cons = [r[f"cons@{cons_k}"] for r in per_problem]
    m[f"cons@{cons_k}"] = float(np.mean(cons))
    m[f"cons@{cons_k}_se"] = standard_error(cons)
    return m


def flat_metrics(summary: dict[str, Any], prefix: str = "eval/") -> dict[str, float]:
    """Scalar metrics for a logger: ``{prefix + "pass@1": ..., prefix + "pass@1_ci95_lo": ..., ...}``.

    >>> flat_metrics({"metrics": {"pass@1": 0.5, "pass@1_ci95": [0.25, 0.75], "format_rate": None}}, "ev/")
    {'ev/pass@1': 0.5, 'ev/pass@1_ci95_lo': 0.25, 'ev/pass@1_ci95_hi': 0.75}
    """
    flat: dict[str, float] = {}
    for key, val in summary["metrics"].items():
        if isinstance(val, list | tuple):
            flat[f"{prefix}{key}_lo"], flat[f"{prefix}{key}_hi"] = float(val[0]), float(val[1])
        elif isinstance(val, int | float) and not isinstance(val, bool):
            flat[prefix + key] = float(val)
    return flat


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table: headline metrics with their standard errors and intervals, then one
    line per level / subject when the data has them.

    >>> print(format_table({"benchmark": "demo", "metrics": {"num_problems": 2, "pass@1": 0.5, "pass@1_se": 0.1,
    ...       "pass@1_ci95": [0.3, 0.7]}}))
    demo  (2 problems)
      pass@1                 0.5000  ± 0.1000  95% CI [0.3000, 0.7000]
    """
    m = summary["metrics"]
    title = summary.get("benchmark", "eval")
    lines = [f"{title}  ({m.get('num_problems', 0)} problems)"]
    for key, val in m.items():
        if key == "num_problems" or key.endswith(("_se", "_ci95")) or val is None:
            continue
        cell = f"{val:.4f}" if isinstance(val, float) else str(val)
        line = f"  {key:<22} {cell}"
        if f"{key}_se" in m:
            line += f"  ± {m[key + '_se']:.4f}"
        if f"{key}_ci95" in m:
            lo, hi = m[f"{key}_ci95"]
            line += f"  95% CI [{lo:.4f}, {hi:.4f}]"
        lines.append(line)
    for key in ("level", "subject"):
        groups = summary.get(f"by_{key}")
        if not groups:
            continue
        lines.append(f"  by {key}:")
        for name, g in groups.items():
            cons = next((c for c in g if c.startswith("cons@") and not c.endswith("_se")), None)
            extra = f"  {cons} {g[cons]:.4f}" if cons else ""
            lines.append(
                f"    {name:<24} n={g['num_problems']:<4} pass@1 {g['pass@1']:.4f} ± {g['pass@1_se']:.4f}{extra}"
            )
    return "\n".join(lines)
