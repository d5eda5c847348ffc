"""Run safety with the features merged after it: a PPO critic and the adaptive entropy coefficient in the JSON +
safetensors trainer state, the tools and asynchronous sections in the run folder's config, evaluation with a
tool, ``keep_last`` after a resume, and length limits as one-line errors in every command."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from conftest import make_trainer, params, run_metrics

from thinkrl.cli import main
from thinkrl.testing import char_tokenizer, tiny_model
from thinkrl.train.checkpoint import read_manifest
from thinkrl.train.runs import RunFolderError


def _ckpt(run, step):
    return run / "checkpoints" / f"step-{step:06d}"


def test_critic_and_entropy_target_resume_bit_exact_from_json_state(tmp_path):
    """advantage=gae with the value head on the policy's trunk, and entropy_target's controller: a run stopped
    at step 2 and resumed ends with the very same bits (policy, head, critic optimizer, metrics) as one that
    never stopped; its checkpoint holds no pickle."""
    overrides = ("algorithm.advantage=gae", "critic.lr=1e-2", "algorithm.entropy_target=100",
                 "algorithm.entropy_coef_delta=0.01", "algorithm.entropy_coef_max=1", "train.save_every=1")  # fmt: skip
    full = make_trainer(tmp_path / "a", *overrides, "train.steps=3")
    full_hist = full.train()
    make_trainer(tmp_path / "b", *overrides, "train.steps=2").train()
    ckpt = _ckpt(tmp_path / "b" / "run", 2)
    assert not list(ckpt.rglob("*.pt")) and not list(ckpt.rglob("*.bin"))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert set(state["learner"]) == {"entropy_coef", "critic", "critic_optimizer"}
    resumed = make_trainer(tmp_path / "b", *overrides, "train.steps=3", "train.resume=true", seed=123)
    assert resumed.critic.shared and resumed.learner.entropy_applied == pytest.approx(0.02)  # 0, 0.01, 0.02
    resumed_hist = resumed.train()
    for got, want in ((resumed.model, full.model), (resumed.critic, full.critic)):
        for k, v in params(want).items():
            assert torch.equal(params(got)[k], v), k
    for got, want in zip(
        resumed.learner.critic_optimizer.state_dict()["state"].values(),
        full.learner.critic_optimizer.state_dict()["state"].values(),
    ):
        assert all(torch.equal(torch.as_tensor(got[k]), torch.as_tensor(want[k])) for k in want)
    skip = ("time/", "throughput/", "reward/seconds/")
    want = {k: v for k, v in full_hist[-1].items() if not k.startswith(skip)}
    assert {k: resumed_hist[-1][k] for k in want} == want
    assert [r["step"] for r in run_metrics(tmp_path / "b" / "run")] == [1, 2, 3]


def test_config_yaml_records_the_tools_and_asynchronous_sections(tmp_path):
    """config.yaml holds every section as the run used it, the rewards passed as callables among them, and
    the tools and asynchronous settings are part of the run's identity (a resume with others refuses)."""
    make_trainer(tmp_path, "train.steps=1", "tools.max_calls=3", "asynchronous.weight_sync=nccl").train()
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["tools"]["max_calls"] == 3 and cfg["tools"]["enabled"] is False
    assert cfg["asynchronous"]["weight_sync"] == "nccl" and cfg["critic"]["model"] == "head"
    assert [r["name"] for r in cfg["rewards"]] == ["conftest:copy_digit"]
    with pytest.raises(Exception, match=r"tools.max_calls"):
        make_trainer(tmp_path, "train.steps=2", "train.resume=true", "tools.max_calls=2",
                     "asynchronous.weight_sync=nccl")  # fmt: skip


def test_keep_last_after_a_resume_counts_this_runs_steps(tmp_path, capsys):
    """A resumed run keeps its run id, so keep_last prunes its own older checkpoints (written before the
    resume) and never another run's checkpoint of a higher step."""
    run = tmp_path / "run"
    make_trainer(tmp_path / "other", "train.steps=1").train()
    make_trainer(tmp_path, "train.steps=2", "train.save_every=1", "train.keep_last=2").train()
    run_id = read_manifest(_ckpt(run, 2))["run_id"]
    shutil.copytree(_ckpt(tmp_path / "other" / "run", 1), _ckpt(run, 9))
    resumed = make_trainer(tmp_path, "train.steps=4", "train.save_every=1", "train.keep_last=2",
                           "train.resume=true")  # fmt: skip
    assert resumed.step == 2
    resumed.train()
    names = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert names == ["step-000003", "step-000004", "step-000009"]
    assert {read_manifest(_ckpt(run, s))["run_id"] for s in (3, 4)} == {run_id}
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000004"
    with pytest.raises(RunFolderError, match=r"--resume"):  # and a fresh run there is still refused
        make_trainer(tmp_path, "train.steps=1")


def _model_folder(path, positions=None):
    """A saved model + tokenizer: GPT-2 with ``positions`` absolute positions, else a tiny Llama."""
    tok = char_tokenizer("0123456789=+")
    if positions is None:
        model = tiny_model("llama", len(tok))
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=4,
                                           n_positions=positions, bos_token_id=tok.eos_token_id,
                                           eos_token_id=tok.eos_token_id))  # fmt: skip
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_eval_with_tools_never_reuses_samples_drawn_without(tmp_path, capsys):
    model = _model_folder(tmp_path / "m")
    data = tmp_path / "q.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"{i}+{i}", "answer": str(2 * i)}) + "\n" for i in range(2))
    )
    argv = ["eval", str(model), "--data", str(data), "--k", "1", "--max-new-tokens", "4", "--template", "plain",
            "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    samples = (tmp_path / "out" / "q" / "samples.jsonl").read_text()
    capsys.readouterr()
    assert main([*argv, "--tools"]) == 2
    err = capsys.readouterr().err
    assert "holds samples drawn by other settings (environment: None -> {" in err and "Traceback" not in err
    assert (tmp_path / "out" / "q" / "samples.jsonl").read_text() == samples


def test_length_limits_are_one_line_errors_in_every_command(tmp_path, capsys):
    """prompt + max_new_tokens past GPT-2's 16 positions: train, eval, sample and sft refuse at start with the
    fix, as one line (rc 2), before generating or training anything."""
    model = _model_folder(tmp_path / "gpt2", positions=16)
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "1+1=", "response": "2" * 30}) + "\n")
    gen = ["--data", str(data), "--k", "1", "--max-new-tokens", "20", "--template", "plain", "--no-progress"]
    commands = {
        "train": ["train", f"model.path={model}", f"data.train={data}", "data.template=plain",
                  "rollout.max_new_tokens=20", f"train.output_dir={tmp_path / 'rl'}", "log.progress=false"],
        "eval": ["eval", str(model), *gen, "--out", str(tmp_path / "ev")],
        "sample": ["sample", str(model), *gen, "--out", str(tmp_path / "sa")],
        "sft": ["sft", f"model.path={model}", f"data.train={sft}", "data.template=none",
                f"train.output_dir={tmp_path / 'sft'}", "log.progress=false"],
    }  # fmt: skip
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if ln.startswith("thinkrl: error:")]
        assert line.startswith("thinkrl: error: the longest") and "Traceback" not in err, (name, err)
        assert "absolute position embeddings for 16 only" in line, (name, line)
    assert not (tmp_path / "ev" / "q" / "samples.jsonl").exists()
    assert not (tmp_path / "sa" / "samples.jsonl").exists()


def test_a_sample_stage_that_keeps_no_row_fails_and_is_not_done(tmp_path):
    """``filters.max_tokens=0`` removes every sample: the stage raises with what removed them, writes no
    DONE.json, and the SFT stage after it never starts on an empty file."""
    from thinkrl.pipeline import build_pipeline, run_pipeline
    from thinkrl.pipeline.runner import DONE_FILE
    from thinkrl.rejection import SampleError

    model = _model_folder(tmp_path / "m")
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    raw = {
        "output_dir": str(tmp_path / "pipe"),
        "stages": [
            {"name": "pick", "kind": "sample", "model": str(model), "data": str(data), "k": 2, "max_new_tokens": 3,
             "template": "plain", "progress": False, "filters": {"drop_truncated": False, "max_tokens": 0}},
            {"name": "sft", "kind": "sft", "model.path": str(model), "data.train": "${stages.pick.data}",
             "log.progress": False, "train": {"max_steps": 1}},
        ],
    }  # fmt: skip
    with pytest.raises(SampleError, match=r"kept 0 of 2 samples \(too_long removed 2;"):
        run_pipeline(build_pipeline(raw))
    assert not (tmp_path / "pipe" / "pick" / DONE_FILE).exists()
    assert not (tmp_path / "pipe" / "sft").exists()


def test_sft_checks_the_held_out_samples_too(tmp_path):
    """Short training samples but a held-out one past GPT-2's positions: refused at start, not at the first
    evaluation with an index error."""
    from transformers import AutoModelForCausalLM

    from thinkrl.core import LengthError
    from thinkrl.sft import SFTTrainer
    from thinkrl.sft.config import load_sft_config

    folder = _model_folder(tmp_path / "gpt2", positions=16)
    tok = char_tokenizer("0123456789=+")
    cfg = load_sft_config(
        None, ["data.template=none", f"train.output_dir={tmp_path / 'run'}", "log.progress=false"]
    )
    short = [{"prompt": "1+1=", "response": "2"}]
    SFTTrainer(cfg, model=AutoModelForCausalLM.from_pretrained(folder), tokenizer=tok, train_rows=short)
    with pytest.raises(LengthError, match=r"longest sample \(\d+ tokens\) needs \d+ positions.*for 16 only"):
        SFTTrainer(cfg, model=AutoModelForCausalLM.from_pretrained(folder), tokenizer=tok, train_rows=short,
                   eval_rows=[{"prompt": "1+1=", "response": "2" * 30}])  # fmt: skip
