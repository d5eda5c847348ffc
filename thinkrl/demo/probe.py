"""Diagnose a (base or trained) demo model on the exact RL prompt: which modes does it sample, how good is each?

RL selects among the modes pretraining created (see ``docs/demo-design.md``), so before any RL we sample
``k`` completions per held-out problem under the R1-Zero template and report: the R1 format rate, the share
of samples that write steps / answer directly / are malformed, each mode's accuracy, and pass@1.

    python -m thinkrl.demo.probe thinkrl/assets/demo-base --n 100 --k 4
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, dataclass, field

import torch

from thinkrl.data.addition import chain_text, split_rows
from thinkrl.data.templates import render_prompt
from thinkrl.rewards.format import r1_format_ok

MODES = ("steps", "direct", "malformed")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_STEP = re.compile(r"\d+ plus \d+ is \d+")


def classify_completion(text: str, answer: str, operands: list[int] | None = None) -> dict:
    """Mode, R1 format, correctness (and, given operands, whether the chain is the exact right chain).

    "steps": writes at least one "a plus b is c" step before its ``<answer>``; "direct": an ``<answer>``
    with no steps; "malformed": no ``<answer>...</answer>`` at all.

    >>> classify_completion(" <think> 3 plus 5. 3 plus 5 is 8. </think> <answer>8</answer>", "8", [3, 5])
    {'mode': 'steps', 'format_ok': True, 'correct': True, 'faithful': True}
    >>> classify_completion(" <answer>9</answer>", "8")["mode"], classify_completion(" 8.", "8")["mode"]
    ('direct', 'malformed')
    """
    found = _ANSWER.search(text)
    if found is None:
        mode, correct = "malformed", False
    else:
        mode = "steps" if _STEP.search(text[: found.start()]) else "direct"
        correct = found.group(1).strip() == answer.strip()
    faithful = None
    if operands is not None:
        faithful = mode == "steps" and chain_text(operands) in text
    return {
        "mode": mode,
        "format_ok": r1_format_ok(text),
        "correct": correct,
        "faithful": faithful,
    }


@dataclass
class ProbeReport:
    """What a model samples under the RL prompt (rates are shares of all n_problems * k samples)."""

    n_problems: int
    k: int
    pass_at_1: float
    """Mean over samples of "the <answer> content equals the gold answer" (format not required)."""
    format_rate: float
    """Share of samples in the exact R1 format (``thinkrl.rewards.format.r1_format_ok``, the format reward)."""
    mode_share: dict[str, float]
    mode_accuracy: dict[str, float | None]
    """Accuracy within each mode (None when the mode never occurred)."""
    faithful_chain_rate: float
    """Share of "steps" samples whose chain is exactly the right chain (numbers copied and added correctly)."""
    mean_length: float
    """Mean completion length in tokens (up to and including ``</answer>``)."""
    seconds: float
    examples: list[str] = field(default_factory=list)


def truncate_completion(text: str) -> str:
    """Cut after the first ``</answer>``: the RL sampler stops there (a stop string)."""
    i = text.find("</answer>")
    return text if i < 0 else text[: i + len("</answer>")]


@torch.no_grad()
def sample_completions(
    model,
    tokenizer,
    questions: list[str],
    *,
    k: int = 4,
    template: str = "r1",
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 140,
    batch_size: int = 64,
    seed: int = 0,
) -> list[list[str]]:
    """k sampled completions per question (``model.generate``, left padding), each cut after ``</answer>``."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    stop_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("</answer>")]
    prompts = [render_prompt(template, q) for q in questions for _ in range(k)]
    texts: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]  # (B, new)
        texts += [truncate_completion(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return [texts[j * k : (j + 1) * k] for j in range(len(questions))]


def probe(model, tokenizer, rows: list[dict], *, k: int = 4, seed: int = 0, **sample_kwargs) -> ProbeReport:
    """Sample ``k`` completions per row under the R1 template and summarise the mode mix.

    ``rows`` are task rows (``question``, ``answer``, optional ``operands``); ``sample_kwargs`` go to
    ``sample_completions`` (temperature 0.6, top-p 0.95 by default, the evaluation settings).
    """
    t0 = time.time()
    model.eval()
    samples = sample_completions(
        model, tokenizer, [r["question"] for r in rows], k=k, seed=seed, **sample_kwargs
    )
    results, lengths = [], []
    for row, comps in zip(rows, samples):
        for c in comps:
            results.append(classify_completion(c, row["answer"], row.get("operands")))
            lengths.append(len(tokenizer(c, add_special_tokens=False)["input_ids"]))
    n = len(results)
    share = {m: sum(r["mode"] == m for r in results) / n for m in MODES}
    acc: dict[str, float | None] = {}
    for m in MODES:
        in_mode = [r for r in results if r["mode"] == m]
        acc[m] = sum(r["correct"] for r in in_mode) / len(in_mode) if in_mode else None
    steps = [r for r in results if r["mode"] == "steps"]
    return ProbeReport(
        n_problems=len(rows),
        k=k,
        pass_at_1=sum(r["correct"] for r in results) / n,
        format_rate=sum(r["format_ok"] for r in results) / n,
        mode_share=share,
        mode_accuracy=acc,
        faithful_chain_rate=sum(bool(r["faithful"]) for r in steps) / len(steps) if steps else 0.0,
        mean_length=sum(lengths) / n,
        seconds=round(time.time() - t0, 1),
        examples=[c for comps in samples[:3] for c in comps[:2]],
    )


def main(argv: list[str] | None = None) -> ProbeReport:
    """CLI: probe a saved model on the first ``--n`` held-out problems."""
    from thinkrl.core import load_model_and_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", help="model directory (save_pretrained output)")
    ap.add_argument("--n", type=int, default=100, help="held-out problems to probe")
    ap.add_argument("--k", type=int, default=4, help="samples per problem")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.6)
    args = ap.parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(args.path, dtype="float32")
    _, held = split_rows()
    report = probe(model, tokenizer, held[: args.n], k=args.k, seed=args.seed, temperature=args.temperature)
    print(json.dumps(asdict(report), indent=2))
    return report


if __name__ == "__main__":
    main()
