"""Completion logs (bounded, rotated, complete after kill -9) and the torn-line-tolerant JSON-lines reader."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from thinkrl.analysis.completions import (
    FILE,
    ROTATED,
    CompletionLog,
    completion_records,
    log_completion_table,
    markdown_table,
    read_completions,
    sample_groups,
    table_rows,
)
from thinkrl.analysis.jsonl import RunFileError, drop_torn_tail, read_jsonl, read_metrics


def _records(n_groups=4, g=4, text="x" * 50, step_shift=0):
    n = n_groups * g
    return completion_records(
        prompts=[f"p{i // g}" for i in range(n)], completions=[f"{text}{i}" for i in range(n)],
        rewards={"accuracy": [float(i % 2) for i in range(n)], "format": [1.0] * n},
        advantages=[0.5 - (i % 2) for i in range(n)], lengths=[10 + i for i in range(n)],
        finish_reasons=["stop" if i % 3 else "length" for i in range(n)], group_ids=[i // g for i in range(n)],
        policy_version=7 + step_shift, answers=[str(i // g) for i in range(n)], accuracy_name="accuracy",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- records
def test_completion_records_fields_and_values():
    import torch

    recs = completion_records(
        prompts=["a", "b"], completions=["<answer>1</answer>", "nope"],
        rewards={"accuracy": torch.tensor([1.0, 0.0]), "format": torch.tensor([float("nan"), 1.0])},
        advantages=torch.tensor([0.7, -0.7]), lengths=torch.tensor([5, 3]), finish_reasons=["stop", "length"],
        group_ids=torch.tensor([0, 0]), policy_version=[4, 5], total=torch.tensor([1.0, 0.5]),
        accuracy_name="accuracy",
    )  # fmt: skip
    assert recs[0] == {"group": 0, "prompt": "a", "completion": "<answer>1</answer>", "answer": None, "reward": 1.0,
                       "rewards": {"accuracy": 1.0, "format": None}, "advantage": pytest.approx(0.7),
                       "length": 5, "finish_reason": "stop", "policy_version": 4, "correct": True}  # fmt: skip
    assert recs[1]["correct"] is False and recs[1]["policy_version"] == 5 and recs[1]["reward"] == 0.5
    json.dumps(recs)  # JSON-ready: no tensors, no NaN


def test_completion_records_default_total_and_no_accuracy():
    recs = completion_records(prompts=["a"], completions=["c"], rewards={"f": [float("nan")], "g": [2.0]},
                              advantages=[0.0], lengths=[1], finish_reasons=["stop"], group_ids=[0],
                              policy_version=0)  # fmt: skip
    assert recs[0]["reward"] == 2.0 and recs[0]["correct"] is None


def test_completion_records_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="advantages has 1 entries for 2 completions"):
        completion_records(prompts=["a", "b"], completions=["c", "d"], rewards={"f": [1.0, 0.0]},
                           advantages=[0.0], lengths=[1, 1], finish_reasons=["stop"] * 2, group_ids=[0, 0],
                           policy_version=0)  # fmt: skip
    with pytest.raises(ValueError, match=r"rewards\['f'\] has 1 scores for 2"):
        completion_records(prompts=["a", "b"], completions=["c", "d"], rewards={"f": [1.0]}, advantages=[0, 0],
                           lengths=[1, 1], finish_reasons=["stop"] * 2, group_ids=[0, 0], policy_version=0)  # fmt: skip


def test_sample_groups_keeps_whole_groups_seeded():
    recs = _records(n_groups=8, g=4)
    a, b = sample_groups(recs, 10, seed=3), sample_groups(recs, 10, seed=3)
    assert a == b and len(a) == 8  # two whole groups of 4 fit in 10
    groups = {r["group"] for r in a}
    assert all(sum(r["group"] == g for r in a) == 4 for g in groups)
    assert sample_groups(recs, 10, seed=4) != a or True  # another seed may pick others; order is preserved:
    assert [r["completion"] for r in a] == sorted((r["completion"] for r in a), key=lambda c: int(c[50:]))
    assert len(sample_groups(recs, 2, seed=0)) == 2  # a group larger than the budget: its first rows
    assert sample_groups(recs, 0, seed=0) == recs


# -------------------------------------------------------------------------------------------- writer
def test_every_and_per_step_options(tmp_path):
    log = CompletionLog(tmp_path, every=3, per_step=4)
    written = [log.write(step, _records()) for step in range(1, 8)]
    assert written == [0, 0, 4, 0, 0, 4, 0]
    assert [r["step"] for r in read_completions(tmp_path)] == [3] * 4 + [6] * 4
    off = CompletionLog(tmp_path / "off", every=0)
    assert off.write(3, _records()) == 0 and not (tmp_path / "off").exists()


def test_size_bound_and_rotation(tmp_path):
    bound = 20_000
    log = CompletionLog(tmp_path, per_step=0, max_bytes=bound)
    for step in range(1, 60):
        log.write(step, _records(text="y" * 200))
        total = sum((tmp_path / f).stat().st_size for f in (FILE, ROTATED) if (tmp_path / f).exists())
        assert total <= bound
    steps = [r["step"] for r in read_completions(tmp_path)]
    assert steps == sorted(steps) and steps[-1] == 59 and steps[0] > 1  # oldest rotated away, newest kept
    assert (tmp_path / ROTATED).exists()


def test_one_huge_step_is_cut_to_the_bound_and_long_texts_are_clipped(tmp_path):
    log = CompletionLog(tmp_path, per_step=0, max_bytes=8192, max_chars=100)
    n = log.write(1, _records(n_groups=8, g=8, text="z" * 5000))
    rec = read_completions(tmp_path)[0]
    assert "characters cut by the completion log" in rec["completion"] and rec["text_cut"] is True
    assert len(rec["completion"]) < 200
    assert 0 < n < 64 and log.dropped == 64 - n
    assert (tmp_path / FILE).stat().st_size <= 4096


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="must be >= 0"):
        CompletionLog(tmp_path, every=-1)
    with pytest.raises(ValueError, match="at least 2048"):
        CompletionLog(tmp_path, max_bytes=100)


def test_resume_drops_later_steps_and_a_torn_tail(tmp_path):
    log = CompletionLog(tmp_path, per_step=2)
    for step in range(1, 6):
        log.write(step, _records())
    with (tmp_path / FILE).open("a") as f:
        f.write('{"step": 6, "completion": "tor')  # a crash mid-line
    log = CompletionLog(tmp_path, per_step=2, resume_step=3)
    assert [r["step"] for r in read_completions(tmp_path)] == [1, 1, 2, 2, 3, 3]
    log.write(4, _records())
    assert [r["step"] for r in read_completions(tmp_path)][-2:] == [4, 4]


KILL_CHILD = textwrap.dedent("""
    import sys
    from thinkrl.analysis.completions import CompletionLog, completion_records
    log = CompletionLog(sys.argv[1], per_step=0, max_bytes=1 << 30)
    big = "w" * 10000
    step = 0
    while True:
        step += 1
        n = 64
        recs = completion_records(prompts=["p"] * n, completions=[big + str(i) for i in range(n)],
                                  rewards={"accuracy": [1.0] * n}, advantages=[0.0] * n, lengths=[1] * n,
                                  finish_reasons=["stop"] * n, group_ids=list(range(n)), policy_version=step)
        log.write(step, recs)
        print(step, flush=True)
""")


def test_kill_9_leaves_every_flushed_step_complete(tmp_path):
    """A writer killed with SIGKILL mid-run: every step it reported flushed is complete on disk, at most one
    torn line follows, and the reader returns the complete records."""
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    done = []
    deadline = time.monotonic() + 60
    while len(done) < 3 and time.monotonic() < deadline:
        done.append(int(proc.stdout.readline()))
    time.sleep(0.05)  # let it get into the next step's write
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL and len(done) >= 3
    records = read_completions(tmp_path)
    steps = [r["step"] for r in records]
    for s in done:  # reported after write() returned: all 64 records of the step are there
        assert steps.count(s) == 64
    assert all(steps.count(s) == 64 for s in set(steps) if s <= done[-1])
    assert all(r["completion"].startswith("w" * 10000) for r in records)
    raw = (tmp_path / FILE).read_bytes()
    assert raw.count(b"\n") >= 64 * len(done)
    # a killed mid-line file ends with a partial line; the next writer cuts it before appending
    CompletionLog(tmp_path, per_step=0).write(10_000, _records())
    assert read_completions(tmp_path)[-1]["step"] == 10_000


# --------------------------------------------------------------------------------------- JSON lines
def test_reader_skips_only_a_torn_last_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "x"')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    p.write_text('{"step": 1}\n{"step": 2, "x"\n{"step": 3}\n')
    with pytest.raises(RunFileError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(tmp_path)
    p.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(RunFileError, match=r":2: expected a JSON object"):
        read_jsonl(p)
    p.write_bytes(b'{"step": 1}\n{"s": "\xff\xfe')  # torn inside a multi-byte character
    assert read_jsonl(p) == [{"step": 1}]
    with pytest.raises(FileNotFoundError, match="is .* a thinkrl run directory"):
        read_metrics(tmp_path / "nope")


def test_drop_torn_tail(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text('{"a": 1}\n{"a": 2')
    assert drop_torn_tail(p) == len('{"a": 2')
    assert p.read_text() == '{"a": 1}\n' and drop_torn_tail(p) == 0
    p.write_text("x" * 100_000)  # no newline at all: everything is a fragment
    assert drop_torn_tail(p) == 100_000 and p.read_text() == ""


# ------------------------------------------------------------------------------------- W&B / TB tables
def test_tables_for_wandb_and_tensorboard(monkeypatch):
    recs = _records(n_groups=1, g=2)
    recs[0]["completion"] = "a | b\nc"
    columns, rows = table_rows(recs)
    assert columns[-2:] == ["reward/accuracy", "reward/format"] and rows[1][-2:] == [1.0, 1.0]
    md = markdown_table(recs)
    assert "a \\| b ⏎ c" in md and md.count("\n") == 4

    logged = {}

    class FakeTable:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    class FakeRun:
        def log(self, payload, step):
            logged["wandb"] = (payload, step)

    class FakeWriter:
        def add_text(self, tag, text, step):
            logged["tb"] = (tag, text, step)

    monkeypatch.setitem(sys.modules, "wandb", type(sys)("wandb"))
    sys.modules["wandb"].Table = FakeTable
    log_completion_table(recs, 12, wandb_run=FakeRun(), tb_writer=FakeWriter())
    payload, step = logged["wandb"]
    assert step == 12 and payload["completions"].columns == columns and payload["completions"].data == rows
    assert logged["tb"][0] == "completions" and logged["tb"][2] == 12 and "reward/format" in logged["tb"][1]


def test_records_with_nan_reward_stay_valid_json(tmp_path):
    recs = _records(n_groups=1, g=2)
    recs[0]["reward"] = None
    CompletionLog(tmp_path).write(1, recs)
    text = (tmp_path / FILE).read_text()
    assert "NaN" not in text and math.isfinite(read_completions(tmp_path)[1]["reward"])
