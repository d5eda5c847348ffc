"""Chaos test of checkpoints and resume: kill a short `thinkrl train` at random moments, corrupt its checkpoint
files, resume until it finishes, and check that every run ends bit-exact with an uninterrupted one or refuses
with a one-line message. Never a silent wrong state.

    python benchmarks/chaos_resume.py --trials 12            # ~6 min on 2 CPU cores
    python benchmarks/chaos_resume.py --trials 40 --out /tmp/chaos --keep
    python benchmarks/chaos_resume.py --trials 12 --set algorithm.advantage=gae --set algorithm.entropy_target=1

A trial starts a fresh run (6 GRPO steps of a tiny Llama on the copy-the-digit task, a checkpoint every step,
``keep_last=2``; ``--set`` adds config overrides, e.g. PPO's critic and the adaptive entropy coefficient, whose
state is checkpointed too) and kills it with SIGKILL 1-3 times before letting it finish, each kill either

- at a random moment of the training phase (uniform over the reference run's, from the run folder's opening), or
- during the checkpoint write of a random step not yet saved: once its ``step-N.tmp`` appears, after 0-40 ms;

then, in every other trial, corrupts one file of a random complete checkpoint after 70% of the kills (64 flipped
bytes, truncated to half, emptied, deleted, or the manifest deleted), and resumes with ``--resume``. Outcomes:

- ``exact``: the final weights file and every logged metric (timings excluded) equal the uninterrupted run's;
- ``refused``: a resume exited non-zero with a ``thinkrl: error:`` line (e.g. every checkpoint was corrupted);
- ``WRONG``: it finished with other weights or metrics, or failed with a traceback. The script exits 1 if any.

Results go to OUT/results.json and a markdown table on stdout (docs/training.md, "What can go wrong", has the
last one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 6
CONFIG = """\
model: {{path: {model}}}
data: {{train: {data}, template: '{{question}}='}}
rollout: {{group_size: 4, prompts_per_step: 4, max_new_tokens: 4, stop_strings: []}}
algorithm: {{beta: 0.01, num_minibatches: 2}}
rewards: [{{name: {reward}:copy_digit}}]
train: {{steps: {steps}, lr: 0.01, save_every: 1, keep_last: 2, num_threads: 1, micro_batch_size: 4}}
log: {{progress: false}}
doctor: {{enabled: false}}
"""
REWARD = """
def copy_digit(prompts, completions, answer, **kw):
    return [sum(ch == a for ch in c) / 4 for c, a in zip(completions, answer)]
"""
IGNORED = ("time", "time/", "throughput/", "reward/seconds/", "checkpoint/")
"""Metric keys that may differ between an interrupted and an uninterrupted run (timings, the resume's notes)."""


def setup(root: Path, overrides: list[str] | None = None) -> Path:
    """The tiny model, the data, the reward file and the config under ``root`` (with ``overrides``, dotted
    key=value pairs, merged in); returns the config path."""
    from thinkrl.testing import char_tokenizer, tiny_model

    tok = char_tokenizer("0123456789=")
    tiny_model("llama", len(tok), seed=0).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    (root / "data.jsonl").write_text("".join(json.dumps({"question": str(i), "answer": str(i)}) + "\n"
                                             for i in range(10)))  # fmt: skip
    (root / "reward.py").write_text(REWARD)
    config = root / "config.yaml"
    text = CONFIG.format(
        model=root / "model", data=root / "data.jsonl", reward=root / "reward.py", steps=STEPS
    )
    if overrides:
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(OmegaConf.merge(OmegaConf.create(text), OmegaConf.from_dotlist(overrides)))
    config.write_text(text)
    return config


def start(config: Path, run: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "thinkrl", "train", str(config), f"train.output_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([*cmd, *(["--resume"] if resume else [])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    proc.started = time.time()  # type: ignore[attr-defined]
    return proc


def fingerprint(run: Path) -> tuple[str, list[dict]]:
    """(sha256 of the final weights, the metrics with timings removed)."""
    weights = run / "checkpoints" / f"step-{STEPS:06d}" / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else "missing"
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return digest, [{k: v for k, v in r.items() if not k.startswith(IGNORED)} for r in records]


def kill_at_random(proc: subprocess.Popen, run: Path, span: float, rng: random.Random) -> str:
    """SIGKILL at a random moment of the training phase (from this process's config.yaml, written when the run
    folder is opened, over the reference run's span); what it hit."""
    while proc.poll() is None and not _newer(run / "config.yaml", proc.started):
        time.sleep(0.005)
    time.sleep(rng.uniform(0, span))
    return _kill(proc, run, "random")


def kill_in_checkpoint(proc: subprocess.Popen, run: Path, rng: random.Random) -> str:
    """SIGKILL while the checkpoint of a random step not yet saved is being written (its ``step-N.tmp``
    folder exists), after 0-40 ms."""
    done = [int(p.name[5:]) for p in (run / "checkpoints").glob("step-*") if p.name[5:].isdigit()]
    target = rng.randint(max(done, default=0) + 1, STEPS) if max(done, default=0) < STEPS else STEPS
    staging = run / "checkpoints" / f"step-{target:06d}.tmp"
    while proc.poll() is None and not _newer(staging, proc.started):
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.04))
    return _kill(proc, run, f"checkpoint {target}")


def _newer(path: Path, since: float) -> bool:
    """``path`` exists and was made by a process started at ``since`` (not left by a killed one)."""
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def _kill(proc: subprocess.Popen, run: Path, aim: str) -> str:
    writing = _writing(run, since=proc.started)
    if proc.poll() is not None:
        return f"{aim}: finished first"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_lines(run / "metrics.jsonl"))
    return f"{aim}: killed after {done} logged steps{' mid-write' if writing else ''}"


def _writing(run: Path, since: float) -> bool:
    """Whether a checkpoint staging folder (``step-N.tmp``) made by this process exists."""
    try:
        return any(p.suffix == ".tmp" and p.stat().st_mtime >= since for p in (run / "checkpoints").iterdir())
    except OSError:  # no folder yet, or the .tmp was renamed while we looked
        return False


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = path.read_text()
    complete = data[: data.rfind("\n") + 1] if not data.endswith("\n") else data
    return [ln for ln in complete.splitlines() if ln.strip()]


CORRUPTIONS = ("flip 64 bytes", "truncate to half", "empty", "delete", "delete manifest")


def corrupt(run: Path, rng: random.Random) -> str:
    """Damage one file of a random complete checkpoint; what was done."""
    ckpts = sorted(p for p in (run / "checkpoints").glob("step-*") if p.is_dir() and "." not in p.name)
    if not ckpts:
        return "nothing to corrupt"
    ckpt, how = rng.choice(ckpts), rng.choice(CORRUPTIONS)
    files = sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != "manifest.json")
    target = ckpt / "manifest.json" if how == "delete manifest" else rng.choice(files)
    if not target.exists():
        return f"{ckpt.name}: {target.name} already gone"
    data = target.read_bytes()
    if how == "flip 64 bytes" and data:
        at = rng.randrange(max(len(data) - 64, 1))
        target.write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at : at + 64]) + data[at + 64 :])
    elif how == "truncate to half":
        target.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        target.write_bytes(b"")
    else:
        target.unlink()
    return f"{ckpt.name}/{target.relative_to(ckpt)}: {how}"


def trial(
    config: Path, run: Path, reference: tuple, span: float, rng: random.Random, corrupting: bool
) -> dict:
    """One fresh run, killed 1-3 times (each kill perhaps followed by a corruption), resumed to the end."""
    events: list[str] = []
    proc = start(config, run, resume=False)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            events.append(kill_in_checkpoint(proc, run, rng))
        else:
            events.append(kill_at_random(proc, run, span, rng))
        if "finished first" in events[-1]:
            break
        if corrupting and rng.random() < 0.7:
            events.append("corrupt " + corrupt(run, rng))
        proc = start(config, run, resume=True)
    _, err = proc.communicate()
    if proc.returncode != 0:
        line = next((ln for ln in err.splitlines() if ln.startswith("thinkrl: error:")), None)
        outcome = "refused" if line and "Traceback" not in err else "WRONG"
        return {"events": events, "outcome": outcome, "message": line or err[-2000:]}
    same = fingerprint(run) == reference
    return {"events": events, "outcome": "exact" if same else "WRONG", "message": "" if same else "differs"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the runs (default: delete them after the table)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run, e.g. --set algorithm.advantage=gae")  # fmt: skip
    args = p.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="thinkrl-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    config = setup(root, args.set)
    ref = start(config, root / "reference", False)
    out, err = ref.communicate()
    if ref.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        return 1
    # the training phase: from the run folder's opening (config.yaml) to the last step's record, plus 10%
    opened = (root / "reference" / "config.yaml").stat().st_mtime
    last = json.loads(_lines(root / "reference" / "metrics.jsonl")[-1])["time"]
    span = 1.1 * (last - opened)
    print(f"reference run: {span:.1f} s of training phase", flush=True)
    reference = fingerprint(root / "reference")
    rng = random.Random(args.seed)
    results = []
    for i in range(args.trials):
        r = trial(config, root / f"trial-{i:03d}", reference, span, rng, corrupting=i % 2 == 1)
        results.append(r)
        print(f"trial {i}: {r['outcome']:<8} {'; '.join(r['events'])}  {r['message'][:160]}", flush=True)
    (root / "results.json").write_text(json.dumps(results, indent=1))
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("exact", "refused", "WRONG")}
    print(f"\n| trials | exact | refused with a message | wrong |\n| --- | --- | --- | --- |\n"
          f"| {len(results)} | {counts['exact']} | {counts['refused']} | {counts['WRONG']} |")  # fmt: skip
    kills = [e for r in results for e in r["events"] if not e.startswith("corrupt")]
    mid = sum("mid-write" in e for e in kills)
    print(
        f"kills: {len(kills)} ({mid} mid-checkpoint-write); corruptions: "
        f"{sum(e.startswith('corrupt') for r in results for e in r['events'])}; results in {root / 'results.json'}"
    )
    if not args.keep and args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if counts["WRONG"] else 0


if __name__ == "__main__":
    sys.exit(main())
