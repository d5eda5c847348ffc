"""Advantage estimators: hand-computed values, edge cases, loop-vs-vectorised, peer formulas (TRL, verl)."""

import math

import pytest
import torch

from thinkrl.algorithms import ADVANTAGES, compute_advantages, get_advantage_fn

# Three groups with non-contiguous ids, interleaved rows, and a group of one:
#   id 10: rows 0, 2, 5 with rewards 3, 5, 4 -> mean 4, deviations -1, +1, 0
#   id 7:  rows 1, 3    with rewards 1, 2    -> mean 1.5, deviations -0.5, +0.5
#   id 99: row 4        (group of one)       -> advantage 0 for every estimator
REWARDS = torch.tensor([3.0, 1.0, 5.0, 2.0, 2.0, 4.0])
IDS = torch.tensor([10, 7, 10, 7, 99, 10])
EPS = 1e-6


def test_grpo_hand_computed_unbiased_std():
    # id 10: unbiased var = (1 + 1 + 0) / (3 - 1) = 1  -> std 1;  A = dev / (1 + eps)
    # id 7:  unbiased var = (0.25 + 0.25) / (2 - 1) = 0.5 -> std sqrt(0.5) = 0.70711
    s7 = math.sqrt(0.5)
    expected = torch.tensor([-1 / (1 + EPS), -0.5 / (s7 + EPS), 1 / (1 + EPS), 0.5 / (s7 + EPS), 0.0, 0.0])
    out = compute_advantages("grpo", REWARDS, IDS)
    assert out.dtype == torch.float32 and out.shape == (6,)
    torch.testing.assert_close(out, expected)


def test_grpo_population_std():
    # id 10: var = 2 / 3 -> std 0.81650; id 7: var = 0.5 / 2 = 0.25 -> std 0.5
    s10 = math.sqrt(2 / 3)
    expected = torch.tensor(
        [-1 / (s10 + EPS), -0.5 / (0.5 + EPS), 1 / (s10 + EPS), 0.5 / (0.5 + EPS), 0.0, 0.0]
    )
    torch.testing.assert_close(compute_advantages("grpo", REWARDS, IDS, std_unbiased=False), expected)


def test_dr_grpo_hand_computed():
    # r - mean_g: 3-4, 1-1.5, 5-4, 2-1.5, 2-2, 4-4
    expected = torch.tensor([-1.0, -0.5, 1.0, 0.5, 0.0, 0.0])
    torch.testing.assert_close(compute_advantages("dr_grpo", REWARDS, IDS), expected)


def test_rloo_hand_computed():
    # id 10: 3 - (5+4)/2 = -1.5 ; 5 - (3+4)/2 = 1.5 ; 4 - (3+5)/2 = 0
    # id 7:  1 - 2 = -1 ; 2 - 1 = 1 ;  id 99: no other member -> 0
    expected = torch.tensor([-1.5, -1.0, 1.5, 1.0, 0.0, 0.0])
    torch.testing.assert_close(compute_advantages("rloo", REWARDS, IDS), expected)


def test_reinforce_pp_hand_computed():
    # x = r - mean_g = [-1, -0.5, 1, 0.5, 0, 0]; batch mean 0; unbiased var = 2.5 / 5 = 0.5
    # A = x / (sqrt(0.5) + eps)
    s = math.sqrt(0.5) + EPS
    expected = torch.tensor([-1 / s, -0.5 / s, 1 / s, 0.5 / s, 0.0, 0.0])
    torch.testing.assert_close(compute_advantages("reinforce_pp", REWARDS, IDS), expected)


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_all_equal_rewards_are_exactly_zero(name, eps):
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004 in float: a naive r - mean leaves ~1e-17, GRPO's /std blows it up
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 3.0])
    ids = torch.tensor([4, 4, 4, 2, 2, 9])  # two all-equal groups and a group of one
    out = compute_advantages(name, rewards, ids, eps=eps)
    assert torch.equal(out, torch.zeros(6)), out


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_groups_of_one_get_zero(name):
    out = compute_advantages(name, torch.tensor([1.0, 0.0, 5.0]), torch.tensor([0, 1, 2]))
    assert torch.equal(out, torch.zeros(3))


def test_id_relabeling_and_row_order_do_not_matter():
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    relabeled = torch.tensor([-3, 123456789, -3, 123456789, 0, -3])  # same partition as IDS, odd ids
    for name in ADVANTAGES:
        base = compute_advantages(name, REWARDS, IDS)
        torch.testing.assert_close(compute_advantages(name, REWARDS, relabeled), base)
        torch.testing.assert_close(compute_advantages(name, REWARDS[perm], IDS[perm]), base[perm])


def _loop_reference(
    name: str, rewards: list[float], ids: list[int], eps: float, unbiased: bool
) -> list[float]:
    """Plain-python reference: one pass per group, float arithmetic, no torch."""
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        groups.setdefault(g, []).append(i)
    out = [0.0] * len(rewards)
    for members in groups.values():
        rs = [rewards[i] for i in members]
        n = len(rs)
        if n == 1 or max(rs) == min(rs):
            continue  # no baseline / no spread -> 0
        mean = sum(rs) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in rs) / ((n - 1) if unbiased else n))
        for i in members:
            others = [rewards[j] for j in members if j != i]
            if name == "grpo":
                out[i] = (rewards[i] - mean) / (std + eps)
            elif name in ("dr_grpo", "reinforce_pp"):
                out[i] = rewards[i] - mean
            elif name == "rloo":
                out[i] = rewards[i] - sum(others) / len(others)
    if name == "reinforce_pp":
        n = len(out)
        mean = sum(out) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in out) / ((n - 1) if unbiased else n))
        out = [(x - mean) / (std + eps) for x in out]
    return out


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
@pytest.mark.parametrize("unbiased", [True, False])
def test_vectorised_matches_python_loop(name, unbiased):
    gen = torch.Generator().manual_seed(0)
    n = 40
    ids = torch.randint(0, 12, (n,), generator=gen) * 7 - 20  # non-contiguous, negative, shuffled
    binary = torch.randint(0, 2, (n,), generator=gen).float()  # many all-equal groups
    continuous = torch.randn(n, generator=gen)
    rewards = torch.where(ids % 2 == 0, binary, continuous)
    expected = torch.tensor(_loop_reference(name, rewards.tolist(), ids.tolist(), 1e-6, unbiased))
    out = compute_advantages(name, rewards, ids, std_unbiased=unbiased)
    torch.testing.assert_close(out, expected.float(), atol=1e-6, rtol=1e-5)


def test_grpo_equals_trl_scale_rewards_group():
    # TRL GRPOTrainer._generate_and_score_completions (huggingface/trl trl/trainer/grpo_trainer.py):
    #   mean_g = rewards.view(-1, G).mean(1); std_g = rewards.view(-1, G).std(1)   (torch.std: Bessel)
    #   advantages = (rewards - mean_g.repeat_interleave(G)) / (std_g.repeat_interleave(G) + 1e-4)
    gen = torch.Generator().manual_seed(1)
    groups, size = 8, 4
    rewards = torch.randint(0, 3, (groups * size,), generator=gen).float() + torch.rand(
        groups * size, generator=gen
    )
    mean = rewards.view(-1, size).mean(1).repeat_interleave(size)
    std = rewards.view(-1, size).std(1).repeat_interleave(size)
    trl = (rewards - mean) / (std + 1e-4)
    ids = torch.arange(groups).repeat_interleave(size)
    torch.testing.assert_close(compute_advantages("grpo", rewards, ids, eps=1e-4), trl)
    # TRL scale_rewards=False is Dr. GRPO's r - mean
    torch.testing.assert_close(compute_advantages("dr_grpo", rewards, ids), rewards - mean)


def test_grpo_and_rloo_equal_verl_for_groups_of_two_or_more():
    # volcengine/verl verl/trainer/ppo/core_algos.py, compute_grpo_outcome_advantage:
    #   per index: mean = torch.mean(scores), std = torch.std(scores); A = (s - mean) / (std + epsilon)
    # compute_rloo_outcome_advantage: A = s * n / (n - 1) - mean * n / (n - 1)
    # (verl differs for groups of one: mean 0, std 1 -> A = s / (1 + eps) for GRPO and s for RLOO; ours is 0.)
    gen = torch.Generator().manual_seed(2)
    ids = torch.tensor([3, 1, 3, 1, 1, 8, 8, 3])
    scores = torch.randn(8, generator=gen)
    grpo, rloo = torch.empty(8), torch.empty(8)
    for g in ids.unique():
        sel = ids == g
        s, n = scores[sel], int(sel.sum())
        grpo[sel] = (s - s.mean()) / (s.std() + 1e-6)
        rloo[sel] = s * n / (n - 1) - s.mean() * n / (n - 1)
    torch.testing.assert_close(compute_advantages("grpo", scores, ids), grpo)
    torch.testing.assert_close(compute_advantages("rloo", scores, ids), rloo)


def test_advantages_are_detached_and_keep_device():
    rewards = torch.tensor([1.0, 0.0], requires_grad=True)
    out = compute_advantages("grpo", rewards, torch.tensor([0, 0]))
    assert not out.requires_grad and out.device == rewards.device


def test_empty_batch():
    assert compute_advantages("reinforce_pp", torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_wrong_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        compute_advantages("gpro", REWARDS, IDS)
    for name in ADVANTAGES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="dr_grpo"):
        get_advantage_fn("nope")


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        compute_advantages("grpo", torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        compute_advantages("grpo", torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_every_estimator_is_group_relative(name):
    """Groups of one get exactly 0 from every registered estimator (reinforce_pp included): why the config
    requires rollout.group_size >= 2 for all of ADVANTAGES and for none of CRITIC_ADVANTAGES."""
    adv = compute_advantages(name, torch.tensor([1.0, 0.0, 3.0]), torch.tensor([0, 1, 2]))
    assert torch.equal(adv, torch.zeros(3))
