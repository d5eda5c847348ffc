"""Data parallelism on CPU (gloo): two ranks make the update one process makes on the same global batch.

The two ranks are separate Python processes started by this test (this file is also their entry point), with
the environment ``torchrun`` would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
"""

from __future__ import annotations

import os
import shutil
import socket
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
from thinkrl.train.checkpoint import latest_checkpoint


def first_digit(prompts, completions, answer, **kw):
    """1 when the completion starts with the prompt's digit: most groups of 4 score all 0 (zero spread)."""
    return [float(c[:1] == a) for c, a in zip(completions, answer)]


def constant(prompts, completions, **kw):
    return [1.0] * len(completions)


REWARDS = {f.__name__: f for f in (copy_digit, first_digit, constant)}

# DAPO dynamic sampling on the run above. With seed 2 and first_digit, step 1 keeps 2 groups after 3 rounds
# (10 dropped) and step 2 keeps 3 (9 dropped): the rounds run out, and 3 groups split 2 + 1 over 2 ranks.
DYNAMIC = ["algorithm.dynamic_sampling=true", "train.seed=2", "train.steps=2", "train.save_every=0"]
ALL_DROPPED = ["algorithm.dynamic_sampling=true", "algorithm.max_sampling_rounds=2", "train.steps=1"]
# PPO with a critic head on the run above: GAE advantages whitened over every rank's tokens, the critic's
# gradients summed over ranks, its values scored per rank
CRITIC = ["algorithm.advantage=gae", "critic.lr=1e-2", "train.steps=2", "train.save_every=0"]


def make_trainer(run_dir: Path, *overrides: str, reward: str = "copy_digit"):
    from thinkrl.testing import char_tokenizer, tiny_model
    from thinkrl.train import GRPOTrainer

    tok = char_tokenizer("0123456789=")
    cfg = load_config(None, [*OVERRIDES, f"train.output_dir={run_dir}", *overrides])
    model = tiny_model("llama", len(tok), seed=0)
    return GRPOTrainer(cfg, model=model, tokenizer=tok, reward_funcs=[REWARDS[reward]], train_rows=DIGITS)


def worker(run_dir: Path, out_dir: Path) -> None:
    """One rank: train 2 steps (saving each), keep a copy of the run at step 2, then resume to step 3."""
    rank = int(os.environ["RANK"])
    tr = make_trainer(run_dir, "train.steps=2")
    tr.train()
    if rank == 0:
        shutil.copytree(run_dir, out_dir / "run_at_2")
    dist.barrier()
    resumed = make_trainer(run_dir, "train.steps=3", "train.resume=true")  # a fresh trainer, as after a kill
    assert resumed.step == 2
    resumed.train()
    torch.save(params(resumed.model), out_dir / f"params_rank{rank}.pt")
    dist.destroy()


def dynamic_worker(run_dir: Path, out_dir: Path) -> None:
    """One rank: a run whose every group has zero spread, then the 2-step dynamic-sampling run, plain data
    parallel and then FSDP (whose log-prob passes must pad the rank that holds fewer kept groups)."""
    from thinkrl.train import fsdp

    rank = int(os.environ["RANK"])
    dropped = make_trainer(run_dir / "all_dropped", *ALL_DROPPED, reward="constant").train()
    trainer = make_trainer(run_dir / "dynamic", *DYNAMIC, reward="first_digit")
    out = {"all_dropped": dropped, "dynamic": trainer.train(), "params": params(trainer.model)}
    sharded = make_trainer(run_dir / "dynamic_fsdp", *DYNAMIC, "train.fsdp=true", reward="first_digit")
    out["fsdp"] = sharded.train()
    out["fsdp_params"] = fsdp.full_state_dict(sharded.model)  # gathered on rank 0, {} elsewhere
    torch.save(out, out_dir / f"dynamic_rank{rank}.pt")
    dist.destroy()


def critic_worker(run_dir: Path, out_dir: Path) -> None:
    """One rank: 2 PPO steps with a critic; saves its metrics, policy and critic."""
    rank = int(os.environ["RANK"])
    tr = make_trainer(run_dir / "critic", *CRITIC)
    out = {"history": tr.train(), "params": params(tr.model), "critic": params(tr.critic)}
    torch.save(out, out_dir / f"critic_rank{rank}.pt")
    dist.destroy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, run_dir: Path, out_dir: Path, *mode: str) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, str(run_dir), str(out_dir), *mode],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=150)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a rank hung (a collective that another rank never reached?)")
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"


def _launch_two(tmp_path: Path, monkeypatch, *mode: str) -> Path:
    """Two ranks of ``mode`` writing to ``tmp_path/dp``; returns the folder their results are in."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    _launch(2, tmp_path / "dp", out, *mode)
    return out


def _ckpt_params(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / f"step-{step:06d}" / "model.safetensors"))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_ranks_match_one_process_and_resume(tmp_path, monkeypatch):
    out = _launch_two(tmp_path, monkeypatch)

    # the reference: one process, the same global batch, 3 steps with a checkpoint after each
    ref = make_trainer(tmp_path / "single", "train.steps=3")
    ref_hist = ref.train()
    ref_final = params(ref.model)

    rank0, rank1 = torch.load(out / "params_rank0.pt"), torch.load(out / "params_rank1.pt")
    for k in rank0:  # replicas stay bit-identical: same summed gradients, same optimizer step
        assert torch.equal(rank0[k], rank1[k]), k
    _assert_close(rank0, ref_final)  # 2 ranks (steps 1-2, then a resumed trainer for step 3) == 1 process
    _assert_close(_ckpt_params(tmp_path / "dp", 2), _ckpt_params(tmp_path / "single", 2))

    dp_metrics = _metrics(tmp_path / "dp")  # written by rank 0 only, one line per step
    assert [m["step"] for m in dp_metrics] == [1, 2, 3]
    for m, r in zip(dp_metrics, ref_hist):
        assert m["completions"] == r["completions"] == 16
        for key in ("reward/mean", "reward/std", "completion/len_mean", "groups/zero_spread_frac"):
            assert m[key] == pytest.approx(r[key], abs=1e-6), key
        assert m["train/loss"] == pytest.approx(r["train/loss"], abs=1e-5)

    # the checkpoint written by 2 ranks resumes in 1 process: data position and sampling seeds are global
    resumed = make_trainer(out / "run_at_2", "train.steps=3", "train.resume=true")
    assert resumed.step == 2 and latest_checkpoint(out / "run_at_2").name == "step-000002"
    resumed.train()
    _assert_close(params(resumed.model), ref_final)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_dynamic_sampling_two_ranks_keep_the_groups_of_one_process(tmp_path, monkeypatch):
    """DAPO dynamic sampling with 2 ranks keeps the groups one process keeps, in its order, so the update (2
    minibatches drawn from the global rows) and the metrics are one process's, with plain data parallelism
    and with FSDP; a step whose every group has zero spread is skipped on both ranks, without a hang."""
    out = _launch_two(tmp_path, monkeypatch, "dynamic")
    ranks = [torch.load(out / f"dynamic_rank{r}.pt") for r in range(2)]

    for res in ranks:  # every round dropped every group: both ranks logged the step and returned
        (m,) = res["all_dropped"]
        assert m["skipped"] == 1.0 and m["dynamic/dropped_groups"] == 8 and m["dynamic/rounds"] == 2
    assert _metrics(tmp_path / "dp" / "all_dropped")[0]["skipped"] == 1.0

    ref = make_trainer(tmp_path / "single", *DYNAMIC, reward="first_digit")
    ref_hist = ref.train()
    # the precondition: groups were dropped and more rounds sampled; step 2 keeps an odd number of groups
    assert ref_hist[0]["dynamic/dropped_groups"] > 0 and ref_hist[0]["dynamic/rounds"] > 1
    assert [h["completions"] for h in ref_hist] == [8, 12]
    for k in ranks[0]["params"]:  # replicas stay bit-identical
        assert torch.equal(ranks[0]["params"][k], ranks[1]["params"][k]), k
    _assert_close(ranks[0]["params"], params(ref.model))
    dp_metrics = _metrics(tmp_path / "dp" / "dynamic")
    for res in ranks:  # the dynamic-sampling counts are global: the same on both ranks as in one process
        for m, r in zip(res["dynamic"], ref_hist):
            for key in ("dynamic/dropped_groups", "dynamic/rounds", "completions"):
                assert m[key] == r[key], key
    for m, r in zip(dp_metrics, ref_hist):
        for key in ("reward/mean", "reward/std", "completion/len_mean", "groups/zero_spread_frac"):
            assert m[key] == pytest.approx(r[key], abs=1e-6), key
        assert m["train/loss"] == pytest.approx(r["train/loss"], abs=1e-5)
    # FSDP: step 2's 3 kept groups split 2 + 1, so rank 1 pads its old/reference passes (else: a hang)
    _assert_close(ranks[0]["fsdp_params"], params(ref.model))
    for res in ranks:
        assert [m["dynamic/rounds"] for m in res["fsdp"]] == [r["dynamic/rounds"] for r in ref_hist]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_critic_two_ranks_match_one_process(tmp_path, monkeypatch):
    out = _launch_two(tmp_path, monkeypatch, "critic")
    ranks = [torch.load(out / f"critic_rank{r}.pt") for r in range(2)]
    ref = make_trainer(tmp_path / "single", *CRITIC)
    ref_hist = ref.train()
    for key in ("params", "critic"):
        for k in ranks[0][key]:  # replicas stay bit-identical
            assert torch.equal(ranks[0][key][k], ranks[1][key][k]), k
    # the value head's gradients reach the trunk too: more near-zero gradient elements, whose AdamW step
    # (~lr * g / |g|) turns float32 rounding into ~1e-5; a different update would be O(lr) = 1e-2
    for got, want in ((ranks[0]["params"], params(ref.model)), (ranks[0]["critic"], params(ref.critic))):
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    for m, r in zip(ranks[0]["history"], ref_hist):
        for key in ("train/loss", "train/value_loss", "train/explained_variance", "train/value_mean"):
            assert m[key] == pytest.approx(r[key], abs=1e-5), key


def test_prompts_per_step_must_divide_by_world_size(tmp_path, monkeypatch):
    # WORLD_SIZE is read before any process group is joined, so the check fires without other ranks
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(
        ConfigError, match=r"prompts_per_step=4 does not divide by the 3 .*multiple of 3, e\.g\. 6"
    ):
        make_trainer(tmp_path / "run", "train.steps=1")


def test_single_process_helpers_are_identity():
    t = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(dist.all_reduce_sum(t), t) and torch.equal(dist.all_gather_tensor(t), t)
    assert dist.is_main()
    assert dist.shard_range(8, dist.DistInfo(rank=1, world_size=4)) == (2, 4)
    # uneven (dynamic sampling's kept groups): the first ranks hold one more, the shares tile [0, total)
    assert [dist.shard_range(7, dist.DistInfo(rank=r, world_size=3)) for r in range(3)] == [
        (0, 3),
        (3, 5),
        (5, 7),
    ]
    assert dist.all_gather_objects({"a": 1}) == [{"a": 1}]


def test_first_row_gives_a_rank_the_rows_of_one_process():
    """Two engine calls over halves of the prompts, with first_row, sample what one call over all samples."""
    from thinkrl.rollout.base import SamplingParams
    from thinkrl.rollout.hf import HFEngine
    from thinkrl.testing import char_tokenizer, tiny_model

    tok = char_tokenizer("0123456789=")
    engine = HFEngine(tiny_model("llama", len(tok), seed=1), tok)
    prompts = [tok(f"{i}=")["input_ids"] for i in range(4)]
    sp = dict(n=3, max_new_tokens=6, seed=7)
    whole = engine.generate(prompts, SamplingParams(**sp))
    halves = [engine.generate(prompts[:2], SamplingParams(**sp)),
              engine.generate(prompts[2:], SamplingParams(**sp, first_row=6))]  # fmt: skip
    assert whole.texts == halves[0].texts + halves[1].texts
    torch.testing.assert_close(whole.logprobs[6:, : halves[1].logprobs.shape[1]], halves[1].logprobs)


if __name__ == "__main__":  # a rank launched by _launch
    mode = {"dynamic": dynamic_worker, "critic": critic_worker}.get(
        sys.argv[3] if sys.argv[3:] else "", worker
    )
    mode(Path(sys.argv[1]), Path(sys.argv[2]))
