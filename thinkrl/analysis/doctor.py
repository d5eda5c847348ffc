"""The run doctor: named checks over the metrics stream that say what is wrong, why, and what to change.

Each check is a pure function ``(stream, i, cfg) -> str | None``: it looks at the metrics up to record ``i`` and
returns what it saw (with the numbers) when it fires. The failures are the ones users report most
(docs/visibility.md has the list with the peers' issues). Used two ways:

* live: ``doctor = Doctor(cfg.doctor)``; ``for line in doctor.observe(step, metrics): print(line)`` once per
  step. A check warns when it starts firing and again only after it has been quiet for ``window`` steps.
* offline: ``thinkrl doctor RUN_DIR`` (:func:`diagnose`) prints each episode with its step range.

>>> from thinkrl.config import DoctorConfig
>>> doctor = Doctor(DoctorConfig(window=2))
>>> lines = [doctor.observe(s, {"groups/zero_spread_frac": 0.9, "accuracy": 0.95}) for s in range(1, 6)]
>>> [len(x) for x in lines]  # fires once the first window is full, then stays quiet for the episode
[0, 1, 0, 0, 0]
>>> print(lines[1][0].split(":")[0])
[doctor] step 2
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from thinkrl.config import DoctorConfig

EVAL_PASS = "eval/pass@1"


class MetricStream:
    """The run's records merged by step, in step order, with windowed means.

    Only records that carry training metrics (not the step-0 evaluation alone) are points where checks run.
    """

    def __init__(self, window: int):
        self.window = window
        self.steps: list[int] = []
        self.rows: list[dict[str, Any]] = []
        self._index: dict[int, int] = {}

    def add(self, step: int, metrics: dict[str, Any]) -> int:
        """Merge ``metrics`` into the record of ``step``; returns its index."""
        if step in self._index:
            i = self._index[step]
            self.rows[i].update(metrics)
            return i
        self._index[step] = len(self.rows)
        self.steps.append(step)
        self.rows.append(dict(metrics))
        return len(self.rows) - 1

    def index(self, step: int) -> int:
        """The record index of ``step``."""
        return self._index[step]

    def values(self, key: str, lo: int, hi: int) -> list[float]:
        """Finite values of ``key`` in records ``lo..hi`` (inclusive)."""
        out = []
        for r in self.rows[max(lo, 0) : hi + 1]:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def recent(self, key: str, i: int) -> float | None:
        """Mean of ``key`` over the last ``window`` records up to ``i``; None until a full window exists."""
        vals = self.values(key, i - self.window + 1, i)
        return sum(vals) / len(vals) if len(vals) == self.window else None

    def start(self, key: str, i: int) -> float | None:
        """Mean of the first ``window`` values of ``key``: the run's start. None until there are ``2 * window``
        values up to ``i``, so a recent window never overlaps the start. Reads only the first rows needed."""
        vals: list[float] = []
        for r in islice(self.rows, i + 1):
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                vals.append(float(v))
                if len(vals) == 2 * self.window:
                    return sum(vals[: self.window]) / self.window
        return None


Check = Callable[[MetricStream, int, DoctorConfig], "str | None"]


@dataclass(frozen=True)
class Diagnosis:
    """A named check: what it detects, the likely cause, and the config change to try."""

    name: str
    symptom: str
    cause: str
    fix: str
    fires: Check


def _ratio_check(key: str, cmp: str, field: str, unit: str) -> Check:
    """Fires when the recent mean of ``key`` is below (``cmp='lt'``) or above the start times ``cfg.field``."""

    def fires(s: MetricStream, i: int, cfg: DoctorConfig) -> str | None:
        now, start = s.recent(key, i), s.start(key, i)
        if now is None or start is None or start <= 0:
            return None
        r = getattr(cfg, field)
        if (now < r * start) if cmp == "lt" else (now > r * start):
            return f"{key} {now:.4g} {unit} vs {start:.4g} at the start ({now / start:.2f}x; threshold {r}x)"
        return None

    return fires


def _above(key: str, field: str) -> Check:
    def fires(s: MetricStream, i: int, cfg: DoctorConfig) -> str | None:
        now = s.recent(key, i)
        limit = getattr(cfg, field)
        if now is not None and now > limit:
            return f"{key} {now:.4g} over the last {s.window} steps (threshold {limit})"
        return None

    return fires


def _accuracy_key(s: MetricStream, i: int) -> str:
    """``accuracy`` when the run logs it (a reward named accuracy, exact_match, ...), else the mean reward."""
    return "accuracy" if "accuracy" in s.rows[i] else "reward/mean"


def length_runaway(s: MetricStream, i: int, cfg: DoctorConfig) -> str | None:
    key = "completion/len_mean"
    now, start = s.recent(key, i), s.start(key, i)
    acc_key = _accuracy_key(s, i)
    acc_now, acc_start = s.recent(acc_key, i), s.start(acc_key, i)
    if None in (now, start, acc_now, acc_start) or start <= 0:
        return None
    if now > cfg.length_growth_max * start and acc_now - acc_start < cfg.min_accuracy_gain:
        return (f"mean length {now:.0f} tokens vs {start:.0f} at the start ({now / start:.1f}x) while {acc_key} "
                f"went {acc_start:.3f} -> {acc_now:.3f}")  # fmt: skip
    return None


def zero_spread(s: MetricStream, i: int, cfg: DoctorConfig) -> str | None:
    msg = _above("groups/zero_spread_frac", "zero_spread_max")(s, i, cfg)
    if msg is None:
        return None
    acc = s.recent(_accuracy_key(s, i), i)
    if acc is not None:
        msg += f"; training accuracy {acc:.2f}: most groups are all " + ("right" if acc >= 0.5 else "wrong")
    return msg


def logprob_mismatch(s: MetricStream, i: int, cfg: DoctorConfig) -> str | None:
    key = "train/logprob_mismatch"
    now, start = s.recent(key, i), s.start(key, i)
    if now is None:
        return None
    if now > cfg.logprob_mismatch_max:
        return f"{key} {now:.3g} nats/token (threshold {cfg.logprob_mismatch_max})"
    floor = cfg.logprob_mismatch_max / 10
    if start is not None and now > floor and now > cfg.logprob_mismatch_growth * max(start, 1e-12):
        return f"{key} {now:.3g} nats/token, {now / max(start, 1e-12):.1f}x its start {start:.3g} and growing"
    return None


def reward_hacking(s: MetricStream, i: int, cfg: DoctorConfig) -> str | None:
    """Held-out pass@1 fell from its best while the training reward rose; or format saturated while
    accuracy stayed flat."""
    evals = []
    if isinstance(s.rows[i].get(EVAL_PASS), (int, float)):  # only at an evaluation step: the rest is cheap
        evals = [
            (j, r[EVAL_PASS])
            for j, r in enumerate(islice(s.rows, i + 1))
            if isinstance(r.get(EVAL_PASS), (int, float))
        ]
    if len(evals) >= 2:
        best_j, best = max(evals[:-1], key=lambda e: e[1])
        now = evals[-1][1]
        hi = s.rows[i].get("eval/pass@1_ci95_hi")
        below = now < best - cfg.eval_drop and (not isinstance(hi, (int, float)) or hi < best)
        r_then = s.values("reward/mean", best_j - s.window + 1, best_j)
        r_now = s.values("reward/mean", i - s.window + 1, i)
        if below and r_then and r_now and sum(r_now) / len(r_now) > sum(r_then) / len(r_then):
            return (f"held-out pass@1 {now:.3f} at step {s.steps[i]} vs its best {best:.3f} at step "
                    f"{s.steps[best_j]} while the training reward rose "
                    f"{sum(r_then) / len(r_then):.3f} -> {sum(r_now) / len(r_now):.3f}")  # fmt: skip
    # format saturated during the run (not a model that started formatted) while accuracy stayed flat
    fmt, fmt_start = s.recent("format_rate", i), s.start("format_rate", i)
    acc, acc_start = s.recent("accuracy", i), s.start("accuracy", i)
    if None in (fmt, fmt_start, acc, acc_start) or fmt_start >= cfg.format_saturated:
        return None
    if fmt >= cfg.format_saturated and acc - acc_start < cfg.min_accuracy_gain:
        return f"format rate {fmt_start:.3f} -> {fmt:.3f} while accuracy went {acc_start:.3f} -> {acc:.3f}"
    return None


def reward_failures(s: MetricStream, i: int, cfg: DoctorConfig) -> str | None:
    row = s.rows[i]
    keys = sorted(k for k in row if k.startswith(("reward/timeouts/", "reward/errors/")))
    worst = []
    for k in keys:
        counts = s.values(k, i - s.window + 1, i)
        totals = s.values("completions", i - s.window + 1, i)
        if not counts:
            continue
        # a per-step count over the step's completions; without the total any failure counts
        rate = sum(counts) / sum(totals) if totals and sum(totals) > 0 else float(sum(counts) > 0)
        if rate > cfg.reward_failure_max:
            worst.append(f"{k} {rate:.1%} of completions")
    return "; ".join(worst) + f" (threshold {cfg.reward_failure_max:.1%})" if worst else None


DIAGNOSES: tuple[Diagnosis, ...] = (
    Diagnosis(
        "entropy_collapse", "policy entropy collapsed",
        "the policy became near-deterministic: groups stop differing, exploration and learning stall "
        "(a too-high learning rate or symmetric clipping that pushes probable tokens up)",
        "lower train.lr; raise algorithm.clip_high to 0.28 (DAPO clip-higher); or algorithm.entropy_coef=0.001",
        _ratio_check("train/entropy", "lt", "entropy_collapse_ratio", "nats/token"),
    ),
    Diagnosis(
        "entropy_explosion", "policy entropy exploded",
        "updates too large for the model: the policy drifts toward noise and outputs degrade into gibberish",
        "lower train.lr; set algorithm.entropy_coef=0; tighten train.max_grad_norm; check the reward is not "
        "paying for random text",
        _ratio_check("train/entropy", "gt", "entropy_explosion_ratio", "nats/token"),
    ),
    Diagnosis(
        "length_runaway", "responses grow without getting more accurate",
        "length is being rewarded for itself: GRPO's per-sequence mean lets long wrong answers lose less per "
        "token, or the model repeats itself until the cap",
        "algorithm.loss_agg=token_mean (DAPO) or algorithm.advantage=dr_grpo with "
        "loss_agg=seq_mean_token_sum_norm; algorithm.mask_truncated=true",
        length_runaway,
    ),
    Diagnosis(
        "length_collapse", "responses got much shorter",
        "the policy found that short answers (no reasoning) score as well or better; or a reward penalises length",
        "check the rewards with `thinkrl check-reward`; give the format/accuracy reward more weight; "
        "read completions.jsonl for what the short answers look like",
        _ratio_check("completion/len_mean", "lt", "length_collapse_ratio", "tokens"),
    ),
    Diagnosis(
        "truncation", "many completions are cut at the length cap",
        "rollout.max_new_tokens is too low for the reasoning the model now writes, or the model loops",
        "raise rollout.max_new_tokens; algorithm.mask_truncated=true (DAPO overlong filtering) so cut answers "
        "give no signal",
        _above("completion/truncated_frac", "truncation_max"),
    ),
    Diagnosis(
        "zero_spread_groups", "most groups have no reward spread (zero advantage, no gradient)",
        "the prompts are too easy (all right) or too hard (all wrong) for the model: those groups contribute "
        "nothing and the loss sits near zero",
        "algorithm.dynamic_sampling=true (DAPO: drop them and sample more prompts); or filter the data to the "
        "model's level; a larger rollout.group_size",
        zero_spread,
    ),
    Diagnosis(
        "logprob_mismatch", "the engine's log-probs drift from the trainer's",
        "sampler and trainer disagree on the same tokens (dtype or kernel differences, stale weights after a "
        "failed sync); the update becomes off-policy and can collapse",
        "algorithm.tis_cap=2.0 (truncated importance sampling); rollout.vllm_dtype=float32 or the policy's "
        "dtype; check that weights reach the engine every step",
        logprob_mismatch,
    ),
    Diagnosis(
        "kl_blowup", "KL to the reference blew up",
        "the policy moved far from the reference in few steps: learning rate too high or a reward that pays for "
        "a degenerate output",
        "lower train.lr; raise algorithm.beta; algorithm.ref_refresh_steps to re-anchor; read the completions",
        _above("train/kl", "kl_max"),
    ),
    Diagnosis(
        "clip_fraction_pinned", "most tokens hit the PPO clip",
        "each update moves the policy further than the trust region: the clipped tokens give no gradient",
        "lower train.lr; fewer algorithm.ppo_epochs / num_minibatches; or widen algorithm.clip_high",
        _above("train/clip_fraction", "clip_fraction_max"),
    ),
    Diagnosis(
        "reward_hacking", "the training reward rises but real accuracy does not",
        "the policy optimises a hole in the reward (format without correctness, an extractor it can fool) "
        "instead of solving the task",
        "read completions.jsonl at the steps named; `thinkrl check-reward` on the rewards; lower the format "
        "weight; stop at the best held-out checkpoint",
        reward_hacking,
    ),
    Diagnosis(
        "reward_failures", "reward functions time out or raise",
        "the verifier hangs or crashes on some completions (sympy bombs, sandbox limits, a buggy custom "
        "reward); those rows score 0 and each stalls the step",
        "read the failing completions; raise the reward's timeout; fix or wrap the custom reward",
        reward_failures,
    ),
)  # fmt: skip
BY_NAME = {d.name: d for d in DIAGNOSES}


@dataclass
class Episode:
    """One stretch of steps where a check fired (ended after ``window`` quiet steps, or still open)."""

    check: str
    start: int
    end: int
    first: str
    """What the check saw when it started firing."""
    last: str
    """What it saw at its last firing step."""
    open: bool = True

    def line(self) -> str:
        d = BY_NAME[self.check]
        span = f"steps {self.start}-{self.end}" if self.end != self.start else f"step {self.start}"
        return (f"{self.check} ({span}{', still firing' if self.open else ''}): {d.symptom}: {self.last}. "
                f"Likely cause: {d.cause}. Try: {d.fix}.")  # fmt: skip


def warning_line(step: int, d: Diagnosis, seen: str) -> str:
    return f"[doctor] step {step}: {d.symptom} ({d.name}): {seen}. Likely cause: {d.cause}. Try: {d.fix}."


class Doctor:
    """Runs every check after each step; :meth:`observe` returns the warning lines of checks that just started
    firing (one per episode). ``episodes`` keeps every episode seen so far."""

    def __init__(self, cfg: DoctorConfig | None = None, checks: tuple[Diagnosis, ...] = DIAGNOSES):
        self.cfg = cfg or DoctorConfig()
        self.checks = checks
        self.stream = MetricStream(self.cfg.window)
        self.episodes: list[Episode] = []
        self._open: dict[str, Episode] = {}

    def observe(self, step: int, metrics: dict[str, Any]) -> list[str]:
        """Add one step's metrics (the dict given to the metrics logger); returns new warning lines."""
        i = self.stream.add(step, metrics)
        if i != len(self.stream.rows) - 1 or not _has_training_metrics(self.stream.rows[i]):
            return []  # an evaluation-only record, or a record merged into an earlier step
        lines = []
        for d in self.checks:
            seen = d.fires(self.stream, i, self.cfg)
            ep = self._open.get(d.name)
            if seen is not None:
                if ep is None:
                    ep = Episode(d.name, step, step, seen, seen)
                    self._open[d.name] = ep
                    self.episodes.append(ep)
                    lines.append(warning_line(step, d, seen))
                ep.end, ep.last = step, seen
            elif ep is not None and i - self.stream.index(ep.end) >= self.cfg.window:
                ep.open = False  # quiet for a whole window: the episode is over
                del self._open[d.name]
        return lines


def _has_training_metrics(row: dict[str, Any]) -> bool:
    return any(not k.startswith("eval/") and k not in ("step", "time") for k in row)


def diagnose(records: list[dict[str, Any]], cfg: DoctorConfig | None = None) -> list[Episode]:
    """Every episode of every check over a run's metric records, in the order they started."""
    doctor = Doctor(cfg)
    for r in sorted(records, key=lambda r: r.get("step", 0)):
        doctor.observe(int(r.get("step", 0)), {k: v for k, v in r.items() if k != "step"})
    return doctor.episodes


def run_doctor_config(run_dir: str | Path) -> DoctorConfig:
    """The ``doctor`` section of ``RUN/config.yaml`` when the run saved one, else the defaults."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return DoctorConfig()
    import yaml

    section = (yaml.safe_load(path.read_text()) or {}).get("doctor") or {}
    known = {k: v for k, v in section.items() if k in DoctorConfig.__dataclass_fields__}
    return DoctorConfig(**known)


def format_findings(episodes: list[Episode], n_records: int) -> str:
    """The doctor's findings as text, one paragraph per episode."""
    if not episodes:
        names = ", ".join(d.name for d in DIAGNOSES)
        return f"No problems found in {n_records} metric records. Checks run: {names}."
    return "\n\n".join(ep.line() for ep in episodes)
