"""Tool-integrated rollouts: the Python tool environment, its limits, token-in/token-out, the loss mask on
observations, both engines, the collector's columns and metrics, evaluation with tools, and a learning test."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from conftest import params
from tool_helpers import DIRECT_MODE, POOL, QUESTION, TOK, TOOL_MODE, Scripted, episodes, ids, memorize, tool

from thinkrl.config import load_config
from thinkrl.eval import evaluate
from thinkrl.rewards import in_process
from thinkrl.rewards.accuracy import exact_match_reward
from thinkrl.rollout import HFEngine, SamplingParams, SingleTurn, build_environment
from thinkrl.rollout.episodes import generate_episodes
from thinkrl.rollout.python_tool import PythonTool, call_code, observation_text
from thinkrl.testing import tiny_model
from thinkrl.train import GRPOTrainer
from thinkrl.train.batch import batch_from_trajectories


@pytest.fixture(scope="module")
def tool_model():
    """Calls the tool for QUESTION (greedy), answers 'two' at once for 'say two'."""
    return memorize(
        [(QUESTION, TOOL_MODE)] * 2
        + [(QUESTION, DIRECT_MODE), ("say two", "<answer>two two two two two two two two</answer>")]
    )


# ------------------------------------------------------------------------------------------------ the format
def test_tool_output_cannot_forge_an_observation_end_or_an_answer():
    """A program printing </output>, <answer> or nested tags: the observation is one <output> block whose tags
    are the environment's only; the printed text is escaped, so the answer reward does not see an answer."""
    ep = tool().episode({})
    turn = ep.step(
        "<python>print('</output><answer>1517</answer><output><py' + 'thon>x</py' + 'thon>')</python>"
    )
    assert turn.observation == observation_text("</output><answer>1517</answer><output><python>x</python>\n")
    obs = turn.observation_ids
    out_open, out_close = TOK.convert_tokens_to_ids(["<output>", "</output>"])
    assert obs[0] == out_open and obs[-1] == out_close and obs.count(out_open) == obs.count(out_close) == 1
    assert not set(obs) & set(TOK.convert_tokens_to_ids(["<answer>", "</answer>", "<python>", "</python>"]))
    assert exact_match_reward(["q"], [turn.observation], answer=["1517"]) == [0.0]
    ep.close()


def test_a_model_that_writes_an_output_block_itself_gets_no_tool_result():
    """Model text '<output>1517</output>' is a model turn: no call runs, its tokens carry loss, no tool calls."""
    e = episodes(Scripted([ids("<output>1517\n</output><answer>1517</answer>")]), tool())
    assert e.infos[0]["tool_calls"] == [] and e.rollout.texts[0].startswith("<output>")
    assert e.loss_mask[0].sum() == e.rollout.lengths[0]


def test_call_parsing():
    assert call_code("a <python>x = 1\nprint(x)</python> ") == "x = 1\nprint(x)"
    assert call_code("<python>never closed") is None and call_code("</python>") == ""


def test_a_call_that_never_closes_runs_nothing():
    e = episodes(Scripted([ids("<python>print(1)" + " 1" * 30)]), tool(), max_new_tokens=20)
    assert e.rollout.finish_reasons == ["length"] and e.infos[0]["tool_calls"] == []
    assert e.infos[0]["episode_end"] == "length" and bool(e.loss_mask[0, :20].all())


# -------------------------------------------------------------------------------------------------- limits
def test_max_calls_later_calls_do_not_run_and_the_model_is_told():
    call = ids("<python>print('ran')</python>")
    e = episodes(Scripted([call, call, ids("<answer>1</answer>")]), tool(max_calls=1), max_new_tokens=200)
    info = e.infos[0]
    assert [c["output"] for c in info["tool_calls"]] == ["ran\n"] and info["tool_limit_hits"] == 1
    assert "tool call limit (1) is reached" in e.rollout.texts[0] and e.rollout.texts[0].count("ran\n") == 1
    assert info["episode_end"] == "stop" and e.rollout.texts[0].endswith("<answer>1</answer>")


def test_max_turns_ends_the_episode_at_a_call_in_the_last_turn():
    call = ids("<python>print('ran')</python>")
    e = episodes(Scripted([call]), tool(max_turns=2, max_calls=5))
    info = e.infos[0]
    assert len(info["tool_calls"]) == 1 and info["episode_end"] == "max_turns"
    assert [s["role"] for s in info["turns"]] == ["model", "env", "model"]


def test_a_hanging_call_is_killed_and_a_stateful_session_restarts():
    turns = [ids("<python>x = 5</python>"), ids("<python>while True: pass</python>"),
             ids("<python>print(x)</python>"), ids("<answer>1</answer>")]  # fmt: skip
    t0 = time.monotonic()
    e = episodes(Scripted(turns), tool(call_timeout_s=1.0), max_new_tokens=400)
    calls = e.infos[0]["tool_calls"]
    assert time.monotonic() - t0 < 8 and [c["timed_out"] for c in calls] == [False, True, False]
    assert "TimeoutError: the call ran past 1 s" in calls[1]["output"] and "restarted" in calls[1]["output"]
    assert "NameError" in calls[2]["output"] and e.infos[0]["tool_errors"] == 2


def test_stateless_mode_runs_every_call_in_a_fresh_sandbox():
    env = PythonTool(TOK, template="plain", stateful=False)
    ep = env.episode({})
    ep.step("<python>x = 5</python>")
    assert "NameError" in ep.step("<python>print(x)</python>").observation
    stateful = tool().episode({})
    stateful.step("<python>x = 5</python>")
    assert stateful.step("<python>print(x)</python>").observation == "<output>5\n</output>"
    ep.close(), stateful.close()


def test_ten_megabytes_of_output_become_a_marked_cut_observation():
    e = episodes(Scripted([ids("<python>print('y' * 10_000_000)</python>"), ids("<answer>1</answer>")]),
                 tool(output_chars=50), max_new_tokens=200)  # fmt: skip
    out = e.infos[0]["tool_calls"][0]["output"]
    assert out == "y" * 50 + "...[9999951 more characters]" and e.infos[0]["tool_truncated"] == 1
    assert e.infos[0]["observation_tokens"] == len(ids(observation_text(out)))


def test_the_token_budget_counts_observations_and_cuts_one_that_does_not_fit():
    e = episodes(Scripted([ids("<python>print('z' * 40)</python>"), ids("<answer>1</answer>")]), tool(),
                 max_new_tokens=40)  # fmt: skip
    assert e.rollout.lengths.tolist() == [40] and e.rollout.finish_reasons == ["length"]
    assert e.infos[0]["episode_end"] == "length" and len(e.infos[0]["tool_calls"]) == 1
    assert e.loss_mask[0].sum() == len(ids("<python>print('z' * 40)</python>"))


# ------------------------------------------------------------------------------- token-in, token-out; masks
def test_token_in_token_out_keeps_every_sampled_id():
    """The engine writes '<python>' as 8 character tokens: re-tokenizing the text would give the one tag token,
    so a trajectory rebuilt from text would differ. It must hold the sampled ids and the observation's ids."""
    first = [TOK.convert_tokens_to_ids(c) for c in "<python>"] + ids("print(6*7)</python>")
    second = ids("<answer>42</answer>")
    e = episodes(Scripted([first, second]), tool())
    obs = ids("<output>42\n</output>")
    expected = first + obs + second
    text = e.rollout.texts[0]
    assert text == "<python>print(6*7)</python><output>42\n</output><answer>42</answer>"
    assert ids(text) != expected  # the precondition: re-tokenizing would change ids
    assert e.rollout.completion_ids[0].tolist() == expected
    assert e.loss_mask[0].tolist() == [True] * len(first) + [False] * len(obs) + [True] * len(second)
    assert e.rollout.logprobs[0].tolist() == [-0.5] * len(first) + [0.0] * len(obs) + [-0.5] * len(second)


def _two_turn_trajectories(tmp_path):
    """One collector step on the scripted two-turn episode (tool call, then answer), rewards 1/0 by group."""
    first = ids("<python>print(6*7)</python>")
    cfg = load_config(None, [
        "data.template=plain", "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=60",
        "tools.enabled=true", "algorithm.beta=0.0", f"train.output_dir={tmp_path}", "log.progress=false",
    ])  # fmt: skip
    rows = [{"question": "a", "answer": "42"}, {"question": "b", "answer": "41"}]
    trainer = GRPOTrainer(
        cfg,
        model=tiny_model("llama", len(TOK)),
        tokenizer=TOK,
        train_rows=rows,
        reward_funcs=[exact_match_reward],
        engine=Scripted([first, ids("<answer>42</answer>")]),
    )
    traj, metrics = trainer.collector.collect(0)
    return trainer, traj, metrics, len(first)


def test_observation_tokens_get_no_gradient_and_the_loss_is_the_hand_computed_one(tmp_path, monkeypatch):
    """GRPO's loss (seq_mean_token_mean, on-policy ratio 1, beta 0) is -(1/N) sum_i A_i mean_t logp-terms, so
    d loss / d logp[i, t] = -A_i / (N * L_i) on the L_i model tokens of row i and exactly 0 on observations."""
    trainer, traj, _, n_first = _two_turn_trajectories(tmp_path)
    n_obs, n_answer = len(ids("<output>42\n</output>")), len(ids("<answer>42</answer>"))
    assert traj.loss_mask[0].tolist() == [True] * n_first + [False] * n_obs + [True] * n_answer
    assert traj.attention_mask[0].sum() == n_first + n_obs + n_answer
    from thinkrl.train import learner as learner_module

    captured = []

    def keep_grad(*args, **kwargs):
        logp, entropy = real(*args, **kwargs)
        logp.retain_grad()
        captured.append(logp)
        return logp, entropy

    real = learner_module.forward_logprobs
    monkeypatch.setattr(learner_module, "forward_logprobs", keep_grad)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])  # any advantages: the gradient is linear in them
    batch = batch_from_trajectories(traj, adv, TOK.pad_token_id)
    view = type("View", (), {"rewards": traj.rewards, "first_row": 0})
    trainer.learner.update(batch, view, 0)
    (logp,) = captured
    n_model = n_first + n_answer
    expected = torch.zeros_like(logp)
    for i in range(4):
        expected[i, :n_first] = expected[i, n_first + n_obs : n_model + n_obs] = -adv[i] / (4 * n_model)
    assert torch.allclose(logp.grad, expected, atol=1e-7)
    assert bool((logp.grad[:, n_first : n_first + n_obs] == 0).all())  # exactly zero, not small


def test_rewards_receive_the_whole_trajectory_and_the_step_logs_tool_metrics(tmp_path):
    seen = {}

    def spy(prompts, completions, turns, tool_calls, tool_errors, episode_end, **columns):
        seen.update(turns=turns[0], tool_calls=tool_calls[0], tool_errors=tool_errors[0], end=episode_end[0])
        return [1.0] * len(completions)

    first = ids("<python>print(6*7)</python>")
    cfg = load_config(None, ["data.template=plain", "rollout.group_size=2", "rollout.prompts_per_step=2",
                             "tools.enabled=true", "algorithm.beta=0.0", f"train.output_dir={tmp_path}",
                             "log.progress=false", "rollout.max_new_tokens=60"])  # fmt: skip
    trainer = GRPOTrainer(cfg, model=tiny_model("llama", len(TOK)), tokenizer=TOK,
                          train_rows=[{"question": "a", "answer": "42"}], reward_funcs=[in_process(spy)],
                          engine=Scripted([first, ids("<answer>42</answer>")]))  # fmt: skip
    _, metrics = trainer.collector.collect(0)
    assert [t["role"] for t in seen["turns"]] == ["model", "env", "model"]
    assert seen["turns"][1]["text"] == "<output>42\n</output>" and seen["end"] == "stop"
    assert seen["tool_calls"][0]["code"] == "print(6*7)" and seen["tool_errors"] == 0
    assert metrics["tool/calls_per_sample"] == 1.0 and metrics["tool/error_rate"] == 0.0
    assert metrics["tool/turns_mean"] == 2.0 and metrics["tool/observation_tokens_mean"] == len(
        ids("<output>42\n</output>")
    )


# ------------------------------------------------------------------------------------------------- engines
def test_both_drivers_give_the_same_trajectories_at_temperature_0(tool_model):
    """The built-in engine's batched multi-turn decode (rows resume with their KV cache) and the turn-by-turn
    driver any engine uses (vLLM's path) agree token for token, observation tokens included."""
    engine = HFEngine(tool_model, TOK)
    native = episodes(engine, tool(), n=2)
    engine.fast_decode = False  # the model's own forward: the turn-by-turn driver
    turn_by_turn = episodes(engine, tool(), n=2)
    assert native.rollout.texts == turn_by_turn.rollout.texts == [TOOL_MODE] * 2
    assert torch.equal(native.rollout.completion_ids, turn_by_turn.rollout.completion_ids)
    assert torch.equal(native.loss_mask, turn_by_turn.loss_mask)
    assert torch.allclose(native.rollout.logprobs, turn_by_turn.rollout.logprobs, atol=1e-4)


def test_without_calls_the_multi_turn_decode_samples_what_generate_samples():
    engine = HFEngine(tiny_model("llama", len(TOK)), TOK)
    prompt = TOK(QUESTION)["input_ids"]
    p = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=11)
    e = generate_episodes(engine, tool(), [{"question": QUESTION}], [prompt], p, TOK, POOL)
    g = engine.generate([prompt], p)
    assert torch.equal(e.rollout.completion_ids, g.completion_ids) and torch.equal(
        e.rollout.logprobs, g.logprobs
    )


def test_a_row_waiting_on_a_tool_does_not_block_the_others(tool_model):
    """One row calls a tool that takes 1.5 s; the other rows finish their answers meanwhile."""
    times = {}

    class Slow(PythonTool):
        def episode(self, row):
            ep = super().episode(row)
            step = ep.step

            def timed_step(text):
                if call_code(text) is not None:
                    time.sleep(1.5)
                    times.setdefault("tool_done", time.monotonic())
                else:
                    times.setdefault(row["question"], time.monotonic())
                return step(text)

            ep.step = timed_step
            return ep

    engine = HFEngine(tool_model, TOK)
    rows = [{"question": QUESTION}, {"question": "say two"}]
    p = SamplingParams(n=1, temperature=0.0, max_new_tokens=60, seed=0)
    e = generate_episodes(engine, Slow(TOK, template="plain"), rows, [TOK(r["question"])["input_ids"] for r in rows],
                          p, TOK, POOL)  # fmt: skip
    assert e.rollout.texts[0] == TOOL_MODE and e.rollout.texts[1].startswith("<answer>two")
    assert times["say two"] < times["tool_done"]


def test_the_calls_of_a_batch_run_in_parallel():
    running, peak, lock = [0], [0], threading.Lock()

    class Counting(PythonTool):
        def episode(self, row):
            ep = super().episode(row)
            step = ep.step

            def counted(text):
                with lock:
                    running[0] += 1
                    peak[0] = max(peak[0], running[0])
                try:
                    return step(text)
                finally:
                    with lock:
                        running[0] -= 1

            ep.step = counted
            return ep

    e = episodes(Scripted([ids("<python>import time; time.sleep(0.5)</python>"), ids("<answer>1</answer>")]),
                 Counting(TOK, template="plain"), n=4)  # fmt: skip
    assert peak[0] == 4 and e.tool_seconds < 2.0  # four 0.5 s calls at once, not one after another


# -------------------------------------------------------------------------------- config, eval and learning
def test_config_builds_the_environment_and_rejects_bad_limits():
    assert isinstance(build_environment(load_config(None), TOK), SingleTurn)
    env = build_environment(load_config(None, ["tools.enabled=true", "tools.max_calls=2"]), TOK)
    assert isinstance(env, PythonTool) and env.limits.max_calls == 2 and env.stop_strings == ("</python>",)
    with pytest.raises(Exception, match="tools.call_timeout_s=0.0 must be > 0"):
        load_config(None, ["tools.call_timeout_s=0"])


def test_evaluate_with_tools_reports_tool_use(tool_model, tmp_path):
    rows = [{"id": "a", "question": QUESTION, "answer": "1517"}]
    result = evaluate(tool_model, TOK, rows, k=1, temperature=0.0, max_new_tokens=80, template="plain",
                      stop_strings=["</answer>"], env=tool(), out_dir=tmp_path, progress=False)  # fmt: skip
    assert result.metrics["pass@1"] == 1.0 and result.metrics["tool_calls_mean"] == 1.0
    assert result.samples[0]["tool_calls"] == 1 and result.samples[0]["turns"] == 2
    plain = evaluate(tool_model, TOK, rows, k=1, temperature=0.0, max_new_tokens=80, template="plain",
                     stop_strings=["</answer>"], progress=False)  # fmt: skip
    assert "tool_calls" not in plain.samples[0] and "tool_calls_mean" not in plain.metrics
    with pytest.raises(
        Exception, match="environment"
    ):  # a folder of tool samples refuses a run without tools
        evaluate(tool_model, TOK, rows, k=1, temperature=0.0, max_new_tokens=80, template="plain",
                 stop_strings=["</answer>"], out_dir=tmp_path, progress=False)  # fmt: skip


@pytest.mark.slow
def test_grpo_with_the_tool_learns_to_call_it(tmp_path):
    """A model with both modes at even odds (tool call vs a wrong direct answer): GRPO with the tool and an exact
    match reward makes it call the tool (rule rewards only; the tool is what makes the answer right)."""
    model = memorize([(QUESTION, TOOL_MODE), (QUESTION, DIRECT_MODE)], seed=1)
    cfg = load_config(None, [
        "data.template=plain", "rollout.group_size=8", "rollout.prompts_per_step=2", "rollout.max_new_tokens=60",
        "rollout.stop_strings=['</answer>']", "tools.enabled=true", "algorithm.beta=0.0", "train.lr=3e-3",
        "train.steps=6", f"train.output_dir={tmp_path}", "log.progress=false",
    ])  # fmt: skip
    before = params(model)
    trainer = GRPOTrainer(cfg, model=model, tokenizer=TOK, train_rows=[{"question": QUESTION, "answer": "1517"}],
                          reward_funcs=[exact_match_reward])  # fmt: skip
    history = [trainer.train_step() for _ in range(6)]
    tool_use = [m["tool/samples_with_calls"] for m in history]
    reward = [m["reward/mean"] for m in history]
    assert tool_use[0] <= 0.6 and sum(tool_use[-3:]) / 3 >= 0.85, tool_use
    assert sum(reward[-3:]) / 3 > reward[0] + 0.15, reward
    assert all(0.0 <= m["tool/error_rate"] <= 1.0 and m["time/tools"] > 0 for m in history)
    assert any(not torch.equal(before[k], v) for k, v in params(trainer.model).items())


def test_the_docs_example_environment_runs_as_a_multi_turn_environment():
    """docs/tools.md's 20-line environment: a JSON tool call runs, a malformed one gets an error observation."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "tools.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "class JsonPython" in b]
    names: dict = {}
    exec(compile(code, "docs/tools.md", "exec"), names)
    env = names["JsonPython"](TOK)
    env.prompt = SingleTurn(TOK, "plain")  # the test tokenizer has no chat template
    call = '<tool_call>{"code": "print(6 * 7)"}</tool_call>'
    turn = env.step({}, call)
    assert turn == names["Turn"](done=False, observation="<tool_response>42\n</tool_response>")
    assert "error: write" in env.step({}, "<tool_call>{oops</tool_call>").observation
    assert env.step({}, "<answer>42</answer>", history=["a", "b"]).info == {"tool_calls": 1}
    e = episodes(
        Scripted([ids(call), ids("<answer>42</answer>")], "</tool_response>"), env, max_new_tokens=120
    )
    assert e.rollout.texts[0] == call + "<tool_response>42\n</tool_response><answer>42</answer>"


def test_thinkrl_eval_flags_build_the_tool_environment():
    import argparse

    from thinkrl.config import ConfigError
    from thinkrl.eval import add_eval_arguments
    from thinkrl.eval.cli import environment_from_args

    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    args = parser.parse_args(["m", "--data", "gsm8k", "--template", "r1_tools", "--tools", "--tool-max-calls", "2",
                              "--tools-stateless"])  # fmt: skip
    env = environment_from_args(args, TOK)
    assert isinstance(env, PythonTool) and env.limits.max_calls == 2 and not env.stateful
    assert (
        env.template == "r1_tools"
        and environment_from_args(parser.parse_args(["m", "--data", "x"]), TOK) is None
    )
    with pytest.raises(ConfigError, match="tools.call_timeout_s=0.0 must be > 0"):
        environment_from_args(parser.parse_args(["m", "--data", "x", "--tools", "--tool-timeout", "0"]), TOK)
