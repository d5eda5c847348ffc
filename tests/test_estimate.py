"""`thinkrl estimate`: a tiny config against a hand calculation, model shapes, R1-Zero, mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import thinkrl
from thinkrl.analysis.estimate import (
    DEEPSEEK_V3,
    EstimateError,
    Workload,
    eval_runs,
    format_r1_zero,
    gpu_hours,
    load_shape,
    r1_zero_workload,
    run_costs,
    shape_from_config,
    step_costs,
    workload_from_config,
)
from thinkrl.cli import main
from thinkrl.config import load_config
from thinkrl.testing import char_tokenizer

TINY = {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "head_dim": 4,
        "num_key_value_heads": 2, "intermediate_size": 16, "vocab_size": 10, "tie_word_embeddings": True}  # fmt: skip


@pytest.fixture
def tiny_run(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        f"model: {{path: {model}}}\n"
        "rollout: {prompts_per_step: 2, group_size: 2, max_new_tokens: 6}\n"
        "train: {steps: 5}\n"
        "eval: {every_steps: 5, k: 2, max_problems: 3}\n"
        "data: {eval: some.jsonl}\n"
    )
    return model, cfg


def test_tiny_config_matches_a_hand_calculation(tiny_run):
    model, path = tiny_run
    cfg = load_config(path)
    shape = load_shape(cfg.model.path)
    # attention: q, k, v, o = 4 x 8 x 8 = 256; gated MLP 3 x 8 x 16 = 384; tied LM head 10 x 8 = 80
    assert shape.matmul_params == 720
    w = workload_from_config(cfg, prompt_tokens=4, completion_tokens=3)
    assert (w.prompts, w.group, w.steps, w.eval_runs, w.eval_problems, w.eval_k) == (2, 2, 5, 2, 3, 2)
    # per token 2N = 1440 FLOPs; attention 2 x layers x heads x (d_qk + d_v) = 32 FLOPs per attended token
    # prompts: 2 x 4 = 8 tokens, contexts 2 x 4^2/2 = 16 -> 1440*8 + 32*16 = 12,032
    # completions: 4 x 3 = 12 tokens, contexts 4 x (3*4 + 3^2/2) = 66 -> 1440*12 + 32*66 = 19,392
    one_pass = 12_032 + 19_392
    step = step_costs(shape, w)
    # the prompt is scored once per group (share_prompt)
    assert step["generate"] == one_pass and step["ref_logp"] == one_pass
    assert step["old_logp"] == 0  # one epoch, one minibatch: on-policy, no old pass
    assert step["train"] == 3 * one_pass  # forward + backward (2x forward)
    assert (step["tokens_generated"], step["tokens_trained"]) == (12, 20)
    # evaluation: 3 problems x 4 prompt tokens (contexts 3 x 8 = 24) + 6 samples x 3 tokens (contexts 6 x 16.5)
    one_eval = (1440 * 12 + 32 * 24) + (1440 * 18 + 32 * 99)
    run = run_costs(shape, w)
    assert run["eval"] == 2 * one_eval  # before step 1 and after step 5
    assert run["total"] == 5 * 5 * one_pass + 2 * one_eval == 879_872
    assert gpu_hours(run["total"], "A100", 0.5) == pytest.approx(879_872 / (312e12 * 0.5) / 3600)


def test_options_change_the_count(tiny_run):
    _, path = tiny_run
    shape = load_shape(load_config(path).model.path)
    base = step_costs(shape, workload_from_config(load_config(path), prompt_tokens=4, completion_tokens=3))
    off = load_config(path, ["algorithm.num_minibatches=2", "algorithm.ppo_epochs=2", "algorithm.beta=0",
                             "train.share_prompt=false", "model.gradient_checkpointing=true"])  # fmt: skip
    step = step_costs(shape, workload_from_config(off, prompt_tokens=4, completion_tokens=3))
    # the prompt scored once per completion: prompts 4 x 4 = 16 tokens, contexts 4 x 8 = 32
    scored = (1440 * 16 + 32 * 32) + 19_392
    assert step["ref_logp"] == 0 and step["old_logp"] == scored and step["train"] == 2 * 4 * scored
    assert step["generate"] == base["generate"]


def test_eval_runs_match_the_trainer():
    assert [eval_runs(30, 10), eval_runs(5, 5), eval_runs(7, 5), eval_runs(7, 0)] == [4, 2, 3, 0]


def test_prompt_length_is_measured_with_the_runs_tokenizer(tmp_path):
    tok = char_tokenizer()
    model = tmp_path / "m"
    model.mkdir()
    tok.save_pretrained(model)
    (model / "config.json").write_text(json.dumps(TINY))
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in ("12", "1234")))
    cfg = load_config(None, [f"model.path={model}", f"data.train={data}", "data.template='{question}='"])
    w = workload_from_config(cfg)
    assert w.prompt_tokens == 4.0  # "12=" and "1234=": one token per character
    assert w.completion_tokens == cfg.rollout.max_new_tokens and "upper bound" in " ".join(w.notes)
    missing = load_config(None, [f"model.path={model}", f"data.train={tmp_path / 'none.jsonl'}"])
    w = workload_from_config(missing)
    assert w.prompt_tokens == missing.data.max_prompt_tokens and "could not measure" in w.notes[0]


def test_shapes_of_known_architectures():
    gpt2 = shape_from_config({"model_type": "gpt2", "n_embd": 8, "n_layer": 2, "n_head": 2, "vocab_size": 10})
    assert gpt2.matmul_params == 2 * (4 * 64 + 2 * 8 * 32) + 80  # 4h MLP, two matrices
    mixtral = shape_from_config({**TINY, "num_local_experts": 8, "num_experts_per_tok": 2})
    # 2 of 8 experts per token (+ the router 8 x 8); all 8 held in memory
    assert mixtral.matmul_params == 256 + 2 * 384 + 64 + 80
    assert mixtral.total_params == 256 + 8 * 384 + 64 + 80
    v3 = load_shape("deepseek-v3")
    assert v3.total_params == pytest.approx(671e9, rel=0.01)  # the published 671B
    activated = v3.matmul_params + DEEPSEEK_V3["vocab_size"] * DEEPSEEK_V3["hidden_size"]  # + input embedding
    assert activated == pytest.approx(37e9, rel=0.02)  # the published 37B activated per token


def test_r1_zero_comparison():
    w = r1_zero_workload()
    assert (w.prompts * w.group, w.steps * w.num_minibatches) == (8192, 10_400)  # the paper's numbers
    text = format_r1_zero(8000, 256)
    assert "101,000 H800 GPU-hours" in text and "6.7% of that" in text
    assert "generation would have run at" in text
    # twice the completion length -> more than twice the FLOPs (attention grows with context)
    shape = load_shape("deepseek-v3")
    assert run_costs(shape, r1_zero_workload(16000))["total"] > 2 * run_costs(shape, w)["total"]


def test_mistakes_get_clear_errors(tmp_path):
    with pytest.raises(EstimateError, match="unknown GPU 'V100'; valid: H100, H200, H800, A100"):
        gpu_hours(1.0, "V100", 0.3)
    with pytest.raises(EstimateError, match=r"utilisation=1.5 must be in \(0, 1\]"):
        gpu_hours(1.0, "H100", 1.5)
    with pytest.raises(EstimateError, match="pass --model-config"):
        load_shape(str(tmp_path / "nowhere"))
    with pytest.raises(EstimateError, match="is not a file"):
        load_shape("x", str(tmp_path / "missing.json"))
    with pytest.raises(EstimateError, match="has no 'vocab_size'"):
        shape_from_config({"hidden_size": 8})
    assert Workload(1, 2, 3, 4, 5).eval_runs == 0


def test_estimate_cli(tiny_run, capsys):
    _, path = tiny_run
    args = ["estimate", str(path), "--prompt-tokens", "4", "--completion-tokens", "3", "--gpu", "A100"]
    assert main([*args, "--utilisation", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "720 matmul parameters" in out and "= 880K" in out and "at 50% utilisation" in out
    assert main(["estimate", "--r1-zero"]) == 0
    assert "101,000" in capsys.readouterr().out
    demo_yaml = Path(thinkrl.__file__).parent / "demo" / "demo.yaml"
    assert main(["estimate", str(demo_yaml), "--completion-tokens", "110"]) == 0
    assert "model demo: 1.06M matmul parameters" in capsys.readouterr().out
    assert main(["estimate", "model.path=no/such/model", "--utilisation", "2"]) == 2
    assert "cannot find the shape of model.path='no/such/model'" in capsys.readouterr().err
