"""Environments: what a trajectory is an episode of. The collector asks the environment for the first
observation of a data row (the prompt) and shows it each model turn; the environment answers whether the
episode is over, what the model sees next, and extra columns for the reward functions.

    env = SingleTurn(tokenizer, template="r1")
    prompt = env.reset({"question": "what is 2 plus 3", "answer": "5"})   # the R1-Zero prompt
    turn = env.step(row, " <think> ... </think> <answer>5</answer>")      # Turn(done=True)

R1's task is one turn: the prompt, one completion, graded by the reward functions. A multi-turn environment
(the Python tool, ``python_tool.py``) answers a model turn with an observation (``Turn.observation``, e.g. the
tool's output) until the episode is over; the collector appends the observation's tokens to the trajectory
with no loss (``Trajectories.loss_mask``) and lets the model continue. What makes an environment multi-turn:

- ``stop_strings``: strings that end a model turn so the environment can answer (``</python>``);
- ``episode(row)`` (optional): a fresh :class:`Episode` per trajectory, for state that must not be shared
  between trajectories (a Python session). Without it, :func:`open_episode` calls ``step(row, turn, history)``.

docs/tools.md shows how to write one.
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
    observation_ids: list[int] | None = field(default=None, repr=False)
    """The observation as token ids, when the environment tokenizes it itself; None: the collector tokenizes
    ``observation`` once (never the whole text again: token-in, token-out)."""


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


class Episode(Protocol):
    """One trajectory's state in a multi-turn environment (``Environment.episode(row)``)."""

    def step(self, model_turn: str) -> Turn:
        """Answer the model's latest turn (its text since the last observation)."""
        ...

    def close(self) -> dict[str, Any]:
        """End the episode (whatever the reason: done, out of tokens, an error) and release its resources;
        returns the episode's reward columns (merged over what ``step`` returned)."""
        ...


class HistoryEpisode:
    """An :class:`Episode` over an environment that has only ``step(row, model_turn, history)``: it keeps the
    history (model and environment turns, alternating) and merges the turns' ``info``.

    >>> ep = open_episode(SingleTurn(None, "plain"), {"question": "q"})
    >>> ep.step(" a"), ep.close()
    (Turn(done=True, observation=None, info={}), {})
    """

    def __init__(self, env: Environment, row: dict[str, Any]):
        self.env, self.row = env, row
        self.history: list[str] = []
        self.info: dict[str, Any] = {}

    def step(self, model_turn: str) -> Turn:
        turn = self.env.step(self.row, model_turn, tuple(self.history))
        self.history += [model_turn, turn.observation or ""]
        self.info.update(turn.info)
        return turn

    def close(self) -> dict[str, Any]:
        return dict(self.info)


def open_episode(env: Environment, row: dict[str, Any]) -> Episode:
    """The environment's own episode for ``row`` when it makes one (``env.episode``), else a
    :class:`HistoryEpisode`."""
    make = getattr(env, "episode", None)
    return make(row) if callable(make) else HistoryEpisode(env, row)


def turn_stop_strings(env: Any) -> list[str]:
    """The strings that end a model turn so that ``env`` can answer (none: a single-turn environment).

    >>> turn_stop_strings(SingleTurn(None))
    []
    """
    return [s for s in getattr(env, "stop_strings", ()) if s]


def is_multi_turn(env: Any) -> bool:
    """Whether ``env`` may answer a model turn without ending the episode (it names turn stop strings or
    makes its own episodes)."""
    return bool(turn_stop_strings(env)) or callable(getattr(env, "episode", None))


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
