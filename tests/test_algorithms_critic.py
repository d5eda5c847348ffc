"""PPO with a critic, the pure parts: outcome reward placement, GAE (verl and TRL loops), whitening, clipped
value loss, the registry, and a learning test in which a policy and a critic both really learn."""

import pytest
import torch

from thinkrl.algorithms import (
    CRITIC_ADVANTAGES,
    aggregate_loss,
    compute_critic_advantages,
    gae_advantages,
    masked_whiten,
    outcome_token_rewards,
    policy_loss,
    value_loss,
)


def _verl_gae(token_level_rewards, values, response_mask, gamma, lam):
    """verl compute_gae_advantage_return (volcengine/verl verl/trainer/ppo/core_algos.py), transcribed:
    for t reversed: delta = r_t + gamma * nextvalues - V_t; lastgaelam_ = delta + gamma lam lastgaelam;
    nextvalues = V_t m_t + (1 - m_t) nextvalues; lastgaelam = lastgaelam_ m_t + (1 - m_t) lastgaelam;
    returns = A + V; A = masked_whiten(A, m) with mean/var over the mask, var Bessel-corrected,
    (A - mean) * rsqrt(var + 1e-8)."""
    nextvalues, lastgaelam, rev = 0, 0, []
    for t in reversed(range(token_level_rewards.shape[-1])):
        delta = token_level_rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = values[:, t] * response_mask[:, t] + (1 - response_mask[:, t]) * nextvalues
        lastgaelam = lastgaelam_ * response_mask[:, t] + (1 - response_mask[:, t]) * lastgaelam
        rev.append(lastgaelam)
    adv = torch.stack(rev[::-1], dim=1)
    returns = adv + values
    m = response_mask
    mean = (adv * m).sum() / (m.sum() + 1e-8)
    var = (((adv - mean) ** 2) * m).sum() / (m.sum() + 1e-8) * (m.sum() / (m.sum() - 1))
    return (adv - mean) * torch.rsqrt(var + 1e-8), returns


def _trl_ppo_gae(rewards, values, mask, gamma, lam):
    """TRL PPOTrainer (huggingface/trl trl/trainer/ppo_trainer.py), transcribed: values and rewards are 0 on
    padding; for t reversed: nextvalues = V_{t+1} (0 at the end); delta = r_t + gamma nextvalues - V_t;
    lastgaelam = delta + gamma lam lastgaelam; returns = A + V; A = masked_whiten(A, ~padding), 0 on
    padding."""
    values = values * mask
    rewards = rewards * mask
    t_len = rewards.shape[1]
    lastgaelam, rev = 0, []
    for t in reversed(range(t_len)):
        nextvalues = values[:, t + 1] if t < t_len - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        rev.append(lastgaelam)
    adv = torch.stack(rev[::-1], dim=1)
    returns = adv + values
    m = mask
    mean = (adv * m).sum() / m.sum()
    var = (((adv - mean) ** 2) * m).sum() / m.sum() * (m.sum() / (m.sum() - 1))
    return ((adv - mean) * torch.rsqrt(var + 1e-8)) * m, returns


def _batch(seed, n=5, t=8):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(n, t, generator=gen)
    rewards = (torch.rand(n, generator=gen) > 0.5).float()
    lengths = torch.tensor([t, 3, 1, 0, 6])[:n]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    return values, rewards, mask


def test_outcome_reward_at_last_token_also_with_holes():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]])
    out = outcome_token_rewards(torch.tensor([2.0, -1.0, 5.0]), mask)
    torch.testing.assert_close(out, torch.tensor([[0, 0, 2.0, 0], [0, 0, 0, -1.0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="same N"):
        outcome_token_rewards(torch.ones(2), mask)


def test_gae_hand_computed_discounting():
    # one row, 3 tokens, reward 1 at the end, V = (0.5, 0.5, 0.5), gamma 0.9, lam 0.5
    # delta_2 = 1 - 0.5 = 0.5; delta_1 = 0 + 0.9 * 0.5 - 0.5 = -0.05; delta_0 = -0.05
    # A_2 = 0.5; A_1 = -0.05 + 0.45 * 0.5 = 0.175; A_0 = -0.05 + 0.45 * 0.175 = 0.02875
    adv, ret = gae_advantages(
        torch.tensor([[0.0, 0.0, 1.0]]),
        torch.full((1, 3), 0.5),
        torch.ones(1, 3),
        gamma=0.9,
        lam=0.5,
        whiten=False,
    )
    torch.testing.assert_close(adv, torch.tensor([[0.02875, 0.175, 0.5]]))
    torch.testing.assert_close(ret, adv + 0.5)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0)])
def test_gae_matches_verl_with_holes_in_the_mask(gamma, lam):
    values, rewards, mask = _batch(51)
    mask[0, 2:4] = 0  # tool output inside a completion: skipped, not a boundary
    r = outcome_token_rewards(rewards, mask) + torch.randn(mask.shape) * 0.1 * mask  # dense KL-like terms too
    theirs_adv, theirs_ret = _verl_gae(r, values, mask, gamma, lam)
    adv, ret = gae_advantages(r, values, mask, gamma=gamma, lam=lam)
    m = mask.bool()
    torch.testing.assert_close(adv[m], theirs_adv[m])
    torch.testing.assert_close(ret[m], theirs_ret[m])
    assert torch.count_nonzero(adv[~m]) == 0 and torch.count_nonzero(ret[~m]) == 0


def test_gae_matches_trl_ppo():
    values, rewards, mask = _batch(52)
    r = outcome_token_rewards(rewards, mask)
    theirs_adv, theirs_ret = _trl_ppo_gae(r, values, mask, 1.0, 0.95)
    adv, ret = gae_advantages(r, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, theirs_adv)
    torch.testing.assert_close(ret, theirs_ret * mask)


def test_gae_with_unit_gamma_lambda_is_return_minus_value():
    values, rewards, mask = _batch(53)
    adv, ret = compute_critic_advantages(
        "gae", outcome_token_rewards(rewards, mask), values, mask, whiten=False
    )
    torch.testing.assert_close(adv, (rewards[:, None] - values) * mask)
    torch.testing.assert_close(ret, rewards[:, None] * mask)


def test_gae_empty_and_constant_batches_are_finite():
    z = torch.zeros(2, 3)
    adv, ret = gae_advantages(z, torch.randn(2, 3), z)  # no tokens at all
    assert torch.equal(adv, z) and torch.equal(ret, z)
    one = torch.tensor([[1.0, 0.0, 0.0]])
    adv, _ = gae_advantages(one, torch.zeros(1, 3), one)  # one token: no variance to whiten by
    assert torch.isfinite(adv).all()
    # the critic already predicts every return: all advantages 0, whitening must not blow 0/0 up
    full = torch.ones(2, 3)
    adv, _ = gae_advantages(outcome_token_rewards(torch.ones(2), full), full, full)
    assert torch.equal(adv, torch.zeros(2, 3))


def test_gae_ignores_garbage_on_padding():
    values, rewards, mask = _batch(54)
    r = outcome_token_rewards(rewards, mask)
    clean = gae_advantages(r, values, mask)
    pad = ~mask.bool()
    dirty = gae_advantages(r.masked_fill(pad, float("nan")), values.masked_fill(pad, float("inf")), mask)
    torch.testing.assert_close(dirty[0], clean[0])
    torch.testing.assert_close(dirty[1], clean[1])


def test_masked_whiten_and_bad_inputs():
    torch.testing.assert_close(
        masked_whiten(torch.tensor([[5.0, 7.0]]), torch.tensor([[1, 0]])), torch.zeros(1, 2)
    )
    with pytest.raises(ValueError, match="gamma and lam"):
        gae_advantages(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), gamma=1.5)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        gae_advantages(torch.zeros(1, 2), torch.zeros(1, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match="'gae'"):
        compute_critic_advantages("vtrace", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1))
    assert set(CRITIC_ADVANTAGES) == {"gae"}


def _verl_value_loss(vpreds, returns, values, mask, cliprange_value):
    """verl compute_value_loss, transcribed: vpredclipped = clamp(vpreds, values - c, values + c);
    vf1 = (vpreds - R)^2; vf2 = (vpredclipped - R)^2; loss = 0.5 * token-mean(max(vf1, vf2));
    clipfrac = masked_mean(vf2 > vf1)."""
    m = mask.float()
    clipped = torch.clamp(vpreds, values - cliprange_value, values + cliprange_value)
    vf1, vf2 = (vpreds - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * (torch.max(vf1, vf2) * m).sum() / m.sum()
    return loss, ((vf2 > vf1).float() * m).sum() / m.sum()


def test_value_loss_matches_verl():
    values, rewards, mask = _batch(55)
    old = values + torch.randn(values.shape, generator=torch.Generator().manual_seed(3)) * 0.7
    returns = rewards[:, None].expand_as(values)
    theirs_v = values.clone().requires_grad_(True)
    theirs, clipfrac = _verl_value_loss(theirs_v, returns, old, mask, 0.5)
    theirs.backward()
    v = values.clone().requires_grad_(True)
    per_token, metrics = value_loss(v, old, returns, mask, clip_range=0.5)
    ours = aggregate_loss(per_token, mask, "token_mean")
    ours.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(v.grad, theirs_v.grad)
    torch.testing.assert_close(metrics["value_clip_fraction"], clipfrac)
    assert 0 < clipfrac < 1


def test_value_loss_unclipped_and_explained_variance():
    v = torch.tensor([[1.0, 2.0, 9.0]], requires_grad=True)
    ret = torch.tensor([[1.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, m = value_loss(v, torch.zeros(1, 3), ret, mask, clip_range=None)
    torch.testing.assert_close(loss.detach(), torch.tensor([[0.0, 0.5, 0.0]]))
    # Var(R) over (1, 3) = 1; R - V = (0, 1): Var = 0.25 -> 1 - 0.25 = 0.75
    torch.testing.assert_close(m["explained_variance"], torch.tensor(0.75))
    assert m["value_clip_fraction"].item() == 0.0
    with pytest.raises(ValueError, match="clip_range"):
        value_loss(v, v, ret, mask, clip_range=0.0)
    _, m = value_loss(v, v, torch.ones(1, 3), mask)  # constant returns: explained variance 0, not NaN
    assert m["explained_variance"].item() == 0.0


@pytest.mark.slow
def test_ppo_with_critic_learns():
    """A toy sequence task: 4 tokens from a 3-token vocabulary, reward 1 when the completion holds more 0s
    than the others. Policy: free logits per position; critic: a value per (position, token so far) table.
    PPO-clip on GAE advantages plus the clipped value loss, separate learning rates. Both must learn:
    the reward rises and the critic's error falls; a no-op update fails both checks."""
    torch.manual_seed(0)
    t_len, vocab, n = 4, 3, 64
    logits = torch.zeros(t_len, vocab, requires_grad=True)
    value_table = torch.zeros(t_len, vocab + 1, requires_grad=True)  # (position, previous token or start)
    pol_opt = torch.optim.Adam([logits], lr=0.1)
    val_opt = torch.optim.Adam([value_table], lr=0.1)
    mask = torch.ones(n, t_len)

    def rollout():
        with torch.no_grad():
            tokens = torch.distributions.Categorical(logits=logits.expand(n, -1, -1)).sample()  # (n, T)
        reward = ((tokens == 0).sum(-1) > t_len / 2).float()
        prev = torch.cat([torch.full((n, 1), vocab), tokens[:, :-1]], dim=1)  # (n, T) the critic's state
        return tokens, reward, prev

    def values_of(prev):
        return value_table[torch.arange(t_len).expand(n, -1), prev]  # (n, T)

    first_reward, first_value_err, rewards, errs = None, None, [], []
    for step in range(40):
        tokens, reward, prev = rollout()
        old_logp = torch.log_softmax(logits, -1).detach()[torch.arange(t_len), tokens]
        old_values = values_of(prev).detach()
        adv, ret = gae_advantages(outcome_token_rewards(reward, mask), old_values, mask, gamma=1.0, lam=0.95)
        for _ in range(2):  # two epochs: the second is off-policy, the clips matter
            logp = torch.log_softmax(logits, -1)[torch.arange(t_len), tokens]
            pl, _ = policy_loss("ppo_clip", logp, old_logp, adv, mask)
            vl, vm = value_loss(values_of(prev), old_values, ret, mask, clip_range=0.5)
            pol_opt.zero_grad()
            val_opt.zero_grad()
            (aggregate_loss(pl, mask, "token_mean") + 0.5 * aggregate_loss(vl, mask, "token_mean")).backward()
            pol_opt.step()
            val_opt.step()
        rewards.append(reward.mean().item())
        errs.append(((ret - old_values) ** 2).mean().item())
        if step == 4:
            first_reward, first_value_err = sum(rewards) / 5, sum(errs) / 5
    last_reward, last_err = sum(rewards[-5:]) / 5, sum(errs[-5:]) / 5
    assert first_reward < 0.5 and last_reward > 0.9, (first_reward, last_reward)
    assert last_err < 0.5 * first_value_err, (first_value_err, last_err)
