"""What the tool tests share: a character tokenizer with the tool's tags, the toy question and its two modes, a
model that memorised given completions, and a scripted engine."""

from __future__ import annotations

import string
from concurrent.futures import ThreadPoolExecutor

import torch

from thinkrl.config import ToolsConfig
from thinkrl.rollout import Rollout, SamplingParams
from thinkrl.rollout.episodes import generate_episodes
from thinkrl.rollout.python_tool import PythonTool
from thinkrl.testing import char_tokenizer, tiny_model

TAGS = ("<python>", "</python>", "<output>", "</output>", "<answer>", "</answer>")
TOK = char_tokenizer("".join(c for c in string.printable if c not in "\t\r\x0b\x0c"), extra_tokens=TAGS)
QUESTION = "what is 37*41?"
TOOL_MODE = "<python>print(37*41)</python><output>1517\n</output><answer>1517</answer>"
DIRECT_MODE = "<answer>1500</answer>"
POOL = ThreadPoolExecutor(4)


def ids(text: str) -> list[int]:
    return TOK(text, add_special_tokens=False)["input_ids"]


def memorize(pairs: list[tuple[str, str]], steps: int = 120, seed: int = 0, **size) -> torch.nn.Module:
    """A tiny Llama (or ``size``: ``tiny_model``'s arch / hidden / heads) that has learned ``pairs`` (prompt,
    completion): repeated pairs set the modes' odds."""
    size = {"arch": "llama", **size}
    model = tiny_model(size.pop("arch"), len(TOK), seed=seed, **size)
    seqs = [(TOK(p)["input_ids"], ids(c) + [TOK.eos_token_id]) for p, c in pairs]
    width = max(len(p) + len(c) for p, c in seqs)
    x = torch.zeros(len(seqs), width, dtype=torch.long)
    labels, attn = torch.full_like(x, -100), torch.zeros_like(x)
    for i, (p, c) in enumerate(seqs):
        x[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        attn[i, : len(p) + len(c)] = 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=x, attention_mask=attn, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


class Scripted:
    """A test engine: each row's k-th turn is ``turns[k]`` (token ids), whatever the model would say; the turn
    number is the number of observations already in the context."""

    def __init__(self, turns: list[list[int]], observation_end: str = "</output>"):
        self.turns, self.end = turns, ids(observation_end)

    def sync_weights(self) -> None:
        pass

    def _observations(self, context: list[int]) -> int:
        return _count(context, self.end)

    def generate(self, prompt_ids, params):
        rows = [p for p in prompt_ids for _ in range(params.n)]
        outs = [
            self.turns[min(self._observations(p), len(self.turns) - 1)][: params.max_new_tokens] for p in rows
        ]
        width = max(map(len, outs))
        comp = torch.tensor([o + [0] * (width - len(o)) for o in outs])
        mask = torch.arange(width) < torch.tensor([len(o) for o in outs]).unsqueeze(1)
        return Rollout(
            prompt_ids=prompt_ids, group_ids=torch.arange(len(prompt_ids)).repeat_interleave(params.n),
            completion_ids=comp, completion_mask=mask, logprobs=-0.5 * mask.float(),
            finish_reasons=["stop" if len(o) < params.max_new_tokens else "length" for o in outs],
            texts=TOK.batch_decode(outs),
        )  # fmt: skip


def _count(seq: list[int], sub: list[int]) -> int:
    return sum(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def episodes(engine, env, max_new_tokens=80, n=1, temperature=0.0, question=QUESTION):
    rows = [{"question": question, "answer": "1517"}]
    p = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=3)
    return generate_episodes(engine, env, rows, [TOK(question)["input_ids"]], p, TOK, POOL)


def tool(**limits) -> PythonTool:
    return PythonTool(TOK, template="plain", limits=ToolsConfig(enabled=True, **limits))
