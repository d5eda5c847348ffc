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

from thinkrl.rewards.extract import as_text

_NEUTRAL_RE = re.compile(
    r"```.*?```|`[^`\n]*`"  # code
    r"|\$\$.*?\$\$|(?<!\\)\$[^$]*?(?<!\\)\$|\\\(.*?\\\)|\\\[.*?\\\]"  # inline/display math
    r"|\\begin\{(\w+\*?)\}.*?\\end\{\1\}"  # LaTeX environments
    r"|\\[A-Za-z]+|https?://\S+",  # leftover commands, URLs
    re.DOTALL,
)
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


def _words(text: str) -> list[tuple[str, str, int]]:
    """(word, script, sentence index) for every word of ``text``, after removing neutral material."""
    text = _NEUTRAL_RE.sub(" ", text)
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


language_consistency_reward.__name__ = "language_consistency"
