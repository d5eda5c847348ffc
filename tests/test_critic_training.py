"""PPO with a critic end to end: GAE targets from the critic's values, the value loss and its clipping reaching
the critic, warm-up, a separate critic model, exact resume (critic, its optimizer and the entropy controller),
refusals, and a learning test."""

from __future__ import annotations

import pytest
import torch
from conftest import make_trainer, params

from thinkrl.algorithms import masked_whiten
from thinkrl.train.batch import batch_from_trajectories
from thinkrl.train.metrics import step_view
from thinkrl.train.runs import RunFolderError

GAE = ("algorithm.advantage=gae", "critic.lr=1e-2")


def _scored_batch(tr):
    traj, _ = tr.collector.collect(0)
    view = step_view(traj, tr.parallel)
    batch = batch_from_trajectories(traj, tr.learner.advantages(view), tr.tokenizer.pad_token_id)
    tr.learner.score_old(batch)
    return batch


@pytest.mark.parametrize("model", ["head", "policy"])
def test_gae_targets_from_the_critic(tmp_path, model):
    """The critic starts at 0, so the first values are 0 and GAE's return of token t is the reward at the last
    token discounted by (gamma lam) per token; the advantage is that, whitened over the batch's tokens. After
    a step the critic predicts something, and the targets follow the GAE recursion by hand."""
    tr = make_trainer(tmp_path, *GAE, f"critic.model={model}", "algorithm.lam=0.5", "algorithm.gamma=0.9")
    batch = _scored_batch(tr)
    mask = batch.mask.bool()
    assert batch.old_values.abs().max() == 0
    # V = 0: delta_t = r_t, so A_t = (gamma lam)^(n - 1 - t) R = returns (before whitening)
    lengths = batch.mask.sum(-1)
    t = torch.arange(mask.shape[1]).expand_as(mask)
    expected = batch.rewards[:, None] * 0.45 ** (lengths[:, None] - 1 - t)
    torch.testing.assert_close(batch.returns[mask], expected[mask].float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch.advantages, masked_whiten(torch.where(mask, expected, 0).float(), mask))
    tr.train()
    batch = _scored_batch(tr)  # now V != 0: check one row's GAE recursion by hand
    v, r, row = batch.old_values, batch.rewards, int(lengths.argmax())
    n = int(batch.mask[row].sum())
    adv, running = [0.0] * n, 0.0
    for k in reversed(range(n)):
        nxt = float(v[row, k + 1]) if k + 1 < n else 0.0
        delta = (float(r[row]) if k == n - 1 else 0.0) + 0.9 * nxt - float(v[row, k])
        running = delta + 0.9 * 0.5 * running
        adv[k] = running
    assert v[row, :n].abs().max() > 0
    torch.testing.assert_close(batch.returns[row, :n], torch.tensor(adv) + v[row, :n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["head", "policy"])
def test_critic_learns_its_targets_and_warms_up_alone(tmp_path, model):
    """With a critic warm-up of 2 steps the policy does not move while the critic does (its value loss falls);
    then the policy trains. A separate critic never touches the policy's weights."""
    tr = make_trainer(tmp_path, *GAE, f"critic.model={model}", "critic.warmup_steps=2", "train.steps=2")
    policy0, critic0 = params(tr.model), params(tr.critic)
    history = tr.train()
    assert not any(torch.equal(v, critic0[k]) for k, v in params(tr.critic).items() if k.startswith("head"))
    for k, v in params(
        tr.model
    ).items():  # a shared trunk got value gradients, but its optimizer did not step
        assert torch.equal(v, policy0[k]), k
    assert history[1]["train/value_loss"] < history[0]["train/value_loss"]
    for key in ("value_loss", "value_clip_fraction", "value_mean", "returns_mean", "explained_variance",
                "critic_grad_norm"):  # fmt: skip
        assert f"train/{key}" in history[-1], key
    tr2 = make_trainer(
        tmp_path / "after", *GAE, f"critic.model={model}", "critic.warmup_steps=1", "train.steps=2"
    )
    tr2.train()
    assert any(not torch.equal(v, policy0[k]) for k, v in params(tr2.model).items())


def test_value_clip_reaches_the_critic(tmp_path):
    """Off-policy epochs move the values away from the rollout's: a tiny clip range clips tokens (their value
    gradient is 0) and gives another critic than no clipping."""
    critics, fractions = [], []
    for clip in ("1e-4", "null"):
        tr = make_trainer(
            tmp_path / clip, *GAE, "algorithm.ppo_epochs=3", f"critic.value_clip={clip}", "train.steps=2"
        )
        fractions.append(tr.train()[-1]["train/value_clip_fraction"])
        critics.append(params(tr.critic))
    assert fractions[0] > 0.02 and fractions[1] == 0
    assert any(not torch.equal(v, critics[1][k]) for k, v in critics[0].items())


def test_critic_and_entropy_controller_resume_exactly(tmp_path):
    overrides = (*GAE, "critic.model=policy", "algorithm.num_minibatches=2", "algorithm.entropy_target=100",
                 "algorithm.entropy_coef_delta=0.01", "algorithm.entropy_coef_max=1", "train.save_every=1")  # fmt: skip
    full = make_trainer(tmp_path / "a", *overrides, "train.steps=4")
    full_hist = full.train()
    make_trainer(tmp_path / "b", *overrides, "train.steps=2").train()
    resumed = make_trainer(tmp_path / "b", *overrides, "train.steps=4", "train.resume=true", seed=123)
    assert resumed.step == 2 and resumed.learner.entropy_applied == pytest.approx(0.02)
    resumed_hist = resumed.train()
    for got, want in ((resumed.model, full.model), (resumed.critic, full.critic)):
        for k, v in params(want).items():
            torch.testing.assert_close(params(got)[k], v, rtol=0, atol=1e-6)
    for key in ("reward/mean", "train/value_loss", "train/entropy_coef", "train/explained_variance"):
        assert resumed_hist[-1][key] == pytest.approx(full_hist[-1][key], abs=1e-6), key
    state = resumed.learner.critic_optimizer.state_dict()["state"]
    assert all(int(s["step"]) == 8 for s in state.values())  # 4 steps x 2 minibatches, resumed at 4


def test_a_critic_from_a_folder_and_its_refusals(tmp_path, monkeypatch):
    from thinkrl.testing import char_tokenizer, tiny_model

    good, other = tmp_path / "good", tmp_path / "other"
    tiny_model("llama", 14, seed=3).save_pretrained(good)
    char_tokenizer("0123456789=").save_pretrained(good)  # the policy's
    tiny_model("llama", 14).save_pretrained(other)
    char_tokenizer("abcdefghijk").save_pretrained(other)  # as many tokens, other meanings
    tr = make_trainer(tmp_path / "run", *GAE, f"critic.model={good}", "train.steps=1")
    tr.train()
    assert tr.critic.body is not None and not tr.critic.shared
    with pytest.raises(
        ValueError, match=r"another tokenizer than the policy \(14 vs 14 tokens, or other ids\)"
    ):
        make_trainer(tmp_path / "run2", *GAE, f"critic.model={other}")
    make_trainer(tmp_path / "plain", "train.steps=1").train()
    resume = ("train.steps=2", "train.resume=true")
    # the run folder refuses a changed config first; forced past it, the critic's own checks speak
    with pytest.raises(
        RunFolderError, match=r"written with another config \(algorithm.advantage: 'grpo' -> 'gae'"
    ):
        make_trainer(tmp_path / "plain", *GAE, "critic.model=policy", *resume)
    with pytest.raises(ValueError, match=r"checkpoint has no critic"):
        make_trainer(tmp_path / "plain", *GAE, "critic.model=policy", *resume, "train.resume_force=true")
    make_trainer(tmp_path / "head", *GAE, "train.steps=1").train()
    with pytest.raises(
        ValueError, match=r"does not fit critic.model='policy' \(was the run started with another"
    ):
        make_trainer(tmp_path / "head", *GAE, "critic.model=policy", *resume, "train.resume_force=true")
    monkeypatch.setattr("thinkrl.train.critic.split_lm_head", lambda model: None)
    with pytest.raises(ValueError, match=r"critic.model=head needs .* set critic.model=policy"):
        make_trainer(tmp_path / "run3", *GAE)


@pytest.mark.slow
def test_ppo_with_a_critic_learns(tmp_path):
    """PPO (GAE with a critic, 2 minibatches) takes the copy-the-digit reward from chance to well above it."""
    over = (*GAE, "critic.model=head", "critic.lr=3e-2", "critic.vf_coef=0.5", "algorithm.num_minibatches=2",
            "rollout.group_size=8", "rollout.prompts_per_step=8", "train.steps=24")  # fmt: skip
    rewards = [h["reward/mean"] for h in make_trainer(tmp_path / "ppo", *over).train()]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert first < 0.12, rewards
    assert last > first + 0.12, rewards
