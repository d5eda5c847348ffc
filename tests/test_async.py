"""Asynchronous RL (``rollout.max_staleness``): admission control, weight sync, exactness, resume, bad input."""

from __future__ import annotations

import copy
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import DIGITS, make_cfg, params
from conftest import make_trainer as toy_trainer
from generator_side import ASYNC, broken_engine, digit_share

from thinkrl.config import ConfigError, load_config
from thinkrl.rollout import Prompts, SingleTurn
from thinkrl.rollout.async_collector import AsyncCollector, staleness_metrics
from thinkrl.rollout.async_gen import GeneratedBatch, run_generator
from thinkrl.rollout.weight_sync import SharedWeights

# conftest's trainer on the toy task, with a reward the generator process can import by name
make_trainer = functools.partial(toy_trainer, rewards=(digit_share,))


# ------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.max_staleness=-1"], "rollout.max_staleness=-1 must be >= 0"),
        (
            ["rollout.max_staleness=3", "asynchronous.buffer_batches=2"],
            "larger than asynchronous.buffer_batches",
        ),
        (["asynchronous.buffer_batches=0"], "buffer_batches must be >= 1"),
        (["asynchronous.generator_threads=0"], "generator_threads=0 must be >= 1"),
        (["asynchronous.generator_device=tpu"], "valid: auto, cpu, cuda, cuda:N"),
        (["asynchronous.weight_sync=pickle"], "valid: shm, nccl"),
        (["rollout.max_staleness=1", "train.fsdp=true"], "FSDP ranks hold only in shards"),
    ],
)
def test_bad_async_settings_fail_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_defaults_are_synchronous():
    cfg = load_config(None, [])
    assert cfg.rollout.max_staleness == 0
    load_config(None, ["rollout.max_staleness=2", "asynchronous.buffer_batches=2"])  # buffer == k is fine


# ------------------------------------------------------------------------------------------- weight sync
def test_shared_weights_copy_in_and_out_and_check_layout():
    """Across processes: the end-to-end tests below (the bit-identical run needs every publish to arrive)."""
    a, b = torch.randn(3, 4), torch.randn(5, dtype=torch.float64)
    shared = SharedWeights([("a", a), ("b", b)])
    assert shared.version == -1 and all(buf.is_shared() for buf in shared.buffers.values())
    assert shared.publish([a, b], version=3) >= 0
    out = [torch.zeros(3, 4), torch.zeros(5, dtype=torch.float64)]
    assert shared.version == 3 and shared.load_into(out) == 3
    assert torch.equal(out[0], a) and torch.equal(out[1], b)
    a.add_(1.0)  # the learner's next step: the generator sees nothing of it until the next publish
    shared.load_into(out)
    assert not torch.equal(out[0], a)
    assert sorted(shared.buffers) == ["float32", "float64"] and shared.layout.nbytes == 12 * 4 + 5 * 8
    with pytest.raises(ValueError, match="tensor 1 is"):
        shared.layout.check([("a", a), ("b", torch.zeros(5))])  # float32 where the learner has float64
    with pytest.raises(ValueError, match="1 tensors here, 2"):
        shared.layout.check([("a", a)])
    with pytest.raises(ValueError, match="no trainable parameters"):
        SharedWeights([])


# ------------------------------------------------------------------------------------- admission control
class _Weights:
    """A version counter the test moves; ``load_into`` records what the generator loaded."""

    def __init__(self, version: int):
        self.version, self.loads = version, []

    def load_into(self, params):
        self.loads.append(self.version)
        return self.version


class _Collector:
    """Records the version each batch is sampled with; ``on_collect`` plays the learner."""

    def __init__(self, on_collect=lambda j: None):
        self.policy_version, self.sampled, self.on_collect = None, [], on_collect
        self.prompts = type("P", (), {"epoch": 0, "pos": 0})()

    def collect(self, step, timings):
        self.sampled.append((step, self.policy_version))
        self.prompts.pos += 2
        self.on_collect(step)
        return None, {}


class _Engine:
    syncs = 0

    def sync_weights(self):
        self.syncs += 1


def _run(collector, weights, k, start=0, end=10, version=0):
    got: list[GeneratedBatch] = []
    waits = []

    def stopped():  # the learner never publishes again: the first wait ends the run
        waits.append(len(got))
        return True

    run_generator(collector, _Engine(), weights, [], lambda b: got.append(b) or True, start=start, end=end,
                  max_staleness=k, version=version, stopped=stopped, poll_s=0)  # fmt: skip
    return got, waits


@pytest.mark.parametrize("k", [1, 2, 3])
def test_generator_runs_exactly_k_batches_ahead_of_the_published_version(k):
    weights, collector = _Weights(0), _Collector()
    got, waits = _run(collector, weights, k)
    # version 0 admits batches 0..k; batch k + 1 waits for version 1
    assert [b.step for b in got] == list(range(k + 1)) and waits == [k + 1]
    assert all(b.version == 0 for b in got) and weights.loads == []
    assert [b.data_position for b in got] == [(0, 2 * (j + 1)) for j in range(k + 1)]


def test_generator_loads_the_newest_version_before_each_batch():
    weights = _Weights(0)

    def learner(j):  # while batch 1 generates, the learner publishes three updates
        if j == 1:
            weights.version = 3

    collector = _Collector(learner)
    got, waits = _run(collector, weights, k=1)
    # batch 2 loads version 3 (the newest, not 1); then 3 + 1 admits batches up to 4
    assert [(b.step, b.version) for b in got] == [(0, 0), (1, 0), (2, 3), (3, 3), (4, 3)]
    assert collector.sampled == [(b.step, b.version) for b in got] and weights.loads == [3]
    assert waits == [5]


def test_resumed_generator_starts_at_its_step():
    got, _ = _run(_Collector(), _Weights(7), k=1, start=7, end=9, version=7)
    assert [(b.step, b.version) for b in got] == [(7, 7), (8, 7)]  # stops at end, no wait


def test_staleness_metrics_histogram_and_bound():
    m = staleness_metrics(4, torch.tensor([2, 3, 3, 4]), 2)
    assert m["async/staleness_mean"] == 1.0 and m["async/staleness_max"] == 2.0
    assert [m[f"async/staleness/{i}"] for i in range(3)] == [0.25, 0.5, 0.25]
    with pytest.raises(RuntimeError, match="outside the bound"):
        staleness_metrics(4, torch.tensor([1, 4]), 2)
    with pytest.raises(RuntimeError, match="outside the bound"):  # a version from the future is a bug too
        staleness_metrics(4, torch.tensor([5]), 2)


# ---------------------------------------------------------------------------------------- bad input
def _async_copy(trainer, *overrides):
    """The trainer's collector with ``overrides`` applied to its config (nothing started)."""
    collector = copy.copy(trainer.collector)
    collector.cfg = make_cfg(Path(trainer.run_dir).parent, *overrides)
    return collector


def test_async_refuses_what_cannot_run_in_a_generator_process(tmp_path, monkeypatch):
    tr = make_trainer(tmp_path, "train.num_threads=1")
    c = _async_copy(tr, "rollout.max_staleness=1", "algorithm.tis_cap=2.0")
    args = (c, tr.model, tr.scorer, tr.tokenizer)
    with pytest.raises(ValueError, match="engine object passed to the trainer"):
        AsyncCollector(*args, tr.parallel, custom_engine=True)
    with pytest.raises(ValueError, match="with 2 processes: .* set rollout.max_staleness=0"):
        AsyncCollector(*args, type("DP", (), {"world_size": 2})())
    with pytest.raises(ValueError, match="weight_sync=nccl needs the learner and the generator on two"):
        AsyncCollector(_async_copy(tr, "rollout.max_staleness=1", "asynchronous.weight_sync=nccl", "algorithm.tis_cap=2"), *args[1:],
                       tr.parallel)  # fmt: skip
    with pytest.warns(UserWarning, match="no off-policy correction"):
        AsyncCollector(_async_copy(tr, "rollout.max_staleness=1"), *args[1:], tr.parallel)
    # an engine builder or a reward the generator cannot receive: named, with the fix, when the trainer is built
    from thinkrl.rollout import ENGINES

    with (
        monkeypatch.context() as m,
        pytest.raises(ValueError, match=r"rollout.engine='inline''s builder by pickl"),
    ):
        m.setitem(ENGINES, "inline", lambda cfg, model, tok: ENGINES["builtin"](cfg, model, tok))
        make_trainer(tmp_path / "e", "rollout.max_staleness=1", "rollout.engine=inline", *ASYNC)
    with pytest.raises(ValueError, match=r"receives the reward '<lambda>' by pickling.*module level"):
        make_trainer(tmp_path / "b", "rollout.max_staleness=1", *ASYNC,
                     rewards=(lambda prompts, completions, **kw: [0.0] * len(completions),))  # fmt: skip


def test_learner_gets_the_generator_traceback(tmp_path, monkeypatch):
    """A generator that fails fails the learner's step with its traceback, and is gone."""
    from thinkrl.rollout import ENGINES

    monkeypatch.setitem(ENGINES, "broken", broken_engine)
    tr = make_trainer(tmp_path, "rollout.max_staleness=1", "rollout.engine=broken", *ASYNC)
    with pytest.raises(RuntimeError, match=r"generator process failed:(.|\n)*this engine cannot start here"):
        tr.train_step()
    assert not tr.collector._proc.is_alive()
    with pytest.raises(ValueError, match="torch sees 0 CUDA device"):
        make_trainer(
            tmp_path / "b", "rollout.max_staleness=1", "asynchronous.generator_device=cuda:7", *ASYNC
        )


# ------------------------------------------------------------------------------------- end to end
def test_async_with_staleness_zero_is_the_synchronous_run_bit_for_bit(tmp_path):
    """The generator process (own model copy, shared-memory weights, pickled batches) changes nothing but
    the weights' age: at max_staleness 0 it gives the synchronous trainer's parameters and metrics exactly."""
    steps = ["train.steps=3", "train.num_threads=1", "algorithm.beta=0.01"]
    sync = make_trainer(tmp_path / "sync", *steps)
    sync_hist = sync.train()
    tr = make_trainer(tmp_path / "async", *steps)
    tr.collector = AsyncCollector(tr.collector, tr.model, tr.scorer, tr.tokenizer, tr.parallel)
    hist = tr.train()
    for k, v in params(sync.model).items():
        assert torch.equal(params(tr.model)[k], v), k
    for a, b in zip(sync_hist, hist):
        timing = ("time/", "throughput/", "reward/seconds/")
        assert {k: v for k, v in a.items() if not k.startswith(timing)} == {
            k: v for k, v in b.items() if not k.startswith((*timing, "async/"))
        }
    assert [h["async/staleness/0"] for h in hist] == [1.0, 1.0, 1.0]
    assert not tr.collector._proc.is_alive()  # the generator exits after the last batch


def test_async_runs_ahead_with_bounded_staleness_in_data_order(tmp_path):
    k, steps = 2, 5
    sync = make_trainer(tmp_path / "sync", f"train.steps={steps}", "train.num_threads=1")
    positions = []
    for _ in range(steps):
        sync.train_step()
        positions.append(sync.data_position())
    tr = make_trainer(tmp_path / "async", f"rollout.max_staleness={k}", f"train.steps={steps}", *ASYNC)
    publish = tr.collector.sync_weights

    def held_back(version):  # a slow learner: every batch version v - 1 admits is made before v exists
        deadline = time.monotonic() + 60
        while tr.collector.buffered() < min(k, steps - version) and time.monotonic() < deadline:
            time.sleep(0.01)
        publish(version)

    tr.collector.sync_weights = held_back
    before = params(tr.model)
    for step in range(steps):
        m = tr.train_step()
        # batch j was admitted under version j - k and finished before j - k + 1: exactly k old
        assert m[f"async/staleness/{min(step, k)}"] == 1.0, (step, m)
        assert m["async/staleness_max"] == min(step, k)
        assert tr.data_position() == positions[step]  # the consumed batches' position, as synchronously
        assert m["async/weight_sync_s"] >= 0 and "time/wait" in m and "time/generate" in m
    assert any(not torch.equal(v, before[n]) for n, v in params(tr.model).items())


RESUME_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import DIGITS, make_trainer
    from generator_side import digit_share

    def main(tmp, kill_at):
        tr = make_trainer(tmp, "rollout.max_staleness=2", "train.steps=6", "train.save_every=1",
                          "train.keep_last=6", "train.resume=true", "log.completions_per_step=0",
                          "asynchronous.generator_threads=1", "train.num_threads=1", "algorithm.tis_cap=2.0",
                          rewards=(digit_share,))
        step = tr.train_step

        def killing_step():
            if tr.step == kill_at:  # checkpoint kill_at is written; batches kill_at, kill_at + 1 wait
                while tr.collector.buffered() < 2:
                    time.sleep(0.01)
                print("GENERATOR", tr.collector._proc.pid, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return step()

        tr.train_step = killing_step
        tr.train()

    if __name__ == "__main__":
        main(Path(sys.argv[1]), int(sys.argv[2]))
    """
)


@pytest.mark.slow
def test_async_resume_after_kill_9_loses_and_repeats_no_prompt(tmp_path):
    script = tmp_path / "run_async.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, str(script), str(tmp_path), "3"], capture_output=True, text=True,
                            env=env, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    generator = int(killed.stdout.split("GENERATOR")[1].split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{generator}").exists() and time.monotonic() < deadline:  # dies with the learner
        time.sleep(0.05)
    assert (
        not Path(f"/proc/{generator}").exists()
        or "Z" in Path(f"/proc/{generator}/stat").read_text().split()[2]
    )
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path), "-1"], capture_output=True, text=True,
                             env=env, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    records = [json.loads(ln) for ln in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    trained = {}
    for r in records:
        trained.setdefault(r["step"], []).append(r["prompt"])
    # the uninterrupted data order: step s trains the s-th draw of 4 prompts, each G = 4 times
    tok = __import__("thinkrl.testing", fromlist=["char_tokenizer"]).char_tokenizer("0123456789=")
    stream = Prompts(DIGITS, SingleTurn(tok, "{question}="), tok, seed=0)
    expected = {s: sorted(stream.texts[i] for i in stream.next(4) for _ in range(4)) for s in range(1, 7)}
    assert {s: sorted(p) for s, p in trained.items()} == expected
    versions = {r["step"]: r["policy_version"] for r in records}
    assert versions[4] == 3  # batch 3 was regenerated after the resume, by the checkpoint's weights
    metrics = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
