"""The phase-2 features together: asynchronous RL x multi-turn tools x PPO's critic x dynamic sampling x
off-policy corrections x periodic evaluation. Each test runs the pair for a step or two and asserts what breaks
when the pair does not compose (observation tokens reaching the loss, the staleness bound, an untrained or
non-finite critic, the tool missing from evaluation)."""

from __future__ import annotations

import functools
import pickle
import re

import torch
from conftest import make_trainer, params, run_metrics
from generator_side import ASYNC, digit_share
from tool_helpers import QUESTION, TOK, TOOL_MODE, Scripted, ids, memorize

from thinkrl.config import load_config
from thinkrl.rewards import in_process
from thinkrl.rewards.accuracy import exact_match_reward
from thinkrl.rollout import Prompts, build_environment
from thinkrl.testing import tiny_model
from thinkrl.train import GRPOTrainer

# a reward the generator process can import by name
async_trainer = functools.partial(make_trainer, rewards=(digit_share,))

TOOL_RUN = [
    "data.template=plain", "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=60",
    "tools.enabled=true", "algorithm.beta=0.0", "log.progress=false",
]  # fmt: skip
"""A tool run small enough for a unit test (tests/test_tools.py's scripted two-turn episode)."""

FIRST = ids("<python>print(6*7)</python>")
N_OBS = len(ids("<output>42\n</output>"))


def tool_trainer(tmp_path, *overrides, reward=exact_match_reward, **kw):
    """A tool run on the scripted episode (a call, then ``<answer>42</answer>``); rows a (42) and b (41)."""
    cfg = load_config(None, [*TOOL_RUN, f"train.output_dir={tmp_path}", *overrides])
    rows = [{"question": "a", "answer": "42"}, {"question": "b", "answer": "41"}]
    return GRPOTrainer(cfg, model=tiny_model("llama", len(TOK)), tokenizer=TOK, train_rows=rows,
                       reward_funcs=[reward], engine=Scripted([FIRST, ids("<answer>42</answer>")]), **kw)  # fmt: skip


def capture_batches(trainer, monkeypatch) -> list:
    """The batches the learner's update receives."""
    seen, update = [], trainer.learner.update
    monkeypatch.setattr(trainer.learner, "update", lambda batch, *a: seen.append(batch) or update(batch, *a))
    return seen


def assert_observations_carry_no_loss(batch) -> None:
    """The completion tokens that are attended to but carry no loss are exactly the tool's observations
    (``<output>...</output>`` blocks), and some row has one."""
    observation = batch.attention_mask[:, -batch.mask.shape[1] :].bool() & ~batch.mask.bool()
    assert observation.any(), "no observation tokens reached the learner"
    for ids_, obs in zip(batch.completion_ids, observation):
        assert re.fullmatch(r"(<output>.*?</output>)*", TOK.decode(ids_[obs].tolist()), re.DOTALL)


# ------------------------------------------------------------------------------------------- 1. async x tools
def test_the_tool_environment_and_its_sandbox_pickle():
    """The generator process receives the prompts with their environment (the Python tool and its sandbox)."""
    env = build_environment(load_config(None, ["tools.enabled=true", "data.template=plain"]), TOK)
    env.sandbox.chosen()  # the probe ran: its result travels, the lock is rebuilt
    back = pickle.loads(pickle.dumps(Prompts([{"question": "q", "answer": "1"}], env, TOK, seed=0)))
    assert back.env.sandbox.chosen() == env.sandbox.chosen()
    assert (
        back.env.step({"question": "q"}, "<python>print(6*7)</python>").observation == "<output>42\n</output>"
    )


def test_async_with_tools_generates_episodes_whose_observations_carry_no_loss(tmp_path, monkeypatch):
    model = memorize([(QUESTION, TOOL_MODE)], steps=60)  # calls the tool when sampled
    cfg = load_config(None, [
        *TOOL_RUN, "rollout.prompts_per_step=1", "rollout.stop_strings=['</answer>']", "train.steps=2",
        "rollout.max_staleness=1", *ASYNC, f"train.output_dir={tmp_path}",
    ])  # fmt: skip
    tr = GRPOTrainer(cfg, model=model, tokenizer=TOK, train_rows=[{"question": QUESTION, "answer": "1517"}],
                     reward_funcs=[exact_match_reward])  # fmt: skip
    seen = capture_batches(tr, monkeypatch)
    before = params(tr.model)
    history = [tr.train_step() for _ in range(2)]
    assert all(m["tool/calls_per_sample"] > 0 and m["async/staleness_max"] <= 1 for m in history), history
    # the generator's log-probs are the learner's on the model's tokens (observations, sampled by no one, excluded)
    assert history[0]["async/staleness_max"] == 0 and history[0]["train/logprob_mismatch"] < 1e-4
    for batch in seen:
        assert_observations_carry_no_loss(batch)
    assert any(not torch.equal(before[k], v) for k, v in params(tr.model).items())


# ------------------------------------------------------------------------------------------- 2. async x critic
def test_async_with_a_critic_trains_it_on_stale_samples(tmp_path, monkeypatch):
    tr = async_trainer(tmp_path, "rollout.max_staleness=1", "train.steps=3", "algorithm.advantage=gae",
                       "critic.lr=1e-2", *ASYNC)  # fmt: skip
    seen = capture_batches(tr, monkeypatch)
    head = {k: v.clone() for k, v in tr.critic.state_dict().items()}
    history = [tr.train_step() for _ in range(3)]
    assert all(m["async/staleness_max"] <= 1 for m in history)
    for batch in seen:
        assert batch.advantages.dim() == 2 and torch.isfinite(batch.advantages).all()
        assert torch.isfinite(batch.old_values).all() and torch.isfinite(batch.returns).all()
    assert all(m["train/critic_grad_norm"] > 0 for m in history)
    assert any(not torch.equal(head[k], v) for k, v in tr.critic.state_dict().items())


# ------------------------------------------------------------------------------------------- 3. tools x critic
def test_gae_with_tools_uses_the_loss_mask_and_skips_observations(tmp_path, monkeypatch):
    tr = tool_trainer(tmp_path, "algorithm.advantage=gae", "critic.lr=1e-2", "train.steps=2")
    seen = capture_batches(tr, monkeypatch)
    metrics = tr.train_step()
    (batch,) = seen
    assert_observations_carry_no_loss(batch)
    observation = batch.attention_mask[:, -batch.mask.shape[1] :].bool() & ~batch.mask.bool()
    assert bool((batch.advantages[observation] == 0).all()) and bool((batch.returns[observation] == 0).all())
    model_tokens = batch.mask.bool()
    # rows a (reward 1) and b (reward 0): every model token of a row, both turns, gets its row's signal
    first_turn, answer = batch.advantages[:, 0], batch.advantages[:, model_tokens[0].nonzero()[-1, 0]]
    assert bool((first_turn[:2] > 0).all() and (first_turn[2:] < 0).all())
    assert torch.allclose(first_turn, answer, atol=1e-5)
    assert metrics["train/critic_grad_norm"] > 0 and torch.isfinite(batch.old_values[model_tokens]).all()


# ------------------------------------------------------------------------- 4. async x dynamic sampling / IS
def test_async_with_dynamic_sampling_and_an_is_correction(tmp_path):
    tr = async_trainer(tmp_path, "rollout.max_staleness=1", "train.steps=2", "algorithm.dynamic_sampling=true",
                       "algorithm.is_correction=token_mask", "algorithm.num_minibatches=2", *ASYNC[:2])  # fmt: skip
    history = [tr.train_step() for _ in range(2)]
    for m in history:
        assert m["async/staleness_max"] <= 1 and m["dynamic/rounds"] >= 1
    trained = [m for m in history if not m.get("skipped")]
    assert trained and all(
        0 <= m["train/is_masked_fraction"] <= 1 and m["train/is_ratio_max"] > 0 for m in trained
    )


# ----------------------------------------------------------------------------------- 5. tools x dynamic sampling
def test_dynamic_sampling_with_tools_keeps_the_observation_mask_across_rounds(tmp_path, monkeypatch):
    calls = []

    def uneven(prompts, completions, **kw):  # round 1: group a has no spread (dropped); round 2: both kept
        calls.append(len(completions))
        return [1.0, 1.0, 1.0, 0.0] if len(calls) == 1 else [1.0, 0.0, 0.0, 1.0]

    tr = tool_trainer(tmp_path, "algorithm.dynamic_sampling=true", reward=in_process(uneven))
    seen = capture_batches(tr, monkeypatch)
    metrics = tr.train_step()
    assert metrics["dynamic/rounds"] == 2 and metrics["dynamic/dropped_groups"] == 1
    (batch,) = seen
    assert len(batch) == 4
    assert_observations_carry_no_loss(batch)
    assert batch.mask[:, : len(FIRST)].all() and not batch.mask[:, len(FIRST) : len(FIRST) + N_OBS].any()


# ------------------------------------------------------------------------------------- 6. eval x tools
def test_periodic_evaluation_during_a_tool_run_uses_the_tool(tmp_path):
    tr = tool_trainer(tmp_path, "eval.every_steps=1", "train.steps=1", "eval.max_new_tokens=60",
                      eval_rows=[{"question": "a", "answer": "42"}])  # fmt: skip
    tr.train()
    evals = [m for m in run_metrics(tmp_path) if "eval/pass@1" in m]
    assert evals and all(m["eval/pass@1"] == 1.0 and m["eval/tool_calls_mean"] == 1.0 for m in evals), evals
