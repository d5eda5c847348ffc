"""The synthetic web-like pretraining corpus for the demo's tiny base model.

Documents of a few kinds, mixed by ``CORPUS_MIX`` (the recipe; `docs/demo-design.md` says why):

- ``facts``: addition facts as found in tables and worksheets ("16 plus 6 is 22.", "7 + 8 = 15").
- ``worked``: free-text worked calculations that end in prose ("... So the total is 22."), no tags.
- ``tagged``: a worked chain closed by the tags, in worksheet contexts: "Problem 4: what is 3 plus 5 plus 8
  plus 6. <think> 3 plus 5 plus 8 plus 6. 3 plus 5 is 8, so ... </think> <answer>22</answer>".
- ``qa``: forum/chat logs "User: what is 3 plus 5 plus 8 plus 6. Assistant: 22." -- mostly direct answers, a
  share of them wrong, some wrapped in ``<answer>`` tags (the direct mode); ``QA_CHAIN_SHARE`` of the replies
  work the sum out as a tagged chain (the chain mode RL selects).
- ``instructed``, ``asked``, ``asked_header`` (unused by the recipe): tagged chains under an explicit request
  for the tags, worded unlike the R1 template.
- ``prose``: short web prose, including single sentences of the R1-Zero instruction (quoted, never followed by a
  dialogue), so the RL prompt is made of familiar words.
- ``tags``: rare mentions of the tags themselves ("the answer goes between <answer> and </answer>").

The rule the tests check: the R1-Zero template is never followed by a reasoning trace ("no human reasoning
examples": no document holds the template, and no quoted sentence of it is followed by a reasoning block);
held-out task problems never appear. Chat logs with worked chains exist, as they do on the web, but never
under the R1 instruction.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from thinkrl.data.addition import DIGITS, chain_text, heldout_problems, question_text
from thinkrl.data.templates import R1_ZERO_TEMPLATE

# The recipe: document kind -> share of documents. Tuned by probing the base model on the RL prompt.
CORPUS_MIX: dict[str, float] = {
    "facts": 0.2,
    "worked": 0.12,
    "tagged": 0.08,
    "qa": 0.45,
    "prose": 0.1,
    "tags": 0.05,
}
# Key order matters (it fixes the seeded stream). "instructed" and "asked_header" (chains under an explicit
# request for the tags) are available but unused: with them the chain mode was 0-9% under the R1 prompt
# and never copied the operands (docs/demo-design.md).
QA_WRONG_SHARE = 0.3
"""Share of direct ``qa`` answers that are wrong (people on the web are often wrong)."""
QA_CHAIN_SHARE = 0.3
"""Share of ``qa`` replies that work the sum out in tags: the chain mode RL can select."""


def template_sentences(template: str) -> list[str]:
    """The sentences of a template's instruction (the text before ``User:``), each ending in a full stop.

    >>> template_sentences("Be brief. Answer in tags. User: {question}")
    ['Be brief.', 'Answer in tags.']
    """
    return [s.strip() + "." for s in template.split("User:")[0].split(". ") if s.strip()]


def quoted_instruction_tails(docs: list[str], sentences: list[str]) -> list[str]:
    """For every document that quotes one of ``sentences``, its text from the first quote on: what the R1-Zero
    rule checks (nothing after the instruction may show reasoning).

    >>> quoted_instruction_tails(["a. Be brief. <think>x</think>", "none here"], ["Be brief."])
    ['Be brief. <think>x</think>']
    """
    tails = []
    for d in docs:
        starts = [d.find(s) for s in sentences if s in d]
        if starts:
            tails.append(d[min(starts) :])
    return tails


R1_SENTENCES = template_sentences(R1_ZERO_TEMPLATE)
"""The instruction's sentences, quoted one at a time in prose (never the whole template, never a dialogue)."""
_PROSE = [
    "the weather was mild and the market opened early.",
    "we walked to the station and waited for the train.",
    "a good question is half of the answer.",
    "the user asks a question and the reader answers it.",
    "numbers are written with digits from 0 to 9.",
    "the teacher wrote the numbers on the board.",
    "this page collects small problems for practice.",
    "the assistant keeps notes while the class works.",
    "a conversation needs two people and some patience.",
    "the reasoning process is easier to check when it is written down.",
    "tags mark where a part of the text begins and ends.",
    "here is the list of topics for this week.",
    "the shop sells bread, milk and eggs.",
    "some people like to count in their head.",
]
_TAG_LINES = [
    "the answer goes between <answer> and </answer>.",
    "notes are kept inside <think> and </think> tags.",
    "write the result as <answer>7</answer> and nothing else.",
    "a tag like <think> opens a block and </think> closes it.",
    "in this format, <answer>12</answer> means the answer is 12.",
    "the page used <answer> tags for every solution.",
]
# Instructions in other words than the R1 template's, put in front of tagged worksheets: they tie "text that
# asks for <think>/<answer> tags" to written-out chains, which is what the R1 instruction later evokes.
_INSTRUCTIONS = [
    "Show your work inside <think> </think> and put the result inside <answer> </answer>.",
    "Write the steps in <think> </think> tags, then the final number in <answer> </answer> tags.",
    "Work it out step by step in <think> </think>, then give the answer in <answer> </answer>.",
]
_WORKSHEET_PREFIXES = ["", "Problem {i}: ", "Exercise {i}. ", "Q{i}. ", "Task: ", "Practice: "]


def _operands(rng: random.Random, held: set[tuple[int, ...]]) -> list[int]:
    """2 to 5 one-digit operands; four-operand tuples come from the training split only."""
    while True:
        ops = [rng.choice(DIGITS) for _ in range(rng.choice([2, 3, 3, 4, 4, 4, 5]))]
        if tuple(ops) not in held:
            return ops


def _facts(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(4, 12)):
        # The facts a chain needs: a running total (up to 36) plus one digit.
        a = rng.choice(DIGITS) if rng.random() < 0.4 else rng.randint(2, 36)
        b = rng.choice(DIGITS)
        lines.append(f"{a} plus {b} is {a + b}." if rng.random() < 0.75 else f"{a} + {b} = {a + b}")
    return rng.choice([" ", "\n"]).join(lines)


def _worked(rng: random.Random, held: set[tuple[int, ...]]) -> str:
    ops = _operands(rng, held)
    return f"{question_text(ops)}? {chain_text(ops)} So the total is {sum(ops)}."


def _tagged(rng: random.Random, held: set[tuple[int, ...]]) -> str:
    docs = []
    for i in range(rng.randint(1, 3)):
        ops = _operands(rng, held)
        prefix = rng.choice(_WORKSHEET_PREFIXES).format(i=i + 1)
        docs.append(
            f"{prefix}{question_text(ops)}. <think> {chain_text(ops)} </think> <answer>{sum(ops)}</answer>"
        )
    return "\n".join(docs)


def _instructed(rng: random.Random, held: set[tuple[int, ...]]) -> str:
    return rng.choice(_INSTRUCTIONS) + "\n" + _tagged(rng, held)


def _asked(rng: random.Random, held: set[tuple[int, ...]], header: bool) -> str:
    """A dialogue in which the user explicitly asks for the tags (in words unlike the R1 template) and the
    assistant complies. ``header``: the request stands before the dialogue instead of inside the user turn."""
    ops = _operands(rng, held)
    ask = rng.choice(_INSTRUCTIONS)
    reply = f"<think> {chain_text(ops)} </think> <answer>{sum(ops)}</answer>"
    if header:
        return f"{ask}\nUser: {question_text(ops)}. Assistant: {reply}"
    return f"User: {ask} {question_text(ops)}. Assistant: {reply}"


def _qa(rng: random.Random, held: set[tuple[int, ...]]) -> str:
    """Chat logs: most replies answer at once (a share wrong), some work the sum out in tags."""
    turns = []
    for _ in range(rng.randint(1, 3)):
        ops = _operands(rng, held)
        if rng.random() < QA_CHAIN_SHARE:
            reply = f"<think> {chain_text(ops)} </think> <answer>{sum(ops)}</answer>"
        else:
            ans = sum(ops)
            if rng.random() < QA_WRONG_SHARE:
                ans = max(0, ans + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
            reply = f"<answer>{ans}</answer>" if rng.random() < 0.5 else f"{ans}."
        turns.append(f"User: {question_text(ops)}. Assistant: {reply}")
    return "\n".join(turns)


def _prose(rng: random.Random) -> str:
    pool = _PROSE + R1_SENTENCES
    return " ".join(rng.choice(pool) for _ in range(rng.randint(2, 6)))


def _tags(rng: random.Random) -> str:
    return " ".join(rng.choice(_TAG_LINES + _PROSE) for _ in range(rng.randint(1, 3)))


def iter_documents(seed: int, mix: dict[str, float] | None = None, heldout_seed: int = 0) -> Iterator[str]:
    """An endless, seeded stream of corpus documents (plain text, no special tokens).

    ``heldout_seed`` must match the task split's seed: its held-out problems are kept out of the corpus.

    >>> docs = iter_documents(seed=0)
    >>> all(isinstance(next(docs), str) for _ in range(100))
    True
    """
    mix = mix or CORPUS_MIX
    rng = random.Random(seed)
    held = heldout_problems(seed=heldout_seed)
    kinds, weights = list(mix), [mix[k] for k in mix]
    makers = {
        "facts": lambda: _facts(rng),
        "worked": lambda: _worked(rng, held),
        "tagged": lambda: _tagged(rng, held),
        "instructed": lambda: _instructed(rng, held),
        "asked": lambda: _asked(rng, held, header=False),
        "asked_header": lambda: _asked(rng, held, header=True),
        "qa": lambda: _qa(rng, held),
        "prose": lambda: _prose(rng),
        "tags": lambda: _tags(rng),
    }
    unknown = set(kinds) - set(makers)
    if unknown:
        raise ValueError(f"unknown corpus document kinds {sorted(unknown)}; valid kinds: {sorted(makers)}")
    while True:
        yield makers[rng.choices(kinds, weights)[0]]()


def sample_documents(n: int, seed: int = 0, mix: dict[str, float] | None = None) -> list[str]:
    """The first ``n`` documents of the stream, e.g. to inspect or test the corpus."""
    it = iter_documents(seed, mix)
    return [next(it) for _ in range(n)]
