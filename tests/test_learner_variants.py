"""Every variant selectable by name through the config, each option reaching the update (the learner's first
gradient equals one computed by hand from the pure functions on the same batch), off-policy corrections and
their metrics, top-k/top-p log-probs, the adaptive entropy coefficient, and the config's refusals."""

from __future__ import annotations

import pytest
import torch
from conftest import make_cfg, make_trainer, params

from thinkrl.algorithms import aggregate_loss, is_correction, kl_penalty, policy_loss
from thinkrl.config import ConfigError
from thinkrl.train.batch import batch_from_trajectories, forward_logprobs
from thinkrl.train.checks import check_config
from thinkrl.train.metrics import step_view

# off-policy on purpose: 2 epochs (so pi_old is scored), one minibatch and one micro-batch of all 16 rows,
# no gradient clipping (it would hide a scale); the first optimizer step sees exactly the batch we perturb
HARNESS = ("algorithm.ppo_epochs=2", "train.micro_batch_size=64", "train.max_grad_norm=0")


def _first_gradient(tr, batch, view):
    """The gradient of the learner's first optimizer step on ``batch``, and the update's metrics; the model's
    weights are put back afterwards."""
    grads: dict[str, torch.Tensor] = {}
    named = list(tr.model.named_parameters())
    before = params(tr.model)

    def keep_first(*_):
        if not grads:
            grads.update({n: p.grad.clone() for n, p in named if p.grad is not None})

    hook = tr.optimizer.register_step_pre_hook(keep_first)
    update = tr.learner.update(batch, view, 0)
    hook.remove()
    tr.model.load_state_dict(before)
    return grads, update


def _off_policy_batch(tr, seed: int = 0):
    """Step 0's scored samples with pi_old's log-probs moved off the policy by seeded noise, and (for the IS
    corrections) the sampler's moved by other noise."""
    traj, _ = tr.collector.collect(0)
    view = step_view(traj, tr.parallel)
    batch = batch_from_trajectories(traj, tr.learner.advantages(view), tr.tokenizer.pad_token_id)
    tr.learner.score_old(batch)
    tr.learner.score_reference(batch)
    gen = torch.Generator().manual_seed(seed)
    batch.old_logp = batch.old_logp + 0.4 * torch.randn(batch.old_logp.shape, generator=gen) * batch.mask
    batch.sampler_logp = batch.old_logp + 0.4 * torch.randn(batch.mask.shape, generator=gen) * batch.mask
    return batch, view


def _by_hand(tr, batch, loss: str, options: dict, is_weights=None) -> dict[str, torch.Tensor]:
    """The gradient of the loss computed directly from the pure functions on the whole batch."""
    cfg, a = tr.cfg, tr.cfg.algorithm
    tr.model.zero_grad(set_to_none=True)
    logp, _ = forward_logprobs(tr.model, batch, cfg.rollout.temperature, share_prompt=tr.learner.share_prompt)
    per_token, _ = policy_loss(
        loss, logp, batch.old_logp, batch.advantages, batch.mask, clip_low=a.clip_low, clip_high=a.clip_high,
        dual_clip=a.dual_clip, ratio_level=a.ratio_level, is_weights=is_weights, **options,
    )  # fmt: skip
    if batch.ref_logp is not None:
        per_token = per_token + a.beta * kl_penalty(logp, batch.ref_logp, a.kl_estimator)
    aggregate_loss(
        per_token, batch.mask, a.loss_agg, num_seqs=len(batch), max_len=cfg.rollout.max_new_tokens
    ).backward()
    grads = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    tr.model.zero_grad(set_to_none=True)
    return grads


def _assert_grads_equal(got, want):
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")


def _differs(a, b) -> bool:
    return any(not torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-6) for k in a)


@pytest.fixture(scope="module")
def ppo_clip_gradient(tmp_path_factory):
    tr = make_trainer(tmp_path_factory.mktemp("ppo"), *HARNESS)
    batch, view = _off_policy_batch(tr)
    return _first_gradient(tr, batch, view)[0]


@pytest.mark.parametrize(
    ("overrides", "loss", "options"),
    [
        (("algorithm.loss=cispo", "algorithm.clip_low=1", "algorithm.clip_high=0.1"), "cispo", {}),
        (("algorithm.loss=sapo",), "sapo", {}),
        (("algorithm.loss=sapo", "algorithm.loss_options={sapo_tau_pos: 4.0, sapo_tau_neg: 6.0}"), "sapo",
         {"sapo_tau_pos": 4.0, "sapo_tau_neg": 6.0}),
        (("algorithm.loss=gmpo", "algorithm.clip_low=0.1", "algorithm.clip_high=0.1"), "gmpo", {}),
        (("algorithm.loss=kl_cov", "algorithm.loss_options={kl_cov_ratio: 0.2, kl_cov_coef: 3.0}"), "kl_cov",
         {"kl_cov_ratio": 0.2, "kl_cov_coef": 3.0}),
        (("algorithm.dual_clip=1.2", "algorithm.clip_high=10"), "ppo_clip", {}),
        (("algorithm.ratio_level=sequence",), "ppo_clip", {}),
    ],
)  # fmt: skip
def test_variant_reaches_the_update_exactly(tmp_path, ppo_clip_gradient, overrides, loss, options):
    """Selected by name in the config, the variant (and its options) is what the learner differentiates: its
    first gradient equals the pure function's on the same off-policy batch, and differs from ppo_clip's."""
    tr = make_trainer(tmp_path, *HARNESS, *overrides)
    batch, view = _off_policy_batch(tr)
    got, _ = _first_gradient(tr, batch, view)
    _assert_grads_equal(got, _by_hand(tr, batch, loss, options))
    assert _differs(got, ppo_clip_gradient), overrides


def test_sapo_options_change_the_update(tmp_path):
    """The same loss with other options: a different first gradient (the option is not ignored)."""
    runs = []
    for opts in ("{}", "{sapo_tau_pos: 4.0, sapo_tau_neg: 6.0}"):
        tr = make_trainer(
            tmp_path / str(len(runs)), *HARNESS, "algorithm.loss=sapo", f"algorithm.loss_options={opts}"
        )
        batch, view = _off_policy_batch(tr)
        runs.append(_first_gradient(tr, batch, view)[0])
    assert _differs(*runs)


def test_clip_cov_draw_is_seeded_by_seed_and_step(tmp_path):
    """Clip-Cov's random token choice comes from (train.seed, step): the same update twice, and it takes
    tokens out (so it differs from plain PPO on the same batch)."""
    wide = "algorithm.loss_options={clip_cov_ratio: 0.3, clip_cov_lb: -100.0, clip_cov_ub: 100.0}"
    results = []
    for i, loss in enumerate(("clip_cov", "clip_cov", "ppo_clip")):
        tr = make_trainer(
            tmp_path / str(i), *HARNESS, f"algorithm.loss={loss}", *([wide] if loss != "ppo_clip" else [])
        )
        batch, view = _off_policy_batch(tr)
        results.append(_first_gradient(tr, batch, view))
    (g1, u1), (g2, _), (g_ppo, _) = results
    _assert_grads_equal(g1, g2)
    assert _differs(g1, g_ppo) and float(u1["cov_selected_fraction"]) > 0.2


@pytest.mark.parametrize("name", ["token_tis", "seq_tis", "token_mask", "seq_mask"])
def test_is_correction_weights_the_update_and_logs_its_metrics(tmp_path, name):
    """The correction weighs pi_old against the sampler's log-probs: the first gradient is the pure
    function's with those weights; its metrics are the batch's (extremes are true extremes)."""
    band = ("algorithm.is_low=0.8", "algorithm.is_high=1.25")
    tr = make_trainer(tmp_path, *HARNESS, f"algorithm.is_correction={name}", *band)
    batch, view = _off_policy_batch(tr)
    got, update = _first_gradient(tr, batch, view)
    w, m = is_correction(name, batch.old_logp, batch.sampler_logp, batch.mask, low=0.8, high=1.25)
    _assert_grads_equal(got, _by_hand(tr, batch, "ppo_clip", {}, is_weights=w))
    changed = "is_masked_fraction" if "mask" in name else "is_truncated_fraction"
    assert 0 < float(update[changed]) < 1
    for key in ("is_ratio_min", "is_ratio_max", "is_ratio_mean", changed, "is_mismatch_k3"):
        # two epochs over the same weights: the step's value equals one pass's
        assert float(update[key]) == pytest.approx(float(m[key]), rel=1e-5), key


def test_tis_cap_equals_token_tis_with_that_cap(tmp_path):
    runs = []
    for over in (("algorithm.tis_cap=1.1",), ("algorithm.is_correction=token_tis", "algorithm.is_high=1.1")):
        tr = make_trainer(tmp_path / str(len(runs)), *HARNESS, *over)
        batch, view = _off_policy_batch(tr)
        runs.append(_first_gradient(tr, batch, view)[0])
    _assert_grads_equal(*runs)


def test_top_k_top_p_logprobs_match_the_sampler(tmp_path):
    """With truncation on, the engine reports the truncated distribution's log-probs and the learner scores
    the same: the mismatch stays at numerical noise and the on-policy ratio is 1, although the truncated
    log-probs are far from the full-vocabulary ones."""
    tr = make_trainer(tmp_path, "rollout.top_k=4", "rollout.top_p=0.9", "algorithm.num_minibatches=2")
    traj, _ = tr.collector.collect(0)
    view = step_view(traj, tr.parallel)
    batch = batch_from_trajectories(traj, tr.learner.advantages(view), tr.tokenizer.pad_token_id)
    tr.learner.score_old(batch)
    mask = batch.mask.bool()
    assert (batch.old_logp - batch.sampler_logp)[mask].abs().max() < 1e-4
    full, _ = forward_logprobs(tr.model, batch, tr.cfg.rollout.temperature)
    assert (batch.old_logp - full)[mask].mean() > 0.05  # the kept mass is well below 1
    on_policy = make_trainer(tmp_path / "on", "rollout.top_k=4", "rollout.top_p=0.9")
    history = on_policy.train()
    assert history[0]["train/logprob_mismatch"] < 1e-4 and history[0]["train/ratio_max"] == pytest.approx(1.0)


def test_adaptive_entropy_coefficient_moves_and_acts(tmp_path):
    """Below the target the coefficient rises by delta each step and is applied (the update changes); above
    it the bonus stays off, so the update is the constant-coefficient-0 run's."""
    low = make_trainer(
        tmp_path / "below",
        "train.steps=3",
        "algorithm.entropy_target=100",
        "algorithm.entropy_coef_delta=0.05",
        "algorithm.entropy_coef_max=0.12",
    )
    hist = low.train()
    assert [h["train/entropy_coef"] for h in hist] == pytest.approx([0.0, 0.05, 0.10])
    assert low.learner.entropy_applied == pytest.approx(0.12)  # capped at entropy_coef_max
    plain = make_trainer(tmp_path / "plain", "train.steps=3")
    plain.train()
    assert _differs(params(low.model), params(plain.model))  # steps 2-3 carried the bonus
    high = make_trainer(
        tmp_path / "above", "train.steps=3", "algorithm.entropy_target=1e-6", "algorithm.entropy_coef=0.01"
    )
    hist = high.train()
    assert [h["train/entropy_coef"] for h in hist] == [0.0, 0.0, 0.0]
    for k, v in params(high.model).items():
        torch.testing.assert_close(v, params(plain.model)[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm.loss=cispo", "algorithm.dual_clip=3"], r"'cispo' has no dual clip.*dual_clip=null"),
        (["algorithm.loss=reinforce", "algorithm.dual_clip=3"], r"'reinforce' has no dual clip"),
        (["algorithm.loss=gmpo", "algorithm.ratio_level=sequence"], r"token ratios only.*ratio_level=token"),
        (["algorithm.loss=kl_cov", "algorithm.ratio_level=sequence"], r"token ratios only"),
        (["algorithm.loss=sapo", "algorithm.loss_options={kl_cov_coef: 1.0}"],
         r"\['kl_cov_coef'\], which algorithm.loss='sapo' does not take; its options: sapo_tau_neg, sapo_tau_pos"),
        (["algorithm.loss_options={sapo_tau_pos: 1.0}"], r"'ppo_clip' does not take; its options: none"),
        (["algorithm.loss=clip_cov", "algorithm.loss_options={generator: 1.0}"], r"\['generator'\]"),
        (["algorithm.loss=sapo", "algorithm.loss_options={sapo_tau_pos: 0.0}"], r"must be > 0"),
        (["algorithm.loss=clip_cov", "algorithm.loss_options={clip_cov_ratio: 2.0}"], r"in \(0, 1\]"),
        (["algorithm.loss=clip_cov", "algorithm.loss_options={clip_cov_lb: 5.0, clip_cov_ub: 1.0}"], r"lb must be <"),
        (["algorithm.loss=kl_cov", "algorithm.loss_options={kl_cov_coef: -1.0}"], r"kl_cov_coef must be >= 0"),
        (["algorithm.is_correction=icepop"], r"is_correction='icepop' is unknown; valid: seq_mask, seq_tis"),
        (["algorithm.is_high=2"], r"is_correction is null, so they would do nothing"),
        (["algorithm.is_correction=token_mask", "algorithm.is_low=2", "algorithm.is_high=1"], r"low must be <= high"),
        (["algorithm.is_correction=token_tis", "algorithm.tis_cap=2"], r"keep one"),
        (["algorithm.entropy_target=0"], r"entropy_target=0.0 must be > 0"),
        (["algorithm.entropy_target=0.2", "algorithm.entropy_coef_min=0.1", "algorithm.entropy_coef_max=0.01"],
         r"entropy_coef_min <= entropy_coef_max"),
        (["rollout.group_size=1", "algorithm.advantage=reinforce_pp"], r"needs G >= 2.*or use a critic \(gae\)"),
        (["algorithm.advantage=gae", "algorithm.dynamic_sampling=true"], r"dynamic_sampling=false"),
        (["algorithm.advantage=gae", "train.fsdp=true"], r"not supported with train.fsdp"),
        (["algorithm.gamma=1.5"], r"gamma=1.5, lam=1.0 must be in \[0, 1\]"),
        (["critic.value_clip=0"], r"critic.value_clip=0.0 must be > 0 or null"),
        (["critic.lr=0"], r"critic.lr=0.0 must be > 0"),
        (["critic.vf_coef=0"], r"vf_coef=0.0 must be > 0"),
    ],
)  # fmt: skip
def test_bad_algorithm_settings_fail_at_start(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(make_cfg(tmp_path, *overrides))


def test_good_settings_pass(tmp_path):
    for overrides in (
        ["rollout.group_size=1", "algorithm.advantage=gae"],  # a critic needs no group
        ["algorithm.loss=clip_cov", "algorithm.loss_options={clip_cov_ratio: 0.01}"],
        ["algorithm.is_correction=seq_mask", "algorithm.is_high=.inf"],
        ["algorithm.loss=cispo", "algorithm.ratio_level=sequence"],
    ):
        check_config(make_cfg(tmp_path, *overrides))


@pytest.mark.slow
def test_a_policy_gradient_variant_learns(tmp_path):
    """CISPO (a clipped, detached IS weight on every token's gradient) with two minibatches a step, so the
    second is off-policy and the weight acts: 24 steps take the copy-the-digit reward from chance to well above
    it, as GRPO's test_learning_reward_rises does."""
    tr = make_trainer(tmp_path, "rollout.group_size=8", "rollout.prompts_per_step=8", "train.steps=24",
                      "algorithm.num_minibatches=2", "algorithm.loss=cispo", "algorithm.loss_agg=token_mean",
                      "algorithm.clip_low=1", "algorithm.clip_high=4")  # fmt: skip
    rewards = [h["reward/mean"] for h in tr.train()]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert first < 0.12, rewards
    assert last > first + 0.12, rewards
