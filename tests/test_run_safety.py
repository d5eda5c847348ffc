"""Runs that never lose data: run folders, verified checkpoints, no pickles, any architecture, a full disk."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess

import pytest
import torch
from conftest import DIGITS, copy_digit, make_cfg, make_trainer, params, run_metrics

from thinkrl.train.checkpoint import (
    CheckpointError,
    checkpoint_problem,
    latest_checkpoint,
    load_model_weights,
    read_manifest,
)
from thinkrl.train.runs import RunFolderError


def _ckpt(run, step):
    return run / "checkpoints" / f"step-{step:06d}"


# ------------------------------------------------------------------------------------------------ run folders
def test_fresh_run_into_a_run_folder_is_refused_and_overwrite_moves_it_aside(tmp_path):
    make_trainer(tmp_path, "train.steps=2").train()
    run = tmp_path / "run"
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match=r"already holds a run.*--resume.*train.output_dir.*--overwrite"):
        make_trainer(tmp_path, "train.steps=2", seed=1)
    assert (run / "metrics.jsonl").read_text() == before  # untouched
    assert latest_checkpoint(run).name == "step-000002"

    fresh = make_trainer(tmp_path, "train.steps=1", "train.overwrite=true", seed=1)
    fresh.train()
    old = tmp_path / "run.old-1"
    assert (old / "metrics.jsonl").read_text() == before and latest_checkpoint(old).name == "step-000002"
    assert [r["step"] for r in run_metrics(run)] == [1] and latest_checkpoint(run).name == "step-000001"


def test_cli_refuses_before_anything_loads(tmp_path, capsys):
    from thinkrl.cli import main

    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    rc = main(["train", f"train.output_dir={tmp_path}", "model.path=./no-such-model"])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds a run" in err and "Traceback" not in err


def test_resume_refuses_another_config_or_run_unless_forced(tmp_path, capsys):
    make_trainer(tmp_path, "train.steps=2").train()
    with pytest.raises(
        RunFolderError, match=r"another config \(train.lr: 0.01 -> 0.02\).*train.resume_force=true"
    ):
        make_trainer(tmp_path, "train.steps=3", "train.resume=true", "train.lr=2e-2")
    forced = make_trainer(
        tmp_path, "train.steps=3", "train.resume=true", "train.lr=2e-2", "train.resume_force=true"
    )
    assert forced.step == 2 and "train.lr: 0.01 -> 0.02" in capsys.readouterr().err
    # a checkpoint copied in from another run: its run id is not this folder's
    other = tmp_path / "other"
    make_trainer(other, "train.steps=1").train()
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    shutil.copytree(other / "run" / "checkpoints", tmp_path / "run" / "checkpoints")
    with pytest.raises(RunFolderError, match=r"written by another run.*train.resume_force=true"):
        make_trainer(tmp_path, "train.steps=3", "train.resume=true")


def test_keep_last_keeps_the_newest_steps_of_this_run_only(tmp_path, capsys):
    other = tmp_path / "other"
    make_trainer(other, "train.steps=1").train()
    run = tmp_path / "run"
    tr = make_trainer(tmp_path, "train.steps=3", "train.save_every=1", "train.keep_last=1")
    foreign = _ckpt(run, 9)
    shutil.copytree(_ckpt(other / "run", 1), foreign)  # another run's checkpoint with a higher step
    tr.train()
    names = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert names == ["step-000003", "step-000009"]  # this run's newest, and the foreign one untouched
    assert read_manifest(foreign)["run_id"] != read_manifest(_ckpt(run, 3))["run_id"]
    resumed = make_trainer(tmp_path, "train.steps=4", "train.resume=true", "train.keep_last=1")
    assert resumed.step == 3 and "step-000009 was written by another run" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- trusted checkpoints
@pytest.fixture(scope="module")
def three_steps(tmp_path_factory):
    """A run with checkpoints at steps 1-3 (a pristine copy of its step-3 weights kept aside)."""
    base = tmp_path_factory.mktemp("three")
    make_trainer(base, "train.steps=3", "train.save_every=1", "train.keep_last=3").train()
    return base / "run", params(_load(_ckpt(base / "run", 3)))


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def _flip(path, n=64):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "flipped weights": lambda c: _flip(c / "model.safetensors"),
    "flipped trainer state": lambda c: _flip(c / "trainer_state.safetensors", 16),
    "truncated state json": lambda c: (c / "trainer_state.json").write_text(
        (c / "trainer_state.json").read_text()[:50]
    ),
    "empty weights": lambda c: (c / "model.safetensors").write_bytes(b""),
    "missing manifest": lambda c: (c / "manifest.json").unlink(),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_bad_checkpoint_is_reported_and_the_previous_one_resumes_exactly(three_steps, tmp_path, kind, capsys):
    src, step3 = three_steps
    shutil.copytree(src, tmp_path / "run")
    bad = _ckpt(tmp_path / "run", 3)
    CORRUPTIONS[kind](bad)
    assert checkpoint_problem(bad) is not None
    resumed = make_trainer(
        tmp_path, "train.steps=3", "train.resume=true", "train.save_every=1", "train.keep_last=3"
    )
    assert resumed.step == 2  # step 3 was bad: the previous good checkpoint
    err = capsys.readouterr().err
    assert "step-000003 is unusable" in err and "step-000003.bad" in err
    assert (tmp_path / "run" / "checkpoints" / "step-000003.bad").is_dir()  # set aside, not deleted
    resumed.train()
    for k, v in step3.items():  # the redone step 3 is the uninterrupted run's, bit for bit
        assert torch.equal(params(resumed.model)[k], v), k
    last = run_metrics(tmp_path / "run")[-1]
    assert last["step"] == 3 and last["checkpoint/fallbacks"] == 1


def test_no_usable_checkpoint_refuses_and_renames_nothing(three_steps, tmp_path):
    src, _ = three_steps
    shutil.copytree(src, tmp_path / "run")
    for step in (1, 2, 3):
        _flip(_ckpt(tmp_path / "run", step) / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"no usable checkpoint.*step-000003: model.safetensors does not match"
    ):
        make_trainer(tmp_path, "train.steps=4", "train.resume=true")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == [
        "step-000001", "step-000002", "step-000003",
    ]  # fmt: skip


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_never_runs(tmp_path):
    """An old-format checkpoint (pickled trainer_state.pt) is refused, not unpickled; resuming a new one
    unpickles nothing at all."""
    marker = tmp_path / "pwned"
    ckpt = _ckpt(tmp_path / "run", 1)
    ckpt.mkdir(parents=True)
    exploit = _Exploit()
    exploit.marker = marker
    (ckpt / "trainer_state.pt").write_bytes(pickle.dumps({"step": exploit}))
    with pytest.raises(CheckpointError, match=r"pickled trainer_state.pt, which is not loaded"):
        make_trainer(tmp_path, "train.steps=2", "train.resume=true")
    assert not marker.exists()


def test_resume_unpickles_nothing(three_steps, tmp_path, monkeypatch):
    src, _ = three_steps
    shutil.copytree(src, tmp_path / "run")

    def refuse(*a, **k):
        raise AssertionError("a pickle was read during resume")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert make_trainer(tmp_path, "train.steps=4", "train.resume=true").step == 3


def _neox(vocab, seed=0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    ))  # fmt: skip


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_weights_load_through_the_models_own_key_mapping(tmp_path, arch):
    """save_pretrained may write other names than the modules' (GPT-NeoX: embed_out for lm_head)."""
    from thinkrl.testing import tiny_model

    make = (
        (lambda seed: _neox(20, seed))
        if arch == "gpt_neox"
        else (lambda seed: tiny_model(arch, 20, seed=seed))
    )
    saved, fresh = make(0), make(1)
    saved.save_pretrained(tmp_path)
    load_model_weights(fresh, tmp_path)
    for k, v in params(saved).items():
        assert torch.equal(params(fresh)[k], v), k


def test_gpt_neox_run_resumes_exactly(tmp_path):
    from thinkrl.testing import char_tokenizer
    from thinkrl.train import GRPOTrainer

    def trainer(sub, *overrides):
        tok = char_tokenizer("0123456789=")
        return GRPOTrainer(make_cfg(tmp_path / sub, *overrides), model=_neox(len(tok)), tokenizer=tok,
                           reward_funcs=[copy_digit], train_rows=DIGITS)  # fmt: skip

    full = trainer("a", "train.steps=2")
    full.train()
    trainer("b", "train.steps=1").train()
    resumed = trainer("b", "train.steps=2", "train.resume=true")
    assert resumed.step == 1
    resumed.train()
    for k, v in params(full.model).items():
        assert torch.equal(params(resumed.model)[k], v), k


# --------------------------------------------------------------------------------------------- a full disk
def _mount_tmpfs(path, size):
    """A small tmpfs at ``path`` when this process may mount one (root in a container that allows it)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return r.returncode == 0


def test_full_disk_names_the_disk_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "4m")
    try:
        tr = make_trainer(disk, "train.steps=2", "train.save_every=1")
        tr.train_step()
        tr.save()
        first = _ckpt(disk / "run", 1)
        if mounted:  # fill the disk, leaving less than a checkpoint
            free = shutil.disk_usage(disk).free
            (disk / "filler").write_bytes(b"\0" * max(free - 20_000, 0))
        else:  # no tmpfs here: the error the writer would raise
            import safetensors.torch

            def full(*a, **k):
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(safetensors.torch, "save_file", full)
        tr.train_step()
        with pytest.raises(
            CheckpointError, match=r"no space left on the disk mounted at .* is intact.*--resume"
        ) as e:
            tr.save()
        assert str(disk if mounted else "/") in str(e.value)
        assert checkpoint_problem(first) is None  # the previous checkpoint still verifies
        assert not list((disk / "run" / "checkpoints").glob("*.tmp"))  # the half-written one is gone
        assert latest_checkpoint(disk / "run") == first
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


# ---------------------------------------------------------------------------------------------- the reference
def test_checkpoints_hold_the_reference_only_once_refreshed(tmp_path):
    tr = make_trainer(
        tmp_path, "train.steps=3", "train.save_every=1", "train.keep_last=3", "algorithm.beta=0.05",
        "algorithm.ref_refresh_steps=2",
    )  # fmt: skip
    initial = params(tr.reference)
    tr.train()
    run = tmp_path / "run"
    assert [(_ckpt(run, s) / "reference").is_dir() for s in (1, 2, 3)] == [False, True, True]
    resumed = make_trainer(tmp_path, "train.steps=3", "train.resume=true", "algorithm.beta=0.05",
                           "train.save_every=1", "train.keep_last=3", "algorithm.ref_refresh_steps=2")  # fmt: skip
    assert resumed.step == 3
    shutil.rmtree(_ckpt(run, 3))
    shutil.rmtree(_ckpt(run, 2))
    from_1 = make_trainer(tmp_path, "train.steps=3", "train.resume=true", "algorithm.beta=0.05",
                          "train.save_every=1", "train.keep_last=3", "algorithm.ref_refresh_steps=2")  # fmt: skip
    assert from_1.step == 1
    for k, v in initial.items():  # not refreshed yet at step 1: the initial policy
        assert torch.equal(params(from_1.reference)[k], v), k


def test_a_torn_metrics_line_does_not_stop_a_resume(tmp_path):
    make_trainer(tmp_path, "train.steps=2").train()
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward/me')
    resumed = make_trainer(tmp_path, "train.steps=3", "train.resume=true")
    resumed.train()
    assert [r["step"] for r in run_metrics(tmp_path / "run")] == [1, 2, 3]


def test_config_yaml_records_the_rewards_actually_used(tmp_path):
    make_trainer(tmp_path, "train.steps=1").train()
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: conftest:copy_digit" in text and "name: accuracy" not in text
    assert json.loads((tmp_path / "run" / "run.json").read_text())["run_id"]


def test_a_kill_during_a_checkpoint_write_resumes_exactly(three_steps, tmp_path, monkeypatch):
    """The process dies after the weights of step 2 are written but before its manifest (SystemExit is not
    caught, as a SIGKILL would not be): the staging folder is ignored and step 1 resumes to the same step 3."""
    from thinkrl.train import checkpoint

    _, step3 = three_steps
    tr = make_trainer(tmp_path, "train.steps=3", "train.save_every=1", "train.keep_last=3")

    def die(*a, **k):
        raise SystemExit("killed")

    tr.train_step()
    tr.save()
    tr.train_step()
    monkeypatch.setattr(checkpoint, "write_manifest", die)
    with pytest.raises(SystemExit):
        tr.save()
    monkeypatch.undo()
    staged = tmp_path / "run" / "checkpoints" / "step-000002.tmp"
    assert (staged / "model.safetensors").exists() and not (staged / "manifest.json").exists()
    resumed = make_trainer(
        tmp_path, "train.steps=3", "train.resume=true", "train.save_every=1", "train.keep_last=3"
    )
    assert resumed.step == 1
    resumed.train()
    for k, v in step3.items():
        assert torch.equal(params(resumed.model)[k], v), k
