"""Loss aggregation: hand-computed modes, micro-batch accumulation equals one batch, empty rows, verl peer."""

import pytest
import torch

from thinkrl.algorithms import AGGREGATIONS, aggregate_loss

# row 0: 3 tokens with loss 1, 2, 3 (sum 6); row 1: 1 token with loss 4, then two padded positions
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_hand_computed_defaults():
    # token_mean: (1+2+3+4) / 4 tokens = 2.5
    torch.testing.assert_close(aggregate_loss(PER_TOKEN, MASK, "token_mean"), torch.tensor(2.5))
    # seq_mean_token_mean: (6/3 + 4/1) / 2 rows = 3
    torch.testing.assert_close(aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_mean"), torch.tensor(3.0))
    # seq_mean_token_sum_norm: 10 / (2 rows * max_len 5) = 1
    torch.testing.assert_close(
        aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_len=5), torch.tensor(1.0)
    )


def test_hand_computed_explicit_counts():
    # token_mean with num_tokens 8: 10 / 8 = 1.25
    torch.testing.assert_close(
        aggregate_loss(PER_TOKEN, MASK, "token_mean", num_tokens=8), torch.tensor(1.25)
    )
    # seq_mean_token_mean with num_seqs 4: (2 + 4) / 4 = 1.5
    torch.testing.assert_close(
        aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_mean", num_seqs=4), torch.tensor(1.5)
    )
    # sum_norm with num_seqs 4, max_len 5: 10 / 20 = 0.5
    out = aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", num_seqs=4, max_len=5)
    torch.testing.assert_close(out, torch.tensor(0.5))
    # counts may be tensors (no host sync for the trainer)
    out = aggregate_loss(PER_TOKEN, MASK, "token_mean", num_tokens=torch.tensor(8.0))
    torch.testing.assert_close(out, torch.tensor(1.25))


def test_padding_values_never_leak_even_nan():
    per_token = PER_TOKEN.clone()
    per_token[1, 1:] = float("nan")
    for mode, expected in [
        ("token_mean", 2.5),
        ("seq_mean_token_mean", 3.0),
        ("seq_mean_token_sum_norm", 1.0),
    ]:
        torch.testing.assert_close(aggregate_loss(per_token, MASK, mode, max_len=5), torch.tensor(expected))


def test_empty_sequences_do_not_produce_nan():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    # token_mean: 6 / 3 = 2 ; seq_mean_token_mean: (6/3 + 0) / 2 = 1 ; sum_norm: 6 / (2 * 3) = 1
    for mode, expected in [
        ("token_mean", 2.0),
        ("seq_mean_token_mean", 1.0),
        ("seq_mean_token_sum_norm", 1.0),
    ]:
        out = aggregate_loss(per_token, mask, mode, max_len=3)
        torch.testing.assert_close(out, torch.tensor(expected))
    # an all-empty batch: loss 0, gradient 0, no NaN
    empty = torch.zeros(2, 3)
    for mode in AGGREGATIONS:
        x = torch.ones(2, 3, requires_grad=True)
        out = aggregate_loss(x, empty, mode, max_len=3)
        out.backward()
        assert out.item() == 0.0 and torch.equal(x.grad, torch.zeros(2, 3))


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_micro_batches_with_global_counts_equal_full_batch(mode):
    gen = torch.Generator().manual_seed(0)
    n, t, max_len = 8, 6, 6
    per_token = torch.randn(n, t, generator=gen)
    lengths = torch.tensor([6, 1, 3, 0, 5, 2, 6, 4])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    full = aggregate_loss(per_token, mask, mode, max_len=max_len)
    num_seqs, num_tokens = float(n), float(mask.sum())
    for split in [(0, 3, 8), (0, 1, 2, 7, 8), (0, 8)]:  # uneven micro-batches
        total = sum(
            aggregate_loss(
                per_token[a:b], mask[a:b], mode, num_seqs=num_seqs, num_tokens=num_tokens, max_len=max_len
            )
            for a, b in zip(split[:-1], split[1:])
        )
        torch.testing.assert_close(total, full)


def test_micro_batches_with_local_counts_would_be_wrong():
    # why the trainer passes global counts: averaging per-micro-batch token means reweights tokens
    per_token = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    full = aggregate_loss(per_token, mask, "token_mean")  # 7 / 4 = 1.75
    local = (
        aggregate_loss(per_token[:1], mask[:1], "token_mean")
        + aggregate_loss(per_token[1:], mask[1:], "token_mean")
    ) / 2
    torch.testing.assert_close(full, torch.tensor(1.75))
    torch.testing.assert_close(local, torch.tensor(2.5))  # (3/3 + 4/1) / 2


def test_gradients_of_each_mode():
    # d/dl_it: token_mean 1/num_tokens; seq_mean_token_mean 1/(len_i num_seqs); sum_norm 1/(num_seqs max_len)
    expected = {
        "token_mean": torch.tensor([[0.25, 0.25, 0.25], [0.25, 0.0, 0.0]]),
        "seq_mean_token_mean": torch.tensor([[1 / 6, 1 / 6, 1 / 6], [0.5, 0.0, 0.0]]),
        "seq_mean_token_sum_norm": torch.tensor([[0.1, 0.1, 0.1], [0.1, 0.0, 0.0]]),
    }
    for mode, grad in expected.items():
        x = PER_TOKEN.clone().requires_grad_(True)
        aggregate_loss(x, MASK, mode, max_len=5).backward()
        torch.testing.assert_close(x.grad, grad)


def _verl_agg_loss(loss_mat, loss_mask, mode, loss_scale_factor=None):
    """verl agg_loss (volcengine/verl verl/trainer/ppo/core_algos.py), transcribed, single rank:
    token-mean:              masked_mean(loss_mat, loss_mask)
    seq-mean-token-mean:     mean_i(sum_t(l m) / sum_t(m))
    seq-mean-token-sum-norm: sum_i(sum_t(l m) / loss_scale_factor) / bsz   (newer verl; loss_scale_factor
                             defaults to the padded width; older verl: sum(l m) / width, no / bsz)
    """
    m = loss_mask.float()
    if mode == "token-mean":
        return (loss_mat * m).sum() / m.sum()
    if mode == "seq-mean-token-mean":
        return ((loss_mat * m).sum(-1) / m.sum(-1)).mean()
    if mode == "seq-mean-token-sum-norm":
        factor = loss_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor
        return ((loss_mat * m).sum(-1) / factor).sum() / loss_mat.shape[0]
    raise AssertionError(mode)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("token_mean", "token-mean"),
        ("seq_mean_token_mean", "seq-mean-token-mean"),
        ("seq_mean_token_sum_norm", "seq-mean-token-sum-norm"),
    ],
)
def test_matches_verl_agg_loss(ours, theirs):
    gen = torch.Generator().manual_seed(1)
    per_token = torch.randn(5, 9, generator=gen)
    lengths = torch.tensor([9, 1, 4, 7, 2])  # no empty row: verl's seq-mean-token-mean would divide by 0
    mask = (torch.arange(9)[None, :] < lengths[:, None]).long()
    expected = _verl_agg_loss(per_token, mask, theirs, loss_scale_factor=12)
    torch.testing.assert_close(aggregate_loss(per_token, mask, ours, max_len=12), expected)


def test_older_verl_sum_norm_lacks_batch_division():
    # documented difference: older verl returned sum(l m) / width, i.e. N times our value
    per_token, mask = PER_TOKEN, MASK
    older = (per_token * mask).sum() / mask.shape[-1]  # 10 / 3
    ours = aggregate_loss(per_token, mask, "seq_mean_token_sum_norm", max_len=3)  # 10 / (2 * 3)
    torch.testing.assert_close(ours * per_token.shape[0], older)


def test_errors():
    with pytest.raises(ValueError, match="max_len"):
        aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError) as err:
        aggregate_loss(PER_TOKEN, MASK, "token-mean")
    for name in AGGREGATIONS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        aggregate_loss(PER_TOKEN, MASK[:1], "token_mean")
