"""The tools demo's task, corpus and base model: both modes present, the R1-Zero rule, held-out problems
never in the corpus, and observations in the corpus exactly as the environment writes them."""

from __future__ import annotations

import json
import re
import tempfile

import pytest
from transformers import AutoTokenizer

from thinkrl.config import ToolsConfig
from thinkrl.data.multiplication import heldout_pairs, split_rows
from thinkrl.data.templates import R1_TOOLS_TEMPLATE
from thinkrl.demo.corpus import quoted_instruction_tails
from thinkrl.demo.tokenizer import TOOL_TAGS, build_tokenizer
from thinkrl.demo.tools_corpus import TOOL_SENTENCES, TOOL_SHARE, TOOLS_PRETRAIN, iter_tool_documents
from thinkrl.demo.tools_demo import TOOLS_BASE_PATH, tool_mode_mix, tools_config
from thinkrl.rollout.python_tool import PythonTool

N_DOCS = 10_000
PREFIX = R1_TOOLS_TEMPLATE.split("{question}")[0]
ALLOWED_THINK = {"", "reasoning process here"}


@pytest.fixture(scope="module")
def docs() -> list[str]:
    stream = iter_tool_documents(seed=0)
    return [next(stream) for _ in range(N_DOCS)]


def test_the_r1_zero_rule_holds_for_the_tools_corpus(docs):
    """No document holds the template's instruction; a quoted sentence of it is never followed by a reasoning
    block or a tool call (chat logs with tool calls exist, never under the instruction)."""
    assert all(PREFIX not in d for d in docs)
    tails = quoted_instruction_tails(docs, TOOL_SENTENCES)
    for after in tails:
        thinks = [m.group(1).strip() for m in re.finditer(r"<think>(.*?)(?:</think>|$)", after, re.S)]
        assert set(thinks) <= ALLOWED_THINK and "<python>print(" not in after, after
    assert tails


def test_both_modes_are_in_the_chat_logs_and_heldout_problems_never_appear(docs):
    text = "\n".join(docs)
    replies = re.findall(r"User: what is (\d+) times (\d+)\. Assistant: (<think> <python>|<answer>|\d)", text)
    tool_share = sum(r[2] == "<think> <python>" for r in replies) / len(replies)
    assert len(replies) > 2000 and abs(tool_share - TOOL_SHARE) < 0.03
    seen = {(int(a), int(b)) for a, b in re.findall(r"what is (\d+) times (\d+)", text)}
    seen |= {(int(a), int(b)) for a, b in re.findall(r"print\((\d{3}) \* (\d{3})\)", text)}
    assert len(seen) > 3000 and not seen & heldout_pairs()
    held = {r["question"] for r in split_rows()[1]}
    assert not held & {r["question"] for r in split_rows()[0]} and len(held) == 500


def test_corpus_observations_are_what_the_environment_appends(docs):
    """Pretraining shows exactly the observations RL appends: run corpus programs in the sandbox."""
    cells = re.findall(r"<python>(.*?)</python>(<output>.*?</output>)", "\n".join(docs[:300]), re.S)
    limits = ToolsConfig(enabled=True, max_calls=10, max_turns=20)
    env = PythonTool(build_tokenizer(tool_tags=True), template="plain", limits=limits)
    episode = env.episode({})
    try:
        for code, observation in cells[:6]:
            assert episode.step(f"<python>{code}</python>").observation == observation
    finally:
        episode.close()
    assert len(cells) >= 6


def test_tools_tokenizer_and_the_shipped_base():
    tok = build_tokenizer(tool_tags=True)
    assert len(tok) == 108 and tok.convert_tokens_to_ids(TOOL_TAGS) == [104, 105, 106, 107]
    assert len(build_tokenizer()) == 104  # the addition demo's vocabulary is unchanged
    shipped = AutoTokenizer.from_pretrained(TOOLS_BASE_PATH)
    assert shipped.get_vocab() == tok.get_vocab()
    info = json.loads((TOOLS_BASE_PATH / "pretrain_info.json").read_text())
    assert {k: info[k] for k in TOOLS_PRETRAIN} == TOOLS_PRETRAIN and info["corpus"] == "tools"
    prompt = tok(R1_TOOLS_TEMPLATE.replace("{question}", "what is 123 times 456"))["input_ids"]
    assert len(prompt) + tools_config(tempfile.mkdtemp()).rollout.max_new_tokens <= TOOLS_PRETRAIN["seq_len"]


def test_the_text_only_arm_is_the_same_run_without_the_tool():
    with_tool, text_only = tools_config("/tmp/x"), tools_config("/tmp/x", text_only=True)
    assert with_tool.tools.enabled and not text_only.tools.enabled
    assert with_tool.data.template == text_only.data.template == "r1_tools"
    assert with_tool.train == text_only.train and with_tool.rollout == text_only.rollout
    mix = tool_mode_mix(
        [{"completion": "<python>1</python><output>2</output>", "extracted": "2", "correct": False}]
    )
    assert mix["mode/tool"] == 1.0  # without the tool a written call still counts as the tool mode


@pytest.mark.slow
def test_the_tools_demo_runs_both_arms_and_a_rerun_moves_the_first_aside(tmp_path):
    """Toy size (1 step, 4 held-out problems): both arms' numbers in one summary, the tool used in the tool arm
    only, and a second demo into the same folder keeps the first one as OUT.old-1 (nothing deleted)."""
    from thinkrl.demo.tools_demo import run_tools_demo

    small = ["train.steps=1", "eval.every_steps=0", "eval.k=2", "log.progress=false",
             "rollout.prompts_per_step=2", "rollout.group_size=2"]  # fmt: skip
    out = tmp_path / "demo-tools"
    first = run_tools_demo(out, overrides=small, with_text_arm=True, eval_problems=4)
    evals = first["evals"]
    assert set(evals) == {
        "base (with tools)",
        "after RL without tools (text-only arm)",
        "after RL with tools",
    }
    assert evals["after RL without tools (text-only arm)"]["tool_calls_mean"] == 0
    assert evals["base (with tools)"]["tool_calls_mean"] > 0  # the shipped base calls the tool at times
    run_tools_demo(out, overrides=small, eval_problems=4)
    assert (tmp_path / "demo-tools.old-1" / "text-only" / "summary.json").exists()
    assert not (out / "text-only").exists() and (out / "summary.json").exists()
