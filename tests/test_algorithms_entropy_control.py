"""Clip-Cov, KL-Cov and the adaptive entropy coefficient, against verl / the authors' code and Skywork-OR1."""

import math

import pytest
import torch

from thinkrl.algorithms import adaptive_entropy_coef, aggregate_loss, policy_loss


def _batch(seed: int, n: int = 8, t: int = 9, spread: float = 0.3, adv_scale: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen) * 4
    logp = old + torch.randn(n, t, generator=gen) * spread
    adv = torch.randn(n, generator=gen) * adv_scale  # large enough that some products land in (1, 5)
    lengths = torch.randint(0, t + 1, (n,), generator=gen)
    lengths[0] = 0  # an empty completion
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return logp, old, adv, mask


def _verl_clip_cov_candidates(old, logp, adv, mask, low, high, lb, ub):
    """verl compute_policy_loss_clip_cov (from PRIME-RL/Entropy-Mechanism-of-RL), transcribed up to the random
    draw: pg1 = -A r; pg2 = -A clamp(r, 1 - low, 1 + high); clip_by_origin = (pg2 > pg1) & m;
    cov = (A - masked_mean(A)) (logp - masked_mean(logp)); cov = -inf on padding and clip_by_origin;
    candidates = (cov < ub) & (cov > lb) & m; clip_num = max(int(ratio * sum(m)), 1) of them, at random,
    get corr = 0; loss = max(pg1, pg2) * corr."""
    m = mask.float()
    a = adv[:, None].expand_as(logp)
    ratio = torch.exp(logp - old)
    pg1 = -a * ratio
    pg2 = -a * torch.clamp(ratio, 1 - low, 1 + high)
    clip_by_origin = (pg2 > pg1) & (mask > 0)
    mean_a = (a * m).sum() / (m.sum() + 1e-8)
    mean_lp = (logp * m).sum() / (m.sum() + 1e-8)
    cov = (a - mean_a) * (logp - mean_lp)
    cov[mask == 0] = -torch.inf
    cov[clip_by_origin] = -torch.inf
    candidates = (cov < ub) & (cov > lb) & (mask > 0)
    return candidates, torch.maximum(pg1, pg2)


def test_clip_cov_matches_verl_when_every_candidate_is_taken():
    logp0, old, adv, mask = _batch(41)
    candidates, ppo = _verl_clip_cov_candidates(old, logp0, adv, mask, 0.2, 0.2, 1.0, 5.0)
    n_cand = int(candidates.sum())
    assert 0 < n_cand < int(mask.sum())  # the batch exercises the band
    ratio = n_cand / int(mask.sum()) + 1e-9  # clip_num = n_cand: the random draw cannot matter
    theirs = torch.where(candidates, torch.zeros_like(ppo), ppo) * mask
    logp = logp0.clone().requires_grad_(True)
    ours, metrics = policy_loss("clip_cov", logp, old, adv, mask, clip_cov_ratio=ratio)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(metrics["cov_selected_fraction"], torch.tensor(n_cand / int(mask.sum())))
    aggregate_loss(ours, mask, "token_mean").backward()
    assert torch.count_nonzero(logp.grad[candidates]) == 0  # taken out of the gradient
    assert torch.count_nonzero(logp.grad[~candidates & mask.bool()]) > 0


def test_clip_cov_draws_exactly_the_count_among_candidates_and_is_seedable():
    logp0, old, adv, mask = _batch(42)
    candidates, ppo = _verl_clip_cov_candidates(old, logp0, adv, mask, 0.2, 0.2, 1.0, 5.0)
    n_tok = int(mask.sum())
    assert int(candidates.sum()) >= 3
    ratio = 2.5 / n_tok  # floor(2.5) = 2 tokens of the candidates

    def run(seed):
        loss, m = policy_loss(
            "clip_cov",
            logp0,
            old,
            adv,
            mask,
            clip_cov_ratio=ratio,
            generator=torch.Generator().manual_seed(seed),
        )
        return (loss == 0) & (ppo != 0) & mask.bool(), m

    picked, metrics = run(0)
    assert int(picked.sum()) == 2 and bool((picked <= candidates).all())
    torch.testing.assert_close(metrics["cov_selected_fraction"], torch.tensor(2 / n_tok))
    assert torch.equal(run(0)[0], picked)  # same generator seed, same draw
    draws = {tuple(run(s)[0].flatten().nonzero().flatten().tolist()) for s in range(20)}
    assert len(draws) > 1  # the choice is random among the candidates, not always the same tokens


def test_clip_cov_takes_at_least_one_token_and_none_without_candidates():
    logp0, old, adv, mask = _batch(43)
    _, m = policy_loss("clip_cov", logp0, old, adv, mask)  # 2e-4 * ~40 tokens -> floor 0 -> 1
    torch.testing.assert_close(m["cov_selected_fraction"], torch.tensor(1 / int(mask.sum())))
    # all-equal advantages: every product is 0, outside (1, 5): nothing is taken, it is plain PPO
    loss, m = policy_loss("clip_cov", logp0, old, torch.zeros_like(adv), mask)
    assert m["cov_selected_fraction"].item() == 0.0


def _verl_kl_cov(old, logp, adv, mask, ratio, coef):
    """verl compute_policy_loss_kl_cov, transcribed: pg = -A r everywhere; on the
    max(1, int(valid * ratio)) valid tokens with the largest (A - mean A)(logp - mean logp) (means over valid
    tokens), pg = -A r + coef |logp - old|; agg token-mean."""
    a = adv[:, None].expand_as(logp)
    nkl = logp - old
    r = torch.exp(nkl)
    pg = -a * r
    pg_kl = -a * r + coef * nkl.abs()
    valid = mask > 0
    idx = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
    va, vl = a[valid].detach(), logp[valid].detach()
    cov = (va - va.mean()) * (vl - vl.mean())
    k = max(1, int(len(cov) * ratio))
    top = idx[torch.topk(cov, k, largest=True).indices]
    rows, cols = top // logp.shape[1], top % logp.shape[1]
    pg = pg.clone()
    pg[rows, cols] = pg_kl[rows, cols]
    m = mask.float()
    return (pg * m).sum() / m.sum(), rows, cols


def test_kl_cov_matches_verl():
    logp0, old, adv, mask = _batch(44)
    theirs_logp = logp0.clone().requires_grad_(True)
    theirs, rows, cols = _verl_kl_cov(old, theirs_logp, adv, mask, 0.1, 1.0)
    theirs.backward()
    logp = logp0.clone().requires_grad_(True)
    per_token, metrics = policy_loss("kl_cov", logp, old, adv, mask, kl_cov_ratio=0.1)
    ours = aggregate_loss(per_token, mask, "token_mean")
    ours.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(logp.grad, theirs_logp.grad)
    torch.testing.assert_close(metrics["cov_selected_fraction"], torch.tensor(len(rows) / int(mask.sum())))
    assert len(rows) >= 2


def test_kl_cov_penalty_hand_computed_and_no_clip():
    # two tokens, A = (+2, -2) -> products 2 * ln 2 each (tie -> the first); kl_cov_ratio 0.5 -> 1 token
    logp = torch.log(torch.tensor([[4.0], [0.5]])).requires_grad_(True)  # ratios 4 (not clipped) and 0.5
    loss, m = policy_loss(
        "kl_cov", logp, torch.zeros(2, 1), torch.tensor([2.0, -2.0]), torch.ones(2, 1), kl_cov_ratio=0.5
    )
    torch.testing.assert_close(loss.detach(), torch.tensor([[-8.0 + math.log(4.0)], [1.0]]))
    loss.sum().backward()
    # d/dlogp: -A r + coef * sign(log r) = -8 + 1 ; -(-2) * 0.5
    torch.testing.assert_close(logp.grad, torch.tensor([[-7.0], [1.0]]))
    assert m["clip_fraction"].item() == 0.0 and m["cov_selected_fraction"].item() == 0.5


@pytest.mark.parametrize("name,option", [("clip_cov", "clip_cov_ratio"), ("kl_cov", "kl_cov_ratio")])
@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_cov_ratio_out_of_range_is_refused(name, option, bad):
    args = (torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1))
    with pytest.raises(ValueError, match=option):
        policy_loss(name, *args, **{option: bad})


def test_cov_losses_refuse_sequence_ratio_and_bad_band():
    args = (torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1))
    with pytest.raises(ValueError, match="ratio_level=token"):
        policy_loss("kl_cov", *args, ratio_level="sequence")
    with pytest.raises(ValueError, match="clip_cov_lb must be < clip_cov_ub"):
        policy_loss("clip_cov", *args, clip_cov_lb=5.0, clip_cov_ub=1.0)
    with pytest.raises(ValueError, match="kl_cov_coef"):
        policy_loss("kl_cov", *args, kl_cov_coef=-1.0)


def test_cov_losses_on_empty_batch_are_finite():
    for name in ("clip_cov", "kl_cov"):
        loss, m = policy_loss(name, torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3))
        assert torch.equal(loss, torch.zeros(2, 3))
        assert m["cov_selected_fraction"].item() == 0.0


# --------------------------------------------------------------------------------- adaptive coefficient


def _skywork_controller(coef, entropies, target, delta, lo, hi):
    """Skywork-OR1 EntController.update (SkyworkAI/Skywork-OR1 verl/trainer/ppo/core_algos.py), transcribed:
    value += delta if ent < target else -= delta; value = clip(value, min, max);
    entropy_loss_enabled = ent < target; the actor applies value * enabled."""
    out = []
    for e in entropies:
        coef = coef + delta if e < target else coef - delta
        coef = float(min(max(coef, lo), hi))
        out.append((coef, coef * int(e < target)))
    return out


def test_adaptive_entropy_coef_matches_skywork_controller():
    entropies = [0.5, 0.1, 0.1, 0.15, 0.3, 0.05, 0.05, 0.05, 0.2, 0.19]
    expected = _skywork_controller(0.0, entropies, 0.2, 0.002, 0.0, 0.005)
    coef, got = 0.0, []
    for e in entropies:
        coef, applied = adaptive_entropy_coef(coef, e, target=0.2, delta=0.002, coef_max=0.005)
        got.append((coef, applied))
    flat = [x for pair in got for x in pair]
    assert flat == pytest.approx([x for pair in expected for x in pair])
    assert max(c for c, _ in got) == pytest.approx(0.005)  # the cap is reached and held
    assert got[8][1] == 0.0  # entropy == target: not below, the bonus is off (Skywork's strict <)


def test_adaptive_entropy_coef_takes_a_tensor_entropy():
    assert adaptive_entropy_coef(0.001, torch.tensor(0.1), delta=0.001) == pytest.approx((0.002, 0.002))


def test_adaptive_entropy_coef_refuses_nan_and_bad_bounds():
    with pytest.raises(ValueError, match="finite"):
        adaptive_entropy_coef(0.0, float("nan"))
    with pytest.raises(ValueError, match="coef_min <= coef_max"):
        adaptive_entropy_coef(0.0, 0.1, coef_min=0.1, coef_max=0.01)
    with pytest.raises(ValueError, match="delta >= 0"):
        adaptive_entropy_coef(0.0, 0.1, delta=-1.0)
