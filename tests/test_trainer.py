"""The GRPO loop end to end on tiny local models: architectures, learning, exact resume, invariances, errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DIGITS, copy_digit, make_cfg, make_trainer, params
from transformers import AutoModelForCausalLM

from thinkrl.rewards import RewardError, in_process
from thinkrl.testing import char_tokenizer, tiny_model
from thinkrl.train import GRPOTrainer
from thinkrl.train.checkpoint import latest_checkpoint


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_each_architecture_trains_two_steps(tmp_path, arch):
    tr = make_trainer(tmp_path, "algorithm.beta=0.001", arch=arch)
    before = params(tr.model)
    history = tr.train()
    assert [h["step"] for h in history] == [1, 2]
    changed = [k for k, v in params(tr.model).items() if not torch.equal(v, before[k])]
    assert changed, "no parameter changed after two GRPO steps"
    for key in ("reward/mean", "train/kl", "train/clip_fraction", "train/entropy", "train/grad_norm", "lr",
                "completion/len_mean", "completion/truncated_frac", "groups/zero_spread_frac",
                "time/generate", "time/reward", "time/train", "throughput/gen_tokens_per_s"):  # fmt: skip
        assert key in history[-1], key
    # the built-in engine and the trainer score the same tokens alike
    assert history[-1]["train/logprob_mismatch"] < 1e-4
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2]
    assert (tmp_path / "run" / "config.yaml").exists()


def test_learning_reward_rises(tmp_path):
    """With a fixed seed, 24 GRPO steps take the copy-the-digit reward from chance (~1/14) to well above it."""
    tr = make_trainer(tmp_path, "rollout.group_size=8", "rollout.prompts_per_step=8", "train.steps=24")
    rewards = [h["reward/mean"] for h in tr.train()]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    # measured with seed 0: first ~0.06, last ~0.3; assert a clear margin, not the exact numbers
    assert first < 0.12, rewards
    assert last > first + 0.12, rewards


def test_checkpoint_resume_is_exact(tmp_path):
    full = make_trainer(tmp_path / "a", "train.steps=4")
    full_hist = full.train()

    part = make_trainer(tmp_path / "b", "train.steps=2")
    part.train()
    resumed = make_trainer(
        tmp_path / "b", "train.steps=4", "train.resume=true", seed=123
    )  # other init: must be overwritten
    assert resumed.step == 2
    resumed_hist = resumed.train()
    for k, v in params(full.model).items():
        torch.testing.assert_close(params(resumed.model)[k], v, rtol=0, atol=1e-6)
    assert resumed_hist[-1]["reward/mean"] == full_hist[-1]["reward/mean"]
    lines = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4]


def test_checkpoint_is_plain_hf_and_atomic(tmp_path):
    tr = make_trainer(tmp_path, "train.steps=2", "train.save_every=1", "train.keep_last=1")
    tr.train()
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step-000002"
    assert sorted(p.name for p in ckpt.parent.glob("step-*")) == ["step-000002"]  # keep_last=1
    loaded = AutoModelForCausalLM.from_pretrained(ckpt)
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    # a save killed half-way leaves a .tmp folder: latest still points to the complete one
    (ckpt.parent / "step-000003.tmp").mkdir()
    assert latest_checkpoint(tmp_path / "run") == ckpt


def test_micro_batch_size_does_not_change_the_update(tmp_path):
    """Minibatch-wide normalisers make gradient accumulation over micro-batches equal one big batch.

    Compared on the accumulated gradient the optimizer receives: AdamW's first step is ~lr * sign(g), so it
    hides a wrong normaliser (any constant factor) and magnifies float round-off in near-zero gradients.
    """
    results = []
    for mbs in (1, 16):
        tr = make_trainer(
            tmp_path / str(mbs),
            "train.steps=1",
            f"train.micro_batch_size={mbs}",
            "algorithm.loss_agg=token_mean",
            "algorithm.beta=0.01",
            "train.max_grad_norm=0",
        )  # fmt: skip  (clipping would hide a constant factor)
        grads: dict[str, torch.Tensor] = {}
        named = list(tr.model.named_parameters())
        tr.optimizer.register_step_pre_hook(
            lambda *_, g=grads, named=named: g.update(
                {n: p.grad.clone() for n, p in named if p.grad is not None}
            )
        )
        tr.train()
        assert grads and any(g.abs().max() > 0 for g in grads.values())
        results.append(grads)
    for k, v in results[0].items():
        # summation order differs between micro-batch sizes: float32 round-off, not a different update
        torch.testing.assert_close(results[1][k], v, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_shared_prompt_forward_equals_plain(arch):
    """One prompt forward per group, its KV cache reused by every completion: same log-probs and gradients."""
    from thinkrl.core import disable_dropout
    from thinkrl.rollout import HFEngine, SamplingParams
    from thinkrl.train.batch import build_batch, forward_logprobs

    tok = char_tokenizer()
    model = tiny_model(arch, len(tok))
    disable_dropout(model)
    prompts = [tok(p)["input_ids"] for p in ("ab c=", "hello world 12 +", "x")]  # different lengths
    rollout = HFEngine(model, tok).generate(prompts, SamplingParams(n=3, max_new_tokens=6, seed=1)).to("cpu")
    batch = build_batch(rollout, torch.randn(9), tok.pad_token_id, rollout.completion_mask)
    sub = batch.rows(torch.tensor([0, 1, 4, 5, 6, 8]))  # groups of 2, 2 and 2 rows, as a micro-batch may hold
    results = []
    for share in (False, True):
        logp, _ = forward_logprobs(model, sub, 0.8, share_prompt=share)
        grads = torch.autograd.grad((logp * sub.mask).sum(), list(model.parameters()), allow_unused=True)
        results.append((logp.detach(), grads))
    (lp_plain, g_plain), (lp_shared, g_shared) = results
    torch.testing.assert_close(lp_shared * sub.mask, lp_plain * sub.mask, rtol=0, atol=1e-5)
    for a, b in zip(g_plain, g_shared):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_shared_prompt_update_equals_plain(tmp_path):
    results = []
    for share in ("true", "false"):
        tr = make_trainer(
            tmp_path / share, "train.steps=1", f"train.share_prompt={share}", "algorithm.beta=0.01"
        )
        tr.train()
        results.append(params(tr.model))
    for k, v in results[0].items():
        torch.testing.assert_close(results[1][k], v, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------- each option has its effect
def first_update(tmp_path, *overrides: str, steps: int = 1, rewards=(copy_digit,)):
    """Train ``steps`` steps; returns the gradient the optimizer received first (before Adam, which hides
    scale: its first step is ~lr * sign(g)), the metrics and the trainer."""
    tr = make_trainer(tmp_path, f"train.steps={steps}", "train.max_grad_norm=0", *overrides, rewards=rewards)
    grads: dict[str, torch.Tensor] = {}
    named = list(tr.model.named_parameters())

    def keep_first(*_):
        if not grads:
            grads.update({n: p.grad.clone() for n, p in named if p.grad is not None})

    tr.optimizer.register_step_pre_hook(keep_first)
    return grads, tr.train(), tr


@pytest.fixture(scope="module")
def default_update(tmp_path_factory):
    grads, history, tr = first_update(tmp_path_factory.mktemp("default"))
    lengths = {len(t) for t in tr.collector.collect(0)[0].texts}  # a fresh draw of step 0's completions
    assert any(g.abs().max() > 0 for g in grads.values())
    return grads, history, lengths


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-7) for k in a)


@pytest.mark.parametrize(
    "overrides",
    [
        ("algorithm.advantage=rloo",),
        ("algorithm.advantage=dr_grpo",),
        ("algorithm.advantage=reinforce_pp",),
        ("algorithm.std_unbiased=false",),
        ("algorithm.adv_eps=1.0",),
        ("algorithm.loss_agg=token_mean",),
        ("algorithm.loss_agg=seq_mean_token_sum_norm",),
        ("algorithm.entropy_coef=0.01",),
        (
            "algorithm.beta=0.5",
            "algorithm.kl_estimator=k1",
        ),  # k1's gradient is not 0 where policy == reference
    ],
)
def test_option_changes_the_update(tmp_path, default_update, overrides):
    """Each option reaches the loss: the first gradient differs from the default run's on the same samples."""
    grads, _, _ = first_update(tmp_path, *overrides)
    if "loss_agg" in overrides[0]:  # the aggregations agree when every completion has the same length
        assert len(default_update[2]) > 1, "precondition: completions of different lengths"
    assert _differs(grads, default_update[0]), overrides


def test_tis_cap_weights_every_token(tmp_path, default_update):
    """TIS with cap 0.5: the built-in engine's log-probs equal the trainer's, so every weight is min(1, 0.5)
    and the gradient is exactly half the default's."""
    grads, _, _ = first_update(tmp_path, "algorithm.tis_cap=0.5")
    for k, g in default_update[0].items():
        torch.testing.assert_close(grads[k], 0.5 * g, rtol=1e-4, atol=1e-8)


def test_minibatches_and_epochs_set_the_optimizer_steps(tmp_path):
    _, history, tr = first_update(tmp_path, "algorithm.num_minibatches=2", "algorithm.ppo_epochs=3")
    steps = {int(s["step"]) for s in tr.optimizer.state.values()}
    assert steps == {6} and tr.scheduler.last_epoch == 6  # 3 epochs x 2 minibatches
    assert history[0]["train/ratio_max"] > 1.0  # later minibatches are off-policy


@pytest.mark.parametrize(
    ("overrides", "clipped"),
    [
        (("algorithm.clip_low=0.0", "algorithm.clip_high=0.0"), True),
        (("algorithm.clip_low=10.0", "algorithm.clip_high=10.0"), False),
        (("algorithm.loss=reinforce", "algorithm.clip_low=0.0", "algorithm.clip_high=0.0"), False),
    ],
)
def test_clip_bounds_and_the_loss_reach_the_update(tmp_path, overrides, clipped):
    """Off-policy minibatches: clip bounds of 0 clip tokens, wide ones none, and REINFORCE never clips."""
    _, history, _ = first_update(tmp_path, "algorithm.num_minibatches=2", *overrides)
    assert (history[0]["train/clip_fraction"] > 0) is clipped


def test_dual_clip_and_sequence_ratio(tmp_path):
    base = first_update(tmp_path / "token", "algorithm.num_minibatches=2")[1][0]
    dual = first_update(tmp_path / "dual", "algorithm.num_minibatches=2", "algorithm.dual_clip=1.5")[1][0]
    assert "dual_clip_fraction" not in base and "train/dual_clip_fraction" in dual
    seq = first_update(tmp_path / "seq", "algorithm.num_minibatches=2", "algorithm.ratio_level=sequence")
    tok = first_update(tmp_path / "tok", "algorithm.num_minibatches=2")
    assert seq[2].model is not tok[2].model and _differs(params(seq[2].model), params(tok[2].model))


def test_kl_estimator_and_reference_refresh(tmp_path):
    """Step 2's KL (policy moved, reference at the start) is the chosen estimator's; a reference refreshed
    every step equals the policy after each step."""
    kls = {}
    for est in ("k2", "k3"):
        _, history, tr = first_update(
            tmp_path / est, "algorithm.beta=0.01", f"algorithm.kl_estimator={est}", steps=2
        )
        kls[est] = history[1]["train/kl"]
        assert _differs(params(tr.reference), params(tr.model))  # never refreshed
    assert kls["k2"] > 0 and kls["k3"] > 0 and kls["k2"] != kls["k3"]
    _, _, tr = first_update(tmp_path / "refresh", "algorithm.beta=0.01", "algorithm.ref_refresh_steps=1")
    assert not _differs(params(tr.reference), params(tr.model))


def test_lr_schedule_and_warmup(tmp_path):
    _, history, _ = first_update(tmp_path, "train.lr_schedule=cosine", "train.warmup_steps=1", steps=3)
    # lr after each step's update: warm-up done after 1, then cosine from 1.0 to 0.1 over the other 2 updates
    assert [h["lr"] for h in history] == pytest.approx([1e-2, 0.55e-2, 0.1e-2])


def test_mask_truncated_leaves_cut_completions_out_of_the_loss(tmp_path):
    for mask in (False, True):
        tr = make_trainer(tmp_path / str(mask), f"algorithm.mask_truncated={str(mask).lower()}")
        traj, _ = tr.collector.collect(0)
        cut = traj.truncated
        assert cut.any() and (~cut).any(), "precondition: some completions stop, some are cut"
        assert torch.equal(traj.loss_mask[~cut], traj.attention_mask[~cut])
        assert torch.equal(traj.loss_mask[cut], traj.attention_mask[cut] & (not mask))


def test_dynamic_sampling_keeps_groups_with_spread(tmp_path):
    def first_digit(prompts, completions, answer, **kw):
        return [float(c[:1] == a) for c, a in zip(completions, answer)]

    tr = make_trainer(tmp_path, "algorithm.dynamic_sampling=true", "train.seed=2", rewards=(first_digit,))
    traj, stats = tr.collector.collect(0)
    assert stats["dynamic/dropped_groups"] > 0 and stats["dynamic/rounds"] > 1
    for g in traj.group_ids.unique():  # every kept group has reward spread
        r = traj.rewards[traj.group_ids == g]
        assert r.max() > r.min()
    assert traj.group_ids.unique().tolist() == list(range(len(traj) // 4))  # renumbered in order


def test_off_policy_update_uses_old_logprobs(tmp_path):
    """With 2 minibatches the second one sees a ratio != 1 (pi_theta moved after the first step)."""
    tr = make_trainer(tmp_path, "algorithm.num_minibatches=2", "train.steps=1")
    history = tr.train()
    assert history[0]["train/ratio_max"] > 1.0


def test_reward_that_raises_is_named_with_its_row(tmp_path):
    def picky(prompts, completions, answer, **kw):
        return [1 / 0 if a == "3" else 0.0 for a in answer]

    tr = make_trainer(tmp_path, "rollout.prompts_per_step=10", rewards=(picky,))
    with pytest.raises(RewardError, match=r"'picky' raised ZeroDivisionError.*row"):
        tr.train()


def test_missing_tokenizer_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer"):
        GRPOTrainer(make_cfg(tmp_path), model=tiny_model("llama", 20), tokenizer=None, train_rows=DIGITS)


def test_prompt_longer_than_limit_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        make_trainer(tmp_path, "data.max_prompt_tokens=1")


def test_rewards_receive_every_data_column(tmp_path):
    """Rewards get each data column by name, the bare question included (a reward model's ``prompt_key``)."""
    seen: list[dict] = []

    def record(prompts, completions, **columns):
        seen.append(columns)
        return [0.0] * len(completions)

    # in_process: a reward in a worker process (the default for your own functions) could not append to `seen`
    make_trainer(tmp_path, "train.steps=1", rewards=(in_process(record),)).train()
    cols = seen[0]
    assert cols["question"] == cols["answer"]  # DIGITS: question == answer, one per completion
    assert {"finish_reason", "completion_length"} <= set(cols)


def test_resume_restores_cuda_rng_of_the_visible_gpus_only(monkeypatch):
    """A checkpoint saved with 2 GPUs' RNG states, resumed where 1 is visible: the 1 is restored, no IndexError."""
    from thinkrl.train import checkpoint

    state = {**checkpoint.rng_state(), "cuda": [torch.ByteTensor([1]), torch.ByteTensor([2])]}
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    checkpoint.set_rng_state(state)
    assert restored == [state["cuda"][:1]]
