"""Evaluation with tools: what a tool-using sample records, and the summary's tool metrics.

``evaluate(..., env=PythonTool(...))`` samples each completion as a multi-turn episode (the model may call
Python while it answers). Each sample then records how it used the tool, and the summary reports pass@1
*with tools* on the same benchmarks, next to how often the tool was called and how often it failed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from thinkrl.rollout.episodes import calls_of

_POOLS: dict[int, ThreadPoolExecutor] = {}


def tool_pool(env: Any) -> ThreadPoolExecutor:
    """Threads for an evaluation's tool calls (``env.limits.workers`` at once), one pool per size."""
    workers = max(1, int(getattr(getattr(env, "limits", None), "workers", 2)))
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="thinkrl-eval-tool")
    return _POOLS[workers]


def describe_environment(env: Any) -> dict[str, Any]:
    """The environment's settings as plain data (kept in eval_config.json, so a rerun with other settings
    refuses to mix samples).

    >>> describe_environment(object())
    {'name': 'object'}
    """
    out: dict[str, Any] = {"name": type(env).__name__}
    limits = getattr(env, "limits", None)
    if limits is not None:
        out["limits"] = {k: v for k, v in vars(limits).items() if k not in ("enabled", "workers")}
    if hasattr(env, "stateful"):
        out["stateful"] = env.stateful
    return out


def tool_record(info: dict[str, Any]) -> dict[str, Any]:
    """The fields a tool-using sample adds to its samples.jsonl line.

    >>> tool_record({"tool_calls": [{"error": False}, {"error": True}], "turns": [{"role": "model"}] * 3})
    {'tool_calls': 2, 'tool_errors': 1, 'turns': 3, 'observation_tokens': 0}
    """
    calls = calls_of(info)
    return {
        "tool_calls": len(calls),
        "tool_errors": sum(bool(c.get("error")) for c in calls),
        "turns": sum(s.get("role") == "model" for s in info.get("turns") or []),
        "observation_tokens": int(info.get("observation_tokens", 0)),
    }


def tool_summary(samples: list[dict[str, Any]]) -> dict[str, float]:
    """The summary's tool metrics over ``samples`` (records with :func:`tool_record`'s fields).

    >>> tool_summary([{"tool_calls": 1, "tool_errors": 0, "turns": 2, "correct": True},
    ...               {"tool_calls": 0, "tool_errors": 0, "turns": 1, "correct": False}])
    {'tool_calls_mean': 0.5, 'tool_use_rate': 0.5, 'tool_error_rate': 0.0, 'turns_mean': 1.5, 'pass@1_with_call': 1.0, 'pass@1_without_call': 0.0}
    """
    n = max(len(samples), 1)
    calls = sum(s.get("tool_calls", 0) for s in samples)
    used = [s for s in samples if s.get("tool_calls", 0)]
    unused = [s for s in samples if not s.get("tool_calls", 0)]
    out = {
        "tool_calls_mean": calls / n,
        "tool_use_rate": len(used) / n,
        "tool_error_rate": sum(s.get("tool_errors", 0) for s in samples) / calls if calls else 0.0,
        "turns_mean": sum(s.get("turns", 0) for s in samples) / n,
    }
    if used:
        out["pass@1_with_call"] = sum(bool(s.get("correct")) for s in used) / len(used)
    if unused:
        out["pass@1_without_call"] = sum(bool(s.get("correct")) for s in unused) / len(unused)
    return out
