"""Answer extraction: pure functions from a completion's text to the answer string (or None).

Every function here is total: any ``str`` in, ``str | None`` out, linear time, no exceptions. They are shared
by the training rewards and the evaluator, so the reward and the grader cannot drift.

>>> extract_answer("<think>2+2</think> <answer> 4 </answer>")
'4'
>>> extract_answer("so the answer is \\\\boxed{\\\\frac{1}{2}}.")
'\\\\frac{1}{2}'
"""

from __future__ import annotations

import re

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
# A number: optional sign, digits with optional thousands commas, optional decimals; or a bare ".5".
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_BOX_RE = re.compile(r"\\(boxed|fbox)\s*")
_TOKEN_RE = re.compile(r"[^\s$]+")
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)

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


def extract_answer_tag(text: str) -> str | None:
    """Content of the LAST complete ``<answer>…</answer>`` pair, stripped; None when there is none.

    The last pair, because a model that restates the template early ("... <answer> answer here </answer>")
    gives its real answer at the end.

    >>> extract_answer_tag("<answer>1</answer> then <answer> 2 </answer>")
    '2'
    >>> extract_answer_tag("<answer>unclosed") is None
    True
    """
    last = None
    for m in _ANSWER_RE.finditer(text):
        last = m
    return last.group(1).strip() if last else None


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
    last = None
    for m in _NUMBER_RE.finditer(text):
        last = m
    return last.group(0).replace(",", "") if last else None


def extract_code(text: str, language: str = "python") -> str | None:
    """The last fenced code block (```python …```, or an untagged ```…```), searched in the answer tag first.

    >>> extract_code("<answer>```python\\nprint(1)\\n```</answer>")
    'print(1)\\n'
    """
    for scope in (extract_answer_tag(text), text):
        if not scope:
            continue
        blocks = list(_FENCE_RE.finditer(scope))
        tagged = [
            m for m in blocks if m.group(1).lower() in (language, "py" if language == "python" else language)
        ]
        pick = tagged or [m for m in blocks if not m.group(1)]
        if pick:
            return pick[-1].group(2)
    return None


def extract_answer(text: str, mode: str = "auto") -> str | None:
    """Extract the final answer by ``mode``.

    - ``auto``: the ``<answer>`` tag's content (if that content holds a ``\\boxed{}``, the boxed part),
      else the last ``\\boxed{}``; None when neither exists.
    - ``answer_tag`` / ``boxed`` / ``gsm8k`` / ``last_number``: that extractor alone.
    - ``auto_number``: ``auto``, then ``####``, then the last number (the lenient fallback, opt-in).

    >>> extract_answer("<answer>\\\\boxed{7}</answer>")
    '7'
    >>> extract_answer("x = 5", mode="auto") is None, extract_answer("x = 5", mode="auto_number")
    (True, '5')
    """
    if mode == "answer_tag":
        return extract_answer_tag(text)
    if mode == "boxed":
        return extract_boxed(text)
    if mode == "gsm8k":
        return extract_gsm8k(text)
    if mode == "last_number":
        return extract_last_number(text)
    if mode not in ("auto", "auto_number"):
        raise ValueError(f"extract_answer: unknown mode {mode!r}; valid modes: {', '.join(EXTRACT_MODES)}")
    tag = extract_answer_tag(text)
    if tag is not None:
        inner = extract_boxed(tag)
        return inner if inner is not None else tag
    boxed = extract_boxed(text)
    if boxed is not None or mode == "auto":
        return boxed
    return extract_gsm8k(text) or extract_last_number(text)
