"""Benchmark loaders: gsm8k, math500, aime24, aime25, amc23, countdown, or any file with question/answer columns.

Every loader returns rows ``{"id", "question", "answer", "verifier", "benchmark", ...}``: ``answer`` is the
gold *final* answer as a string (GSM8K's text after ``####`` without thousands commas, AIME's ``"025"`` as
``"25"``, AMC's ``27.0`` as ``"27"``), ``verifier`` names the grader ("math" or "countdown"). MATH-500 rows
keep ``level`` and ``subject`` for the breakdown; countdown rows carry ``numbers`` and ``target``.

Where the files come from, in order: ``data_dir`` argument, ``$THINKRL_DATA_DIR``, then ``../shared/data``
next to the repository root or the working directory (the layout of :file:`shared/data/SOURCES.md`); when a
benchmark's file is in none of them it is read from the Hugging Face hub.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COUNTDOWN_PROMPT = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. "
    "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)
"""The TinyZero countdown question (numbers as a Python list, e.g. ``[30, 100, 93]``)."""

QUESTION_KEYS = ("question", "problem", "prompt", "input")
ANSWER_KEYS = ("answer", "final_answer", "target", "output", "solution")


@dataclass(frozen=True)
class Benchmark:
    """Where a named benchmark lives and how its raw rows become eval rows."""

    local: str
    """File (or folder) under the data dir."""
    hub: str
    """Hub dataset as ``name`` or ``name:config``, read when the local file is absent."""
    hub_split: str
    convert: Callable[[dict[str, Any], int], dict[str, Any]]
    """(raw row, index) -> eval row without ``benchmark``."""


class BenchmarkError(ValueError):
    """The benchmark spec, file or columns are wrong; the message says how to fix it."""


def normalize_number(value: Any) -> str:
    """A gold number as a clean string: ``27.0 -> "27"``, ``"025" -> "25"``, ``"1,234" -> "1234"``; other
    text is returned stripped.

    >>> normalize_number(27.0), normalize_number("025"), normalize_number("1,234"), normalize_number("-1.50")
    ('27', '25', '1234', '-1.5')
    >>> normalize_number("\\\\frac{1}{2}")
    '\\\\frac{1}{2}'
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    plain = text.replace(",", "")
    if re.fullmatch(r"[+-]?\d+", plain):
        return str(int(plain))
    if re.fullmatch(r"[+-]?\d*\.\d+", plain):
        return normalize_number(float(plain))
    return text


def gsm8k_final_answer(solution: str) -> str:
    """GSM8K's final answer: the text after the last ``####``, thousands commas removed.

    >>> gsm8k_final_answer("48/2 = <<48/2=24>>24\\n#### 1,072")
    '1072'
    """
    if "####" not in solution:
        raise BenchmarkError(f"GSM8K answer without a '#### ' final line: {solution[-80:]!r}")
    return normalize_number(solution.rsplit("####", 1)[1])


def _pick(row: dict[str, Any], keys: tuple[str, ...], what: str) -> Any:
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    raise BenchmarkError(
        f"row has no {what} column (looked for {', '.join(keys)}); its columns: {', '.join(row)}"
    )


def _gsm8k(raw: dict[str, Any], i: int) -> dict[str, Any]:
    return {"id": f"gsm8k-{i}", "question": raw["question"], "answer": gsm8k_final_answer(raw["answer"])}


def _math500(raw: dict[str, Any], i: int) -> dict[str, Any]:
    row = {
        "id": str(raw.get("unique_id", i)),
        "question": raw["problem"],
        "answer": str(raw["answer"]).strip(),
    }
    if raw.get("level") is not None:
        row["level"] = int(raw["level"])
    if raw.get("subject"):
        row["subject"] = raw["subject"]
    return row


def _numbered(prefix: str) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    """Competition sets (AIME, AMC): one number as the answer; ids kept from the file when present."""

    def convert(raw: dict[str, Any], i: int) -> dict[str, Any]:
        return {
            "id": f"{prefix}-{raw.get('id', i)}",
            "question": str(_pick(raw, QUESTION_KEYS, "question")),
            "answer": normalize_number(_pick(raw, ("answer",), "answer")),
        }

    return convert


def countdown_row(numbers: list[int], target: int, row_id: str) -> dict[str, Any]:
    """An eval row for one countdown puzzle, with the TinyZero question.

    >>> countdown_row([1, 2], 3, "c")["question"][:36]
    'Using the numbers [1, 2], create an '
    """
    numbers = [int(x) for x in numbers]
    return {
        "id": row_id,
        "question": COUNTDOWN_PROMPT.format(numbers=numbers, target=int(target)),
        "answer": str(int(target)),
        "numbers": numbers,
        "target": int(target),
        "verifier": "countdown",
    }


def _countdown(raw: dict[str, Any], i: int) -> dict[str, Any]:
    if "input" in raw:  # d1's format: {"input": "30,100,93", "output": "23"}
        numbers, target = [int(x) for x in str(raw["input"]).split(",")], raw["output"]
    else:  # TinyZero's hub format: nums / target (or numbers / target)
        numbers, target = raw.get("nums", raw.get("numbers")), raw["target"]
    return countdown_row(numbers, int(target), f"countdown-{i}")


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("gsm8k/test.jsonl", "openai/gsm8k:main", "test", _gsm8k),
    "math500": Benchmark("math500/test.jsonl", "HuggingFaceH4/MATH-500", "test", _math500),
    "aime24": Benchmark("aime24/test.jsonl", "HuggingFaceH4/aime_2024", "train", _numbered("aime24")),
    "aime25": Benchmark("aime25/test.jsonl", "math-ai/aime25", "test", _numbered("aime25")),
    "amc23": Benchmark("amc23/test.jsonl", "math-ai/amc23", "test", _numbered("amc23")),
    # The hub fallback for countdown is TinyZero's (training) set; the local file is d1's held-out test set.
    "countdown": Benchmark(
        "countdown/countdown_cd3_test.jsonl", "Jiayi-Pan/Countdown-Tasks-3to4", "train", _countdown
    ),
}


def default_data_dir() -> Path | None:
    """``$THINKRL_DATA_DIR``, else the first existing ``../shared/data`` next to the repo root or the cwd."""
    env = os.environ.get("THINKRL_DATA_DIR")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    for base in (repo_root, Path.cwd()):
        for cand in (base.parent / "shared" / "data", base / "shared" / "data"):
            if cand.is_dir():
                return cand
    return None


def load_benchmark(
    spec: str,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    *,
    question_key: str | None = None,
    answer_key: str | None = None,
) -> list[dict[str, Any]]:
    """Eval rows of a benchmark.

    ``spec`` is one of:

    - a name in :data:`BENCHMARKS` (``gsm8k``, ``math500``, ``aime24``, ``aime25``, ``amc23``, ``countdown``):
      the local file under the data dir, else the hub dataset;
    - ``NAME:PATH``: that benchmark's format read from your own file or folder;
    - ``builtin:NAME``: a built-in task's ``test`` split (``builtin:demo``), as the pipeline's eval stage reads it;
    - a path to a ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file (or a folder of them) with a question
      and an answer column: ``question_key`` / ``answer_key``, or the first of :data:`QUESTION_KEYS` /
      :data:`ANSWER_KEYS` present. Rows with ``numbers`` (or ``nums``) and ``target`` are countdown rows.

    ``limit`` keeps the first N rows.

    >>> import json, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "cd.jsonl"
    >>> _ = path.write_text(json.dumps({"nums": [30, 100, 93], "target": 23}) + "\\n")
    >>> rows = load_benchmark(f"countdown:{path}", limit=2)
    >>> rows[0]["numbers"], rows[0]["target"], rows[0]["benchmark"]
    ([30, 100, 93], 23, 'countdown')
    """
    from thinkrl.data.datasets import read_rows

    name, sep, path = spec.partition(":")
    if name in BENCHMARKS:
        bench = BENCHMARKS[name]
        if sep:
            raw = _read_local(Path(path))
        else:
            root = Path(data_dir) if data_dir is not None else default_data_dir()
            local = root / bench.local if root is not None else None
            if local is not None and local.exists():
                raw = _read_local(local)
            else:
                raw = _read_hub(name, bench, local)
        raw = raw[:limit] if limit is not None else raw
        rows = [{**bench.convert(r, i), "benchmark": name} for i, r in enumerate(raw)]
    elif name == "builtin":  # a built-in task's held-out split, as the pipeline's eval stage reads it
        from thinkrl.data.datasets import DataError

        try:
            raw = read_rows(spec, split="test")
        except (DataError, ValueError) as e:
            raise BenchmarkError(f"--data {spec!r}: {e}") from None
        raw = raw[:limit] if limit is not None else raw
        rows = normalize_rows(raw, question_key=question_key, answer_key=answer_key, benchmark=path)
    else:
        p = Path(spec)
        if not p.exists():
            raise BenchmarkError(
                f"--data {spec!r} is neither a benchmark ({', '.join(BENCHMARKS)}) nor an existing file or folder; "
                "give a name, NAME:PATH, or a path to a .jsonl/.json/.parquet/.csv file"
            )
        raw = read_rows(str(p), split="test")
        raw = raw[:limit] if limit is not None else raw
        rows = normalize_rows(raw, question_key=question_key, answer_key=answer_key, benchmark=p.stem)
    for row in rows:
        row.setdefault("verifier", "math")
    _check_unique_ids(rows, spec)
    return rows


def normalize_rows(
    raw: list[dict[str, Any]],
    *,
    question_key: str | None = None,
    answer_key: str | None = None,
    benchmark: str = "custom",
) -> list[dict[str, Any]]:
    """Turn generic rows (e.g. the trainer's held-out prompts) into eval rows: ``id`` (the row's own or its
    index), ``question``, ``answer`` as a string, ``verifier`` (countdown when numbers/target are present).

    >>> normalize_rows([{"problem": "1+1?", "answer": 2}])[0]
    {'problem': '1+1?', 'answer': '2', 'id': '0', 'question': '1+1?', 'verifier': 'math', 'benchmark': 'custom'}
    """
    out = []
    for i, r in enumerate(raw):
        nums = r.get("numbers", r.get("nums"))
        if nums is not None and r.get("target") is not None and r.get("verifier", "countdown") == "countdown":
            row = {**r, **countdown_row(nums, r["target"], str(r.get("id", i)))}
            if r.get("question"):
                row["question"] = r["question"]  # keep the dataset's own wording
        else:
            try:
                q = r[question_key] if question_key else _pick(r, QUESTION_KEYS, "question")
                a = r[answer_key] if answer_key else _pick(r, ANSWER_KEYS, "answer")
            except KeyError as e:
                raise BenchmarkError(
                    f"row {i} has no {e.args[0]!r} column; its columns: {', '.join(r)} (set --question-key / "
                    "--answer-key, or fix the row)"
                ) from None
            except BenchmarkError as e:
                raise BenchmarkError(f"row {i}: {e}") from None
            row = {**r, "id": str(r.get("id", i)), "question": str(q), "answer": normalize_number(a)}
            row.setdefault("verifier", "math")
        row.setdefault("benchmark", benchmark)
        out.append(row)
    return out


def prepare_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows ready for :func:`thinkrl.eval.evaluate`: loader rows pass through (ids as strings); rows without
    ``id`` or ``verifier`` (e.g. the trainer's held-out prompts) go through :func:`normalize_rows`.

    >>> prepare_rows([{"id": 7, "question": "q", "answer": "1", "verifier": "math"}])[0]["id"]
    '7'
    """
    out = []
    for i, r in enumerate(rows):
        if "id" in r and r.get("verifier") and "question" in r:
            out.append({**r, "id": str(r["id"]), "answer": str(r["answer"])})
        else:
            out.append({**normalize_rows([r])[0], "id": str(r.get("id", i))})
    _check_unique_ids(out, "rows")
    return out


def _read_local(path: Path) -> list[dict[str, Any]]:
    from thinkrl.data.datasets import read_rows

    if not path.exists():
        raise BenchmarkError(f"{path} does not exist; check the path after 'NAME:'")
    return read_rows(str(path), split="test")


def _read_hub(name: str, bench: Benchmark, local: Path | None) -> list[dict[str, Any]]:
    from thinkrl.data.datasets import DataError, read_rows

    try:
        return read_rows(bench.hub, split=bench.hub_split)
    except DataError as e:
        where = f"{local} does not exist" if local is not None else "no data dir found"
        raise BenchmarkError(
            f"benchmark {name!r}: {where}, and reading the hub dataset {bench.hub!r} failed ({e}). "
            "Set THINKRL_DATA_DIR or --data-dir to a folder laid out like shared/data, or pass NAME:PATH"
        ) from None


def _check_unique_ids(rows: list[dict[str, Any]], spec: str) -> None:
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise BenchmarkError(
                f"{spec}: problem id {row['id']!r} appears twice; ids key the resumable samples file, "
                "so make them unique (or drop the id column to number rows by position)"
            )
        seen.add(row["id"])


class Grader:
    """Grades completions with thinkrl's reward code, so eval and training rewards cannot drift.

    Math rows: ``extract_answer(text, extract_mode)`` then ``verify_math(pred, gold)``; countdown rows: the
    ``countdown`` reward (correct when it gives full credit, 1.0); every row: the R1 ``format`` reward
    (compliant when it gives full credit). Answers for cons@k are grouped by ``answers_equivalent`` (math)
    or exact match after removing spaces (countdown equations).
    """

    def __init__(self, extract_mode: str = "auto", timeout_s: float = 5.0):
        self.extract_mode = extract_mode
        self.timeout_s = timeout_s

    def grade(
        self, rows: Sequence[dict[str, Any]], completions: Sequence[str], prompts: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """One ``{"extracted", "correct", "format_ok"}`` per (row, completion) pair.

        ``prompts`` are the rendered prompts (the format reward checks whether they pre-fill ``<think>``);
        default: the questions.
        """
        from thinkrl.rewards import get_reward
        from thinkrl.rewards.extract import extract_answer

        prompts = list(prompts) if prompts is not None else [r["question"] for r in rows]
        preds = [extract_answer(t, mode=self.extract_mode) for t in completions]
        fmt = get_reward("format")(prompts, list(completions))
        correct = [False] * len(rows)
        cd = [i for i, r in enumerate(rows) if r.get("verifier") == "countdown"]
        if cd:
            scores = get_reward("countdown")(
                [prompts[i] for i in cd],
                [completions[i] for i in cd],
                numbers=[rows[i]["numbers"] for i in cd],
                target=[rows[i]["target"] for i in cd],
            )
            for i, s in zip(cd, scores):
                correct[i] = s is not None and float(s) >= 1.0
        cd_set = set(cd)
        math_idx = [i for i in range(len(rows)) if i not in cd_set and preds[i] is not None]
        ok = self._verify([preds[i] for i in math_idx], [str(rows[i]["answer"]) for i in math_idx])
        for i, good in zip(math_idx, ok):
            correct[i] = bool(good)
        return [
            {"extracted": p, "correct": c, "format_ok": None if f is None else float(f) >= 1.0}
            for p, c, f in zip(preds, correct, fmt)
        ]

    def _verify(self, preds: list[str], golds: list[str]) -> list[bool]:
        from thinkrl.rewards.math_grader import verify_math_batch

        return verify_math_batch(
            preds, golds, timeout_s=self.timeout_s
        )  # one helper round-trip for the batch

    def equivalent(self, a: str, b: str, row: dict[str, Any]) -> bool:
        """Whether two extracted answers to ``row`` count as the same vote in cons@k."""
        if row.get("verifier") == "countdown":
            return "".join(a.split()) == "".join(b.split())
        from thinkrl.rewards.math_grader import answers_equivalent

        return bool(answers_equivalent(a, b))
