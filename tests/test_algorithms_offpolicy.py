"""Off-policy corrections (token/sequence truncated IS, token/sequence masked IS = IcePop) against TRL's and
verl's formulas, their metrics, and log-probs under top-k/top-p truncation against a brute-force loop and
against thinkrl's own sampler."""

import math

import pytest
import torch

from thinkrl.algorithms import (
    IS_CORRECTIONS,
    is_correction,
    token_logprobs,
    truncated_is_weights,
    truncated_token_logprobs,
)
from thinkrl.rollout.token_draw import truncate_probs


def _batch(seed, n=6, t=7, spread=0.5):
    gen = torch.Generator().manual_seed(seed)
    sampler = -torch.rand(n, t, generator=gen) * 3
    trainer = sampler + torch.randn(n, t, generator=gen) * spread
    lengths = torch.tensor([t, 1, 3, 0, 6, 2])[:n]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return trainer, sampler, mask


def _trl_vllm_is(old, sampling, mask, mode, clip_min, clip_max):
    """TRL GRPOTrainer vLLM importance sampling (huggingface/trl trl/trainer/grpo_trainer.py), transcribed:
    diff = (old - sampling) * mask; sequence modes: diff.sum(-1, keepdim=True); ratio = exp(diff);
    *_truncate: clamp(ratio, min=clip_min, max=clip_max); *_mask: ratio.masked_fill(outside [min, max], 0)."""
    diff = (old - sampling) * mask
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max).expand_as(old)
    lo = clip_min if clip_min is not None else -math.inf
    hi = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0).expand_as(old)


@pytest.mark.parametrize(
    "ours,theirs,low,high",
    [
        ("token_tis", "token_truncate", None, 2.0),
        ("token_tis", "token_truncate", 0.5, 1.5),
        ("seq_tis", "sequence_truncate", None, 1.5),
        ("token_mask", "token_mask", 0.5, 5.0),
        ("token_mask", "token_mask", None, 1.2),
        ("seq_mask", "sequence_mask", None, 1.5),
        ("seq_mask", "sequence_mask", 0.5, 2.0),
    ],
)
def test_matches_trl_modes(ours, theirs, low, high):
    trainer, sampler, mask = _batch(61)
    expected = _trl_vllm_is(trainer, sampler, mask.float(), theirs, low, high)
    w, metrics = is_correction(ours, trainer, sampler, mask, low=low, high=high)
    torch.testing.assert_close(w, expected * mask)
    changed = metrics.get("is_truncated_fraction", metrics.get("is_masked_fraction"))
    assert 0 < changed.item() < 1  # the batch exercises the bounds


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_truncation_matches_verl_rollout_correction(level):
    """verl compute_rollout_correction_weights (verl/trainer/ppo/rollout_corr_helper.py), transcribed:
    token: exp(clamp(lr, -20, 20)); sequence: exp(clamp(sum(lr m), -20, 20)) on every token; then * mask,
    clamp(max=threshold), detach."""
    trainer, sampler, mask = _batch(62)
    m = mask.float()
    lr = trainer - sampler
    if level == "token":
        w = torch.exp(torch.clamp(lr, -20.0, 20.0))
    else:
        w = torch.exp(torch.clamp((lr * m).sum(-1, keepdim=True), -20.0, 20.0)).expand_as(lr)
    expected = (w * m).clamp(max=2.0)
    ours, _ = is_correction("token_tis" if level == "token" else "seq_tis", trainer, sampler, mask, high=2.0)
    torch.testing.assert_close(ours, expected)


def test_token_tis_equals_the_existing_truncated_is_weights():
    trainer, sampler, mask = _batch(63)
    w, _ = is_correction("token_tis", trainer, sampler, mask, high=1.7)
    torch.testing.assert_close(w, truncated_is_weights(trainer, sampler, 1.7) * mask)


def test_icepop_hand_computed_metrics():
    # rho = 9 (masked), 1.5 (kept), 1/3 (masked), padded
    trainer = torch.log(torch.tensor([[0.9, 0.9, 0.1, 0.5]])).requires_grad_(True)
    sampler = torch.log(torch.tensor([[0.1, 0.6, 0.3, 0.9]]))
    mask = torch.tensor([[1, 1, 1, 0]])
    w, m = is_correction("token_mask", trainer, sampler, mask)  # IcePop band [0.5, 5]
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.5, 0.0, 0.0]]))
    assert not w.requires_grad
    torch.testing.assert_close(m["is_masked_fraction"], torch.tensor(2 / 3))
    torch.testing.assert_close(m["is_ratio_mean"], torch.tensor((9 + 1.5 + 1 / 3) / 3))
    torch.testing.assert_close(m["is_ratio_max"], torch.tensor(9.0))
    torch.testing.assert_close(m["is_ratio_min"], torch.tensor(1 / 3))
    lrs = [math.log(9), math.log(1.5), math.log(1 / 3)]
    torch.testing.assert_close(m["is_mismatch_k3"], torch.tensor(sum(math.exp(x) - x - 1 for x in lrs) / 3))
    torch.testing.assert_close(m["is_logprob_abs_diff"], torch.tensor(sum(abs(x) for x in lrs) / 3))


def test_sequence_weight_is_the_product_of_token_ratios():
    # row: rho = 2 and 0.75 -> product 1.5 on both tokens; the padded third token is not in the product
    trainer = torch.log(torch.tensor([[0.8, 0.3, 0.9]]))
    sampler = torch.log(torch.tensor([[0.4, 0.4, 0.1]]))
    w, m = is_correction("seq_tis", trainer, sampler, torch.tensor([[1, 1, 0]]), high=None)
    torch.testing.assert_close(w, torch.tensor([[1.5, 1.5, 0.0]]))
    assert m["is_truncated_fraction"].item() == 0.0


@pytest.mark.parametrize("name", sorted(IS_CORRECTIONS))
def test_identical_logprobs_give_unit_weights_and_zero_mismatch(name):
    trainer, _, mask = _batch(64)
    w, m = is_correction(name, trainer, trainer.clone(), mask)
    torch.testing.assert_close(w, mask.float())
    assert m["is_mismatch_k3"].item() == 0.0 and m["is_logprob_abs_diff"].item() == 0.0


@pytest.mark.parametrize("name", sorted(IS_CORRECTIONS))
def test_garbage_on_padding_and_empty_batches_stay_finite(name):
    trainer, sampler, mask = _batch(65)
    pad = ~mask.bool()
    w, m = is_correction(
        name, trainer.masked_fill(pad, float("nan")), sampler.masked_fill(pad, -math.inf), mask
    )
    assert torch.isfinite(w).all() and all(torch.isfinite(v) for v in m.values())
    assert torch.count_nonzero(w[pad]) == 0
    w, m = is_correction(name, trainer, sampler, torch.zeros_like(mask))
    assert torch.equal(w, torch.zeros_like(trainer)) and all(torch.isfinite(v) for v in m.values())


def test_extreme_sequence_log_ratio_is_clamped():
    trainer = torch.zeros(1, 50)
    sampler = torch.full((1, 50), -2.0)  # sum of log-ratios 100 -> clamped to 20 before exp
    w, m = is_correction("seq_mask", trainer, sampler, torch.ones(1, 50), high=None)
    torch.testing.assert_close(w, torch.full((1, 50), math.exp(20.0)))
    assert torch.isfinite(m["is_ratio_max"])


def test_bad_names_and_bounds():
    t, s, mask = _batch(66)
    with pytest.raises(ValueError, match="token_mask"):
        is_correction("icepop", t, s, mask)
    with pytest.raises(ValueError, match="low must be <= high"):
        is_correction("token_mask", t, s, mask, low=3.0, high=2.0)
    with pytest.raises(ValueError, match="high must be > 0"):
        is_correction("token_tis", t, s, mask, high=0.0)
    with pytest.raises(ValueError, match="'low' and 'high' only"):
        is_correction("token_tis", t, s, mask, cap=2.0)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        is_correction("token_tis", t, s[:, :3], mask)


# ------------------------------------------------------------------------------ top-k / top-p log-probs


def _brute_force(logits, token, temperature, top_k, top_p):
    """One position, plain Python: probabilities at the temperature, sorted descending (ties by id), keep
    the first k, then keep tokens while the kept mass before them is below top_p of the kept total;
    renormalise; the sampled token is kept even if the rule dropped it."""
    z = [x / temperature for x in logits.tolist()]
    mx = max(z)
    e = [math.exp(x - mx) for x in z]
    p = [x / sum(e) for x in e]
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    if 0 < top_k < len(p):
        order = order[:top_k]
    total = sum(p[i] for i in order)
    kept, before = [], 0.0
    for i in order:
        if top_p < 1.0 and before >= top_p * total:
            break
        kept.append(i)
        before += p[i]
    in_support = token in kept
    support = set(kept) | {token}
    return math.log(p[token] / sum(p[i] for i in support)), in_support


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 0.9), (0.7, 5, 1.0), (1.3, 4, 0.7), (1.0, 1, 1.0), (0.5, 0, 0.3)]
)
def test_truncated_logprobs_match_brute_force(temperature, top_k, top_p):
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 4, 11, generator=gen) * 2
    # the sampled tokens: mostly from the truncated support, one forced outside it
    tokens = logits.argmax(-1)
    tokens[0, 0] = logits[0, 0].argmin()
    lp, ok = truncated_token_logprobs(logits, tokens, temperature, top_k=top_k, top_p=top_p)
    for i in range(3):
        for j in range(4):
            ref_lp, ref_ok = _brute_force(logits[i, j], int(tokens[i, j]), temperature, top_k, top_p)
            assert lp[i, j].item() == pytest.approx(ref_lp, abs=1e-5)
            assert bool(ok[i, j]) == ref_ok
    assert not ok[0, 0]  # the argmin is never in a truncated support here


def test_truncated_logprobs_agree_with_the_sampler_truncation():
    # thinkrl.rollout.token_draw.truncate_probs is what the built-in engine samples from: its renormalised
    # probability of each kept token must be exp of ours
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(16, 40, generator=gen) * 3
    temperature, top_k, top_p = 0.8, 12, 0.85
    probs = torch.softmax(logits / temperature, -1)
    kept, index = truncate_probs(probs, top_k, top_p)
    renorm = kept / kept.sum(-1, keepdim=True)  # (B, K) over columns; index maps column -> token id
    col = (kept > 0).sum(-1, keepdim=True) - 1  # the least likely kept token of each row: the boundary
    tokens = index.gather(-1, col)  # (B, 1)
    lp, ok = truncated_token_logprobs(logits.unsqueeze(1), tokens, temperature, top_k=top_k, top_p=top_p)
    torch.testing.assert_close(lp.exp(), renorm.gather(-1, col))
    assert ok.all()


def test_truncated_logprobs_without_truncation_equal_token_logprobs_and_bias_is_log_kept_mass():
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 3, 17, generator=gen)
    tokens = logits.argmax(-1)
    lp, ok = truncated_token_logprobs(logits, tokens, 0.9)
    torch.testing.assert_close(lp, token_logprobs(logits, tokens, 0.9))
    assert ok.all()
    # with truncation the difference to the full-vocabulary log-prob is -log(kept mass) (trl #6789)
    lp_p, _ = truncated_token_logprobs(logits, tokens, 1.0, top_p=0.6)
    full = token_logprobs(logits, tokens)
    assert (lp_p >= full - 1e-6).all()
    sorted_p = torch.softmax(logits, -1).sort(-1, descending=True).values
    cum = sorted_p.cumsum(-1)
    kept_mass = torch.where((cum - sorted_p) < 0.6, sorted_p, 0).sum(-1)
    torch.testing.assert_close(lp_p - full, -kept_mass.log())


@pytest.mark.parametrize("chunk_size", [1, 2, None])
def test_truncated_logprobs_gradient_and_chunks(chunk_size):
    gen = torch.Generator().manual_seed(10)
    logits0 = torch.randn(3, 2, 9, generator=gen)
    tokens = torch.randint(0, 9, (3, 2), generator=gen)
    a = logits0.clone().requires_grad_(True)
    lp, ok = truncated_token_logprobs(a, tokens, 1.1, top_k=4, top_p=0.8, chunk_size=chunk_size)
    lp.sum().backward()
    # reference: the same support (kept tokens plus the sampled one), a plain masked log-softmax
    b = logits0.clone().requires_grad_(True)
    z = b / 1.1
    support = torch.zeros(3, 2, 9, dtype=torch.bool)
    for i in range(3):
        for j in range(2):
            probs = torch.softmax(logits0[i, j] / 1.1, -1)
            kept, index = truncate_probs(probs.unsqueeze(0), 4, 0.8)
            support[i, j, index[0][kept[0] > 0]] = True
            support[i, j, tokens[i, j]] = True
    ref = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(
        z.masked_fill(~support, -math.inf), -1
    )
    ref.sum().backward()
    torch.testing.assert_close(lp, ref)
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.isfinite(a.grad).all()


def test_truncated_logprobs_bad_inputs():
    with pytest.raises(ValueError, match="top_p"):
        truncated_token_logprobs(torch.zeros(1, 1, 3), torch.zeros(1, 1, dtype=torch.long), top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        truncated_token_logprobs(torch.zeros(1, 1, 3), torch.zeros(1, 1, dtype=torch.long), top_k=-1)
    with pytest.raises(ValueError, match="temperature"):
        truncated_token_logprobs(torch.zeros(1, 1, 3), torch.zeros(1, 1, dtype=torch.long), 0.0, top_k=2)
    with pytest.raises(ValueError, match=r"\(N, T, V\)"):
        truncated_token_logprobs(torch.zeros(1, 3), torch.zeros(1, 1, dtype=torch.long), top_k=2)
