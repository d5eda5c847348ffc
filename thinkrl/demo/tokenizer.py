"""The demo's character-level tokenizer, built in code as a ``transformers`` fast tokenizer.

One token per character (printable ASCII and newline), plus the four R1 tags as single tokens so that the
format is cheap to write and easy to score, plus ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``. Every encoding
starts with ``<bos>`` (as pretraining documents do). The tags are *added tokens that are not special*:
decoding with ``skip_special_tokens=True`` keeps them, so reward functions see ``<think>`` in the text.
"""

from __future__ import annotations

import string

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
TOOL_TAGS = ["<python>", "</python>", "<output>", "</output>"]
"""The tool-call tags of the tools demo's tokenizer (``build_tokenizer(tool_tags=True)``), single tokens too."""
# Fixed order, so ids never depend on a corpus: the shipped checkpoint and a rebuilt tokenizer agree.
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # 95 printable ASCII + "\n"


def build_tokenizer(model_max_length: int = 1024, tool_tags: bool = False) -> PreTrainedTokenizerFast:
    """Build the demo tokenizer (vocabulary of 104: 4 specials, 4 tags, 96 characters); ``tool_tags`` appends
    the four ``TOOL_TAGS`` (ids 104-107), the tools demo's vocabulary of 108.

    >>> tok = build_tokenizer()
    >>> ids = tok("<think> 2 plus 3 is 5. </think>")["input_ids"]
    >>> ids[0] == tok.bos_token_id, len(ids), tok.decode(ids, skip_special_tokens=True)
    (True, 19, '<think> 2 plus 3 is 5. </think>')
    >>> build_tokenizer(tool_tags=True)("<python>print(1)</python>")["input_ids"][1:3]
    [104, 33]
    """
    tags = TAG_TOKENS + (TOOL_TAGS if tool_tags else [])
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + TAG_TOKENS + CHARS + tags[len(TAG_TOKENS) :])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Split into single characters; Oniguruma's "(?m)" makes "." also match a newline.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()  # concatenate pieces; the default decoder would join them with spaces
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="left",  # batched generation appends at the right end
    )
