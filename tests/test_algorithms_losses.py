"""Policy losses: hand-computed PPO-clip, dual-clip, GSPO sequence ratio, IS weights, and peer formulas."""

import math

import pytest
import torch

from thinkrl.algorithms import POLICY_LOSSES, aggregate_loss, importance_ratio, kl_penalty, policy_loss

# Ratios r = exp(logp - old_logp) with old_logp = 0:
#   row 0 (A = +1): r = 1.5, 0.5, 1.1      row 1 (A = -1): r = 1.5, 0.5, (0.9 padded)
RATIOS = torch.tensor([[1.5, 0.5, 1.1], [1.5, 0.5, 0.9]])
ADV = torch.tensor([1.0, -1.0])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def _logp(ratios: torch.Tensor) -> torch.Tensor:
    return ratios.log().clone().requires_grad_(True)


def test_ppo_clip_hand_computed_values_and_metrics():
    logp = _logp(RATIOS)
    loss, metrics = policy_loss("ppo_clip", logp, torch.zeros(2, 3), ADV, MASK)
    # row 0, A=+1: -min(1.5, 1.2) = -1.2 (high-clipped); -min(0.5, 0.8) = -0.5; -min(1.1, 1.1) = -1.1
    # row 1, A=-1: -min(-1.5, -1.2) = 1.5; -min(-0.5, -0.8) = 0.8 (low-clipped); padded -> 0
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.5, -1.1], [1.5, 0.8, 0.0]]))
    # 5 masked tokens: 1 high-clipped, 1 low-clipped
    torch.testing.assert_close(metrics["high_clip_fraction"], torch.tensor(0.2))
    torch.testing.assert_close(metrics["low_clip_fraction"], torch.tensor(0.2))
    torch.testing.assert_close(metrics["clip_fraction"], torch.tensor(0.4))
    torch.testing.assert_close(metrics["ratio_mean"], torch.tensor((1.5 + 0.5 + 1.1 + 1.5 + 0.5) / 5))
    torch.testing.assert_close(metrics["ratio_max"], torch.tensor(1.5))
    # ppo_kl = mean of (old - new) = -mean(log r) over the 5 tokens
    kl = -(2 * math.log(1.5) + 2 * math.log(0.5) + math.log(1.1)) / 5
    torch.testing.assert_close(metrics["ppo_kl"], torch.tensor(kl))
    assert "dual_clip_fraction" not in metrics
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())


def test_ppo_clip_gradient_is_zero_where_clipped():
    logp = _logp(RATIOS)
    loss, _ = policy_loss("ppo_clip", logp, torch.zeros(2, 3), ADV, MASK)
    loss.sum().backward()
    # unclipped: d(-A r)/d logp = -A r ; clipped: constant -> 0 ; padded -> 0
    # row 0: [clipped 0, -0.5, -1.1]   row 1: [+1.5, clipped 0, padded 0]
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5, -1.1], [1.5, 0.0, 0.0]]))


def test_clip_higher_is_asymmetric():
    logp = torch.log(torch.tensor([[1.25, 0.75]]))
    # A=+1: r=1.25 is clipped at 1.2 but not at 1.28 (DAPO clip-higher); r=0.75 is never clipped for A>0
    sym, _ = policy_loss("ppo_clip", logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    dapo, m = policy_loss(
        "ppo_clip", logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), clip_high=0.28
    )
    torch.testing.assert_close(sym, torch.tensor([[-1.2, -0.75]]))
    torch.testing.assert_close(dapo, torch.tensor([[-1.25, -0.75]]))
    assert m["clip_fraction"].item() == 0.0


def test_dual_clip_hand_computed():
    # A = -1 everywhere, c = 3. ratios 4, 2, 0.5:
    #   r=4:   max(-A r, -A clip(r)) = max(4, 1.2) = 4 -> dual-clipped to min(4, 3) = 3, gradient 0
    #   r=2:   max(2, 1.2) = 2 < 3 -> unchanged, gradient -A r = 2
    #   r=0.5: max(0.5, 0.8) = 0.8 (low-clipped) -> unchanged, gradient 0
    logp = _logp(torch.tensor([[4.0, 2.0, 0.5]]))
    loss, m = policy_loss(
        "ppo_clip", logp, torch.zeros(1, 3), torch.tensor([-1.0]), torch.ones(1, 3), dual_clip=3.0
    )
    torch.testing.assert_close(loss, torch.tensor([[3.0, 2.0, 0.8]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0, 0.0]]))
    torch.testing.assert_close(m["dual_clip_fraction"], torch.tensor(1 / 3))


def test_dual_clip_leaves_positive_advantages_alone():
    # A = +1, r = 4: -min(4, 1.2) = -1.2 with or without dual clip
    logp = torch.log(torch.tensor([[4.0]]))
    with_dc, m = policy_loss(
        "ppo_clip", logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), dual_clip=3.0
    )
    torch.testing.assert_close(with_dc, torch.tensor([[-1.2]]))
    assert m["dual_clip_fraction"].item() == 0.0


def test_dual_clip_must_exceed_one():
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(
            "ppo_clip", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), dual_clip=1.0
        )


def test_sequence_ratio_value_and_gradient():
    # logp - old = [0.2, -0.4, (7.0 padded)] -> s = exp((0.2 - 0.4) / 2) = exp(-0.1) = 0.904837 on every token
    old = torch.zeros(1, 3)
    logp = torch.tensor([[0.2, -0.4, 7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    ratio = importance_ratio(logp, old, mask, "sequence")
    s = math.exp(-0.1)
    torch.testing.assert_close(ratio, torch.full((1, 3), s))
    # d s_{i,t} / d logp_t = s (sg trick); the padded token does not enter s
    ratio[0, :2].sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[s, s, 0.0]]))


def test_gspo_loss_gradient_equals_gradient_of_sequence_ratio():
    # With seq_mean_token_mean, the sg-trick per-token ratio must give the gradient of -A * s_i itself:
    # d/d logp_t [-A exp(mean_t (logp - old))] = -A s_i / len_i.
    gen = torch.Generator().manual_seed(3)
    old = torch.randn(3, 5, generator=gen) * 0.1 - 1
    logp0 = old + torch.randn(3, 5, generator=gen) * 0.05
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    adv = torch.tensor([0.7, -1.3, 0.4])

    logp = logp0.clone().requires_grad_(True)
    per_token, _ = policy_loss("ppo_clip", logp, old, adv, mask, ratio_level="sequence")
    aggregate_loss(per_token, mask, "seq_mean_token_mean").backward()

    direct = logp0.clone().requires_grad_(True)
    m = mask.float()
    s = torch.exp(((direct - old) * m).sum(-1) / m.sum(-1))  # (N,) sequence ratio, gradient through the mean
    (-(adv * s).mean()).backward()
    torch.testing.assert_close(logp.grad, direct.grad)


def test_gspo_clips_whole_sequence():
    # logp - old = 0.5 on both tokens -> s = e^0.5 = 1.6487 > 1.2 with A = +1: every token clipped, loss -1.2
    logp = torch.full((1, 2), 0.5, requires_grad=True)
    loss, m = policy_loss(
        "ppo_clip", logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), ratio_level="sequence"
    )
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -1.2]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.zeros(1, 2))
    assert m["clip_fraction"].item() == 1.0 and m["high_clip_fraction"].item() == 1.0


def test_is_weights_multiply_and_are_detached():
    logp = torch.zeros(1, 3, requires_grad=True)  # r = 1, A = 2 -> base loss -2 per token
    w = torch.tensor([[0.5, 2.0, 1.0]], requires_grad=True)
    loss, _ = policy_loss(
        "ppo_clip", logp, torch.zeros(1, 3), torch.tensor([2.0]), torch.ones(1, 3), is_weights=w
    )
    torch.testing.assert_close(loss, torch.tensor([[-1.0, -4.0, -2.0]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.0, -4.0, -2.0]]))  # -A r w
    assert w.grad is None


def test_reinforce_values_and_on_policy_gradient():
    logp = torch.log(torch.tensor([[0.2, 0.5]])).requires_grad_(True)
    # on-policy: r = 1, loss = -A = -3 per token, gradient -A = -3 (plain REINFORCE)
    loss, m = policy_loss("reinforce", logp, logp.detach(), torch.tensor([3.0]), torch.ones(1, 2))
    torch.testing.assert_close(loss, torch.tensor([[-3.0, -3.0]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-3.0, -3.0]]))
    # off-policy ratio 1.5 is not clipped
    off, _ = policy_loss(
        "reinforce",
        torch.log(torch.tensor([[1.5]])),
        torch.zeros(1, 1),
        torch.tensor([1.0]),
        torch.ones(1, 1),
    )
    torch.testing.assert_close(off, torch.tensor([[-1.5]]))
    assert m["clip_fraction"].item() == 0.0 and set(m) >= {"ratio_mean", "ratio_max", "low_clip_fraction"}


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_empty_mask_gives_finite_zero(name):
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, metrics = policy_loss(name, logp, torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3))
    assert torch.equal(loss, torch.zeros(2, 3))
    assert all(torch.isfinite(v) for v in metrics.values())


def test_extreme_log_ratio_stays_finite():
    logp = torch.tensor([[100.0, -100.0]], requires_grad=True)
    loss, _ = policy_loss("ppo_clip", logp, torch.zeros(1, 2), torch.tensor([-1.0]), torch.ones(1, 2))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()


def test_wrong_names_raise():
    with pytest.raises(ValueError, match="ppo_clip"):
        policy_loss("ppo", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1))
    with pytest.raises(ValueError, match="sequence"):
        policy_loss(
            "ppo_clip",
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            torch.ones(1),
            torch.ones(1, 1),
            ratio_level="seq",
        )
    with pytest.raises(ValueError, match=r"\(N,\)"):
        policy_loss("ppo_clip", torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(3), torch.ones(2, 1))


# ---------------------------------------------------------------------------------------------------------
# Peer formulas, transcribed (not copied) from their sources, on random batches.


def _random_batch(seed: int, n: int = 6, t: int = 7):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen) * 3  # log-probs in (-3, 0)
    logp = old + torch.randn(n, t, generator=gen) * 0.3  # ratios roughly in [0.4, 2.5]: many clipped
    ref = old + torch.randn(n, t, generator=gen) * 0.2
    adv = torch.randn(n, generator=gen)
    lengths = torch.tensor([t, 1, 3, t - 1, 0, 5])[:n]  # includes an empty completion
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return logp, old, ref, adv, mask


def _trl_grpo_loss(
    logp,
    old,
    ref,
    adv,
    mask,
    *,
    loss_type,
    beta,
    eps_low,
    eps_high,
    max_completion_length,
    num_items_in_batch=None,
    importance_sampling_level="token",
):
    """TRL GRPOTrainer._compute_loss (huggingface/trl trl/trainer/grpo_trainer.py), transcribed:
    per_token_kl = exp(ref - logp) - (ref - logp) - 1
    log_w = logp - old ("token") or masked mean over the row, shape (B, 1) ("sequence")
    coef_1 = exp(log_w); coef_2 = clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -min(coef_1 * A, coef_2 * A) + beta * per_token_kl
    grpo:    mean over rows of (sum_t l m / clamp(sum_t m, 1))
    bnpo:    sum(l m) / clamp(sum(m), 1)
    dr_grpo: sum(l m) / (B * max_completion_length)
    dapo:    sum(l m) / num_items_in_batch   (tokens of the whole accumulated batch, one process)
    """
    m = mask.float()
    kl = torch.exp(ref - logp) - (ref - logp) - 1
    log_w = logp - old
    if importance_sampling_level == "sequence":
        log_w = ((log_w * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_w)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    a = adv.unsqueeze(1)
    per_token = -torch.min(coef_1 * a, coef_2 * a) + beta * kl
    if loss_type == "grpo":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token * m).sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token * m).sum() / (per_token.size(0) * max_completion_length)
    if loss_type == "dapo":
        return (per_token * m).sum() / num_items_in_batch
    raise AssertionError(loss_type)


@pytest.mark.parametrize(
    "loss_type,mode",
    [
        ("grpo", "seq_mean_token_mean"),
        ("bnpo", "token_mean"),
        ("dapo", "token_mean"),
        ("dr_grpo", "seq_mean_token_sum_norm"),
    ],
)
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_matches_trl_grpo_loss(loss_type, mode, level):
    logp0, old, ref, adv, mask = _random_batch(seed=11)
    beta, max_len = 0.04, 16
    kwargs = {"num_items_in_batch": mask.sum().float()} if loss_type == "dapo" else {}

    theirs_logp = logp0.clone().requires_grad_(True)
    theirs = _trl_grpo_loss(
        theirs_logp,
        old,
        ref,
        adv,
        mask,
        loss_type=loss_type,
        beta=beta,
        eps_low=0.2,
        eps_high=0.28,
        max_completion_length=max_len,
        importance_sampling_level=level,
        **kwargs,
    )
    theirs.backward()

    ours_logp = logp0.clone().requires_grad_(True)
    per_token, _ = policy_loss(
        "ppo_clip", ours_logp, old, adv, mask, clip_low=0.2, clip_high=0.28, ratio_level=level
    )
    per_token = per_token + beta * kl_penalty(ours_logp, ref, "k3")
    ours = aggregate_loss(per_token, mask, mode, max_len=max_len)
    ours.backward()

    torch.testing.assert_close(ours, theirs)
    if level == "token" or mode == "seq_mean_token_mean":
        # GSPO gradients agree only under per-sequence token-mean (TRL differentiates through the row mean;
        # we use the GSPO-token sg form); for other aggregations only the value is comparable.
        torch.testing.assert_close(ours_logp.grad, theirs_logp.grad)


def test_clip_metrics_match_trl():
    # TRL: is_low_clipped = (coef_1 < 1 - eps_low) & (A < 0);
    #      is_high_clipped = (coef_1 > 1 + eps_high) & (A > 0);
    # each reported as sum(x * m) / clamp(sum(m), 1); region = low | high.
    logp, old, _, adv, mask = _random_batch(seed=12)
    _, metrics = policy_loss("ppo_clip", logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    coef = torch.exp(logp - old)
    a = adv.unsqueeze(1)
    low = (coef < 0.8) & (a < 0)
    high = (coef > 1.28) & (a > 0)
    m = mask.float()
    for key, x in [("low_clip_fraction", low), ("high_clip_fraction", high), ("clip_fraction", low | high)]:
        torch.testing.assert_close(metrics[key], (x.float() * m).sum() / m.sum())
    assert metrics["clip_fraction"] > 0  # the batch really exercises clipping


def _verl_vanilla(old, logp, adv, mask, clip_low, clip_high, clip_ratio_c):
    """verl compute_policy_loss_vanilla (volcengine/verl verl/trainer/ppo/core_algos.py), transcribed, with
    token-level advantages A = adv[:, None] and dual-clip always on (clip_ratio_c, default 3.0):
    ratio = exp(clamp(logp - old, -20, 20)); pg1 = -A ratio; pg2 = -A clamp(ratio, 1 - low, 1 + high)
    clip1 = max(pg1, pg2); pg3 = -A c; clip2 = min(pg3, clip1); loss = where(A < 0, clip2, clip1)
    pg_clipfrac = masked_mean(pg2 > pg1); pg_clipfrac_lower = masked_mean((clip1 > pg3) & (A < 0))
    """
    m = mask.float()
    a = adv.unsqueeze(1)
    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    pg1 = -a * ratio
    pg2 = -a * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clip1 = torch.maximum(pg1, pg2)
    pg3 = -a * clip_ratio_c
    loss = torch.where(a < 0, torch.min(pg3, clip1), clip1)
    clipfrac = ((pg2 > pg1).float() * m).sum() / m.sum()
    clipfrac_lower = (((clip1 > pg3) & (a < 0)).float() * m).sum() / m.sum()
    return loss, clipfrac, clipfrac_lower


def test_matches_verl_vanilla_with_dual_clip():
    logp, old, _, adv, mask = _random_batch(seed=13)
    logp = old + (logp - old) * 4  # push ratios past c = 1.5 so the dual clip is really exercised
    loss, cf, cf_lower = _verl_vanilla(old, logp, adv, mask, 0.2, 0.28, 1.5)
    ours, metrics = policy_loss("ppo_clip", logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=1.5)
    torch.testing.assert_close(ours, loss * mask)
    torch.testing.assert_close(metrics["clip_fraction"], cf)
    torch.testing.assert_close(metrics["dual_clip_fraction"], cf_lower)
    assert cf_lower > 0


def test_matches_verl_gspo():
    # verl compute_policy_loss_gspo, transcribed: seq = sum((logp - old) m) / clamp(sum m, 1);
    # log_s_t = logp - sg(logp) + sg(seq); clamp(max=10); s_t = exp(log_s_t);
    # loss = max(-A s_t, -A clamp(s_t, 1 - low, 1 + high)), aggregated with seq-mean-token-mean.
    logp0, old, _, adv, mask = _random_batch(seed=14)
    m = mask.float()

    theirs_logp = logp0.clone().requires_grad_(True)
    seq = ((theirs_logp - old) * m).sum(-1) / m.sum(-1).clamp(min=1)
    s_t = torch.exp(torch.clamp(theirs_logp - theirs_logp.detach() + seq.detach().unsqueeze(-1), max=10.0))
    a = adv.unsqueeze(1)
    per_tok = torch.maximum(-a * s_t, -a * torch.clamp(s_t, 0.8, 1.2))
    # verl agg "seq-mean-token-mean": sum_t(l m) / sum_t(m), mean over rows (rows with a token; ours counts
    # the empty row in the denominator, so compare on the non-empty rows only)
    keep = m.sum(-1) > 0
    theirs = ((per_tok * m).sum(-1)[keep] / m.sum(-1)[keep]).mean()
    theirs.backward()

    ours_logp = logp0.clone().requires_grad_(True)
    per_token, _ = policy_loss("ppo_clip", ours_logp, old, adv, mask, ratio_level="sequence")
    ours = aggregate_loss(per_token, mask, "seq_mean_token_mean", num_seqs=int(keep.sum()))
    ours.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_logp.grad, theirs_logp.grad)
