"""The pretraining corpus of the tools demo's base model: two modes for "what is 123 times 456".

Documents of a few kinds, mixed by ``TOOLS_CORPUS_MIX`` (docs/tools.md says why):

- ``chat``: chat logs "User: what is 123 times 456. Assistant: ..."; ``TOOL_SHARE`` of the replies use the
  tool (``<think> <python>print(123 * 456)</python><output>56088\\n</output> </think> <answer>56088</answer>``,
  the mode RL selects), the rest answer at once (the direct mode), most of them wrong, as a person guessing a
  product is.
- ``notebook``: notebook-like cells, ``<python>CODE</python><output>PRINTED</output>``, with sums, products and
  variables: what a program prints is what follows it.
- ``worksheet``: tool-using solutions in worksheets ("Problem 2: what is ... <think> <python>...").
- ``facts``: small multiplication facts ("7 times 8 is 56."), as found in tables.
- ``prose``: web sentences, single sentences of the R1-Zero instruction and of the tool sentence (quoted,
  never followed by a dialogue), so the RL prompt is made of familiar words.
- ``tags``: mentions of the tags themselves.

The R1-Zero rule holds as in the addition demo (``tests/test_tools_demo.py``): no document holds the template,
no quoted instruction sentence is followed by a reasoning block, and held-out problems never appear. Every
``<output>`` block is written by :func:`thinkrl.rollout.python_tool.observation_text`, the environment's own
formatter, so pretraining shows exactly the observations RL will append.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from thinkrl.data.multiplication import HIGH, LOW, heldout_pairs, question_text, tool_code
from thinkrl.data.templates import R1_TOOLS_TEMPLATE
from thinkrl.demo.corpus import _PROSE, _TAG_LINES, _WORKSHEET_PREFIXES, template_sentences
from thinkrl.rollout.python_tool import observation_text

TOOLS_CORPUS_MIX: dict[str, float] = {
    "chat": 0.45,
    "notebook": 0.17,
    "worksheet": 0.08,
    "facts": 0.1,
    "prose": 0.14,
    "tags": 0.06,
}
"""Document kind -> share of documents (key order fixes the seeded stream)."""
TOOLS_PRETRAIN = {"steps": 800, "batch_size": 6, "seq_len": 768}
"""The shipped tools base: ``pretrain(out, corpus="tools", seed=0, threads=1, **TOOLS_PRETRAIN)``. Rows of 768
tokens because the RL prompt is ~500 tokens (the addition demo's 512 would leave the answer at untrained
positions)."""
TOOL_SHARE = 0.3
"""Share of chat replies that call the tool: the mode RL can select."""
DIRECT_RIGHT_SHARE = 0.2
"""Share of direct chat answers that are right (the rest are guesses of the right size)."""

TOOL_SENTENCES = template_sentences(R1_TOOLS_TEMPLATE)
"""The instruction's sentences, quoted one at a time in prose (never the whole template, never a dialogue)."""
_TOOL_TAG_LINES = [
    "code goes between <python> and </python>.",
    "the printed result appears between <output> and </output>.",
    "a cell like <python>print(2 + 2)</python> shows 4 below it.",
    "the notebook shows each program and then its <output> block.",
]


def tool_reply(a: int, b: int) -> str:
    """The tool-using reply to "what is a times b", with the observation the environment would append.

    >>> tool_reply(12, 34)
    '<think> <python>print(12 * 34)</python><output>408\\n</output> </think> <answer>408</answer>'
    """
    return (
        f"<think> <python>{tool_code(a, b)}</python>{observation_text(f'{a * b}' + chr(10))} </think> "
        f"<answer>{a * b}</answer>"
    )


def _pair(rng: random.Random, held: set[tuple[int, int]]) -> tuple[int, int]:
    while True:
        pair = (rng.randint(LOW, HIGH), rng.randint(LOW, HIGH))
        if pair not in held:
            return pair


def _guess(rng: random.Random, product: int) -> int:
    """A wrong product of the right size: a few digits changed."""
    digits = list(str(product))
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(1, len(digits))  # keep the leading digit: guesses of the right size
        digits[i] = str(rng.randrange(10))
    guess = int("".join(digits))
    return guess if guess != product else product + rng.choice([-10, 10, 100])


def _chat(rng: random.Random, held: set[tuple[int, int]]) -> str:
    turns = []
    for _ in range(rng.randint(1, 3)):
        a, b = _pair(rng, held)
        if rng.random() < TOOL_SHARE:
            reply = tool_reply(a, b)
        else:
            ans = a * b if rng.random() < DIRECT_RIGHT_SHARE else _guess(rng, a * b)
            reply = f"<answer>{ans}</answer>" if rng.random() < 0.5 else f"{ans}."
        turns.append(f"User: {question_text(a, b)}. Assistant: {reply}")
    return "\n".join(turns)


def _program(rng: random.Random) -> tuple[str, str]:
    """A small program and what it prints."""
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    kind = rng.randrange(5)
    if kind == 0:
        return f"print({a} * {b})", f"{a * b}\n"
    if kind == 1:
        return f"print({a} + {b})", f"{a + b}\n"
    if kind == 2:
        return f"x = {a}\nprint(x * {b})", f"{a * b}\n"
    if kind == 3:
        return f"print({a} - {b})", f"{a - b}\n"
    return f"print({a}, {b})", f"{a} {b}\n"


def _notebook(rng: random.Random) -> str:
    cells = []
    for _ in range(rng.randint(1, 4)):
        code, printed = _program(rng)
        cells.append(f"<python>{code}</python>{observation_text(printed)}")
    return rng.choice([" ", "\n"]).join(cells)


def _worksheet(rng: random.Random, held: set[tuple[int, int]]) -> str:
    docs = []
    for i in range(rng.randint(1, 3)):
        a, b = _pair(rng, held)
        prefix = rng.choice(_WORKSHEET_PREFIXES).format(i=i + 1)
        docs.append(f"{prefix}{question_text(a, b)}. {tool_reply(a, b)}")
    return "\n".join(docs)


def _facts(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(4, 10)):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        lines.append(f"{a} times {b} is {a * b}." if rng.random() < 0.75 else f"{a} * {b} = {a * b}")
    return rng.choice([" ", "\n"]).join(lines)


def _prose(rng: random.Random) -> str:
    pool = _PROSE + TOOL_SENTENCES
    return " ".join(rng.choice(pool) for _ in range(rng.randint(2, 6)))


def _tags(rng: random.Random) -> str:
    return " ".join(rng.choice(_TAG_LINES + _TOOL_TAG_LINES + _PROSE) for _ in range(rng.randint(1, 3)))


def iter_tool_documents(
    seed: int, mix: dict[str, float] | None = None, heldout_seed: int = 0
) -> Iterator[str]:
    """An endless, seeded stream of the tools corpus (plain text, no special tokens).

    >>> docs = iter_tool_documents(seed=0)
    >>> all(isinstance(next(docs), str) for _ in range(100))
    True
    """
    mix = mix or TOOLS_CORPUS_MIX
    rng = random.Random(seed)
    held = heldout_pairs(seed=heldout_seed)
    makers = {
        "chat": lambda: _chat(rng, held),
        "notebook": lambda: _notebook(rng),
        "worksheet": lambda: _worksheet(rng, held),
        "facts": lambda: _facts(rng),
        "prose": lambda: _prose(rng),
        "tags": lambda: _tags(rng),
    }
    unknown = set(mix) - set(makers)
    if unknown:
        raise ValueError(
            f"unknown tools-corpus document kinds {sorted(unknown)}; valid kinds: {sorted(makers)}"
        )
    kinds, weights = list(mix), [mix[k] for k in mix]
    while True:
        yield makers[rng.choices(kinds, weights)[0]]()
