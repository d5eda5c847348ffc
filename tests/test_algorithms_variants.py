"""CISPO, SAPO and GMPO: hand-computed values, the sources' formulas (paper, TRL, verl) on random batches,
masks, empty rows, all-equal groups, options and refusals."""

import math

import pytest
import torch

from thinkrl.algorithms import POLICY_LOSSES, aggregate_loss, loss_options, policy_loss


def _random_batch(seed: int, n: int = 6, t: int = 7, spread: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen) * 3  # log-probs in (-3, 0)
    logp = old + torch.randn(n, t, generator=gen) * spread  # ratios roughly in [0.4, 2.5]: many clipped
    adv = torch.randn(n, generator=gen)
    lengths = torch.tensor([t, 1, 3, t - 1, 0, 5])[:n]  # includes an empty completion
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return logp, old, adv, mask


def _ours(name, logp0, old, adv, mask, agg, **kw):
    logp = logp0.clone().requires_grad_(True)
    per_token, metrics = policy_loss(name, logp, old, adv, mask, **kw)
    loss = aggregate_loss(per_token, mask, agg)
    loss.backward()
    return loss, logp.grad, per_token, metrics


# ------------------------------------------------------------------------------------------------ CISPO


def test_cispo_hand_computed_gradient_never_zero():
    # ratios 2 (A=+1), 0.5 (A=+1), 3 (A=-1); clip [0.8, 1.2]; loss = -sg(w) A logp, gradient -w A
    logp = torch.log(torch.tensor([[2.0, 0.5], [3.0, 1.0]])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, m = policy_loss("cispo", logp, torch.zeros(2, 2), adv, mask)
    ln2, ln3 = math.log(2.0), math.log(3.0)
    torch.testing.assert_close(loss.detach(), torch.tensor([[-1.2 * ln2, 0.8 * ln2], [1.2 * ln3, 0.0]]))
    loss.sum().backward()
    # PPO would give 0 for the capped ratios 2 and 3; CISPO keeps -w A
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.2, -0.8], [1.2, 0.0]]))
    # high: ratios 2 and 3 (whatever the sign of A); low: 0.5 ; of 3 masked tokens
    torch.testing.assert_close(m["high_clip_fraction"], torch.tensor(2 / 3))
    torch.testing.assert_close(m["low_clip_fraction"], torch.tensor(1 / 3))


def test_cispo_matches_trl():
    """TRL GRPOTrainer._compute_loss, loss_type="cispo" (huggingface/trl trl/trainer/grpo_trainer.py):
    clamped = clamp(exp(logp - old), max=epsilon_high).detach(); per_token = -clamped * A * logp;
    loss = sum(per_token * m) / num_items_in_batch (tokens of the batch); cispo_clip_ratio counts
    (coef > epsilon_high) & (A > 0). Ours: clip_low = 1 (no lower bound), clip_high = epsilon_high - 1."""
    logp0, old, adv, mask = _random_batch(21, spread=1.0)
    eps_high = 2.0
    m = mask.float()
    theirs_logp = logp0.clone().requires_grad_(True)
    coef = torch.exp(theirs_logp - old)
    per_tok = -torch.clamp(coef, max=eps_high).detach() * adv[:, None] * theirs_logp
    theirs = (per_tok * m).sum() / m.sum()
    theirs.backward()
    ours, grad, _, metrics = _ours("cispo", logp0, old, adv, mask, "token_mean", clip_low=1.0, clip_high=1.0)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad, theirs_logp.grad)
    capped = (coef.detach() > eps_high).float()
    assert (capped * m).sum() > 0  # the batch really exercises the cap
    torch.testing.assert_close(metrics["high_clip_fraction"], (capped * m).sum() / m.sum())


def test_cispo_matches_verl():
    """verl compute_policy_loss_cispo (volcengine/verl verl/trainer/ppo/core_algos.py), transcribed:
    ratio = exp(clamp(logp - old, -20, 20)); w = clamp(ratio, 1 - low, 1 + high).detach();
    pg_losses = -w * A * logp; agg token-mean; pg_clipfrac = masked_mean(ratio != w)."""
    logp0, old, adv, mask = _random_batch(22)
    m = mask.float()
    theirs_logp = logp0.clone().requires_grad_(True)
    ratio = torch.exp(torch.clamp(theirs_logp - old, -20.0, 20.0))
    w = torch.clamp(ratio, 1 - 0.2, 1 + 0.28).detach()
    theirs = ((-w * adv[:, None] * theirs_logp) * m).sum() / m.sum()
    theirs.backward()
    clipfrac = ((ratio != w).float() * m).sum() / m.sum()
    ours, grad, _, metrics = _ours("cispo", logp0, old, adv, mask, "token_mean", clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad, theirs_logp.grad)
    torch.testing.assert_close(metrics["clip_fraction"], clipfrac)
    assert clipfrac > 0


def test_cispo_paper_objective_gradient():
    # MiniMax-M1 eq. 4: J = 1/sum|o_i| sum_i sum_t sg(r_hat) A log pi, r_hat = clip(r, 1 - e_low, 1 + e_high).
    # Its gradient is sum sg(r_hat) A grad log pi / tokens; ours (token_mean of the loss) is minus that.
    logp0, old, adv, mask = _random_batch(23)
    _, grad, _, _ = _ours("cispo", logp0, old, adv, mask, "token_mean", clip_low=0.2, clip_high=0.28)
    r_hat = torch.exp(logp0 - old).clamp(0.8, 1.28)
    expected = -(r_hat * adv[:, None]) * mask / mask.sum()
    torch.testing.assert_close(grad, expected)


# ------------------------------------------------------------------------------------------------- SAPO


def test_sapo_hand_computed_and_asymmetric_temperatures():
    # r = 1.5. A = +1 (tau 1): f = sigmoid(0.5) * 4 = 2.4492 ; A = -1 (tau 2): f = sigmoid(1.0) * 2 = 1.4621
    logp = torch.log(torch.tensor([[1.5], [1.5]])).requires_grad_(True)
    loss, m = policy_loss(
        "sapo", logp, torch.zeros(2, 1), torch.tensor([1.0, -1.0]), torch.ones(2, 1), sapo_tau_neg=2.0
    )
    s_half, s_one = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-1.0))
    torch.testing.assert_close(loss.detach(), torch.tensor([[-4 * s_half], [2 * s_one]]))
    loss.sum().backward()
    # d/dlogp = -A * 4 sigmoid(z) (1 - sigmoid(z)) * r  (the tau cancels)
    g_pos = -4 * s_half * (1 - s_half) * 1.5
    g_neg = 4 * s_one * (1 - s_one) * 1.5
    torch.testing.assert_close(logp.grad, torch.tensor([[g_pos], [g_neg]]))
    torch.testing.assert_close(m["gate_weight_mean"], torch.tensor((-g_pos + g_neg) / 2))
    assert m["clip_fraction"].item() == 0.0


def test_sapo_on_policy_gradient_is_plain_policy_gradient():
    logp0, _, adv, mask = _random_batch(24)
    _, grad, _, _ = _ours("sapo", logp0, logp0, adv, mask, "token_mean")
    _, grad_pg, _, _ = _ours("reinforce", logp0, logp0, adv, mask, "token_mean")
    torch.testing.assert_close(grad, grad_pg)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_sapo_matches_trl_and_verl(level):
    """TRL loss_type="sapo": temperatures = where(A > 0, pos, neg);
    per_token = -sigmoid(t (coef - 1)) * 4 / t * A;
    aggregated like "grpo" (mean over rows of the row's token mean). verl compute_policy_loss_sapo: the same
    gate on exp(clamp(logp - old, -20, 20)), seq-mean-token-mean. TRL's sequence level differentiates
    through the row mean of log-ratios, a (B, 1) coefficient."""
    logp0, old, adv, mask = _random_batch(25)
    m = mask.float()
    theirs_logp = logp0.clone().requires_grad_(True)
    log_w = theirs_logp - old
    if level == "sequence":
        log_w = ((log_w * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef = torch.exp(torch.clamp(log_w, -20.0, 20.0))
    a = adv[:, None]
    t = torch.where(a > 0, 1.0, 1.05)
    per_tok = -torch.sigmoid(t * (coef - 1)) * 4 / t * a
    theirs = ((per_tok * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    theirs.backward()
    ours, grad, _, _ = _ours("sapo", logp0, old, adv, mask, "seq_mean_token_mean", ratio_level=level)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad, theirs_logp.grad)


# ------------------------------------------------------------------------------------------------- GMPO


def _gmpo_paper(logp, old, adv, mask, eps_low, eps_high):
    """GMPO paper eq. 4 (arXiv 2507.20673), literally: per completion
    (prod_t |min(r A, clip(r, e^-eps_low, e^eps_high) A)|)^(1/|o|) * sgn(A), then 1/G sum_i; loss = -J.
    The product is taken in log space so it does not underflow; empty completions contribute 0."""
    terms = []
    for i in range(logp.shape[0]):
        idx = mask[i].bool()
        if not idx.any() or adv[i] == 0:
            terms.append(logp.sum() * 0)
            continue
        r = torch.exp(logp[i, idx] - old[i, idx])
        a = adv[i]
        inner = torch.minimum(r * a, torch.clamp(r, math.exp(-eps_low), math.exp(eps_high)) * a)
        geo = torch.exp(torch.log(inner.abs()).mean())
        terms.append(geo * torch.sign(a))
    return -torch.stack(terms).mean()


def test_gmpo_matches_paper_formula():
    logp0, old, adv, mask = _random_batch(26, spread=0.6)
    theirs_logp = logp0.clone().requires_grad_(True)
    theirs = _gmpo_paper(theirs_logp, old, adv, mask, 0.4, 0.4)
    theirs.backward()
    ours, grad, _, metrics = _ours(
        "gmpo", logp0, old, adv, mask, "seq_mean_token_mean", clip_low=0.4, clip_high=0.4
    )
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad, theirs_logp.grad)
    assert metrics["clip_fraction"] > 0  # some tokens really were clipped


def test_gmpo_matches_verl_geo_mean_with_is_weights():
    """verl compute_policy_loss_geo_mean, transcribed: nkl = logp - old; sgn = sign(A);
    nkl_min = sgn * min(sgn * nkl, sgn * clamp(nkl, -low, high));
    ratio = exp(sum(nkl_min m) / (sum m + 1e-8));
    A_seq = sum(A m) / (sum m + 1e-8); pg = -A_seq ratio; w_seq = exp(sum(log(w + 1e-10) m) / (sum m + 1e-8));
    loss = mean(pg * w_seq) over all rows (empty rows: 0)."""
    logp0, old, adv, mask = _random_batch(27, spread=0.6)
    gen = torch.Generator().manual_seed(5)
    w = torch.rand(*logp0.shape, generator=gen) + 0.5
    m = mask.float()
    a_tok = adv[:, None].expand_as(logp0)  # verl takes token-level advantages
    theirs_logp = logp0.clone().requires_grad_(True)
    nkl = theirs_logp - old
    sgn = torch.sign(a_tok)
    nkl_min = sgn * torch.min(sgn * nkl, sgn * torch.clamp(nkl, -0.2, 0.28))
    ratio = torch.exp((nkl_min * m).sum(-1) / (m.sum(-1) + 1e-8))
    a_seq = (a_tok * m).sum(-1) / (m.sum(-1) + 1e-8)
    w_seq = torch.exp((torch.log(w + 1e-10) * m).sum(-1) / (m.sum(-1) + 1e-8))
    theirs = (-a_seq * ratio * w_seq).mean()
    theirs.backward()
    ours, grad, _, _ = _ours(
        "gmpo", logp0, old, a_tok, mask, "seq_mean_token_mean", clip_low=0.2, clip_high=0.28, is_weights=w
    )
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad, theirs_logp.grad)


def test_gmpo_refuses_sequence_ratio_and_dual_clip():
    args = (torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2))
    with pytest.raises(ValueError, match="ratio_level=token"):
        policy_loss("gmpo", *args, ratio_level="sequence")
    with pytest.raises(ValueError, match="dual_clip=null"):
        policy_loss("gmpo", *args, dual_clip=3.0)


# ------------------------------------------------------------------------------------- shared behaviour

NEW_LOSSES = ["cispo", "sapo", "gmpo", "clip_cov", "kl_cov"]


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_all_equal_group_gives_zero_loss_and_gradient(name):
    # a group whose rewards were all equal has advantage exactly 0: no loss, no gradient, never NaN
    logp0, old, _, mask = _random_batch(28)
    logp = logp0.clone().requires_grad_(True)
    loss, metrics = policy_loss(name, logp, old, torch.zeros(logp0.shape[0]), mask)
    aggregate_loss(loss, mask, "token_mean").backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())
    if name != "kl_cov":  # kl_cov's penalty |log r| does not depend on A (tested in its own file)
        assert torch.count_nonzero(loss) == 0 and torch.count_nonzero(logp.grad) == 0


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_padding_garbage_never_leaks(name):
    # an engine may leave -inf / NaN on padded positions: the loss and its gradient stay finite and 0 there
    logp0, old, adv, mask = _random_batch(29)
    pad = ~mask.bool()
    logp0 = logp0.masked_fill(pad, float("nan"))
    old = old.masked_fill(pad, -float("inf"))
    logp = logp0.clone().requires_grad_(True)
    loss, metrics = policy_loss(name, logp, old, adv, mask)
    aggregate_loss(loss, mask, "token_mean").backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()
    assert torch.count_nonzero(loss[pad]) == 0 and torch.count_nonzero(logp.grad[pad]) == 0
    assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.parametrize("name", ["cispo", "sapo", "clip_cov", "kl_cov"])
def test_is_weights_multiply_and_are_detached(name):
    logp0, old, adv, mask = _random_batch(30)
    w = (torch.rand(logp0.shape, generator=torch.Generator().manual_seed(1)) + 0.5).requires_grad_(True)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "clip_cov" else {}
    base, _ = policy_loss(name, logp0, old, adv, mask, **kw)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "clip_cov" else {}
    weighted, _ = policy_loss(name, logp0.requires_grad_(True), old, adv, mask, is_weights=w, **kw)
    torch.testing.assert_close(weighted, base * w.detach() * mask)
    weighted.sum().backward()
    assert w.grad is None


def test_every_loss_reports_the_shared_metric_keys():
    logp0, old, adv, mask = _random_batch(31)
    shared = {"clip_fraction", "low_clip_fraction", "high_clip_fraction", "ratio_mean", "ratio_max", "ppo_kl"}
    for name in POLICY_LOSSES:
        _, metrics = policy_loss(name, logp0.clone().requires_grad_(True), old, adv, mask)
        assert shared <= set(metrics), name
        assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values()), name


def test_options_are_listed_and_checked():
    assert loss_options("sapo") == {"sapo_tau_pos": 1.0, "sapo_tau_neg": 1.05}
    assert set(loss_options("clip_cov")) == {"clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "generator"}
    assert loss_options("kl_cov") == {"kl_cov_ratio": 2e-4, "kl_cov_coef": 1.0}
    assert loss_options("cispo") == {} and loss_options("gmpo") == {}
    args = (torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"'sapo'.*\['kl_cov_coef'\].*sapo_tau_neg"):
        policy_loss("sapo", *args, kl_cov_coef=1.0)  # an option of another loss: named, not ignored
    with pytest.raises(ValueError, match="sapo_tau_pos and sapo_tau_neg must be > 0"):
        policy_loss("sapo", *args, sapo_tau_pos=0.0)
    with pytest.raises(ValueError, match="unknown policy loss 'GMPO'.*gmpo"):
        policy_loss("GMPO", *args)


@pytest.mark.parametrize("name", ["cispo", "sapo", "clip_cov", "kl_cov"])
def test_new_losses_refuse_dual_clip(name):
    with pytest.raises(ValueError, match="ppo_clip only"):
        policy_loss(
            name, torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), dual_clip=3.0
        )


@pytest.mark.parametrize("name", NEW_LOSSES)
def test_token_advantages_equal_broadcast_sequence_advantages(name):
    logp0, old, adv, mask = _random_batch(32)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "clip_cov" else {}
    a, _ = policy_loss(name, logp0, old, adv, mask, **kw)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "clip_cov" else {}
    b, _ = policy_loss(name, logp0, old, adv[:, None].expand_as(logp0), mask, **kw)
    torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_every_policy_loss_learns_a_toy_task(name):
    """4 tokens from a 3-token vocabulary, reward = the share of token 0; free logits per position; GRPO
    advantages over groups of 8; two epochs per batch so the second is off-policy (ratios, clips, covariance
    selections all act). The probability of token 0 must rise from 1/3 to most of the mass: a loss whose
    update is a no-op (or has the wrong sign) fails."""
    from thinkrl.algorithms import compute_advantages

    torch.manual_seed(0)
    t_len, vocab, groups, g = 4, 3, 8, 8
    n = groups * g
    logits = torch.zeros(t_len, vocab, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    mask = torch.ones(n, t_len)
    group_ids = torch.arange(groups).repeat_interleave(g)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "clip_cov" else {}
    clip = {"clip_low": 0.4, "clip_high": 0.4} if name == "gmpo" else {}
    for _ in range(30):
        with torch.no_grad():
            tokens = torch.distributions.Categorical(logits=logits.expand(n, -1, -1)).sample()  # (n, T)
        reward = (tokens == 0).float().mean(-1)
        adv = compute_advantages("grpo", reward, group_ids)
        old = torch.log_softmax(logits, -1).detach()[torch.arange(t_len), tokens]
        for _ in range(2):
            logp = torch.log_softmax(logits, -1)[torch.arange(t_len), tokens]
            per_token, _ = policy_loss(name, logp, old, adv, mask, **clip, **kw)
            opt.zero_grad()
            aggregate_loss(per_token, mask, "seq_mean_token_mean").backward()
            opt.step()
    p0 = torch.softmax(logits, -1)[:, 0].mean().item()
    assert p0 > 0.6, (name, p0)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_extreme_log_ratios_and_advantages_stay_finite(name):
    # a policy that moved far (log-ratios +-100) and huge advantages: clamps keep loss and gradient finite
    logp = torch.tensor([[100.0, -100.0, 0.0], [50.0, -50.0, 3.0]], requires_grad=True)
    loss, metrics = policy_loss(name, logp, torch.zeros(2, 3), torch.tensor([1e6, -1e6]), torch.ones(2, 3))
    aggregate_loss(loss, torch.ones(2, 3), "token_mean").backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())
