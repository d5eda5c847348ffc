"""``thinkrl pipeline``: references and config errors; the R1 shape (sft -> rl -> sample -> sft from the base ->
eval) on a tiny model, killed (SIGKILL) inside stage 3 and rerun; skip, refuse and --force on the finished run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from thinkrl.config import ConfigError
from thinkrl.pipeline import PipelineError, build_pipeline, load_pipeline, run_pipeline
from thinkrl.pipeline.runner import DONE_FILE
from thinkrl.testing import char_tokenizer, tiny_model

QUESTIONS = [(a, b) for a in range(1, 5) for b in range(2, 4)]  # 8 prompts


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_base(path: Path, arch: str = "llama", chars: str | None = None) -> str:
    tok = char_tokenizer(chars) if chars else char_tokenizer()
    tiny_model(arch, len(tok), max_positions=512).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def tiny_pipeline(tmp: Path) -> dict:
    """Five stages in the R1 order; the third (sample) has 4 batches, so a kill after its first leaves work."""
    rows = [{"question": f"what is {a} plus {b}", "answer": str(a + b)} for a, b in QUESTIONS]
    cold = [{**r, "response": f"<think>{r['answer']}</think> <answer>{r['answer']}</answer>"} for r in rows]
    quiet = {"log": {"progress": False}}
    rl_sizes = {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 8}
    return {
        "output_dir": str(tmp / "pipe"),
        "vars": {"base": make_base(tmp / "base"), "prompts": write_jsonl(tmp / "prompts.jsonl", rows)},
        "stages": [
            {"name": "cold", "kind": "sft", "model.path": "${vars.base}", **quiet,
             "data": {"train": write_jsonl(tmp / "cold.jsonl", cold), "template": "plain", "prompt_key": "question"},
             "train": {"max_steps": 2, "lr": 1e-3, "micro_batch_size": 4, "max_seq_len": 128}},
            {"name": "rl", "kind": "rl", "model.path": "${stages.cold.model}", **quiet,
             "data": {"train": "${vars.prompts}", "template": "plain"}, "rollout": rl_sizes,
             "algorithm.beta": 0.0, "train": {"steps": 1, "lr": 1e-3, "micro_batch_size": 4}},
            {"name": "resample", "kind": "sample", "model": "${stages.rl.model}", "data": "${vars.prompts}",
             "k": 2, "max_new_tokens": 8, "template": "plain", "batch_size": 2, "progress": False,
             "filters": {"drop_truncated": False}},
            {"name": "sft2", "kind": "sft", "model.path": "${vars.base}", "data.train": "${stages.resample.data}",
             "train": {"max_steps": 1, "lr": 1e-3, "micro_batch_size": 4, "max_seq_len": 128}, **quiet},
            {"name": "final", "kind": "eval", "model": "${stages.sft2.model}", "data": "${vars.prompts}",
             "split": "train", "k": 2, "max_new_tokens": 8, "template": "plain", "progress": False},
        ],
    }  # fmt: skip


def file_hashes(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha1, mtime_ns)} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import thinkrl.eval.files as files
append = files.append_samples
def append_then_die(path, records):  # the first batch of stage 3 reaches the disk, then SIGKILL: no cleanup
    append(path, records)
    if "resample" in str(path):
        os.kill(os.getpid(), signal.SIGKILL)
files.append_samples = append_then_die
from thinkrl.cli import main
sys.exit(main(["pipeline", sys.argv[1]]))
"""


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Run the pipeline in a subprocess killed inside stage 3, then rerun it here to the end."""
    tmp = tmp_path_factory.mktemp("pipeline")
    raw = tiny_pipeline(tmp)
    (tmp / "pipe.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), str(tmp / "pipe.yaml")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-3000:]
    root = Path(raw["output_dir"])
    before = {name: file_hashes(root / name) for name in ("cold", "rl")}
    partial = (root / "resample" / "samples.jsonl").read_text().splitlines()
    records = run_pipeline(load_pipeline(tmp / "pipe.yaml"))
    return tmp, root, before, partial, records


def test_kill_in_stage_3_then_rerun_finishes_from_stage_3(killed_and_resumed):
    tmp, root, before, partial, records = killed_and_resumed
    assert [(r.name, r.status) for r in records] == [
        ("cold", "skipped"), ("rl", "skipped"), ("resample", "resumed"), ("sft2", "ran"), ("final", "ran"),
    ]  # fmt: skip
    for name in ("cold", "rl"):  # stages 1-2: every file byte- and mtime-identical
        assert file_hashes(root / name) == before[name]
    samples = (root / "resample" / "samples.jsonl").read_text().splitlines()
    assert len(partial) == 4 and samples[:4] == partial and len(samples) == 16  # resumed, not redrawn
    assert all((root / n / DONE_FILE).exists() for n in ("resample", "sft2", "final"))
    # the inputs were the earlier stages' outputs
    assert (root / "rl" / "model" / "model.safetensors").exists()
    assert not (root / "rl" / "model" / "trainer_state.pt").exists()
    sft2 = yaml.safe_load((root / "sft2" / "stage_config.yaml").read_text())
    assert sft2["data"]["train"] == str(root / "resample" / "sft.jsonl")
    summary = json.loads((root / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["cold", "rl", "resample", "sft2", "final"]
    assert summary["stages"][0]["metrics"]["final loss"] > 0 and "pass@1" in summary["stages"][4]["metrics"]
    table = (root / "summary.md").read_text()
    assert "| resample | sample | resumed |" in table and "kept 16" in table


def test_rerun_skips_everything_and_touches_nothing(killed_and_resumed):
    tmp, root, *_ = killed_and_resumed
    stages = ["cold", "rl", "resample", "sft2", "final"]
    before = {n: file_hashes(root / n) for n in stages}
    records = run_pipeline(load_pipeline(tmp / "pipe.yaml"))
    assert {r.status for r in records} == {"skipped"}
    until = run_pipeline(load_pipeline(tmp / "pipe.yaml"), only=["rl"])
    assert [r.status for r in until] == ["skipped", "skipped", "pending", "pending", "pending"]
    assert {n: file_hashes(root / n) for n in stages} == before


def test_changed_config_is_refused_and_force_redoes_it_and_its_readers(killed_and_resumed):
    tmp, root, *_ = killed_and_resumed
    changed = load_pipeline(tmp / "pipe.yaml", ["sft2.train.lr=2e-3"])
    with pytest.raises(PipelineError, match=r"stage 'sft2' was finished with another config.*--force sft2"):
        run_pipeline(changed)
    untouched = file_hashes(root / "resample")
    records = run_pipeline(changed, force=["sft2"])
    assert [r.status for r in records] == ["skipped", "skipped", "skipped", "ran", "ran"]
    assert file_hashes(root / "resample") == untouched
    run_pipeline(
        load_pipeline(tmp / "pipe.yaml"), force=["sft2"]
    )  # back to the file's config for other tests


def minimal(stages: list[dict], **top) -> dict:
    return {"output_dir": "/tmp/never-written", **top, "stages": stages}


EVAL = {"kind": "eval", "model": "m", "data": "d.jsonl"}


def test_references_and_overrides_resolve():
    raw = minimal(
        [{"name": "a", "kind": "sample", "model": "${vars.m}", "data": "d.jsonl", "filters.keep": "correct"},
         {"name": "b", "kind": "sft", "model.path": "${vars.m}", "data.train": "${stages.a.data}"},
         {"name": "c", **EVAL, "model": "${stages.b.model}"}],
        vars={"m": "demo"},
    )  # fmt: skip
    p = build_pipeline(raw, ["vars.m=other", "b.train.lr=0.5", "output_dir=/tmp/p2"])
    a, b, c = p.stages
    assert a.cfg.model == "other" and a.cfg.filters.keep == "correct"
    assert b.cfg.data.train == "/tmp/p2/a/sft.jsonl" and b.cfg.train.lr == 0.5 and b.cfg.train.resume
    assert b.cfg.train.output_dir == "/tmp/p2/b/run" and c.cfg.model == "/tmp/p2/b/model"
    assert c.deps == ["b"] and p.dependents("a") == ["a", "b", "c"]
    assert build_pipeline(raw, ["output_dir=/tmp/p3"]).stages[2].hash == build_pipeline(raw).stages[2].hash
    assert build_pipeline(raw, ["b.train.lr=0.5"]).stages[2].hash != build_pipeline(raw).stages[2].hash
    quiet = ["a.progress=false", "b.log.progress=false"]  # logging does not change what a stage computes
    assert [s.hash for s in build_pipeline(raw, quiet).stages] == [s.hash for s in build_pipeline(raw).stages]


@pytest.mark.parametrize(
    "stages, overrides, message",
    [
        ([{"name": "a", "kind": "train"}], [], r"kind='train'; valid: sft, rl, sample, eval"),
        ([{"name": "a", **EVAL}, {"name": "a", **EVAL}], [], "repeated: a"),
        ([{"name": "a", **EVAL, "model": "${stages.b.model}"}, {"name": "b", "kind": "sft"}], [],
         "names no earlier stage"),
        ([{"name": "a", **EVAL}, {"name": "b", **EVAL, "model": "${stages.a.model}"}], [],
         "a eval stage's outputs are samples, summary, dir"),
        ([{"name": "a", **EVAL, "model": "${vars.nope}"}], [], r"\$\{vars.nope\} is not defined"),
        ([{"name": "a", **EVAL, "model": "${env.HOME}"}], [], "only"),
        ([{"name": "a", "kind": "sft", "train.lrr": 1}], [], "stage 'a': invalid config: unknown key 'train.lrr'"),
        ([{"name": "a", "kind": "rl", "model.path": "m", "train.steps": 0}], [], "train.steps must be >= 1 in a"),
        ([{"name": "a", "kind": "sample", "model": "m", "data": "d", "filters.keep": "best"}], [], "keep='best'"),
        ([{"name": "a", **EVAL, "model": ""}], [], "model and data are required"),
        ([{"name": "a", "kind": "sft"}], [], "stage 'a' \\(sft\\): model.path is empty"),
        ([{"name": "vars", **EVAL}], [], "not vars/output_dir"),
        ([{"name": "a", **EVAL}], ["z.k=2"], "STAGE one of a"),
    ],
)  # fmt: skip
def test_config_errors_name_the_stage_and_the_fix(stages, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_pipeline(minimal(stages), overrides)


def test_shipped_pipelines_load(tmp_path):
    filled = ["vars.base_model=/models/base", "vars.cold_start_data=cs.jsonl", "vars.train_prompts=p.jsonl",
              "vars.reasoning_prompts=p.jsonl", "vars.all_prompts=mixed.jsonl"]  # fmt: skip
    for path in sorted(Path("configs/pipelines").glob("*.yaml")):
        p = load_pipeline(path, [f"output_dir={tmp_path / path.stem}", *filled])
        assert p.stages and all(s.hash for s in p.stages), path
    r1 = load_pipeline("configs/pipelines/r1.yaml", [f"output_dir={tmp_path}", *filled])
    assert [s.kind for s in r1.stages] == ["sft", "rl", "sample", "sft", "rl"]
    assert (
        r1.stages[3].cfg.model.path == r1.stages[0].cfg.model.path
    )  # stage 3 SFT starts from the base again
    assert r1.stages[4].cfg.rollout.temperature == 0.7
