"""Reward models as reward functions: scores equal a hand-built forward, batching, what is scored, routing,
config kwargs, error messages, and one GRPO run with an RM reward."""

from __future__ import annotations

import doctest
import math
import pickle

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from thinkrl.config import ConfigError, load_config
from thinkrl.rewards import build_reward, build_reward_funcs, compute_rewards, get_reward, reward_model
from thinkrl.rewards.reward_model import RewardModelReward
from thinkrl.testing import DEFAULT_CHARS, char_tokenizer
from thinkrl.train import GRPOTrainer
from thinkrl.train.checks import check_config

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
COMPLETIONS = [
    "<think>1+1 is 2</think> <answer>2</answer>",
    "<think>hmm, 1+1 could be 3 or more</think> <answer>3</answer>",
    "<think>i am not sure",
    "just 2",
    "<think>short</think> it is 2.",
]
PROMPTS = ["what is 1+1?"] * len(COMPLETIONS)
CHAT = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"


def _save_rm(path, *, num_labels=1, causal=False, chat=False, gpt2=False, pad=0):
    """A tiny Llama (or GPT-2: absolute positions) reward model and char tokenizer, saved to ``path``."""
    tok = char_tokenizer(DEFAULT_CHARS + "\n", extra_tokens=TAGS)
    if chat:
        tok.chat_template = CHAT
    ids = dict(num_labels=num_labels, pad_token_id=pad, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    if gpt2:
        model = GPT2ForSequenceClassification(
            GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, **ids)
        )
    else:
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, **ids,
        )  # fmt: skip
        model = (LlamaForCausalLM if causal else LlamaForSequenceClassification)(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model.eval(), tok


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rm")
    model, tok = _save_rm(path)
    return str(path), model, tok


def _direct(model, tok, text: str, label: int = 0) -> float:
    """The model's score for one text, unpadded, batch of one: what the reward must reproduce."""
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, label].item()


def test_doctests():
    res = doctest.testmod(reward_model)
    assert res.attempted > 0 and res.failed == 0


def test_scores_equal_a_direct_forward_of_the_joined_text(rm_dir):
    path, model, tok = rm_dir
    rm = RewardModelReward(path, score_on="response", batch_size=3)
    scores = rm(PROMPTS, COMPLETIONS)
    expected = [_direct(model, tok, f"what is 1+1?\n\n{c.strip()}") for c in COMPLETIONS]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) == len(scores)  # the rows really differ


@pytest.mark.parametrize("kind", ["llama", "gpt2", "no_pad_in_config"])
def test_batching_does_not_change_scores(rm_dir, tmp_path, kind):
    path = rm_dir[0]
    if kind != "llama":  # gpt2: absolute position ids, padding on the wrong side would shift them
        _save_rm(tmp_path, gpt2=kind == "gpt2", pad=None if kind == "no_pad_in_config" else 0)
        path = str(tmp_path)
    one = RewardModelReward(path, batch_size=1, score_on="response")(PROMPTS, COMPLETIONS)
    four = RewardModelReward(path, batch_size=4, score_on="response")(PROMPTS, COMPLETIONS)
    assert four == pytest.approx(one, abs=1e-5)


def test_answer_and_response_feed_different_text(rm_dir):
    path, model, tok = rm_dir
    answer = RewardModelReward(path, score_on="answer")
    response = RewardModelReward(path, score_on="response")
    assert answer.texts(PROMPTS, COMPLETIONS) == [
        "what is 1+1?\n\n2",
        "what is 1+1?\n\n3",
        "what is 1+1?\n\n",  # still thinking: no answer given
        "what is 1+1?\n\njust 2",  # no tags: the whole text is the answer
        "what is 1+1?\n\nit is 2.",
    ]
    assert response.texts(PROMPTS[:1], COMPLETIONS[:1]) == ["what is 1+1?\n\n" + COMPLETIONS[0]]
    a, r = answer(PROMPTS[:1], COMPLETIONS[:1])[0], response(PROMPTS[:1], COMPLETIONS[:1])[0]
    assert a == pytest.approx(_direct(model, tok, "what is 1+1?\n\n2"), abs=1e-5)
    assert abs(a - r) > 1e-4
    # a prompt that pre-fills <think>: the completion's first line is reasoning
    assert answer.texts(["q <think>"], ["so 2</think> 2"]) == ["q <think>\n\n2"]


def test_chat_template_and_prompt_key(tmp_path):
    model, tok = _save_rm(tmp_path, chat=True)
    rm = RewardModelReward(str(tmp_path), prompt_key="question")  # template auto -> chat
    assert rm.texts(["q"], ["<think>x</think> <answer>2</answer>"]) == ["<user>q\n<assistant>2\n"]
    rows = ["long template text with 1+1 inside", "other"]
    scores = rm(rows, ["<answer>2</answer>", "<answer>3</answer>"], question=["1+1", "1+2"])
    assert scores[0] == pytest.approx(_direct(model, tok, "<user>1+1\n<assistant>2\n"), abs=1e-5)
    assert RewardModelReward(str(tmp_path), template="plain").texts(["q"], ["2"]) == ["q\n\n2"]


def test_truncation_keeps_the_end_of_the_response(rm_dir):
    path, model, tok = rm_dir
    rm = RewardModelReward(path, score_on="response", max_length=12)
    text = f"what is 1+1?\n\n{COMPLETIONS[1]}"
    ids = tok(text)["input_ids"]
    assert len(ids) > 12
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids[-12:]])).logits[0, 0].item()
    assert rm(PROMPTS[:1], COMPLETIONS[1:2])[0] == pytest.approx(expected, abs=1e-5)
    assert rm.stats == {"rows_scored": 1, "rows_truncated": 1}


def test_normalize_and_multi_label_heads(rm_dir, tmp_path):
    path, model, tok = rm_dir
    raw = RewardModelReward(path)(PROMPTS[:2], COMPLETIONS[:2])
    std = RewardModelReward(path, normalize="standard", mean=1.0, std=2.0)(PROMPTS[:2], COMPLETIONS[:2])
    sig = RewardModelReward(path, normalize="sigmoid", mean=1.0, std=2.0)(PROMPTS[:2], COMPLETIONS[:2])
    assert std == pytest.approx([(x - 1.0) / 2.0 for x in raw], abs=1e-6)
    assert sig == pytest.approx([1 / (1 + math.exp(-z)) for z in std], abs=1e-6)

    multi, mtok = _save_rm(tmp_path, num_labels=3)
    with pytest.raises(ValueError, match=r"num_labels=3; set kwargs.label"):
        RewardModelReward(str(tmp_path))
    with pytest.raises(ValueError, match="label=3 is out of range"):
        RewardModelReward(str(tmp_path), label=3)
    got = RewardModelReward(str(tmp_path), label=2)(["q"], ["<answer>2</answer>"])[0]
    assert got == pytest.approx(_direct(multi, mtok, "q\n\n2", label=2), abs=1e-5)


def test_route_scores_only_reward_model_rows_and_mixes_with_routed(rm_dir):
    path, model, tok = rm_dir
    rm = RewardModelReward(path, route="reward_model")
    completions = ["<answer>2</answer>", "<answer>sure</answer>", "<answer>2</answer>"]
    cols = {"verifier": ["math", "reward_model", None], "answer": ["2", None, "2"]}
    assert rm(["q"] * 3, completions, **cols)[0::2] == [None, None]
    out = compute_rewards([get_reward("routed"), rm], [1.0, 0.5], ["q"] * 3, completions, **cols)
    rm_score = _direct(model, tok, "q\n\nsure")
    assert out.total.tolist() == pytest.approx([1.0, 0.5 * rm_score, 0.0], abs=1e-5)
    assert math.isnan(out.per_function["routed"][1]) and math.isnan(out.per_function["reward_model"][0])
    with pytest.raises(ValueError, match="needs a column 'verifier'"):
        rm(["q"], ["a"])
    with pytest.raises(ValueError, match="route='math'; use 'reward_model'"):
        RewardModelReward(path, route="math")


def test_config_kwargs_build_the_reward_once(rm_dir):
    path, _, _ = rm_dir
    cfg = load_config(
        None,
        [
            f"rewards=[{{name: reward_model, weight: 0.5, kwargs: {{path: '{path}', score_on: response}}}},"
            f"{{name: reward_model, kwargs: {{path: '{path}', name: helpful}}}}, {{name: format}}]"
        ],
    )
    assert cfg.rewards[0].kwargs == {"path": path, "score_on": "response"} and cfg.rewards[2].kwargs == {}
    (harmless, helpful, fmt), weights = build_reward_funcs(cfg.rewards)
    assert weights == [0.5, 1.0, 1.0] and fmt is get_reward("format")
    assert (harmless.__name__, helpful.__name__) == ("reward_model", "helpful")
    assert harmless.score_on == "response" and helpful.score_on == "answer"
    assert harmless.model is helpful.model  # one copy per process


def test_errors_name_the_problem_and_the_fix(rm_dir, tmp_path):
    path = rm_dir[0]
    with pytest.raises(
        ConfigError, match=r"rewards\[0\]: reward 'reward_model': unknown kwargs colour; valid"
    ):
        check_config(
            load_config(None, [f"rewards=[{{name: reward_model, kwargs: {{path: '{path}', colour: red}}}}]"])
        )
    with pytest.raises(ConfigError, match="'format' takes no kwargs \\(got: path\\)"):
        check_config(load_config(None, ["rewards=[{name: format, kwargs: {path: x}}]"]))
    with pytest.raises(ConfigError, match="needs kwargs path"):
        check_config(load_config(None, ["rewards=[{name: reward_model}]"]))
    with pytest.raises(ConfigError, match="unknown reward 'nope'; valid names: .*reward_model"):
        check_config(load_config(None, ["rewards=[{name: nope}]"]))
    cfg = load_config(None, [f"rewards=[{{name: reward_model, kwargs: {{path: '{tmp_path / 'missing'}'}}}}]"])
    with pytest.raises(ConfigError, match=r"rewards\[0\] \(reward_model\): path=.*missing' does not exist"):
        build_reward_funcs(cfg.rewards)
    cfg = load_config(None, [f"rewards=[{{name: reward_model, kwargs: {{path: '{path}'}}}}, {{name: reward_model, "
                             f"kwargs: {{path: '{path}'}}}}]"])  # fmt: skip
    with pytest.raises(ConfigError, match="reward_model listed more than once.*distinct kwargs.name"):
        build_reward_funcs(cfg.rewards)
    _save_rm(tmp_path / "lm", causal=True)
    with pytest.raises(ValueError, match="no trained classification head \\(missing weights: score.weight"):
        build_reward("reward_model", {"path": str(tmp_path / "lm")})
    with pytest.raises(ValueError, match="needs kwargs"):
        get_reward("reward_model")
    with pytest.raises(ValueError, match="template='chat' but the tokenizer"):
        RewardModelReward(path, template="chat")
    with pytest.raises(TypeError, match="cannot be pickled into worker processes"):
        pickle.dumps(RewardModelReward(path))


def test_grpo_trains_on_a_reward_model_reward(rm_dir, tmp_path):
    """Two GRPO steps whose only reward is the RM, built from the config: it plugs into the trainer."""
    path = rm_dir[0]
    cfg = load_config(
        None,
        [
            "data.template='{question}='", "rollout.group_size=4", "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=4", "rollout.stop_strings=[]", "train.lr=1e-2", "train.steps=2",
            f"train.output_dir={tmp_path / 'run'}", "log.progress=false", "algorithm.beta=0.0",
            f"rewards=[{{name: reward_model, kwargs: {{path: '{path}', score_on: response}}}}]",
        ],
    )  # fmt: skip
    from thinkrl.testing import tiny_model

    tok = char_tokenizer("0123456789=")
    rows = [{"question": str(i), "answer": str(i)} for i in range(4)]
    trainer = GRPOTrainer(cfg, model=tiny_model("llama", len(tok)), tokenizer=tok, train_rows=rows)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.train()
    assert [h["step"] for h in history] == [1, 2]
    assert all(math.isfinite(h["reward/reward_model"]) for h in history)
    assert history[0]["reward/std"] > 0  # the RM separates completions, so there is a gradient
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
