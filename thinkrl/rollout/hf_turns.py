"""The built-in engine's multi-turn decode: every episode of a call in one batch, tools running alongside.

Each row of the batch is, at every decode step, in one of four modes:

- ``sample``: it feeds the token it sampled last and samples the next one from the logits;
- ``wait``: its turn ended in a tool call, which runs in the pool *now*; it stays in the batch but feeds a
  placeholder whose KV column is masked out afterwards (so the others never wait for it), and does not
  advance its position;
- ``force``: its observation is back; it feeds the last token it sampled, then the observation's tokens, one
  per step (logits discarded), into its own KV cache; the logits after the last one are sampled from;
- ``done``: left in the batch until finished rows are dropped (as in ``hf.py``).

Columns and positions are decoupled (``LeanDecoder`` masks per row and takes per-row positions), so a row's
cache may have masked gaps where it waited; the buffers grow when the columns run out. When every open row
waits, the loop blocks on the first call to finish instead of stepping.

Randomness: the j-th token a row samples (over all its turns) uses ``step_uniforms(seed, j, N)[row]``, the
number the single-turn engine gives its j-th token, so an episode without tool calls samples exactly what
``HFEngine.generate`` would.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import torch

from thinkrl.rollout.base import SamplingParams, check_params
from thinkrl.rollout.hf import DROP_FRACTION, MAX_IDLE_STEPS, HFEngine, _StopStrings
from thinkrl.rollout.lean import LeanDecoder, lean_unsupported
from thinkrl.rollout.token_draw import sample_tokens, step_uniforms


def native_episodes(engine: Any, prompt_ids: list[list[int]], params: SamplingParams) -> bool:
    """Whether ``engine`` decodes episodes in one batch: the built-in engine with ``fast_decode`` on a model
    ``LeanDecoder`` supports (other engines go turn by turn, ``episodes.py``)."""
    if not isinstance(engine, HFEngine) or not engine.fast_decode or not prompt_ids:
        return False
    return lean_unsupported(engine.model, max(map(len, prompt_ids)) + params.max_new_tokens) is None


def decode_episodes(engine: HFEngine, prompt_ids: list[list[int]], params: SamplingParams, book: Any) -> None:
    """Run every episode of ``book`` to its end (``params.seed`` set; ``book``: ``episodes.EpisodeBook``)."""
    check_params(params, prompt_ids)
    n = params.n
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    per_chunk = max(1, len(order) if engine.max_batch_size is None else engine.max_batch_size // n)
    model = engine.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), per_chunk):
                _Chunk(engine, prompt_ids, order[start : start + per_chunk], params, book, device).run()
    finally:
        model.train(was_training)


class _Chunk:
    """The episodes of one chunk of prompts (module docstring)."""

    def __init__(self, engine: HFEngine, prompt_ids: list[list[int]], chunk: list[int], params: SamplingParams,
                 book: Any, device: torch.device):  # fmt: skip
        self.engine, self.params, self.book, self.device = engine, params, book, device
        n = params.n
        self.num_rows = len(prompt_ids) * n
        prompts = [prompt_ids[i] for i in chunk]
        capacity = max(len(p) for p in prompts) + params.max_new_tokens
        self.logits, cache, attn = engine.prefill(prompts, n, capacity, device)
        self.lean = LeanDecoder(engine.model, cache, attn, repeats=n, capacity=capacity)
        self.positions = attn.repeat_interleave(n, 0).sum(-1)  # (B,) next position of each row
        self.rows = [p * n + j for p in chunk for j in range(n)]  # global row of each batch row
        b = len(self.rows)
        self.local = list(range(b))  # index into the stop-string tracker
        self.mode = ["sample"] * b
        self.queue: list[deque[int]] = [deque() for _ in range(b)]
        self.future: list[Future | None] = [None] * b
        self.last = [engine.pad_id] * b  # the last sampled token (fed when the row resumes)
        self.drawn = [0] * b  # tokens sampled so far over all turns: the index of the next one's uniform
        self.feed = [engine.pad_id] * b
        self.stops = _StopStrings(engine.tokenizer, params.stop_strings, b)
        self.stop_ids = set(engine.eos_ids) | set(params.stop_token_ids)
        self._uniforms: dict[int, torch.Tensor] = {}
        self.step_no = 0
        self.first_done: int | None = None

    def run(self) -> None:
        while True:
            self._sample()
            self._collect(block=False)
            if not any(m in ("sample", "force") for m in self.mode):
                if "wait" not in self.mode:
                    return
                self._collect(block=True)
                continue
            self._drop_done()
            self._step()

    def _uniform(self, drawn: int, row: int) -> float:
        if drawn not in self._uniforms:
            self._uniforms[drawn] = step_uniforms(
                self.params.seed, drawn, self.num_rows, self.params.first_row
            )
        return float(self._uniforms[drawn][row])

    def _sample(self) -> None:
        """Rows in ``sample`` mode draw a token from the current logits."""
        live = [b for b, m in enumerate(self.mode) if m == "sample"]
        if not live:
            return
        p = self.params
        u = None
        if p.temperature != 0:
            u = torch.tensor([self._uniform(self.drawn[b], self.rows[b]) for b in live], dtype=torch.float64)
        idx = torch.tensor(live, dtype=torch.long, device=self.device)
        tok, lp = sample_tokens(self.logits[idx], u, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p)
        toks, lps = tok.tolist(), lp.tolist()
        hits = (
            self.stops.update([self.local[b] for b in live], toks)
            if self.stops.active
            else [False] * len(live)
        )
        for b, t, lp_b, hit in zip(live, toks, lps, hits):
            r = self.rows[b]
            self.drawn[b] += 1
            self.book.add_model_tokens(r, [t], [lp_b])
            stopped = hit or t in self.stop_ids
            if stopped or self.book.rows[r].left <= 0:
                fut = self.book.end_turn(r, stopped)
                self.last[b] = t
                if fut is None:
                    self._done(b)
                else:
                    self.mode[b], self.future[b] = "wait", fut
            else:
                self.feed[b] = t

    def _collect(self, block: bool) -> None:
        """Rows whose tool call is back resume (``force``); with ``block``, wait for the first one."""
        waiting = [b for b, m in enumerate(self.mode) if m == "wait"]
        if block and waiting:
            wait([self.future[b] for b in waiting], return_when=FIRST_COMPLETED)
        for b in waiting:
            fut = self.future[b]
            if fut is None or not fut.done():
                continue
            self.future[b] = None
            obs = self.book.resume(self.rows[b], fut.result())
            if obs is None:
                self._done(b)
                continue
            self.queue[b] = deque([self.last[b], *obs])
            self.stops.ids[self.local[b]] = []  # a stop string must lie within one model turn
            self.mode[b] = "force"

    def _done(self, b: int) -> None:
        self.mode[b] = "done"
        if self.first_done is None:
            self.first_done = self.step_no

    def _drop_done(self) -> None:
        """Finished rows leave the batch as in ``hf.py`` (a drop copies the cache, so not at every finish)."""
        done = [b for b, m in enumerate(self.mode) if m == "done"]
        if not done:
            return
        due = (
            len(done) >= DROP_FRACTION * len(self.mode)
            or self.step_no - (self.first_done or 0) >= MAX_IDLE_STEPS
        )
        if not due:
            return
        keep = [b for b, m in enumerate(self.mode) if m != "done"]
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.lean.select_rows(idx)
        self.logits, self.positions = self.logits[idx], self.positions[idx]
        for name in ("rows", "local", "mode", "queue", "future", "last", "drawn", "feed"):
            values = getattr(self, name)
            setattr(self, name, [values[b] for b in keep])
        self.first_done = None

    def _step(self) -> None:
        """One decode step of the whole batch."""
        moving = []
        for b, m in enumerate(self.mode):
            if m == "force":
                self.feed[b] = self.queue[b].popleft()
                if not self.queue[b]:
                    self.mode[b] = "sample"  # the logits after the observation's last token are sampled from
            if m in ("sample", "force"):
                moving.append(b)
            else:
                self.feed[b] = self.engine.pad_id
        lean = self.lean
        if lean.length >= lean.capacity:
            lean.grow(2 * lean.capacity)
        tokens = torch.tensor(self.feed, dtype=torch.long, device=self.device)
        self.logits = lean.step(tokens, self.positions)  # (B, V)
        moved = set(moving)
        still = [b for b in range(len(self.mode)) if b not in moved]
        if still:  # a placeholder column: never attended to again
            lean.mask[torch.tensor(still, device=self.device), lean.length - 1] = False
        step = torch.zeros(len(self.mode), dtype=torch.long, device=self.device)
        step[torch.tensor(moving, dtype=torch.long, device=self.device)] = 1
        self.positions = self.positions + step
        self.step_no += 1
