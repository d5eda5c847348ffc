"""What the model wrote at step N: ``RUN/completions.jsonl``, one JSON object per sampled completion.

The trainer (rank 0) calls :meth:`CompletionLog.write` once per step with that step's records (built with
:func:`completion_records`); every ``every`` steps it keeps a sample of whole groups (so a group's spread of
rewards stays visible), flushes, and rotates the file so the folder never holds more than ``max_bytes``.
A kill -9 leaves at most one torn last line, which :func:`read_completions` skips and the next
``CompletionLog`` on the same folder cuts off before appending.

>>> import tempfile
>>> run = tempfile.mkdtemp()
>>> log = CompletionLog(run, every=1, per_step=0)
>>> recs = completion_records(prompts=["1+1="], completions=["<answer>2</answer>"], rewards={"accuracy": [1.0]},
...                           advantages=[0.0], lengths=[17], finish_reasons=["stop"], group_ids=[0],
...                           policy_version=3, accuracy_name="accuracy")
>>> log.write(5, recs)
1
>>> r = read_completions(run)[0]
>>> r["step"], r["reward"], r["correct"], r["policy_version"]
(5, 1.0, True, 3)
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thinkrl.analysis.jsonl import drop_torn_tail, read_jsonl, write_jsonl_lines

FILE = "completions.jsonl"
ROTATED = "completions.1.jsonl"
# Fields that hold model or dataset text: the only ones that can make a record large.
TEXT_FIELDS = ("prompt", "completion", "answer")


def _floats(x: Any) -> list[float]:
    """A tensor, array or sequence as a list of Python floats (NaN kept)."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    return [float(v) if v is not None else math.nan for v in x]


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def completion_records(
    *,
    prompts: Sequence[str],
    completions: Sequence[str],
    rewards: dict[str, Any],
    advantages: Any,
    lengths: Any,
    finish_reasons: Sequence[str],
    group_ids: Any,
    policy_version: int | Sequence[int],
    total: Any = None,
    answers: Sequence[Any] | None = None,
    accuracy_name: str | None = None,
    correct_threshold: float = 1.0,
) -> list[dict[str, Any]]:
    """One JSON-ready record per completion (row order kept). Tensors or lists are accepted everywhere.

    Args:
        rewards: ``{reward name: (N,) scores}``, NaN/None where a reward did not apply.
        total: (N,) the weighted sum used for advantages; default the plain sum of ``rewards`` (NaN as 0).
        policy_version: the weights' version that sampled each row (one int for all, or one per row).
        accuracy_name: the reward that says right or wrong; a row is ``correct`` when its score is at least
            ``correct_threshold`` (None when there is no such reward or it did not apply).
    """
    n = len(completions)
    per_fn = {name: _floats(v) for name, v in rewards.items()}
    for name, v in per_fn.items():
        if len(v) != n:
            raise ValueError(f"rewards[{name!r}] has {len(v)} scores for {n} completions")
    if total is None:
        total_f = [sum(0.0 if math.isnan(v[i]) else v[i] for v in per_fn.values()) for i in range(n)]
    else:
        total_f = _floats(total)
    adv, lens, groups = _floats(advantages), _floats(lengths), _floats(group_ids)
    versions = [policy_version] * n if isinstance(policy_version, int) else list(policy_version)
    columns = {"prompts": prompts, "finish_reasons": finish_reasons, "total": total_f, "advantages": adv,
               "lengths": lens, "group_ids": groups, "policy_version": versions}  # fmt: skip
    if answers is not None:
        columns["answers"] = answers
    for name, col in columns.items():
        if len(col) != n:
            raise ValueError(f"{name} has {len(col)} entries for {n} completions; pass one per completion")
    out = []
    for i in range(n):
        acc = per_fn[accuracy_name][i] if accuracy_name in per_fn else math.nan
        out.append({
            "group": int(groups[i]),
            "prompt": prompts[i],
            "completion": completions[i],
            "answer": None if answers is None else (None if answers[i] is None else str(answers[i])),
            "reward": _none_if_nan(total_f[i]),
            "rewards": {k: _none_if_nan(v[i]) for k, v in per_fn.items()},
            "advantage": _none_if_nan(adv[i]),
            "length": int(lens[i]),
            "finish_reason": finish_reasons[i],
            "policy_version": int(versions[i]),
            "correct": None if math.isnan(acc) else bool(acc >= correct_threshold),
        })  # fmt: skip
    return out


def sample_groups(records: list[dict[str, Any]], per_step: int, seed: int) -> list[dict[str, Any]]:
    """At most ``per_step`` records made of whole groups drawn at random (seeded), in their original order;
    ``per_step <= 0`` keeps all. A group larger than ``per_step`` alone is cut to its first rows."""
    if per_step <= 0 or len(records) <= per_step:
        return list(records)
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.get("group", i), []).append(i)
    order = list(groups)
    random.Random(seed).shuffle(order)
    keep: list[int] = []
    for g in order:
        if len(keep) + len(groups[g]) > per_step:
            if not keep:  # one group bigger than the budget: its first rows
                keep = groups[g][:per_step]
            break
        keep.extend(groups[g])
    return [records[i] for i in sorted(keep)]


def _clip_text(text: Any, max_chars: int) -> tuple[Any, bool]:
    if not isinstance(text, str) or len(text) <= max_chars:
        return text, False
    head, tail = max_chars * 3 // 4, max_chars // 4
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut by the completion log ...]\n{text[-tail:]}", True


class CompletionLog:
    """Appends sampled completions to ``RUN/completions.jsonl``; the folder's completion files stay under
    ``max_bytes`` in total (the current file and one rotated file, ``completions.1.jsonl``, each at most half).

    Args:
        every: log every N-th step (0 disables the log).
        per_step: records kept per logged step, whole groups chosen at random; 0 keeps every completion.
        max_bytes: bound on the two files together; the oldest records are dropped by rotation.
        max_chars: longer prompt/completion/answer texts keep their head and tail (the cut is marked).
        resume_step: when resuming from a checkpoint at this step, records of later steps are dropped first
            (they will be redone), as the metrics log does.
        fsync: also fsync each step (survives power loss, not just a killed process).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        every: int = 1,
        per_step: int = 64,
        max_bytes: int = 200 * 2**20,
        max_chars: int = 16_000,
        resume_step: int | None = None,
        seed: int = 0,
        fsync: bool = False,
    ):
        if every < 0 or per_step < 0:
            raise ValueError(f"every={every} and per_step={per_step} must be >= 0 (0 disables / keeps all)")
        if max_bytes < 2048:
            raise ValueError(f"max_bytes={max_bytes} is too small to hold one record; use at least 2048")
        if max_chars < 64:
            raise ValueError(f"max_chars={max_chars} must be >= 64")
        self.dir = Path(run_dir)
        self.path, self.rotated = self.dir / FILE, self.dir / ROTATED
        self.every, self.per_step, self.max_chars, self.seed, self.fsync = (
            every,
            per_step,
            max_chars,
            seed,
            fsync,
        )
        self.file_limit = max_bytes // 2
        self.dropped = 0  # records left out because one step's sample alone exceeded a file's share
        if every:
            self.dir.mkdir(parents=True, exist_ok=True)
            drop_torn_tail(self.path)
            if resume_step is not None:
                for p in (self.rotated, self.path):
                    if p.exists():
                        kept = [r for r in read_jsonl(p) if r.get("step", 0) <= resume_step]
                        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))

    def should_log(self, step: int) -> bool:
        """Whether :meth:`write` keeps anything at ``step`` (build records only when it does)."""
        return self.every > 0 and step % self.every == 0

    def write(self, step: int, records: list[dict[str, Any]]) -> int:
        """Keep a sample of this step's records (see the class); returns how many were written."""
        if not self.should_log(step) or not records:
            return 0
        chosen = sample_groups(records, self.per_step, seed=self.seed * 1_000_003 + step)
        lines = []
        for r in chosen:
            rec = {"step": step, **r}
            cut_any = False
            for k in TEXT_FIELDS:
                rec[k], cut = _clip_text(rec.get(k), self.max_chars)
                cut_any |= cut
            if cut_any:
                rec["text_cut"] = True
            lines.append((rec, len(json.dumps(rec, ensure_ascii=False).encode()) + 1))
        total = 0
        for i, (_, size) in enumerate(lines):  # a single step never exceeds a file's share
            if total + size > self.file_limit:
                self.dropped += len(lines) - i
                lines = lines[:i]
                break
            total += size
        if not lines:
            return 0
        size_now = self.path.stat().st_size if self.path.exists() else 0
        if size_now and size_now + total > self.file_limit:
            self.path.replace(self.rotated)  # atomic: a crash leaves either the old or the new name
        write_jsonl_lines(self.path, [rec for rec, _ in lines], fsync=self.fsync)
        return len(lines)


def read_completions(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every logged completion of a run, oldest first (rotated file, then current); [] when none were logged.
    A torn last line (the writer was killed) is skipped."""
    run = Path(run_dir)
    out: list[dict[str, Any]] = []
    for p in (run / ROTATED, run / FILE):
        if p.exists():
            out.extend(read_jsonl(p))
    return out


# ------------------------------------------------------------------------------------- W&B / TensorBoard
TABLE_COLUMNS = ("step", "group", "prompt", "completion", "reward", "advantage", "length", "finish_reason",
                 "policy_version", "correct")  # fmt: skip


def table_rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows for a table: the fixed columns, then one ``reward/NAME`` column per reward function."""
    names: list[str] = []
    for r in records:
        names.extend(k for k in r.get("rewards", {}) if k not in names)
    columns = [*TABLE_COLUMNS, *(f"reward/{n}" for n in names)]
    rows = [[r.get(c) for c in TABLE_COLUMNS] + [r.get("rewards", {}).get(n) for n in names] for r in records]
    return columns, rows


def markdown_table(records: list[dict[str, Any]], max_chars: int = 400) -> str:
    """The records as a Markdown table (TensorBoard's text plugin renders it); long texts are shortened."""
    columns, rows = table_rows(records)

    def cell(v: Any) -> str:
        s = f"{v:.3f}" if isinstance(v, float) else str(v)
        if len(s) > max_chars:
            s = s[:max_chars] + "..."
        return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ⏎ ")

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in rows)


def log_completion_table(
    records: list[dict[str, Any]], step: int, *, wandb_run: Any = None, tb_writer: Any = None
) -> None:
    """Send a step's logged records to Weights & Biases (a ``wandb.Table`` under ``completions``) and/or
    TensorBoard (a Markdown table via ``add_text``). Either may be None."""
    if not records:
        return
    if wandb_run is not None:
        import wandb

        columns, rows = table_rows(records)
        # nested reward dicts are flattened into columns; W&B tables take plain values only
        wandb_run.log({"completions": wandb.Table(columns=columns, data=rows)}, step=step)
    if tb_writer is not None:
        tb_writer.add_text("completions", markdown_table(records), step)
