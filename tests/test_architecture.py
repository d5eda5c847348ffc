"""docs/architecture.md's examples run: a new loss, reward, engine and environment plug in without touching
the learner, the collector or the trainer; the collector refuses what it cannot run; its value is plain data."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import DIGITS, make_cfg, make_trainer

import thinkrl.algorithms as algorithms
from thinkrl.algorithms import importance_ratio
from thinkrl.config import ConfigError
from thinkrl.rewards import RewardScorer, in_process
from thinkrl.rewards.countdown import evaluate_equation
from thinkrl.rollout import Collector, Prompts, Rollout, SingleTurn, Trajectories, Turn
from thinkrl.testing import char_tokenizer, tiny_model
from thinkrl.train import GRPOTrainer
from thinkrl.train.checks import check_config
from thinkrl.train.parallel import SingleProcess

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def example(marker: str) -> dict:
    """Run the docs' python block that contains ``marker``; returns the names it defines."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (code,) = [b for b in blocks if marker in b]
    names = {"torch": torch, "re": re, "importance_ratio": importance_ratio, "Rollout": Rollout,
             "SingleTurn": SingleTurn, "Turn": Turn, "evaluate_equation": evaluate_equation,
             "POLICY_LOSSES": algorithms.POLICY_LOSSES}  # fmt: skip
    exec(compile(code, str(DOC), "exec"), names)
    return names


def test_a_new_loss_is_selectable_by_name(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="algorithm.loss='clipped_reinforce' is unknown"):
        check_config(make_cfg(tmp_path, "algorithm.loss=clipped_reinforce"))
    monkeypatch.setitem(algorithms.POLICY_LOSSES, "clipped_reinforce", None)  # removed again after the test
    example("def clipped_reinforce_loss")  # registers the loss
    tr = make_trainer(tmp_path, "algorithm.loss=clipped_reinforce", "train.steps=1")
    history = tr.train()
    assert "train/ratio_mean" in history[0] and "train/clip_fraction" not in history[0]


def test_a_new_reward_trains(tmp_path):
    brevity = example("def brevity_reward")["brevity_reward"]
    assert brevity(
        ["q"] * 3, ["a", "b", "c"], completion_length=[5, 500, 9], finish_reason=["stop"] * 2 + ["length"]
    ) == [1.0, 0.0, None]
    history = make_trainer(tmp_path, "train.steps=1", rewards=(brevity,)).train()
    assert history[0]["reward/brevity_reward"] == 1.0  # every completion (at most 4 tokens) is brief


def test_a_new_engine_plugs_into_the_trainer(tmp_path):
    tok = char_tokenizer("0123456789=")
    engine = example("class EchoEngine")["EchoEngine"](tok)
    tr = GRPOTrainer(make_cfg(tmp_path, "train.steps=1"), model=tiny_model("llama", len(tok)), tokenizer=tok,
                     reward_funcs=[lambda prompts, completions, **kw: [1.0] * len(completions)], train_rows=DIGITS,
                     engine=engine)  # fmt: skip
    assert tr.engine is engine
    (metrics,) = tr.train()
    assert metrics["completion/len_mean"] == 1.0 and metrics["completions"] == 16.0


class _Fixed:
    """An engine whose every completion is ``text`` (one token per character of the char tokenizer)."""

    def __init__(self, tok, text):
        self.tok, self.text = tok, text

    def sync_weights(self):
        pass

    def generate(self, prompt_ids, params):
        ids = torch.tensor([self.tok(self.text)["input_ids"]] * (len(prompt_ids) * params.n))
        return Rollout(prompt_ids=prompt_ids, group_ids=torch.arange(len(prompt_ids)).repeat_interleave(params.n),
                       completion_ids=ids, completion_mask=torch.ones_like(ids, dtype=torch.bool),
                       logprobs=torch.zeros(ids.shape), finish_reasons=["stop"] * len(ids),
                       texts=[self.text] * len(ids))  # fmt: skip


def _collector(tmp_path, env, engine, **overrides):
    tok = char_tokenizer()
    cfg = make_cfg(tmp_path, *[f"{k}={v}" for k, v in overrides.items()])
    prompts = Prompts(DIGITS, env, tok, seed=0)
    scorer = RewardScorer([in_process(lambda prompts, completions, **kw: [0.0] * len(completions))])
    return Collector(cfg, prompts, engine, scorer, tok, SingleProcess(), policy_version=7)


def test_a_new_environment_answers_turns_and_the_collector_runs_its_episodes(tmp_path):
    tok = char_tokenizer()
    env = example("class Calculator")["Calculator"](tok)
    row = {"question": "2+3", "answer": "5"}
    assert env.reset(row).endswith("User: 2+3. Assistant:")
    assert env.step(row, " <calc>2 + 3</calc>") == Turn(done=False, observation=" <result>5</result>")
    assert env.step(row, " <calc>1/0</calc>").observation == " <result>error</result>"
    assert env.step(row, " <answer>5</answer>", history=["a", "b"]) == Turn(done=True, info={"tool_calls": 1})
    # the engine always calls: three calls are answered, the fourth ends the episode (max_calls=3)
    traj, _ = _collector(
        tmp_path, env, _Fixed(tok, "<calc>2+3</calc>"), **{"rollout.max_new_tokens": 200}
    ).collect(0)
    assert traj.texts[0] == "<calc>2+3</calc> <result>5</result>" * 3 + "<calc>2+3</calc>"
    obs = len(" <result>5</result>")
    assert traj.loss_mask[0].tolist()[: 16 + obs] == [True] * 16 + [False] * obs
    assert traj.rows[0] in DIGITS and int(traj.lengths[0]) == 4 * 16 + 3 * obs
    env.stop_strings = ()  # without turn stop strings it is a single-turn environment: done=False is refused
    with pytest.raises(NotImplementedError, match="single-turn environments.*A new environment"):
        _collector(tmp_path, env, _Fixed(tok, "<calc>2+3</calc>")).collect(0)


def test_trajectories_are_plain_picklable_data(tmp_path):
    tok = char_tokenizer()
    collector = _collector(tmp_path, SingleTurn(tok, "{question}="), _Fixed(tok, "12"))
    traj, stats = collector.collect(0)
    assert isinstance(traj, Trajectories) and len(traj) == 16
    assert stats["reward/timeouts/<lambda>"] == stats["reward/errors/<lambda>"] == 0  # the scorer's counts
    assert traj.policy_version.tolist() == [7] * 16 and traj.group_ids.tolist() == [
        g for g in range(4) for _ in range(4)
    ]
    again = pickle.loads(pickle.dumps(traj))
    assert again.texts == ["12"] * 16 and torch.equal(again.completion_ids, traj.completion_ids)
    assert again.rows[0] in DIGITS and again.prompt_ids == traj.prompt_ids
    collector.sync_weights(8)
    assert collector.collect(1)[0].policy_version.tolist() == [8] * 16
