"""Environments: what a trajectory is an episode of. The collector asks the environment for the first
observation of a data row (the prompt) and shows it each model turn; the environment answers whether the
episode is over, what the model sees next, and extra columns for the reward functions.

    env = SingleTurn(tokenizer, template="r1")
    prompt = env.reset({"question": "what is 2 plus 3", "answer": "5"})   # the R1-Zero prompt
    turn = env.step(row, " <think> ... </think> <answer>5</answer>")      # Turn(done=True)

R1's task is one turn: the prompt, one completion, graded by the reward functions. A tool-using environment
answers a model turn with the tool's output (``Turn.observation``) until the model stops calling tools; its
tokens then carry no loss (``Trajectories.loss_mask``). docs/architecture.md shows how to add one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from thinkrl.data.templates import render_prompt


@dataclass
class Turn:
    """The environment's answer to one model turn."""

    done: bool
    """True when the episode is over (the trajectory is complete)."""
    observation: str | None = None
    """Text the model sees before its next turn (e.g. a tool's output); None when ``done``."""
    info: dict[str, Any] = field(default_factory=dict)
    """Extra columns for the reward functions (e.g. ``tool_calls=2``), merged over the episode's turns."""


class Environment(Protocol):
    """What the collector needs from an environment (a structural type: no base class to inherit)."""

    template: str
    """The prompt template (``r1``, ``chat``, ...): it decides whether the tokenizer adds special tokens."""

    def reset(self, row: dict[str, Any]) -> str:
        """The first observation of an episode on ``row``: the prompt text. A pure function of the row (the
        collector renders every prompt once, before training, to check its length)."""
        ...

    def step(self, row: dict[str, Any], model_turn: str, history: Sequence[str] = ()) -> Turn:
        """Answer ``model_turn``; ``history`` holds the episode's earlier turns, model and environment
        alternating (empty on the first turn)."""
        ...


class SingleTurn:
    """The R1 task: a templated question, one completion, graded by the rewards alone.

    >>> env = SingleTurn(None, template="Q: {question}\\nA:")
    >>> env.reset({"question": "1+1?", "answer": "2"})
    'Q: 1+1?\\nA:'
    >>> env.step({"question": "1+1?", "answer": "2"}, " 2")
    Turn(done=True, observation=None, info={})
    """

    def __init__(self, tokenizer: Any, template: str = "r1", system_prompt: str | None = None):
        self.tokenizer, self.template, self.system_prompt = tokenizer, template, system_prompt

    def reset(self, row: dict[str, Any]) -> str:
        return render_prompt(self.template, row["question"], self.tokenizer, self.system_prompt)

    def step(self, row: dict[str, Any], model_turn: str, history: Sequence[str] = ()) -> Turn:
        return Turn(done=True)
