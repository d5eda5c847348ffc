"""Rejection-sampling filters: which graded samples become SFT data (DeepSeek-R1 §2.3.3, "Rejection Sampling and
Supervised Fine-Tuning": keep correct answers; drop chains of thought with mixed languages, long paragraphs and
code blocks).

A sample is a dict as ``thinkrl sample`` writes it to ``samples.jsonl``: ``id`` (the prompt's), ``sample_idx``,
``completion``, ``correct`` (bool or None), ``length`` (tokens), ``finish_reason`` ("stop" / "length"),
``rewards`` ({name: score or None}), optionally ``language``. Filters run in the order of :data:`FILTERS`, each
on what the previous ones kept, and every removal is counted under the filter's name.

>>> samples = [{"id": "1", "sample_idx": 0, "completion": "<think>2</think><answer>2</answer>", "correct": True,
...             "length": 9, "finish_reason": "stop"},
...            {"id": "1", "sample_idx": 1, "completion": "<answer>3</answer>", "correct": False,
...             "length": 5, "finish_reason": "stop"}]
>>> kept, report = filter_samples(samples, FilterConfig(keep="correct"))
>>> [s["sample_idx"] for s in kept], report["removed"]["incorrect"]
([0], 1)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from thinkrl.rewards.language import language_consistency_score

_CODE_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)


@dataclass
class FilterConfig:
    keep: str = "all"
    """``correct``: keep only samples graded correct (rejection sampling); ``all``: keep any grade (plain
    distillation of a teacher's outputs)."""
    drop_truncated: bool = True
    """Drop samples that hit ``max_new_tokens`` (finish_reason "length"): their reasoning never finished."""
    max_tokens: int | None = None
    """Drop samples longer than this many completion tokens (R1 filtered overly long CoTs)."""
    min_language_consistency: float | None = None
    """Drop samples whose CoT has a smaller share of words in the row's ``language`` (default en) than this
    (:func:`thinkrl.rewards.language.language_consistency_score`; R1 dropped mixed-language CoTs). 0.95 is a
    reasonable value."""
    max_repeat_ratio: float | None = None
    """Drop samples whose share of repeated word n-grams (:func:`repeated_ngram_ratio`) exceeds this: the
    degenerate loops of a sampler at high temperature. 0.3 is a reasonable value."""
    repeat_ngram: int = 8
    """n of the n-grams counted by ``max_repeat_ratio``."""
    drop_code: bool = False
    """Drop samples with a fenced code block (R1 dropped them from non-code reasoning data)."""
    require_format: bool = False
    """Drop samples whose ``format`` reward is not 1 (needs ``format`` among the graded rewards)."""
    dedup: bool = True
    """Keep one copy of identical completions of the same prompt (compared with whitespace collapsed)."""
    max_per_prompt: int | None = None
    """Keep at most this many samples per prompt (the first by sample index), so easy prompts do not dominate."""

    def __post_init__(self) -> None:
        if self.keep not in ("all", "correct"):
            raise ValueError(f"keep={self.keep!r}; valid: all, correct")
        if self.repeat_ngram < 1:
            raise ValueError(f"repeat_ngram={self.repeat_ngram} must be >= 1")


def repeated_ngram_ratio(text: str, n: int = 8) -> float:
    """Share of the word n-grams of ``text`` that already occurred earlier in it (0 = no repetition).

    >>> repeated_ngram_ratio("a b c d", 2), repeated_ngram_ratio("a b a b a b", 2)
    (0.0, 0.6)
    """
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def has_code_block(text: str) -> bool:
    """Whether ``text`` contains a fenced (``` or ~~~) code block.

    >>> has_code_block("x\\n```python\\nprint(1)\\n```"), has_code_block("use `x` here")
    (True, False)
    """
    return bool(_CODE_FENCE.search(text))


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _per_sample_filters(cfg: FilterConfig) -> list[tuple[str, Callable[[dict[str, Any]], bool]]]:
    """(name, predicate that is True when the sample is REMOVED), in order; disabled filters are left out."""
    out: list[tuple[str, Callable[[dict[str, Any]], bool]]] = []
    if cfg.keep == "correct":
        out.append(("incorrect", lambda s: s.get("correct") is not True))
    if cfg.drop_truncated:
        out.append(("truncated", lambda s: s.get("finish_reason") == "length"))
    if cfg.max_tokens is not None:
        out.append(("too_long", lambda s: int(s.get("length", 0)) > cfg.max_tokens))
    if cfg.min_language_consistency is not None:
        out.append((
            "mixed_language",
            lambda s: language_consistency_score(s["completion"], s.get("language") or "en") < cfg.min_language_consistency,
        ))  # fmt: skip
    if cfg.max_repeat_ratio is not None:
        out.append(
            (
                "repetitive",
                lambda s: repeated_ngram_ratio(s["completion"], cfg.repeat_ngram) > cfg.max_repeat_ratio,
            )
        )
    if cfg.drop_code:
        out.append(("code_block", lambda s: has_code_block(s["completion"])))
    if cfg.require_format:
        out.append(("bad_format", lambda s: (s.get("rewards") or {}).get("format") != 1.0))
    return out


FILTERS = (
    "incorrect", "truncated", "too_long", "mixed_language", "repetitive", "code_block", "bad_format",
    "duplicate", "over_cap",
)  # fmt: skip
"""Every filter's name, in the order they run."""


def filter_samples(
    samples: list[dict[str, Any]], cfg: FilterConfig
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Apply the filters of ``cfg`` in :data:`FILTERS` order.

    Returns:
        kept: the surviving samples, in input order.
        report: ``{"total", "kept", "removed": {filter: count}, "prompts", "prompts_kept", "filters": cfg}``;
        ``removed`` lists every enabled filter (0 when it removed nothing), counted on what reached it.
    """
    removed: dict[str, int] = {}
    kept = list(samples)
    for name, drop in _per_sample_filters(cfg):
        before = len(kept)
        kept = [s for s in kept if not drop(s)]
        removed[name] = before - len(kept)
    if cfg.dedup:
        seen: set[tuple[str, str]] = set()
        out = []
        for s in kept:
            key = (str(s["id"]), _normalized(s["completion"]))
            if key not in seen:
                seen.add(key)
                out.append(s)
        removed["duplicate"], kept = len(kept) - len(out), out
    if cfg.max_per_prompt is not None:
        ranked = sorted(kept, key=lambda s: int(s.get("sample_idx", 0)))
        count: dict[str, int] = {}
        allowed = set()
        for s in ranked:
            pid = str(s["id"])
            if count.get(pid, 0) < cfg.max_per_prompt:
                count[pid] = count.get(pid, 0) + 1
                allowed.add(id(s))
        out = [s for s in kept if id(s) in allowed]
        removed["over_cap"], kept = len(kept) - len(out), out
    report = {
        "total": len(samples),
        "kept": len(kept),
        "removed": removed,
        "prompts": len({str(s["id"]) for s in samples}),
        "prompts_kept": len({str(s["id"]) for s in kept}),
        "filters": asdict(cfg),
    }
    return kept, report


def format_report(report: dict[str, Any]) -> str:
    """A few printable lines: what each filter removed.

    >>> print(format_report({"total": 4, "kept": 1, "removed": {"incorrect": 3}, "prompts": 2, "prompts_kept": 1}))
    samples 4 -> kept 1 (prompts 2 -> 1)
      incorrect       -3
    """
    lines = [
        f"samples {report['total']} -> kept {report['kept']} (prompts {report['prompts']} -> {report['prompts_kept']})"
    ]
    lines += [f"  {name:<15} -{n}" for name, n in report["removed"].items()]
    return "\n".join(lines)
