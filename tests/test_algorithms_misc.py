"""KL estimators, entropy, token log-probs, batch shaping, registries and the docstring examples."""

import doctest
import math

import pytest
import torch

import thinkrl.algorithms as alg
from thinkrl.algorithms import (
    KL_ESTIMATORS,
    entropy_from_logits,
    get_aggregation,
    get_kl_estimator,
    get_policy_loss_fn,
    kl_penalty,
    token_logprobs,
    truncated_is_weights,
    zero_spread_groups,
)

LN2 = math.log(2.0)

# token 0: p = 0.5, ref = 0.25 (log-ratio +ln 2); token 1: equal; token 2: p = 0.25, ref = 0.5 (-ln 2)
LOGP = torch.log(torch.tensor([[0.5, 0.3, 0.25]]))
REF = torch.log(torch.tensor([[0.25, 0.3, 0.5]]))


def test_kl_hand_computed():
    # k1 = log-ratio
    torch.testing.assert_close(kl_penalty(LOGP, REF, "k1"), torch.tensor([[LN2, 0.0, -LN2]]))
    # k2 = 0.5 * (ln 2)^2 = 0.240227 on both unequal tokens
    torch.testing.assert_close(kl_penalty(LOGP, REF, "k2"), torch.tensor([[0.5 * LN2**2, 0.0, 0.5 * LN2**2]]))
    # k3 = exp(d) - d - 1 with d = ref - logp:
    #   d = -ln2 -> 0.5 + ln2 - 1 = 0.193147;  d = +ln2 -> 2 - ln2 - 1 = 0.306853
    torch.testing.assert_close(kl_penalty(LOGP, REF), torch.tensor([[0.5 + LN2 - 1, 0.0, 2 - LN2 - 1]]))


def test_k3_gradient_and_trl_formula():
    logp = LOGP.clone().requires_grad_(True)
    kl_penalty(logp, REF, "k3").sum().backward()
    # d/dlogp [exp(ref - logp) - (ref - logp) - 1] = 1 - exp(ref - logp): 1 - 0.5, 1 - 1, 1 - 2
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5, 0.0, -1.0]]))
    # TRL GRPOTrainer per_token_kl (huggingface/trl trl/trainer/grpo_trainer.py):
    #   exp(ref - lp) - (ref - lp) - 1
    gen = torch.Generator().manual_seed(0)
    lp, ref = -torch.rand(4, 6, generator=gen) * 4, -torch.rand(4, 6, generator=gen) * 4
    torch.testing.assert_close(kl_penalty(lp, ref, "k3"), torch.exp(ref - lp) - (ref - lp) - 1)
    assert (kl_penalty(lp, ref, "k3") >= 0).all() and (kl_penalty(lp, ref, "k2") >= 0).all()


def test_k3_clamps_extreme_log_ratio():
    # ref - logp = 50 is clamped to 20: exp(20) - 20 - 1, finite, and the clamped region has zero gradient
    logp = torch.tensor([[-60.0]], requires_grad=True)
    ref = torch.tensor([[-10.0]])
    out = kl_penalty(logp, ref, "k3")
    torch.testing.assert_close(out, torch.tensor([[math.exp(20.0) - 21.0]]))
    out.sum().backward()
    assert torch.isfinite(logp.grad).all()


def test_entropy_hand_computed():
    # uniform over 4 -> ln 4; p = (0.25, 0.75) -> -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335
    # a -inf logit has p = 0 and must not give NaN: (0, 0, -inf) -> ln 2
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -math.inf, -math.inf]],
            [[0.0, 0.0, -math.inf, -math.inf], [5.0, 5.0, 5.0, 5.0]],
        ]
    )
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(
        entropy_from_logits(logits), torch.tensor([[math.log(4.0), h], [LN2, math.log(4.0)]])
    )


def test_entropy_chunked_equals_unchunked_and_categorical():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, 11, generator=gen) * 3
    ref = torch.distributions.Categorical(logits=logits).entropy()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ha, hb = entropy_from_logits(a), entropy_from_logits(b, chunk_size=2)
    torch.testing.assert_close(ha, ref)
    torch.testing.assert_close(hb, ref)
    ha.sum().backward()
    hb.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_token_logprobs_hand_computed():
    # logits (0, ln 3) -> p = (0.25, 0.75); token 1 -> ln 0.75 = -0.287682
    # temperature 2 -> logits (0, ln 3 / 2) -> p1 = sqrt3 / (1 + sqrt3) = 0.633975 -> -0.455691
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    tok = torch.tensor([[1]])
    torch.testing.assert_close(token_logprobs(logits, tok), torch.tensor([[math.log(0.75)]]))
    s3 = math.sqrt(3.0)
    torch.testing.assert_close(
        token_logprobs(logits, tok, temperature=2.0), torch.tensor([[math.log(s3 / (1 + s3))]])
    )


@pytest.mark.parametrize("chunk_size", [1, 2, None])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equals_plain_log_softmax_gather(chunk_size, temperature):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 4, 13, generator=gen) * 2
    tokens = torch.randint(0, 13, (5, 4), generator=gen)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = token_logprobs(a, tokens, temperature, chunk_size=chunk_size)
    plain = torch.log_softmax(b / temperature, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours, plain)
    ours.sum().backward()
    plain.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_token_logprobs_bf16_in_float32_out():
    logits = torch.randn(2, 3, 7).bfloat16()
    out = token_logprobs(logits, torch.zeros(2, 3, dtype=torch.long))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.log_softmax(logits.float(), -1)[..., 0])
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), temperature=0.0)


def test_zero_spread_groups():
    # id 3: (1, 1) equal -> True ; id 8: (0, 1) -> False ; id 5: single row -> True ; id -1: (2, 2, 2) -> True
    rewards = torch.tensor([1.0, 0.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0])
    ids = torch.tensor([3, 8, 3, -1, 5, 8, -1, -1])
    expected = torch.tensor([True, False, True, True, True, False, True, True])
    assert torch.equal(zero_spread_groups(rewards, ids), expected)


def test_truncated_is_weights():
    # exp(ln 0.6 - ln 0.3) = 2 -> capped at 1.5 ; ratio 1 ; exp(ln 0.2 - ln 0.4) = 0.5 (no lower truncation)
    trainer = torch.log(torch.tensor([[0.6, 0.9, 0.2]])).requires_grad_(True)
    sampler = torch.log(torch.tensor([[0.3, 0.9, 0.4]]))
    w = truncated_is_weights(trainer, sampler, cap=1.5)
    torch.testing.assert_close(w, torch.tensor([[1.5, 1.0, 0.5]]))
    assert not w.requires_grad
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(trainer, sampler, cap=0.0)


@pytest.mark.parametrize(
    "getter,registry",
    [
        (get_kl_estimator, alg.KL_ESTIMATORS),
        (get_policy_loss_fn, alg.POLICY_LOSSES),
        (get_aggregation, alg.AGGREGATIONS),
        (alg.get_advantage_fn, alg.ADVANTAGES),
    ],
)
def test_registry_lookup_errors_list_valid_names(getter, registry):
    for name, fn in registry.items():
        assert getter(name) is fn
    with pytest.raises(ValueError) as err:
        getter("definitely-not-a-name")
    assert all(name in str(err.value) for name in registry)


def test_kl_penalty_wrong_name():
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(LOGP, REF, "low_var_kl")
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}


@pytest.mark.parametrize(
    "module",
    [
        "_registry",
        "advantages",
        "aggregation",
        "critic",
        "dynamic_sampling",
        "entropy",
        "entropy_control",
        "kl",
        "logprobs",
        "losses",
        "offpolicy",
        "ratios",
    ],
)
def test_docstring_examples_run(module):
    mod = getattr(__import__("thinkrl.algorithms", fromlist=[module]), module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_entropy_temperature_is_applied_per_chunk():
    logits = torch.randn(5, 3, 7)
    expected = entropy_from_logits(logits / 0.7)
    torch.testing.assert_close(entropy_from_logits(logits, temperature=0.7, chunk_size=2), expected)
