"""Answer extraction: pure functions from a completion's text to the answer string (or None).

Every function here is total: any ``str`` in, ``str | None`` out, linear time, no exceptions, and text over
:data:`MAX_PARSE_CHARS` is not parsed at all (no answer). They are shared by the training rewards and the
evaluator, so the reward and the grader cannot drift.

Answer policy (docs/rewards.md): only the text after the last ``</think>`` can hold the answer; while a
``<think>`` is open (or reopened after the last ``</think>``) there is no answer; a completion without think
tags is all answer region. Use :func:`with_prefill` first when the prompt ends with ``<think>``.

>>> extract_answer("<think>2+2</think> <answer> 4 </answer>")
'4'
>>> extract_answer("so the answer is \\\\boxed{\\\\frac{1}{2}}.")
'\\\\frac{1}{2}'
>>> extract_answer("<think>\\\\boxed{14}</think>") is None
True
"""

from __future__ import annotations

import re
from typing import Any

MAX_PARSE_CHARS = 1_000_000
"""Longest completion text that is parsed (~250k tokens, longer than any rollout); longer has no answer."""

_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
# A number: optional sign, digits with optional thousands commas, optional decimals; or a bare ".5".
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_BOX_RE = re.compile(r"\\(boxed|fbox)\s*")
_TOKEN_RE = re.compile(r"[^\s$]+")
_LANG_RE = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")

EXTRACT_MODES = ("auto", "answer_tag", "boxed", "gsm8k", "last_number", "auto_number")


def as_text(x: object) -> str:
    """A completion or prompt as text: strings as they are, chat messages (``[{"role", "content"}]``) joined.

    >>> as_text([{"role": "assistant", "content": "hi"}]), as_text(None)
    ('hi', '')
    """
    if isinstance(x, str):
        return x
    if x is None:
        return ""
    if isinstance(x, dict):
        return str(x.get("content", ""))
    if isinstance(x, (list, tuple)):
        return "\n".join(as_text(m) for m in x)
    return str(x)


def with_prefill(prompt: Any, completion: Any) -> str:
    """The completion as text, with ``<think>`` prepended when the prompt pre-filled it (R1 templates that end
    the prompt with ``<think>``), so both template styles are read alike.

    >>> with_prefill("Q <think>", "a</think>b"), with_prefill("Q", "a")
    ('<think>a</think>b', 'a')
    """
    text = as_text(completion)
    if (
        isinstance(prompt, str)
        and prompt.rstrip().endswith("<think>")
        and not text.lstrip().startswith("<think>")
    ):
        return "<think>" + text
    return text


def answer_region(text: str) -> str | None:
    """The part of a completion that may hold the final answer (the answer policy in the module docstring).

    >>> answer_region("<think>a</think> b"), answer_region("<think>a"), answer_region("plain")
    (' b', None, 'plain')
    >>> answer_region("<think>a</think> b <think> c") is None
    True
    """
    if len(text) > MAX_PARSE_CHARS:
        return None
    end = text.rfind("</think>")
    region = text if end == -1 else text[end + len("</think>") :]
    return None if "<think>" in region else region


def extract_answer_tag(text: str) -> str | None:
    """Content of the last complete ``<answer>…</answer>`` pair, stripped; None when there is none.

    The pair closed last, opened at the nearest ``<answer>`` before it: a model that restates the template
    early ("... <answer> answer here </answer>") gives its real answer at the end. Linear time.

    >>> extract_answer_tag("<answer>1</answer> then <answer> 2 </answer>")
    '2'
    >>> extract_answer_tag("<answer>unclosed") is None, extract_answer_tag("<answer>a<answer>b</answer>")
    (True, 'b')
    """
    if len(text) > MAX_PARSE_CHARS:
        return None
    close = text.rfind("</answer>")
    if close == -1:
        return None
    open_ = text.rfind("<answer>", 0, close)
    return None if open_ == -1 else text[open_ + len("<answer>") : close].strip()


def _boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the content of every top-level ``\\boxed{…}`` / ``\\fbox{…}`` whose braces balance."""
    spans: list[tuple[int, int]] = []
    pos = 0  # matches before pos lie inside an earlier box
    for m in _BOX_RE.finditer(text):
        if m.start() < pos:
            continue
        j = m.end()
        if j >= len(text) or text[j] != "{":
            tok = _TOKEN_RE.match(text, j)  # "\boxed 5" (no braces): the next token, as LaTeX reads it
            if tok and m.group(1) == "boxed" and j > m.start() + 6:
                spans.append((tok.start(), tok.end()))
                pos = tok.end()
            continue
        depth, k = 0, j
        while k < len(text):
            c = text[k]
            if c == "\\" and k + 1 < len(text) and text[k + 1] in "{}":
                k += 2  # an escaped brace \\{ \\} neither opens nor closes a group
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        if depth != 0:
            return spans  # unbalanced: nothing after this can close either
        spans.append((j + 1, k))
        pos = k + 1
    return spans


def extract_boxed(text: str) -> str | None:
    """Content of the LAST ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced, stripped; None if absent.

    >>> extract_boxed("\\\\boxed{1} and \\\\boxed{\\\\frac{a}{\\\\sqrt{b}}}")
    '\\\\frac{a}{\\\\sqrt{b}}'
    >>> extract_boxed("\\\\boxed{unclosed") is None
    True
    """
    if len(text) > MAX_PARSE_CHARS:
        return None
    spans = _boxed_spans(text)
    if not spans:
        return None
    s, e = spans[-1]
    return text[s:e].strip()


def extract_gsm8k(text: str) -> str | None:
    """The GSM8K final answer after the last ``####``, with thousands commas and a trailing period removed.

    >>> extract_gsm8k("She pays 2*9=18 dollars.\\n#### 1,018")
    '1018'
    """
    if len(text) > MAX_PARSE_CHARS:
        return None
    last = None
    for m in _GSM8K_RE.finditer(text):
        last = m
    if last is None:
        return None
    ans = last.group(1).strip().rstrip(".").strip()
    if re.fullmatch(r"-?\$?\d{1,3}(,\d{3})+(\.\d+)?", ans):
        ans = ans.replace(",", "")
    return ans.replace("$", "") or None


def extract_last_number(text: str) -> str | None:
    """The last number in the text (commas dropped); the weakest extractor, off unless asked for.

    >>> extract_last_number("I got 3 apples, then 1,250.5 more")
    '1250.5'
    >>> extract_last_number("no digits") is None
    True
    """
    if len(text) > MAX_PARSE_CHARS:
        return None
    last = None
    for m in _NUMBER_RE.finditer(text):
        last = m
    return last.group(0).replace(",", "") if last else None


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each ```-fenced block, paired left to right; an unclosed fence ends the scan."""
    blocks = []
    pos = text.find("```")
    while pos != -1:
        nl = text.find("\n", pos + 3)
        if nl == -1:
            break
        close = text.find("```", nl + 1)
        if close == -1:
            break
        lang = _LANG_RE.match(text, pos + 3, nl)
        blocks.append((lang.group(1) if lang else "", text[nl + 1 : close]))
        pos = text.find("```", close + 3)
    return blocks


def extract_code(text: str, language: str = "python") -> str | None:
    """The last fenced code block (```python …```, or an untagged ```…```) of the answer region, searched in
    the answer tag first; None when there is none (code only inside ``<think>`` does not count).

    >>> extract_code("<answer>```python\\nprint(1)\\n```</answer>")
    'print(1)\\n'
    >>> extract_code("<think>```python\\nprint(1)\\n```</think>") is None
    True
    """
    region = answer_region(text)
    if region is None:
        return None
    names = (language, "py") if language == "python" else (language,)
    for scope in (extract_answer_tag(region), region):
        if not scope:
            continue
        blocks = _fenced_blocks(scope)
        pick = [b for lang, b in blocks if lang.lower() in names] or [b for lang, b in blocks if not lang]
        if pick:
            return pick[-1]
    return None


def extract_answer(text: str, mode: str = "auto") -> str | None:
    """Extract the final answer by ``mode``.

    - ``auto``: the ``<answer>`` tag's content (if that content holds a ``\\boxed{}``, the boxed part),
      else the last ``\\boxed{}``; None when neither exists.
    - ``answer_tag`` / ``boxed`` / ``gsm8k`` / ``last_number``: that extractor alone.
    - ``auto_number``: ``auto``, then ``####``, then the last number (the lenient fallback, opt-in).

    Every mode reads only the answer region (:func:`answer_region`): nothing inside ``<think>`` counts.

    >>> extract_answer("<answer>\\\\boxed{7}</answer>")
    '7'
    >>> extract_answer("x = 5", mode="auto") is None, extract_answer("x = 5", mode="auto_number")
    (True, '5')
    """
    if mode not in EXTRACT_MODES:
        raise ValueError(f"extract_answer: unknown mode {mode!r}; valid modes: {', '.join(EXTRACT_MODES)}")
    region = answer_region(text)
    if region is None:
        return None
    single = {"answer_tag": extract_answer_tag, "boxed": extract_boxed, "gsm8k": extract_gsm8k,
              "last_number": extract_last_number}  # fmt: skip
    if mode in single:
        return single[mode](region)
    tag = extract_answer_tag(region)
    if tag is not None:
        inner = extract_boxed(tag)
        return inner if inner is not None else tag
    boxed = extract_boxed(region)
    if boxed is not None or mode == "auto":
        return boxed
    return extract_gsm8k(region) or extract_last_number(region)
