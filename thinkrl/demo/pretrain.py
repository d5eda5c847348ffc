"""Pretrain the demo's tiny base model on the synthetic corpus: a plain causal-LM loop.

``pretrain(out_dir, seed=0)`` with the default settings builds the demo's base checkpoint (the one to ship in
``thinkrl/assets/demo-base``): same seed, step count and corpus recipe give bit-identical weights on the same
machine and thread count (``threads=1`` for the runs in ``docs/demo-design.md``), close ones elsewhere. The result loads with ``AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from thinkrl.demo.corpus import CORPUS_MIX, QA_WRONG_SHARE, iter_documents
from thinkrl.demo.model import build_model
from thinkrl.demo.tokenizer import build_tokenizer

PRETRAIN_STEPS = 800
"""Steps of the shipped base checkpoint (batch 8 x 512: 3.3M tokens; ~7 min at 8k tokens/s on a quiet 2-core
machine, one thread). Chosen by probing snapshots of one run: at 600 steps the chains did not yet copy the
operands, at 800 the chain mode was 33% of samples under the R1 prompt and 92% correct."""


CORPORA = ("demo", "tools")
"""``demo``: the addition corpus (``corpus.py``); ``tools``: the tools demo's (``tools_corpus.py``), whose
tokenizer also has the four tool tags."""


def _documents(corpus: str, seed: int, mix: dict[str, float] | None) -> Iterator[str]:
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; valid: {', '.join(CORPORA)}")
    if corpus == "tools":
        from thinkrl.demo.tools_corpus import iter_tool_documents

        return iter_tool_documents(seed, mix)
    return iter_documents(seed, mix)


def token_batches(
    tokenizer,
    *,
    seed: int,
    batch_size: int,
    seq_len: int,
    mix: dict[str, float] | None = None,
    corpus: str = "demo",
) -> Iterator[torch.Tensor]:
    """Endless (batch_size, seq_len) batches of packed documents: ``<bos> doc <eos> <bos> doc <eos> ...``."""
    docs = _documents(corpus, seed, mix)
    buf: list[int] = []
    need = batch_size * seq_len
    while True:
        while len(buf) < need:
            chunk = [next(docs) for _ in range(256)]
            for ids in tokenizer(chunk)["input_ids"]:  # each starts with <bos>
                buf.extend(ids)
                buf.append(tokenizer.eos_token_id)
        batch, buf = buf[:need], buf[need:]
        yield torch.tensor(batch, dtype=torch.long).view(batch_size, seq_len)


def pretrain(
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = PRETRAIN_STEPS,
    minutes: float | None = None,
    batch_size: int = 8,
    seq_len: int = 512,
    lr: float = 2e-3,
    warmup: int = 20,
    log_every: int = 50,
    save_every: int = 0,
    mix: dict[str, float] | None = None,
    threads: int | None = None,
    model_overrides: dict | None = None,
    corpus: str = "demo",
) -> Path:
    """Pretrain from scratch and save model + tokenizer (safetensors) to ``out_dir``; returns the path.

    ``save_every`` > 0 also saves ``out_dir/step-N`` snapshots (to probe how modes form); ``mix`` replaces
    the corpus recipe ``CORPUS_MIX`` (then the result is not the shipped checkpoint).
    ``model_overrides`` replace fields of the demo architecture (:func:`~thinkrl.demo.model.tiny_llama_config`,
    e.g. ``{"hidden_size": 64}`` for a smaller student of the distillation example).
    ``threads`` sets ``torch.set_num_threads`` (results are bit-identical only for the same count).
    ``corpus``: ``demo`` (the addition demo's base) or ``tools`` (the tools demo's: its corpus, its tokenizer
    with the tool tags; ``TOOLS_PRETRAIN`` holds the shipped settings).
    ``minutes`` stops early when the wall clock runs out (then the result depends on machine speed, so the
    shipped checkpoint uses a step count only). A ``pretrain_info.json`` records the recipe and the losses.

    Example (a few steps; the real run is ``pretrain("runs/demo-base")``):

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM
    >>> path = pretrain(tempfile.mkdtemp(), steps=2, batch_size=2, seq_len=64, log_every=0)
    >>> AutoModelForCausalLM.from_pretrained(path).config.model_type
    'llama'
    """
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(tool_tags=corpus == "tools")
    model = build_model(tokenizer, seed=seed, **(model_overrides or {}))
    model.train()
    # Weight decay on matrices only, as in nanoGPT; norms and (tied) embeddings decay would hurt a tiny model.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        # Linear warmup, then constant: no decay that depends on the total, so the step-N snapshot of a longer
        # run is exactly an N-step run (we probe snapshots to choose the step count without retraining).
        return lr * min(1.0, (step + 1) / warmup)

    if mix is None and corpus == "tools":
        from thinkrl.demo.tools_corpus import TOOLS_CORPUS_MIX

        mix = TOOLS_CORPUS_MIX
    mix = mix or CORPUS_MIX
    batches = token_batches(
        tokenizer, seed=seed, batch_size=batch_size, seq_len=seq_len, mix=mix, corpus=corpus
    )
    t0, losses, done = time.time(), [], 0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        ids = next(batches)  # (B, T)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        done = step + 1
        if log_every and (done % log_every == 0 or done == steps):
            tps = done * batch_size * seq_len / (time.time() - t0)
            print(
                f"pretrain step {done}/{steps} loss {sum(losses[-log_every:]) / len(losses[-log_every:]):.4f} "
                f"{tps:,.0f} tok/s",
                flush=True,
            )
        if save_every and done % save_every == 0 and done < steps:
            model.save_pretrained(out / f"step-{done}", safe_serialization=True)
            tokenizer.save_pretrained(out / f"step-{done}")
        if minutes is not None and time.time() - t0 > 60 * minutes:
            break
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = {
        "seed": seed,
        "corpus": corpus,
        "steps": done,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "warmup": warmup,
        "tokens": done * batch_size * seq_len,
        "corpus_mix": mix,
        "qa_wrong_share": QA_WRONG_SHARE,
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "seconds": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "model_overrides": model_overrides or {},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "pretrain_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
