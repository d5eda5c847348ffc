"""The command line, the report, and the demo pipeline at toy size."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from thinkrl.analysis.completions import CompletionLog, completion_records
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
    assert "valid: dr_grpo, gae, grpo, reinforce_pp, rloo" in capsys.readouterr().err


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
    assert "data:image/png;base64," in html and "Held-out evaluations" in html
    assert "0.250 → 0.750" in html  # the headline
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # completions are escaped
    table = format_comparison(summary)
    assert "pass@1" in table and "0.250" in table and "0.750" in table


FIXTURE = Path(__file__).parent / "fixtures" / "demo_run"
ATTACK = "</script><script>document.documentElement.dataset.pwned='1'</script><img src=x onerror=alert(1)>"


def _demo_run_with_completions(tmp_path, attack: bool = False) -> Path:
    """The demo's real metrics, summary and config, plus a completion log of 4 steps x 8 rows."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    log = CompletionLog(run, per_step=0)
    for step in (1, 10, 20, 30):
        texts = [f" <think> {step} plus {i} </think> <answer>{step + i}</answer>" for i in range(8)]
        if attack:
            texts[0] = ATTACK
        log.write(step, completion_records(
            prompts=["what is ..."] * 8, completions=texts, rewards={"accuracy": [float(i % 2) for i in range(8)]},
            advantages=[0.5 - i % 2 for i in range(8)], lengths=[20] * 8,
            finish_reasons=["stop"] * 7 + ["length"], group_ids=[i // 4 for i in range(8)], policy_version=step,
            accuracy_name="accuracy",
        ))  # fmt: skip
    if attack:
        summary = json.loads((run / "summary.json").read_text())
        summary["samples"]["base"][0]["completion"] = ATTACK
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_layout_reads_first(tmp_path):
    html = build_report(_demo_run_with_completions(tmp_path)).read_text()
    order = ["<h2>Headline", "Why training accuracy and held-out pass@1 differ", "<h2>Training curves",
             "<h2>Run doctor", "<h2>Sample completions", "<h2>Completions during training", "<h2>All metrics"]  # fmt: skip
    positions = [html.index(h) for h in order]
    assert positions == sorted(positions)
    # headline: pass@1 before -> after with its interval, format rate, mean length, mode mix
    assert "0.385 → 0.885" in html and "95% interval ±0.037 → ±0.031" in html
    assert "38% → 100%" in html and "51 → 116 tokens" in html and "Mode mix" in html
    assert "steps 38%, direct 44%, malformed 18%" in html
    # the explanation names this run's sampling settings
    assert "temperature 1.0 (top-p 1.0)" in html and "temperature 0.6, top-p 0.95" in html
    assert "No problems found" in html
    # every metric in words, raw key beside it; no blank cells
    assert (
        "Share of completions cut at the length cap <span class='key'>completion/truncated_frac</span>"
        in html
    )
    assert "Accuracy of &#x27;direct&#x27; samples" in html and "<td></td>" not in html
    assert "32 of 32 completions" not in html  # the count is written by the page's script, not the server


def test_report_without_summary_uses_the_runs_evaluations(tmp_path):
    run = _demo_run_with_completions(tmp_path)
    (run / "summary.json").unlink()
    html = build_report(run).read_text()
    assert "0.400 → 0.890" in html and "first evaluation (step 0) → last evaluation (step 30)" in html
    assert "95% interval 0.325-0.475" in html


def test_report_escapes_model_text(tmp_path):
    html = build_report(_demo_run_with_completions(tmp_path, attack=True)).read_text()
    assert "<script>document.documentElement.dataset.pwned" not in html
    assert "&lt;/script&gt;&lt;script&gt;" in html  # the held-out sample, as text
    assert "\\u003c/script>\\u003cscript>" in html  # the completions table's data


def _chromium(*args: str, profile) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]  # fmt: skip
    out = subprocess.run(
        [shutil.which("chromium"), *flags, *args], capture_output=True, text=True, timeout=120
    )
    return out.stdout


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="headless Chromium is not installed (apt-get install chromium)"
)
def test_report_in_headless_chromium(tmp_path):
    """The page renders, the completions table's script filters, model text cannot run script, and the
    screenshot script captures the whole page (it used to cut at 2400 px)."""
    run = _demo_run_with_completions(tmp_path, attack=True)
    url = build_report(run).resolve().as_uri()
    dom = _chromium("--window-size=1200,1000", "--dump-dom", url, profile=tmp_path / "p1")
    assert 'data-completions-match="32"' in dom and 'data-completions-shown="20"' in dom  # page 1 of 2
    assert "data-pwned" not in dom  # the attack stayed text
    height = int(re.search(r'data-page-height="(\d+)"', dom).group(1))
    assert height > 2400
    dom = _chromium("--dump-dom", url + "#corr=false&smin=10", profile=tmp_path / "p2")
    assert 'data-completions-match="12"' in dom  # wrong answers (odd rows) of steps 10, 20, 30
    dom = _chromium("--dump-dom", url + "#fin=length&q=plus", profile=tmp_path / "p3")
    assert 'data-completions-match="4"' in dom  # the last row of each step (cut at the cap), all with "plus"

    script = Path(__file__).parent.parent / "scripts" / "screenshot_report.sh"
    out = subprocess.run(["bash", str(script), str(run)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    png = (run / "report.png").read_bytes()
    width, png_height = struct.unpack(">II", png[16:24])
    assert (width, png_height) == (1200, height)


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
    assert "<h2>Headline" in html and "Sample completions" in html and "<h2>Run doctor" in html
    for name in ("reward_mean", "accuracy", "format_rate", "completion_len_mean", "completion_reflection_rate",
                 "eval_pass_at_1"):  # fmt: skip
        assert (tmp_path / "demo" / "plots" / f"{name}.png").exists(), name
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]  # the step-0 eval record, then two training steps
