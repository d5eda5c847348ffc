"""Multi-turn generation: episodes in which an environment answers model turns (a tool's output) until done.

    episodes = generate_episodes(engine, env, rows, prompt_ids, params, tokenizer, pool)
    episodes.rollout          # completion ids = model tokens and observation tokens, as produced
    episodes.loss_mask        # True on the model's tokens only
    episodes.infos[i]         # row i's reward columns: turns, tool_calls, tool_errors, episode_end, ...

Token-in, token-out: a trajectory is built from ids only. Model tokens are kept exactly as the engine sampled
them (with their log-probs); an observation is appended as the ids the environment gives
(``Turn.observation_ids``) or as the tokenization of its text alone; the text of the whole trajectory is
decoded from those ids and never tokenized again. So the trainer scores exactly what the engine produced
(``tests/test_tools.py`` builds a case where re-tokenizing the text would change ids).

Two drivers produce the same trajectories (temperature 0, the same tokens; tested):

- the built-in engine on Llama-family models decodes all episodes in one batch (``hf_turns.py``): a row that
  closes a tool call waits while the others keep decoding, its call runs in ``pool`` at once, and it resumes
  with its KV cache when the output is back;
- any other engine (vLLM, or the built-in engine on other models) generates turn by turn: every open episode's
  prompt + tokens so far go back to ``engine.generate`` as token ids; each turn's calls run in ``pool`` together.

The total token budget of an episode is ``params.max_new_tokens`` (model and observation tokens together).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import torch

from thinkrl.rollout.base import Rollout, SamplingParams, stop_and_pad_ids
from thinkrl.rollout.environment import Environment, Episode, Turn, open_episode, turn_stop_strings


@dataclass
class Episodes:
    """What :func:`generate_episodes` returns: N = len(prompts) * n rows, ordered as a ``Rollout``'s."""

    rollout: Rollout
    """Completion ids (model and observation tokens), ``completion_mask`` on every real token, the sampler's
    log-probs (0 on observation tokens), finish reasons (``stop`` / ``length``), decoded texts."""
    loss_mask: torch.Tensor
    """(N, T) bool: True on the model's own tokens."""
    infos: list[dict[str, Any]]
    """Per row: the environment's reward columns plus ``turns`` (the trajectory as segments
    ``{"role": "model" | "env", "text"}``), ``episode_end`` and ``observation_tokens``."""
    tool_seconds: float = 0.0
    """Wall-clock seconds in which at least one environment step was running."""


@dataclass
class _Row:
    """One trajectory being built."""

    episode: Episode
    budget: int
    ids: list[int] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)
    model: list[bool] = field(default_factory=list)
    turn_start: int = 0
    segments: list[dict[str, str]] = field(default_factory=list)
    done: bool = False
    reason: str = "stop"
    end: str = "stop"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def left(self) -> int:
        return self.budget - len(self.ids)


class EpisodeBook:
    """The rows of one generation: their tokens, their episodes, and what happens at the end of each turn.
    Both drivers call it, so the rules (budget, observations, endings) are written once."""

    def __init__(
        self,
        env: Environment,
        rows: Sequence[dict[str, Any]],
        n: int,
        tokenizer: Any,
        max_new_tokens: int,
        pool: ThreadPoolExecutor,
    ):
        self.env, self.tokenizer, self.pool = env, tokenizer, pool
        self.rows = [_Row(open_episode(env, rows[i // n]), max_new_tokens) for i in range(len(rows) * n)]
        self._busy_since: float | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self.tool_seconds = 0.0

    def add_model_tokens(self, r: int, ids: Sequence[int], logps: Sequence[float]) -> None:
        row = self.rows[r]
        row.ids += list(ids)
        row.logp += [float(x) for x in logps]
        row.model += [True] * len(ids)

    def end_turn(self, r: int, stopped: bool) -> Future | None:
        """Row ``r``'s model turn is over: ``stopped`` by EOS or a stop string, else out of budget. Returns
        the environment's answer to come (a Future of ``Turn``), or None when the episode is over."""
        row = self.rows[r]
        text = self.tokenizer.decode(row.ids[row.turn_start :], skip_special_tokens=True)
        row.segments.append({"role": "model", "text": text})
        if not stopped:
            self.finish(r, "length", "length")
            return None
        self._started()
        fut = self.pool.submit(row.episode.step, text)
        fut.add_done_callback(lambda _: self._stopped())
        return fut

    def resume(self, r: int, turn: Turn) -> list[int] | None:
        """Apply the environment's answer: the observation ids to feed (already added to the row, cut to the
        budget), or None when the episode is over."""
        row = self.rows[r]
        row.info.update(turn.info)
        if turn.done:
            self.finish(r, "stop", turn.info.get("episode_end", "stop"))
            return None
        full = turn.observation_ids
        if full is None:  # tokenized alone, once: never merged with the text around it
            full = self.tokenizer(turn.observation or "", add_special_tokens=False)["input_ids"]
        ids = list(full)[: max(row.left, 0)]
        row.ids += ids
        row.logp += [0.0] * len(ids)
        row.model += [False] * len(ids)
        row.segments.append({"role": "env", "text": self.tokenizer.decode(ids, skip_special_tokens=True)})
        row.turn_start = len(row.ids)
        if len(ids) < len(full) or row.left <= 0:  # the observation did not fit, or no token is left
            self.finish(r, "length", "length")
            return None
        return ids

    def finish(self, r: int, reason: str, end: str) -> None:
        row = self.rows[r]
        if row.done:
            return
        row.done, row.reason, row.end = True, reason, end
        row.info = {**row.episode.close(), **row.info}

    def close(self) -> None:
        """End every episode still open (an error left them): their sessions are killed."""
        for r, row in enumerate(self.rows):
            if not row.done:
                self.finish(r, "length", "error")

    def _started(self) -> None:
        with self._lock:
            if self._pending == 0:
                self._busy_since = time.perf_counter()
            self._pending += 1

    def _stopped(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending == 0 and self._busy_since is not None:
                self.tool_seconds += time.perf_counter() - self._busy_since

    def episodes(self, prompt_ids: list[list[int]], n: int, pad_id: int) -> Episodes:
        """The finished rows as :class:`Episodes`."""
        width = max((len(row.ids) for row in self.rows), default=0)
        num = len(self.rows)
        ids = torch.full((num, width), pad_id, dtype=torch.long)
        logp = torch.zeros(num, width, dtype=torch.float32)
        loss = torch.zeros(num, width, dtype=torch.bool)
        for i, row in enumerate(self.rows):
            ids[i, : len(row.ids)] = torch.tensor(row.ids, dtype=torch.long)
            logp[i, : len(row.logp)] = torch.tensor(row.logp, dtype=torch.float32)
            loss[i, : len(row.model)] = torch.tensor(row.model, dtype=torch.bool)
        lengths = torch.tensor([len(row.ids) for row in self.rows], dtype=torch.long)
        mask = torch.arange(width) < lengths.unsqueeze(1)  # (N, T)
        texts = self.tokenizer.batch_decode([row.ids for row in self.rows], skip_special_tokens=True)
        infos = [
            {**row.info, "turns": row.segments, "episode_end": row.end,
             "observation_tokens": len(row.model) - sum(row.model)}
            for row in self.rows
        ]  # fmt: skip
        rollout = Rollout(
            prompt_ids=[list(p) for p in prompt_ids],
            group_ids=torch.arange(len(prompt_ids)).repeat_interleave(n),
            completion_ids=ids, completion_mask=mask, logprobs=logp,
            finish_reasons=[row.reason for row in self.rows], texts=texts,
        )  # fmt: skip
        return Episodes(rollout, loss, infos, self.tool_seconds)


def turn_params(params: SamplingParams, env: Any) -> SamplingParams:
    """``params`` with the environment's turn stop strings added."""
    stops = list(params.stop_strings) + [s for s in turn_stop_strings(env) if s not in params.stop_strings]
    return dataclasses.replace(params, stop_strings=stops)


def generate_episodes(
    engine: Any,
    env: Environment,
    rows: Sequence[dict[str, Any]],
    prompt_ids: list[list[int]],
    params: SamplingParams,
    tokenizer: Any,
    pool: ThreadPoolExecutor,
) -> Episodes:
    """``params.n`` episodes of ``env`` per row (module docstring); ``prompt_ids[i]`` is row i's prompt."""
    from thinkrl.rollout.hf_turns import decode_episodes, native_episodes

    if params.seed is None:
        params = dataclasses.replace(params, seed=int(torch.randint(0, 2**62, (1,))))
    params = turn_params(params, env)
    book = EpisodeBook(env, rows, params.n, tokenizer, params.max_new_tokens, pool)
    try:
        if native_episodes(engine, prompt_ids, params):
            decode_episodes(engine, prompt_ids, params, book)
        else:
            _turn_by_turn(engine, prompt_ids, params, book)
    finally:
        book.close()
    pad_id = stop_and_pad_ids(tokenizer, getattr(engine, "model", None))[1] if tokenizer else 0
    return book.episodes(prompt_ids, params.n, pad_id)


def _turn_by_turn(
    engine: Any, prompt_ids: list[list[int]], params: SamplingParams, book: EpisodeBook
) -> None:
    """Any engine: generate a turn for every open episode, run the turn's tool calls together, repeat."""
    n = params.n
    open_rows = list(range(len(book.rows)))
    contexts = prompt_ids
    call = params
    turn = 0
    while open_rows:
        roll = engine.generate(contexts, call).to("cpu")
        lengths = roll.lengths.tolist()
        futures: dict[int, Future] = {}
        for j, r in enumerate(open_rows):
            row = book.rows[r]
            keep = min(lengths[j], row.left)  # one call serves rows with different budgets left: cut
            ids = roll.completion_ids[j, :keep].tolist()
            book.add_model_tokens(r, ids, roll.logprobs[j, :keep].tolist())
            stopped = roll.finish_reasons[j] == "stop" and keep == lengths[j]
            fut = book.end_turn(r, stopped)
            if fut is not None:
                futures[r] = fut
        wait(list(futures.values()))
        open_rows = [r for r, fut in futures.items() if book.resume(r, fut.result()) is not None]
        turn += 1
        contexts = [prompt_ids[r // n] + book.rows[r].ids for r in open_rows]
        left = max((book.rows[r].left for r in open_rows), default=1)
        # every continuation is its own prompt (n=1), seeded per turn so the turns draw independent numbers
        call = dataclasses.replace(
            params, n=1, max_new_tokens=left, seed=params.seed + 7919 * turn, first_row=0
        )


TOOL_COUNTS = ("samples", "tool_calls", "tool_errors", "tool_timeouts", "tool_limit_hits", "tool_truncated",
               "turns", "observation_tokens", "samples_with_calls")  # fmt: skip
"""The per-step sums behind the ``tool/*`` metrics (summed over rounds and data-parallel ranks)."""


def calls_of(info: dict[str, Any]) -> list[dict[str, Any]]:
    """An episode's tool calls as records (an environment may report only a count, as docs/architecture.md's
    calculator does: then empty records).

    >>> calls_of({"tool_calls": 2}), calls_of({})
    ([{}, {}], [])
    """
    calls = info.get("tool_calls") or []
    return list(calls) if isinstance(calls, list | tuple) else [{} for _ in range(int(calls))]


def episode_counts(infos: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Sums over episodes of what the ``tool/*`` metrics report (:func:`tool_metrics` turns them into rates).

    >>> turns = [{"role": "model"}, {"role": "env"}, {"role": "model"}]
    >>> episode_counts([{"tool_calls": [{"error": True, "timed_out": False}], "turns": turns}])["turns"]
    2.0
    """
    out = dict.fromkeys(TOOL_COUNTS, 0.0)
    for info in infos:
        calls = calls_of(info)
        out["samples"] += 1
        out["tool_calls"] += len(calls)
        out["samples_with_calls"] += bool(calls)
        out["tool_errors"] += sum(bool(c.get("error")) for c in calls)
        out["tool_timeouts"] += sum(bool(c.get("timed_out")) for c in calls)
        out["tool_limit_hits"] += float(info.get("tool_limit_hits", 0))
        out["tool_truncated"] += float(info.get("tool_truncated", 0))
        out["turns"] += sum(s.get("role") == "model" for s in info.get("turns") or []) or 1
        out["observation_tokens"] += float(info.get("observation_tokens", 0))
    return out


def tool_metrics(counts: dict[str, float]) -> dict[str, float]:
    """The step's ``tool/*`` metrics from summed :func:`episode_counts`.

    >>> tool_metrics({**dict.fromkeys(TOOL_COUNTS, 0.0), "samples": 4.0, "tool_calls": 2.0, "tool_errors": 1.0})
    ... # doctest: +ELLIPSIS
    {'tool/calls_per_sample': 0.5, 'tool/error_rate': 0.5, ...}
    """
    n = max(counts["samples"], 1.0)
    calls = counts["tool_calls"]
    return {
        "tool/calls_per_sample": calls / n,
        "tool/error_rate": counts["tool_errors"] / calls if calls else 0.0,
        "tool/samples_with_calls": counts["samples_with_calls"] / n,
        "tool/turns_mean": counts["turns"] / n,
        "tool/observation_tokens_mean": counts["observation_tokens"] / n,
        "tool/timeouts": counts["tool_timeouts"],
        "tool/limit_hits": counts["tool_limit_hits"],
        "tool/truncated_outputs": counts["tool_truncated"],
    }
