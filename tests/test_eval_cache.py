"""Evaluation caches keyed by what produced them: the model's weights, the prompts and answers, every setting."""

from __future__ import annotations

import json

import pytest

from thinkrl.eval import EvalResumeError, evaluate
from thinkrl.testing import char_tokenizer, tiny_model

ROWS = [{"id": str(i), "question": f"{i}+{i}", "answer": str(2 * i)} for i in range(3)]
SETTINGS = dict(k=2, max_new_tokens=3, template="{question}=", progress=False)


def test_another_model_never_reuses_the_samples(tmp_path, capsys):
    tok = char_tokenizer()
    a, b = tiny_model("llama", len(tok), seed=0), tiny_model("llama", len(tok), seed=1)
    out = tmp_path / "step-000003"
    first = evaluate(a, tok, ROWS, out_dir=out, **SETTINGS)
    assert "reusing" not in capsys.readouterr().out
    again = evaluate(a, tok, ROWS, out_dir=out, **SETTINGS)  # the same model: reused, and said so
    assert "reusing 6 of 6 samples" in capsys.readouterr().out and again.samples == first.samples
    with pytest.raises(
        EvalResumeError, match=r"holds samples drawn by another model \(weights: '\w+' -> '\w+'\)"
    ):
        evaluate(b, tok, ROWS, out_dir=out, **SETTINGS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_identity"]["weights"] == first.summary["model_identity"]["weights"]


def test_a_changed_gold_answer_needs_a_regrade(tmp_path):
    tok = char_tokenizer()
    model = tiny_model("llama", len(tok))
    evaluate(model, tok, ROWS, out_dir=tmp_path, **SETTINGS)
    fixed = [{**ROWS[0], "answer": "1"}, *ROWS[1:]]
    with pytest.raises(
        EvalResumeError, match=r"problem '0' graded against another gold answer; rerun with --regrade"
    ):
        evaluate(model, tok, fixed, out_dir=tmp_path, **SETTINGS)
    evaluate(model, tok, fixed, out_dir=tmp_path, regrade=True, **SETTINGS)
    evaluate(model, tok, fixed, out_dir=tmp_path, **SETTINGS)  # graded against the new answers now


def test_default_out_folders_are_one_per_model(tmp_path, monkeypatch, capsys):
    from thinkrl.cli import main

    monkeypatch.chdir(tmp_path)
    tok = char_tokenizer()
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for run, seed in (("a", 0), ("b", 1)):
        ckpt = tmp_path / "runs" / run / "checkpoints" / "step-000003"
        tiny_model("llama", len(tok), seed=seed).save_pretrained(ckpt)
        tok.save_pretrained(ckpt)
        argv = ["eval", str(ckpt), "--data", str(data), "--k", "2", "--max-new-tokens", "3", "--template", "plain",
                "--no-progress"]  # fmt: skip
        assert main(argv) == 0
    folders = sorted(p.name for p in (tmp_path / "runs" / "eval").iterdir())
    assert (
        len(folders) == 2
        and folders[0].startswith("a-step-000003-")
        and folders[1].startswith("b-step-000003-")
    )
    weights = {
        json.loads(f.read_text())["weights"]
        for f in (tmp_path / "runs" / "eval").glob("*/q/eval_config.json")
    }
    assert len(weights) == 2


def test_eval_builtin_demo_works_as_the_pipeline_eval_stage(tmp_path, capsys):
    from thinkrl.cli import main
    from thinkrl.pipeline import load_pipeline
    from thinkrl.pipeline.stages import run_stage

    flags = {"k": 2, "max_new_tokens": 24, "batch_size": 4, "limit": 4}
    argv = ["eval", "demo", "--data", "builtin:demo", "--out", str(tmp_path / "cli"), "--no-progress"]
    assert main(argv + [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]) == 0
    spec = tmp_path / "p.yaml"
    body = ", ".join(f"{k}: {v}" for k, v in flags.items())
    spec.write_text(
        f"output_dir: {tmp_path / 'pipe'}\n"
        f"stages:\n  - {{name: ev, kind: eval, model: demo, data: 'builtin:demo', progress: false, {body}}}\n"
    )
    run_stage(load_pipeline(spec).stages[0])
    cli = [json.loads(ln) for ln in (tmp_path / "cli" / "demo" / "samples.jsonl").read_text().splitlines()]
    stage = [json.loads(ln) for ln in (tmp_path / "pipe" / "ev" / "samples.jsonl").read_text().splitlines()]
    assert len(cli) == 8
    key = lambda r: (r["id"], r["sample_idx"])  # noqa: E731
    assert [(key(r), r["completion"]) for r in sorted(cli, key=key)] == [
        (key(r), r["completion"]) for r in sorted(stage, key=key)
    ]
