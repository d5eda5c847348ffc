"""Language consistency (DeepSeek-R1, §2.3.3): the share of the chain of thought's words in the target language.

The paper: "calculated as the proportion of target language words in the CoT". Our definition of a word:

1. The CoT is the content of ``<think>…</think>`` (if there is no think block: the text before ``<answer>``,
   else the whole completion).
2. Neutral material is removed first and counts for nothing (neither numerator nor denominator): fenced and
   inline code (```…```, `…`), LaTeX math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``, ``\\begin…\\end``) and
   any remaining ``\\command``, URLs, numbers, punctuation and symbols.
3. Words are maximal runs of letters of one script; every Han / Kana / Hangul character counts as one word
   (these scripts do not separate words by spaces; one character is about one morpheme).
4. A word counts for the target when its script is the target's script (``en``: Latin; ``zh``: Han;
   ``ja``: Han or Kana; ``ko``: Hangul; ``ru``/``uk``/``bg``/``sr``: Cyrillic; ``el``: Greek; ``ar``: Arabic;
   ``he``: Hebrew; ``hi``: Devanagari; ``th``: Thai). For other Latin-script languages (``fr``, ``de``, ``es``,
   ...) script alone cannot tell, so each sentence of Latin words is classified with py3langid and its words
   count iff the sentence is classified as the target.

Score = target words / all words, in [0, 1]. A CoT with no words at all scores 0.0 (an empty thought must not
earn the reward that a real one in the right language earns).

>>> language_consistency_score("<think>We add 2 and 3, 得到 5.</think><answer>5</answer>", "en")
0.6
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from thinkrl.rewards.extract import MAX_PARSE_CHARS, as_text

# Openers of neutral material; each is removed with its closer (see _strip_neutral). A backslash command or a
# URL is removed alone.
_OPEN_RE = re.compile(r"```|`|\$\$|(?<!\\)\$|\\\(|\\\[|\\begin\{(\w+\*?)\}|\\[A-Za-z]+|https?://\S+")
_CLOSER = {"```": "```", "`": "`", "$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
_SENTENCE_RE = re.compile(r"[^.!?;:\n。！？；：]+")

SCRIPT_OF_LANGUAGE = {
    "en": {"Latin"},
    "zh": {"Han"},
    "ja": {"Han", "Kana"},
    "ko": {"Hangul"},
    "ru": {"Cyrillic"},
    "uk": {"Cyrillic"},
    "bg": {"Cyrillic"},
    "sr": {"Cyrillic"},
    "el": {"Greek"},
    "ar": {"Arabic"},
    "he": {"Hebrew"},
    "hi": {"Devanagari"},
    "th": {"Thai"},
}
_PER_CHAR = {"Han", "Kana", "Hangul", "Thai"}  # scripts written without spaces: each character is a word


@lru_cache(maxsize=4096)
def _script(ch: str) -> str | None:
    """The script of a letter, from its Unicode name (no extra dependency); None for non-letters."""
    if not ch.isalpha():
        return None
    if ch.isascii():
        return "Latin"
    name = unicodedata.name(ch, "")
    if name.startswith("CJK") or "IDEOGRAPH" in name:
        return "Han"
    if name.startswith(("HIRAGANA", "KATAKANA")):
        return "Kana"
    if name.startswith("HANGUL"):
        return "Hangul"
    first = name.split(" ", 1)[0]
    return first.capitalize() if first else None  # LATIN, CYRILLIC, GREEK, ARABIC, HEBREW, DEVANAGARI, THAI


def _find_closer(text: str, closer: str, start: int) -> int:
    """Index of ``closer`` after ``start`` (an unescaped ``$``; a backtick on the same line), or -1."""
    q = text.find(closer, start)
    if closer == "$":
        while q > 0 and text[q - 1] == "\\":
            q = text.find("$", q + 1)
    elif closer == "`" and q != -1 and "\n" in text[start:q]:
        return -1
    return q


def _strip_neutral(text: str) -> str:
    """``text`` with code, math, LaTeX environments, commands and URLs replaced by spaces; linear time.

    An opener whose closer never comes stays as text; after one failed search for a closer, later openers of
    that kind are not searched again (the search already reached the end).

    >>> _strip_neutral("a $x^2$ b `c` \\\\alpha $ d")
    'a   b     $ d'
    """
    out: list[str] = []
    pos, dead = 0, set()
    while True:
        m = _OPEN_RE.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos : m.start()])
        tok = m.group(0)
        closer = "\\end{" + m.group(1) + "}" if m.group(1) else _CLOSER.get(tok)
        if closer is None:  # a command or URL alone
            out.append(" ")
            pos = m.end()
            continue
        q = -1 if closer in dead else _find_closer(text, closer, m.end())
        if q == -1:
            if closer != "`":  # a backtick's closer may still come on a later line
                dead.add(closer)
            out.append(tok)
            pos = m.end()
            continue
        out.append(" ")
        pos = q + len(closer)


def _words(text: str) -> list[tuple[str, str, int]]:
    """(word, script, sentence index) for every word of ``text``, after removing neutral material."""
    text = _strip_neutral(text)
    out: list[tuple[str, str, int]] = []
    for si, sent in enumerate(_SENTENCE_RE.finditer(text)):
        cur, cur_script = [], None
        for ch in sent.group(0):
            sc = _script(ch)
            if sc is not None and sc == cur_script and sc not in _PER_CHAR:
                cur.append(ch)
                continue
            if cur:
                out.append(("".join(cur), cur_script, si))
            cur, cur_script = ([ch], sc) if sc is not None else ([], None)
        if cur:
            out.append(("".join(cur), cur_script, si))
    return out


def thinking_text(completion: str) -> str:
    """The chain of thought: the ``<think>`` block, else the text before ``<answer>``, else everything."""
    start, end = completion.find("<think>"), completion.find("</think>")
    if start != -1 and end > start:
        return completion[start + len("<think>") : end]
    if end != -1:  # the prompt pre-filled <think>
        return completion[:end]
    a = completion.find("<answer>")
    return completion[:a] if a != -1 else completion


@lru_cache(maxsize=1)
def _langid():
    import py3langid  # imported lazily: only non-English Latin-script targets need it

    return py3langid


def language_consistency_score(completion: str, language: str = "en") -> float:
    """Share of the CoT's words in ``language`` (ISO 639-1), per the module's definition.

    >>> language_consistency_score("<think>先算 2+3，等于五</think>", "zh")
    1.0
    """
    lang = (language or "en").lower().split("-")[0].split("_")[0]
    if len(completion) > MAX_PARSE_CHARS:
        return 0.0
    words = _words(thinking_text(completion))
    if not words:
        return 0.0
    scripts = SCRIPT_OF_LANGUAGE.get(lang)
    if scripts is not None:
        hit = sum(s in scripts for _, s, _ in words)
    else:  # another Latin-script language: decide sentence by sentence
        by_sent: dict[int, list[str]] = {}
        for w, s, si in words:
            if s == "Latin":
                by_sent.setdefault(si, []).append(w)
        hit = 0
        for ws in by_sent.values():
            if _langid().classify(" ".join(ws))[0] == lang:
                hit += len(ws)
    return hit / len(words)


def language_consistency_reward(
    prompts: list[str], completions: list[str], language: list[str | None] | None = None, **kwargs: Any
) -> list[float]:
    """Language-consistency reward per row; column ``language`` (ISO code, default "en") is optional."""
    langs = language if language is not None else [None] * len(completions)
    return [language_consistency_score(as_text(c), lang or "en") for c, lang in zip(completions, langs)]
