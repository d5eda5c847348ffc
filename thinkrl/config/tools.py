"""The ``tools`` section: multi-turn rollouts in which the model runs Python in the sandbox (docs/tools.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ToolsConfig:
    enabled: bool = False
    """Run rollouts in the Python tool environment: a model turn that closes ``<python>CODE</python>`` is
    answered with ``<output>PRINTED</output>`` from the sandbox and generation continues (ReTool, ToRL). Off:
    the R1 single-turn task. Use a template that tells the model about the tool (``data.template=r1_tools``)."""
    stateful: bool = True
    """One Python session per trajectory, so variables persist across its calls (ReTool); false runs every
    call in a fresh sandbox (ToRL-style independent snippets)."""
    max_calls: int = 4
    """Tool calls per trajectory; a call past it does not run and its observation says so (the model may
    still answer)."""
    max_turns: int = 8
    """Model turns per trajectory (a turn ends at each call); a call in the last turn ends the episode
    without running."""
    call_timeout_s: float = 5.0
    """Wall-clock seconds per call; past it the call is killed and its observation says so (a stateful
    session restarts empty)."""
    output_chars: int = 1000
    """Characters of a call's output (stdout, then stderr) shown to the model; the cut is marked. The total
    token budget of a trajectory (model and observation tokens) is ``rollout.max_new_tokens``."""
    memory_mb: int = 512
    """Address space of each process of a session (RLIMIT_AS)."""
    workers: int = 2
    """Tool calls that run at once (each in its own sandbox); calls of a batch run in parallel."""


def check_tools_fields(tools: ToolsConfig, check: Any) -> None:
    """Structural checks of the ``tools`` section (``check(condition, message)`` raises with the message)."""
    for name in ("max_calls", "max_turns", "workers", "output_chars", "memory_mb"):
        value = getattr(tools, name)
        check(isinstance(value, int) and value >= 1, f"tools.{name}={value} must be an integer >= 1")
    check(tools.call_timeout_s > 0, f"tools.call_timeout_s={tools.call_timeout_s} must be > 0 seconds")
