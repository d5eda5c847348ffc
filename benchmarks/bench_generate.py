"""Generated tokens/s of the built-in HFEngine vs ``transformers``' ``model.generate`` on the same tiny model.

Setting: a random ~4M-parameter Qwen2 (hidden 256, 4 layers, 98-token char vocabulary), 8 prompts x 8 samples
x 64 new tokens, temperature 1.0, no truncation. Both stop a row at EOS; tokens/s counts real completion
tokens (up to and including EOS), so HF is not charged for the padding it computes after a row finished.

    .venv/bin/python benchmarks/bench_generate.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import string
import time

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from thinkrl.rollout import HFEngine, SamplingParams

PAD, EOS, BOS = 0, 1, 2
PROMPTS = [
    "What is 7 + 5? Think step by step.",
    "Solve: 12 * 3 =",
    "Reverse the word 'reasoning'.",
    "Is 91 prime?",
    "Count the letters in banana.",
    "2 + 2 * 2 =",
    "Name a color.",
    "Sort 5 3 9 1 in ascending order, then explain why the order is correct.",
]


def build(seed: int = 0) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """The tiny random Qwen2 and its char-level tokenizer (printable ASCII + pad/eos/bos)."""
    vocab = {"<pad>": PAD, "<eos>": EOS, "<bos>": BOS}
    for c in string.printable[:95]:
        vocab.setdefault(c, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=BOS,
    )
    return Qwen2ForCausalLM(config).eval(), tokenizer


def hf_generate(model, prompts: list[list[int]], n: int, max_new: int, seed: int) -> int:
    """One ``model.generate`` call; returns the number of real completion tokens (through the first EOS)."""
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids,
        attention_mask=(ids != PAD).long(),
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        num_return_sequences=n,
        max_new_tokens=max_new,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )[:, width:]  # (P*n, T)
    is_eos = out == EOS
    # real length: up to and including the first EOS, else the whole row
    first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, torch.full_like(out[:, 0], out.shape[1]))
    return int(first.sum())


def timed(fn, repeats: int) -> tuple[float, int]:
    """Median seconds of ``repeats`` calls after one warm-up call, and the tokens of the last call."""
    fn(0)
    times, tokens = [], 0
    for r in range(repeats):
        start = time.perf_counter()
        tokens = fn(r + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = build()
    prompts = [[BOS] + tokenizer(p).input_ids for p in PROMPTS]
    engine = HFEngine(model, tokenizer)
    n, max_new = args.n, args.max_new_tokens

    def ours(seed: int) -> int:
        params = SamplingParams(n=n, temperature=1.0, max_new_tokens=max_new, seed=seed)
        return int(engine.generate(prompts, params).lengths.sum())

    t_ours, tok_ours = timed(ours, args.repeats)
    t_hf, tok_hf = timed(lambda s: hf_generate(model, prompts, n, max_new, s), args.repeats)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    rows = len(prompts) * n
    print(
        f"Qwen2 {params_m:.1f}M params, {len(prompts)} prompts x {n} samples x {max_new} new tokens, "
        f"{args.threads} thread(s), median of {args.repeats}"
    )
    print(
        f"HFEngine      : {tok_ours / t_ours:8.0f} tok/s  ({t_ours:.3f} s, mean length {tok_ours / rows:.1f})"
    )
    print(f"model.generate: {tok_hf / t_hf:8.0f} tok/s  ({t_hf:.3f} s, mean length {tok_hf / rows:.1f})")
    print(f"ratio (HFEngine / HF tok/s): {(tok_ours / t_ours) / (tok_hf / t_hf):.2f}x")


if __name__ == "__main__":
    main()
