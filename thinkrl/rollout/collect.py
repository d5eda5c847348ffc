"""The collector: prompts -> environment + engine -> rewards -> DAPO filtering -> :class:`Trajectories`.

    prompts = Prompts(rows, SingleTurn(tokenizer, cfg.data.template), tokenizer, seed=cfg.train.seed)
    collector = Collector(cfg, prompts, engine, RewardScorer(funcs, weights), tokenizer, parallel)
    trajectories, stats = collector.collect(step)

One step draws ``prompts_per_step`` rows from a seeded shuffle (:class:`Prompts`, rendered once by the
environment), samples G completions per prompt with the engine, lets the environment close each episode
and scores every completion with the reward functions (:func:`score`, the one place rewards are computed,
under the scorer's time bounds; its timeouts and errors per reward join the step's metrics).
With DAPO's dynamic sampling (``algorithm.dynamic_sampling``) groups whose rewards are all equal are dropped
and more prompts are sampled, for at most ``max_sampling_rounds`` rounds.

A multi-turn environment (``environment.is_multi_turn``: the Python tool) is run by ``episodes.py``: its
observations join the trajectory with ``loss_mask`` False, its episode columns (turns, tool calls, tool
errors) reach the reward functions, and the step's ``tool/*`` metrics and ``time/tools`` are logged.

Data parallel: ``parallel`` gives this rank its contiguous share of each round's prompts; with dynamic
sampling every rank sees the whole round (``gather_objects``), keeps the groups one process keeps, and at the
end takes its contiguous share of them, so the rows are in one process's order (docs/scaling.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import torch

from thinkrl.algorithms import zero_spread_groups
from thinkrl.config import Config
from thinkrl.core import prompt_token_ids, timed
from thinkrl.rollout.base import Rollout, SamplingParams
from thinkrl.rollout.environment import Environment, is_multi_turn
from thinkrl.rollout.episodes import TOOL_COUNTS, episode_counts, generate_episodes, tool_metrics
from thinkrl.rollout.trajectories import Trajectories

CORRECTNESS_REWARDS = ("accuracy", "exact_match", "countdown", "code", "routed")
"""Rewards that say whether an answer is right; the first one present is logged as ``accuracy``."""


class Sharding(Protocol):
    """What the collector needs of the parallel edge (``thinkrl.train.parallel``)."""

    world_size: int

    def shard(self, total: int) -> tuple[int, int]:
        """``[start, end)`` of this rank's contiguous share of ``total`` items."""
        ...

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order."""
        ...


def reward_columns(rows: Sequence[dict[str, Any]], **extra: Sequence[Any]) -> dict[str, list[Any]]:
    """Every data column of ``rows`` by name (a row without it gives None), plus ``extra`` columns.

    >>> reward_columns([{"answer": "1"}, {"answer": "2", "level": 3}], finish_reason=["stop", "length"])
    {'answer': ['1', '2'], 'level': [None, 3], 'finish_reason': ['stop', 'length']}
    """
    keys = sorted({k for r in rows for k in r})
    return {**{k: [r.get(k) for r in rows] for k in keys}, **{k: list(v) for k, v in extra.items()}}


def score(
    scorer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    rows: Sequence[dict[str, Any]],
    **extra: Sequence[Any],
) -> Any:
    """Score completions with a ``thinkrl.rewards.RewardScorer`` (reward callables ``(prompts, completions,
    **columns)`` under time bounds); every data column of ``rows`` and each ``extra`` column reaches them by
    name. Returns ``thinkrl.rewards.RewardResult`` (totals, per-function scores, timeouts and errors).

    >>> from thinkrl.rewards import RewardScorer, in_process
    >>> def one(prompts, completions, answer, **kw): return [float(c == a) for c, a in zip(completions, answer)]
    >>> score(RewardScorer([in_process(one)]), ["q", "q"], ["1", "2"], [{"answer": "1"}] * 2).total.tolist()
    [1.0, 0.0]
    """
    return scorer.score(list(prompts), list(completions), reward_columns(rows, **extra))


class Prompts:
    """The training prompts: every row rendered by the environment and tokenized once (a prompt over
    ``max_tokens`` fails before anything is sampled), drawn in a seeded shuffle of the rows, reshuffled every
    epoch. The position (``epoch``, ``pos``) is saved in checkpoints, so a resumed run draws what the
    uninterrupted one would.

    >>> from thinkrl.rollout.environment import SingleTurn
    >>> from thinkrl.testing import char_tokenizer
    >>> p = Prompts([{"question": str(i)} for i in range(3)], SingleTurn(None, "plain"), char_tokenizer(), seed=0)
    >>> first = p.next(2); second = p.next(2)   # the second call crosses into epoch 1
    >>> sorted(first + second[:1]), p.epoch, p.pos, p.texts
    ([0, 1, 2], 1, 1, ['0', '1', '2'])
    """

    def __init__(
        self,
        rows: list[dict[str, Any]],
        env: Environment,
        tokenizer: Any,
        *,
        seed: int,
        max_tokens: int | None = None,
    ):
        if not rows:
            raise ValueError("no training rows: check data.train (and data.max_rows)")
        self.rows, self.env, self.seed = rows, env, seed
        self.texts = [env.reset(r) for r in rows]
        self.ids = prompt_token_ids(tokenizer, self.texts, env.template, max_tokens)
        self.seek(0, 0)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next(self, k: int) -> list[int]:
        """The next ``k`` row indices."""
        out: list[int] = []
        while len(out) < k:
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            take = self._order[self.pos : self.pos + k - len(out)]
            out.extend(take)
            self.pos += len(take)
        return out

    def seek(self, epoch: int, pos: int) -> None:
        """Continue from a saved position."""
        self.epoch, self.pos = epoch, pos
        self._order = self._epoch_order(epoch)


class Collector:
    """Turns prompts into scored :class:`Trajectories` for the learner (module docstring).

    Args:
        cfg: the run config (``rollout``, ``algorithm.dynamic_sampling`` / ``max_sampling_rounds`` /
            ``mask_truncated``, ``train.seed``).
        prompts: the training rows, rendered by their environment (:class:`Prompts`).
        engine: a ``RolloutEngine``.
        scorer: the rewards and their weights (``thinkrl.rewards.RewardScorer``).
        tokenizer: its pad id pads the completions.
        parallel: this rank's share of each round (:class:`Sharding`).
        policy_version: the learner step the engine's weights come from.
    """

    def __init__(
        self,
        cfg: Config,
        prompts: Prompts,
        engine: Any,
        scorer: Any,
        tokenizer: Any,
        parallel: Sharding,
        *,
        policy_version: int = 0,
    ):
        self.cfg, self.prompts, self.engine, self.parallel = cfg, prompts, engine, parallel
        self.scorer = scorer
        self._reward_counts: dict[str, float] = {}  # timeouts/errors per reward, summed over a step's rounds
        self._tool_counts: dict[str, float] = {}  # tool calls, errors, turns, ... summed over a step's rounds
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.policy_version = policy_version
        self._pool: ThreadPoolExecutor | None = None  # tool calls run here, in parallel (multi-turn only)

    def sync_weights(self, version: int) -> None:
        """Make the engine sample from the learner's weights of step ``version``."""
        self.engine.sync_weights()
        self.policy_version = version

    def sampling_params(self, step: int, round_: int, first_row: int = 0) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            n=r.group_size,
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_new_tokens=r.max_new_tokens,
            stop_strings=list(r.stop_strings),
            # A seed per (run, step, round): sampling is reproducible and resumes exactly without engine state.
            seed=self.cfg.train.seed * 1_000_003 + step * 101 + round_,
            first_row=first_row,  # a rank's rows draw the random numbers one process would give them
        )

    def collect(
        self, step: int, timings: dict[str, float] | None = None
    ) -> tuple[Trajectories | None, dict[str, float]]:
        """This rank's scored trajectories of learner step ``step`` and the collection's metrics; None when
        dynamic sampling kept nothing to train on (every group had zero spread: the step is skipped)."""
        timings = {} if timings is None else timings
        self._reward_counts, self._tool_counts = {}, {}
        if self.cfg.algorithm.dynamic_sampling:
            traj, stats = self._collect_dynamic(step, timings)
        else:
            idx = self.prompts.next(
                self.cfg.rollout.prompts_per_step
            )  # the global order, the same on every rank
            lo, hi = self.parallel.shard(len(idx))  # this rank's contiguous share of whole groups
            traj, stats = self.sample(idx[lo:hi], step, 0, lo, timings), {}
        return traj, {**stats, **self._reward_metrics(), **self._tool_metrics()}

    def tool_pool(self) -> ThreadPoolExecutor:
        """The threads that run a multi-turn batch's environment steps (tool calls) in parallel: each waits
        on its own sandboxed process, so ``tools.workers`` calls run at once."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(1, self.cfg.tools.workers), thread_name_prefix="thinkrl-tool")
        return self._pool

    def _tool_metrics(self) -> dict[str, float]:
        """The step's ``tool/*`` metrics over every rank (multi-turn environments only)."""
        if not self._tool_counts:
            return {}
        counts = self._tool_counts
        if self.parallel.world_size > 1:
            every = self.parallel.gather_objects(counts)
            counts = {k: sum(c.get(k, 0.0) for c in every) for k in TOOL_COUNTS}
        return tool_metrics(counts)

    def _reward_metrics(self) -> dict[str, float]:
        """The step's reward timeouts and errors per function summed over ranks, and rank 0's seconds."""
        counts = self._reward_counts
        if self.parallel.world_size > 1:
            every = self.parallel.gather_objects(counts)
            counts = {
                k: v if k.startswith("reward/seconds/") else sum(c.get(k, 0.0) for c in every)
                for k, v in every[0].items()
            }
        return dict(counts)

    def _collect_dynamic(self, step: int, timings: dict[str, float]) -> tuple[Trajectories | None, dict]:
        """DAPO dynamic sampling: keep groups with reward spread, in the global order, until the batch is full."""
        a, p, g = self.cfg.algorithm, self.cfg.rollout.prompts_per_step, self.cfg.rollout.group_size
        kept: list[Trajectories] = []
        n_kept = dropped = 0
        for round_ in range(a.max_sampling_rounds):
            idx = self.prompts.next(p)
            lo, hi = self.parallel.shard(p)
            mine = self.sample(idx[lo:hi], step, round_, lo, timings)
            whole = Trajectories.cat(self.parallel.gather_objects(mine), self.pad_id)  # every rank: the round
            keep = ~zero_spread_groups(whole.rewards, whole.group_ids)
            dropped += p - int(keep.sum()) // g
            rows = keep.nonzero().squeeze(-1)[: max(0, (p - n_kept) * g)]
            if rows.numel() == 0:
                continue
            part = whole.select(rows).renumber_groups(n_kept)
            kept.append(part)
            n_kept += int(torch.unique(part.group_ids).numel())
            if n_kept >= p:
                break
        stats = {"dynamic/dropped_groups": dropped, "dynamic/rounds": round_ + 1}
        # every group had zero spread (or, data parallel, fewer kept groups than ranks: a rank would train on
        # nothing): the same decision on every rank
        if n_kept < self.parallel.world_size:
            return None, stats
        batch = Trajectories.cat(kept, self.pad_id)
        lo, hi = self.parallel.shard(n_kept)  # this rank's contiguous share of the kept groups
        return batch.select(((batch.group_ids >= lo) & (batch.group_ids < hi)).nonzero().squeeze(-1)), stats

    def sample(
        self, idx: list[int], step: int, round_: int, first_group: int, timings: dict[str, float]
    ) -> Trajectories:
        """Episodes on the rows ``idx`` (G each), scored; their groups are numbered from ``first_group``."""
        g = self.cfg.rollout.group_size
        env = self.prompts.env
        loss_mask = None
        with timed(timings, "generate"):
            params = self.sampling_params(step, round_, first_group * g)
            prompt_ids = [self.prompts.ids[i] for i in idx]
            if is_multi_turn(env):
                eps = generate_episodes(self.engine, env, [self.prompts.rows[i] for i in idx], prompt_ids,
                                        params, self.tokenizer, self.tool_pool())  # fmt: skip
                rollout, loss_mask = eps.rollout, eps.loss_mask
                timings["tools"] = timings.get("tools", 0.0) + eps.tool_seconds
                for k, v in episode_counts(eps.infos).items():
                    self._tool_counts[k] = self._tool_counts.get(k, 0.0) + v
            else:
                rollout = self.engine.generate(prompt_ids, params).to("cpu")
        with timed(timings, "reward"):
            groups = rollout.group_ids.tolist()
            rows = [self.prompts.rows[idx[j]] for j in groups]
            if loss_mask is None:
                info = self._close_episodes(rows, rollout.texts)
            else:  # every column an episode reported, whole-trajectory ones (turns, tool calls) included
                info = {k: [e.get(k) for e in eps.infos] for k in sorted({k for e in eps.infos for k in e})}
            out = score(
                self.scorer, [self.prompts.texts[idx[j]] for j in groups], rollout.texts, rows,
                finish_reason=rollout.finish_reasons, completion_length=rollout.lengths.tolist(), **info,
            )  # fmt: skip
            for k, v in out.metrics().items():
                self._reward_counts[k] = self._reward_counts.get(k, 0.0) + v
        return self._trajectories(rollout, rows, first_group, out, loss_mask)

    def _close_episodes(self, rows: list[dict[str, Any]], texts: list[str]) -> dict[str, list[Any]]:
        """Show each completion to the environment; its reward columns (``Turn.info``) by name."""
        env = self.prompts.env
        turns = [env.step(row, text) for row, text in zip(rows, texts)]
        if not all(t.done for t in turns):
            raise NotImplementedError(
                f"{type(env).__name__} answered a model turn without ending the episode, but it names no "
                "turn stop strings: this collector runs it as one of the single-turn environments; give it "
                "stop_strings (e.g. ('</python>',)) so that episodes.py runs it turn by turn "
                "(docs/architecture.md, 'A new environment'; docs/tools.md)"
            )
        keys = sorted({k for t in turns for k in t.info})
        return {k: [t.info.get(k) for t in turns] for k in keys}

    def _trajectories(
        self,
        rollout: Rollout,
        rows: list[dict[str, Any]],
        first_group: int,
        out: Any,
        loss_mask: torch.Tensor | None = None,
    ) -> Trajectories:
        # single turn: every completion token is the model's; multi-turn: observation tokens carry no loss
        loss_mask = rollout.completion_mask.clone() if loss_mask is None else loss_mask.clone()
        truncated = torch.tensor([f == "length" for f in rollout.finish_reasons], dtype=torch.bool)
        if (
            self.cfg.algorithm.mask_truncated
        ):  # DAPO overlong filtering: a cut-off answer is neither right nor wrong
            loss_mask[truncated] = False
        return Trajectories(
            prompt_ids=[rollout.prompt_ids[j] for j in rollout.group_ids.tolist()],
            group_ids=rollout.group_ids + first_group,
            completion_ids=rollout.completion_ids,
            attention_mask=rollout.completion_mask,
            loss_mask=loss_mask,
            sampler_logp=rollout.logprobs,
            policy_version=torch.full((len(rows),), self.policy_version, dtype=torch.long),
            finish_reasons=list(rollout.finish_reasons),
            texts=list(rollout.texts),
            rows=rows,
            rewards=out.total,
            reward_parts=dict(out.per_function),
        )
