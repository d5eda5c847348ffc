"""Test-wide settings and the helpers several test modules share (imported as ``from conftest import ...``; the
data-parallel tests' rank processes import them the same way).

One torch thread: the models here are tiny, so a second thread buys nothing, and on a shared 2-core machine
oversubscription made single tests several times slower.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from thinkrl.config import load_config

torch.set_num_threads(1)

DIGITS = [{"question": str(i), "answer": str(i)} for i in range(10)]
"""The toy task's rows: the answer repeats the question's digit."""

GRPO_OVERRIDES = [
    "data.template='{question}='", "rollout.group_size=4", "rollout.prompts_per_step=4",
    "rollout.max_new_tokens=4", "rollout.stop_strings=[]", "train.lr=1e-2", "train.steps=2",
    "log.progress=false", "algorithm.beta=0.0",
]  # fmt: skip
"""A GRPO run on the toy task small enough for a unit test (16 completions of 4 tokens a step)."""

DP_OVERRIDES = [
    "data.template='{question}='", "rollout.group_size=4", "rollout.prompts_per_step=4",
    "rollout.max_new_tokens=4", "rollout.stop_strings=[]", "train.lr=1e-2", "log.progress=false",
    "train.num_threads=1", "train.micro_batch_size=3", "train.save_every=1", "train.keep_last=3",
    # exercises every global quantity: whitening over the batch (reinforce_pp), token counts of a minibatch
    # (token_mean), minibatches drawn from the global rows with old log-probs, and the KL reference
    "algorithm.advantage=reinforce_pp", "algorithm.loss_agg=token_mean", "algorithm.num_minibatches=2",
    "algorithm.beta=0.01",
]  # fmt: skip
"""The run the data-parallel and FSDP tests compare with one process."""

DP_ATOL = 1e-5
"""Parameter tolerance of N ranks vs one process: ranks sum gradients in another order and micro-batches hold
other rows (float32 rounding, ~1e-7 relative); a token sampled differently would be O(1e-2)."""


def copy_digit(prompts, completions, answer, **kw):
    """Toy verifiable task: the share of completion characters that repeat the prompt's digit."""
    return [sum(ch == a for ch in c) / 4 for c, a in zip(completions, answer)]


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_cfg(tmp_path: Path, *overrides: str):
    """:data:`GRPO_OVERRIDES` + ``overrides``, writing to ``tmp_path/run``."""
    return load_config(None, [*GRPO_OVERRIDES, f"train.output_dir={tmp_path / 'run'}", *overrides])


def make_trainer(tmp_path: Path, *overrides: str, arch: str = "llama", rewards=(copy_digit,), seed: int = 0):
    """A GRPOTrainer on the toy task with a tiny ``arch`` model (weights seeded by ``seed``)."""
    from thinkrl.testing import char_tokenizer, tiny_model
    from thinkrl.train import GRPOTrainer

    tok = char_tokenizer("0123456789=")
    model = tiny_model(arch, len(tok), seed=seed)
    cfg = make_cfg(tmp_path, *overrides)
    return GRPOTrainer(cfg, model=model, tokenizer=tok, reward_funcs=list(rewards), train_rows=DIGITS)


def assert_params_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """The same keys, every tensor within :data:`DP_ATOL`."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=DP_ATOL, msg=lambda m, k=k: f"{k}: {m}")


def run_metrics(run_dir: Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``."""
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
