"""FSDP2 on CPU (gloo): two ranks with sharded parameters make the update one unsharded process makes.

The ranks are launched with ``torch.distributed.run`` (torchrun) on this file. The run is the one of
tests/test_distributed.py (every global quantity: reinforce_pp whitening, token_mean over a minibatch,
2 minibatches with old log-probs, beta > 0) plus a reference refreshed every 2 steps and rank 0's periodic
evaluation (the other rank must take part in the all-gathers of that generation).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DIGITS, copy_digit, params
from conftest import DP_OVERRIDES as OVERRIDES
from conftest import assert_params_close as _assert_close
from conftest import run_metrics as _metrics

from thinkrl.config import ConfigError, load_config
from thinkrl.train import distributed as dist
from thinkrl.train import fsdp
from thinkrl.train.checkpoint import latest_checkpoint

EXTRA = ["algorithm.ref_refresh_steps=2", "eval.every_steps=2", "eval.k=2", "eval.max_problems=2"]


def make_trainer(run_dir: Path, *overrides: str):
    from thinkrl.testing import char_tokenizer, tiny_model
    from thinkrl.train import GRPOTrainer

    tok = char_tokenizer("0123456789=")
    cfg = load_config(None, [*OVERRIDES, *EXTRA, f"train.output_dir={run_dir}", *overrides])
    model = tiny_model("llama", len(tok), seed=0)
    return GRPOTrainer(
        cfg, model=model, tokenizer=tok, reward_funcs=[copy_digit], train_rows=DIGITS, eval_rows=DIGITS[:2]
    )


def worker(run_dir: Path, out_dir: Path) -> None:
    """One rank: 2 sharded steps (a checkpoint each), keep a copy of the run, resume in a fresh trainer."""
    tr = make_trainer(run_dir, "train.steps=2", "train.fsdp=true")
    assert fsdp.is_sharded(tr.model) and fsdp.is_sharded(tr.reference)
    tr.train()
    if dist.is_main():
        shutil.copytree(run_dir, out_dir / "run_at_2")
    dist.barrier()
    resumed = make_trainer(run_dir, "train.steps=3", "train.resume=true", "train.fsdp=true")
    assert resumed.step == 2
    resumed.train()
    weights = fsdp.full_state_dict(resumed.model)  # a collective; rank 0 gets the full tensors
    shard = next(p for p in resumed.model.parameters() if p.dim() == 2)
    torch.save(
        {"local_rows": shard.to_local().shape[0], "full_rows": shard.shape[0]},
        out_dir / f"shard_rank{resumed.dist.rank}.pt",
    )
    if dist.is_main():
        torch.save(weights, out_dir / "params.pt")
    dist.destroy()


def _torchrun(run_dir: Path, out_dir: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           __file__, str(run_dir), str(out_dir)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the FSDP ranks hung (a collective that another rank never reached?)")
    assert p.returncode == 0, f"torchrun failed:\n{(p.stdout + p.stderr)[-6000:]}"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_fsdp_two_ranks_match_one_process_export_and_resume(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    _torchrun(tmp_path / "fsdp", out)

    ref = make_trainer(tmp_path / "single", "train.steps=3")  # one unsharded process, the same global batch
    ref_hist = ref.train()
    ref_final = params(ref.model)

    # each rank held half of every weight's rows
    shards = [torch.load(out / f"shard_rank{r}.pt") for r in (0, 1)]
    assert [s["local_rows"] for s in shards] == [shards[0]["full_rows"] // 2] * 2
    _assert_close(torch.load(out / "params.pt"), ref_final)  # 2 sharded steps + a resumed 3rd == 1 process

    # the export is a plain HF folder: from_pretrained, no thinkrl, equals the unsharded run's weights
    for step in (2, 3):
        run = tmp_path / "fsdp" / "checkpoints" / f"step-{step:06d}"
        assert (run / fsdp.SHARDED_DIR / ".metadata").exists()
        single = tmp_path / "single" / "checkpoints" / f"step-{step:06d}"
        loaded = AutoModelForCausalLM.from_pretrained(run)
        _assert_close(params(loaded), params(AutoModelForCausalLM.from_pretrained(single)))
    ref_dir = tmp_path / "fsdp" / "checkpoints" / "step-000002" / "reference"  # refreshed reference, gathered
    _assert_close(params(AutoModelForCausalLM.from_pretrained(ref_dir)), params(ref.reference))

    fsdp_metrics = [m for m in _metrics(tmp_path / "fsdp") if "reward/mean" in m]
    assert [m["step"] for m in fsdp_metrics] == [1, 2, 3]
    for m, r in zip(fsdp_metrics, ref_hist):
        for key in ("reward/mean", "reward/std", "completion/len_mean", "groups/zero_spread_frac"):
            assert m[key] == pytest.approx(r[key], abs=1e-6), key
        for key in ("train/loss", "train/grad_norm", "train/kl"):
            assert m[key] == pytest.approx(r[key], abs=1e-5), key
    assert any("eval/pass@1" in m for m in _metrics(tmp_path / "fsdp"))  # rank 0 evaluated under FSDP

    # the sharded checkpoint of 2 ranks resumes in 1 unsharded process (DCP reshards on load)
    resumed = make_trainer(out / "run_at_2", "train.steps=3", "train.resume=true")
    assert resumed.step == 2 and latest_checkpoint(out / "run_at_2").name == "step-000002"
    resumed.train()
    _assert_close(params(resumed.model), ref_final)


def test_fsdp_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"train.fsdp=true with model.lora_r=8.*model.lora_r=0"):
        load_config(None, ["train.fsdp=true", "model.lora_r=8"])
    with pytest.raises(ConfigError, match=r"rollout.engine='vllm'.*rollout.engine=builtin"):
        load_config(None, ["train.fsdp=true", "rollout.engine=vllm"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r"needs more than one process.*torchrun"):
        make_trainer(tmp_path / "run", "train.fsdp=true")


def test_checkpoint_without_shards_is_a_clear_error(tmp_path):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(FileNotFoundError, match=r"not written with train.fsdp=true.*train.fsdp=false"):
        fsdp.load_sharded(tmp_path, model, torch.optim.AdamW(model.parameters()))


def test_decoder_layers_found_or_clear_error():
    from thinkrl.testing import tiny_model

    for arch, n in (("llama", 2), ("gpt2", 2)):
        assert len(fsdp.decoder_layers(tiny_model(arch, 16))) == n
    with pytest.raises(ValueError, match=r"no decoder layers in Linear.*train.fsdp=false"):
        fsdp.decoder_layers(torch.nn.Linear(2, 2))


if __name__ == "__main__":  # a rank launched by torchrun
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
