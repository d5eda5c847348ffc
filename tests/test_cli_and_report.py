"""The command line, the report, and the demo pipeline at toy size."""

from __future__ import annotations

import json

import pytest

from thinkrl.analysis.dynamics import reflection_count, reflection_rate
from thinkrl.analysis.report import build_report, format_comparison
from thinkrl.cli import main
from thinkrl.demo import DEMO_BASE_PATH
from thinkrl.testing import char_tokenizer, tiny_model


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "eval", "demo", "report", "pretrain", "config"):
        assert cmd in out


def test_config_command_prints_resolved_yaml(capsys):
    assert main(["config", "algorithm.beta=0.0", "rollout.group_size=4"]) == 0
    out = capsys.readouterr().out
    assert "beta: 0.0" in out and "group_size: 4" in out


def test_bad_override_exits_2_with_message(capsys):
    assert main(["config", "algorithm.advantage=nope"]) == 2
    assert "valid: dr_grpo, grpo, reinforce_pp, rloo" in capsys.readouterr().err


def test_train_command_end_to_end(tmp_path, capsys):
    tok = char_tokenizer("0123456789=<>/abcdefghijklmnopqrstuvwxyz ")
    model_dir = tmp_path / "model"
    tiny_model("qwen2", len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"q": str(i), "a": str(i)}) + "\n" for i in range(6)))
    args = [
        "train", f"model.path={model_dir}", f"data.train={data}", "data.question_key=q", "data.answer_key=a",
        "data.template='{question}='", "rollout.group_size=2", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=3", "train.steps=1", f"train.output_dir={tmp_path / 'run'}", "log.progress=false",
        "rewards=[{name: exact_match, weight: 1.0}, {name: format, weight: 0.5}]",
    ]  # fmt: skip
    assert main(args) == 0
    assert "run directory" in capsys.readouterr().out
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"reward/exact_match", "reward/format", "accuracy", "format_rate"} <= record.keys()
    assert (tmp_path / "run" / "checkpoints" / "step-000001" / "model.safetensors").exists()


def test_train_command_missing_dataset_is_clear(tmp_path, capsys):
    tok = char_tokenizer()
    tiny_model("llama", len(tok)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    args = [
        "train",
        f"model.path={tmp_path / 'm'}",
        f"data.train={tmp_path / 'none.jsonl'}",
        "rollout.group_size=2",
    ]
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_from_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [
        {"step": s, "reward/mean": s / 10, "accuracy": s / 20, "completion/len_mean": 10 + s}
        for s in range(1, 11)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {"evals": {"base": {"pass@1": 0.25}, "after RL": {"pass@1": 0.75}},
               "samples": {"base": [{"question": "q", "answer": "1", "completion": "<b>x</b>", "correct": False}]}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    html = build_report(run).read_text()
    assert (run / "plots" / "reward_mean.png").exists() and (
        run / "plots" / "completion_len_mean.png"
    ).exists()
    assert "data:image/png;base64," in html and "Before and after RL" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # completions are escaped
    table = format_comparison(summary)
    assert "pass@1" in table and "0.250" in table and "0.750" in table


def test_reflection_words():
    assert reflection_count("Wait, let me CHECK: but why? butter is not a word here") == 3
    assert reflection_rate(["wait", "no", "verify this", ""]) == 0.5


@pytest.mark.skipif(not (DEMO_BASE_PATH / "config.json").exists(), reason="no shipped demo base model")
def test_demo_rerun_does_not_reuse_the_previous_runs_samples(tmp_path):
    """Evaluations resume from samples.jsonl; a second demo into the same folder must evaluate its own model."""
    from thinkrl.demo.run import run_demo

    common = ["train.steps=1", "eval.k=2", "eval.every_steps=0", "log.progress=false",
              "rollout.prompts_per_step=4", "rollout.group_size=4"]  # fmt: skip
    first = run_demo(tmp_path / "demo", eval_problems=8, overrides=[*common, "train.lr=0.05"])
    second = run_demo(tmp_path / "demo", eval_problems=8, overrides=[*common, "train.lr=1e-12"])
    assert first["evals"]["after RL"] != first["evals"]["base"]  # the first run's update changed the samples
    # lr 1e-12: the model after RL is the base, to float precision
    assert second["evals"]["after RL"] == second["evals"]["base"]


def test_demo_pipeline_toy_size(tmp_path):
    from thinkrl.demo.run import run_demo

    summary = run_demo(
        tmp_path / "demo", eval_problems=4,
        overrides=["train.steps=2", "eval.k=2", "eval.every_steps=1", "eval.max_problems=4", "log.progress=false",
                   "rollout.prompts_per_step=4", "rollout.group_size=4"],
    )  # fmt: skip
    assert set(summary["evals"]) == {"base", "after RL"}
    for stage in summary["evals"].values():
        assert {"pass@1", "format_rate", "mode/steps", "mode/direct", "mode/malformed"} <= stage.keys()
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "Before and after RL" in html and "Sample completions" in html
    for name in ("reward_mean", "accuracy", "format_rate", "completion_len_mean", "completion_reflection_rate",
                 "eval_pass_at_1"):  # fmt: skip
        assert (tmp_path / "demo" / "plots" / f"{name}.png").exists(), name
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]  # the step-0 eval record, then two training steps
