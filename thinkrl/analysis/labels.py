"""Metric keys in words, for the report's tables (the raw key stays visible beside each label).

>>> label("completion/truncated_frac")
'Share of completions cut at the length cap'
>>> label("eval/pass@1")
'Held-out: pass@1 (mean correctness of a sample)'
>>> label("reward/timeouts/accuracy")
'Reward timeouts: accuracy (completions)'
"""

from __future__ import annotations

import re

LABELS = {
    "reward/mean": "Mean reward (sum of weighted rewards)",
    "reward/std": "Reward spread (std over completions)",
    "accuracy": "Training accuracy (share correct, T = rollout temperature)",
    "format_rate": "Training format rate (share in the R1 format)",
    "groups/zero_spread_frac": "Share of groups with all-equal rewards (no gradient)",
    "completion/len_mean": "Mean response length (tokens)",
    "completion/len_max": "Longest response (tokens)",
    "completion/truncated_frac": "Share of completions cut at the length cap",
    "completion/reflection_rate": "Share of responses with reflection words",
    "lr": "Learning rate",
    "completions": "Completions per step",
    "skipped": "Step skipped (no group with reward spread)",
    "dynamic/dropped_groups": "Groups dropped by dynamic sampling",
    "dynamic/rounds": "Sampling rounds (dynamic sampling)",
    "train/loss": "Loss",
    "train/grad_norm": "Gradient norm (before clipping)",
    "train/entropy": "Policy entropy (nats per token)",
    "train/kl": "KL to the reference (per token)",
    "train/logprob_mismatch": "Engine vs trainer log-prob gap (nats per token)",
    "train/clip_fraction": "Share of tokens clipped",
    "train/high_clip_fraction": "Share of tokens clipped above (ratio > 1 + clip_high)",
    "train/low_clip_fraction": "Share of tokens clipped below (ratio < 1 - clip_low)",
    "train/dual_clip_fraction": "Share of tokens under the dual clip",
    "train/ppo_kl": "KL between the old and the updated policy",
    "train/ratio_mean": "Mean importance ratio",
    "train/ratio_max": "Largest importance ratio",
    "throughput/gen_tokens_per_s": "Generated tokens per second (generation only)",
    "throughput/tokens_per_s": "Generated tokens per second (whole step)",
    "num_problems": "Problems evaluated",
    "pass@1": "pass@1 (mean correctness of a sample)",
    "pass@1_se": "pass@1 standard error (over problems)",
    "pass@1_ci95_lo": "pass@1, 95% interval low end",
    "pass@1_ci95_hi": "pass@1, 95% interval high end",
    "length_mean": "Mean response length (tokens)",
    "length_median": "Median response length (tokens)",
    "length_p90": "90th percentile response length (tokens)",
    "length_min": "Shortest response (tokens)",
    "length_max": "Longest response (tokens)",
    "length_mean_correct": "Mean length of right answers (tokens)",
    "length_mean_incorrect": "Mean length of wrong answers (tokens)",
    "truncation_rate": "Share cut at the length cap",
    "no_answer_rate": "Share with no extractable answer",
    "tool/calls_per_sample": "Tool calls per sample",
    "tool/error_rate": "Share of tool calls that failed (raised, timed out, crashed)",
    "tool/samples_with_calls": "Share of samples that called the tool",
    "tool/turns_mean": "Model turns per sample",
    "tool/observation_tokens_mean": "Observation (tool output) tokens per sample",
    "tool/timeouts": "Tool calls killed at the time limit",
    "tool/limit_hits": "Tool calls refused or episodes ended by a limit",
    "tool/truncated_outputs": "Tool outputs cut to the budget",
    "tool_calls_mean": "Tool calls per sample",
    "tool_use_rate": "Share of samples that called the tool",
    "tool_error_rate": "Share of tool calls that failed",
    "turns_mean": "Model turns per sample",
    "pass@1_with_call": "pass@1 of samples that called the tool",
    "pass@1_without_call": "pass@1 of samples that did not",
}
# held-out keys come bare (summary.json) or prefixed (metrics.jsonl); only format_rate means something else
# for training samples
_EVAL_FORMAT = "Share in the R1 format"

_PATTERNS = [
    (re.compile(r"^pass@(\d+)$"), "pass@{0} (any of {0} samples right)"),
    (re.compile(r"^cons@(\d+)$"), "cons@{0} (majority vote of {0} samples right)"),
    (re.compile(r"^cons@(\d+)_se$"), "cons@{0} standard error"),
    (re.compile(r"^mode/(\w+)_accuracy$"), "Accuracy of '{0}' samples"),
    (re.compile(r"^mode/(\w+)$"), "Share of samples in mode '{0}'"),
    (re.compile(r"^reward/timeouts/(.+)$"), "Reward timeouts: {0} (completions)"),
    (re.compile(r"^reward/errors/(.+)$"), "Reward errors: {0} (completions)"),
    (re.compile(r"^reward/(.+)$"), "Reward: {0} (training samples)"),
    (re.compile(r"^time/(.+)$"), "Seconds in {0}"),
]


def label(key: str) -> str:
    """A metric key in words; an unknown key is returned as it is."""
    if key.startswith("eval/"):
        inner = key[len("eval/") :]
        return "Held-out: " + (_EVAL_FORMAT if inner == "format_rate" else label(inner))
    if key in LABELS:
        return LABELS[key]
    for pattern, text in _PATTERNS:
        m = pattern.match(key)
        if m:
            return text.format(*m.groups())
    return key


def eval_label(key: str) -> str:
    """A key of a held-out evaluation's summary (no ``eval/`` prefix) in words."""
    return _EVAL_FORMAT if key == "format_rate" else label(key)


def section(key: str) -> int:
    """Sort order of a training metric's group in the full table (rewards first, timings last)."""
    for i, prefix in enumerate(("reward", "accuracy", "format_rate", "groups/", "completion", "tool/", "train/",
                                "eval/", "dynamic/", "lr", "throughput/", "time/")):  # fmt: skip
        if key.startswith(prefix):
            return i
    return 99
