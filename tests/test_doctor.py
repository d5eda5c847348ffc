"""The run doctor: every check fires on a fabricated failing stream and stays silent on the demo's healthy run.

The healthy stream is a real demo run (seed 0, 30 steps; tests/fixtures/demo_run, made by its make_fixture.py).
Each failing stream is that run with one metric changed from a given step on, so a check is shown to fire on
its own signature and not on the rest of a real run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from thinkrl.analysis.doctor import BY_NAME, DIAGNOSES, Doctor, diagnose, format_findings, run_doctor_config
from thinkrl.cli import main
from thinkrl.config import ConfigError, DoctorConfig, load_config

FIXTURE = Path(__file__).parent / "fixtures" / "demo_run"


def healthy() -> list[dict]:
    return [json.loads(ln) for ln in (FIXTURE / "metrics.jsonl").read_text().splitlines()]


def changed(from_step: int, **series) -> list[dict]:
    """The demo run with each given key set (a number, or a function of the step) from ``from_step`` on."""
    out = copy.deepcopy(healthy())
    for r in out:
        if r["step"] >= from_step and "reward/mean" in r:
            for key, v in series.items():
                r[key.replace("__", "/")] = v(r["step"]) if callable(v) else v
    return out


def names(records, cfg=None) -> list[str]:
    return [ep.check for ep in diagnose(records, cfg)]


def test_silent_on_the_demos_healthy_run():
    assert diagnose(healthy()) == []
    assert format_findings([], 31).startswith("No problems found in 31 metric records")


# one fabricated failing stream per check: (check, the changed run)
FAILING = {
    "entropy_collapse": lambda: changed(12, train__entropy=0.003),
    "entropy_explosion": lambda: changed(12, train__entropy=0.6),
    "length_runaway": lambda: changed(1, accuracy=0.3, completion__len_mean=lambda s: 50 * 1.15**s),
    "length_collapse": lambda: changed(15, completion__len_mean=8.0),
    "truncation": lambda: changed(18, completion__truncated_frac=0.45),
    "zero_spread_groups": lambda: changed(16, groups__zero_spread_frac=0.8),
    "logprob_mismatch": lambda: changed(1, train__logprob_mismatch=lambda s: 1e-3 * 1.25**s),
    "kl_blowup": lambda: changed(20, train__kl=3.0),
    "clip_fraction_pinned": lambda: changed(10, train__clip_fraction=0.35),
    "reward_hacking": lambda: changed(30, eval__pass_at_1=0.55),
    "reward_failures": lambda: changed(22, **{"reward__timeouts__accuracy": 9.0}),
}


@pytest.mark.parametrize("check", sorted(FAILING))
def test_each_check_fires_on_its_failure(check):
    records = FAILING[check]()
    for r in records:  # the eval key cannot be written with the __ shorthand above
        if "eval/pass_at_1" in r:
            r["eval/pass@1"] = r.pop("eval/pass_at_1")
            r["eval/pass@1_ci95_hi"] = 0.6
    found = diagnose(records)
    # only that check fires; the runaway stream holds accuracy flat while the real run's format rate saturates,
    # which is also the format-without-accuracy signature
    also = {"length_runaway": {"reward_hacking"}}.get(check, set())
    assert {ep.check for ep in found} == {check} | also, [ep.line() for ep in found]
    ep = next(ep for ep in found if ep.check == check)
    d = BY_NAME[check]
    assert d.symptom in ep.line() and d.fix in ep.line() and d.cause in ep.line()


def test_every_check_has_a_failing_stream():
    assert set(FAILING) == {d.name for d in DIAGNOSES}


def test_step_ranges_and_episode_end():
    # truncation at 0.6 on steps 10-16 only; 3-step means exceed 0.2 from step 10 (0.03, 0.06, 0.6) to step 17
    # (0.6, 0.6, 0): one closed episode with that range
    records = changed(10, completion__truncated_frac=lambda s: 0.6 if s <= 16 else 0.0)
    (ep,) = diagnose(records, DoctorConfig(window=3))
    assert (ep.check, ep.start, ep.end, ep.open) == ("truncation", 10, 17, False)
    assert ep.line().startswith("truncation (steps 10-17): many completions are cut")


def test_zero_spread_names_the_dapo_fix_and_which_way():
    records = changed(16, groups__zero_spread_frac=0.8, accuracy=0.9)
    (ep,) = [e for e in diagnose(records) if e.check == "zero_spread_groups"]
    assert "algorithm.dynamic_sampling=true" in ep.line() and "all right" in ep.line()
    records = changed(16, groups__zero_spread_frac=0.8, accuracy=0.05)
    assert "all wrong" in [e for e in diagnose(records) if e.check == "zero_spread_groups"][0].line()


def test_live_warns_once_per_episode():
    doctor = Doctor(DoctorConfig(window=2))
    lines = []
    for s in range(1, 31):
        frac = 0.9 if s in range(5, 12) or s in range(20, 25) else 0.0
        lines += doctor.observe(s, {"groups/zero_spread_frac": frac, "reward/mean": 1.0})
    assert len(lines) == 2  # two episodes, one warning each
    assert lines[0].startswith("[doctor] step 6: most groups have no reward spread")
    assert "Likely cause:" in lines[0] and "Try: algorithm.dynamic_sampling=true" in lines[0]
    assert [(e.start, e.end) for e in doctor.episodes] == [(6, 11), (21, 24)]  # 2-step means over 0.5


def test_thresholds_come_from_config():
    records = changed(18, completion__truncated_frac=0.45)
    assert names(records, DoctorConfig(truncation_max=0.5)) == []
    assert names(records, DoctorConfig(truncation_max=0.3)) == ["truncation"]
    # the healthy run's entropy falls to ~0.25x its start: a stricter collapse ratio flags it
    assert names(healthy(), DoctorConfig(entropy_collapse_ratio=0.3)) == ["entropy_collapse"]


def test_bad_doctor_config_fails_at_start():
    with pytest.raises(ConfigError, match=r"doctor.zero_spread_max=1.5 is a fraction"):
        load_config(None, ["doctor.zero_spread_max=1.5"])
    with pytest.raises(ConfigError, match=r"doctor.window=0 must be >= 1"):
        load_config(None, ["doctor.window=0"])
    with pytest.raises(ConfigError, match=r"log.completions_every=-1"):
        load_config(None, ["log.completions_every=-1"])


def test_mistakes_in_the_stream_do_not_crash_it():
    records = healthy()
    records[5]["train/entropy"] = None  # a non-finite value the logger wrote as null
    records[6]["completion/len_mean"] = "n/a"
    records[7]["train/kl"] = True
    records.append({"step": 31, "time": 1.0})  # a record with nothing in it
    records.insert(3, dict(records[3]))  # a duplicated step (e.g. a resume that re-logged a step)
    assert diagnose(list(reversed(records))) == []  # out of order too


def test_format_saturating_while_accuracy_flat_is_flagged_but_not_a_model_born_formatted():
    hacked = changed(1, accuracy=0.3, format_rate=lambda s: min(1.0, 0.3 + 0.05 * s))
    assert "reward_hacking" in names(hacked)
    born = changed(1, accuracy=0.3, format_rate=1.0)
    assert "reward_hacking" not in names(born)


def test_doctor_cli(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FAILING["kl_blowup"]()))
    assert main(["doctor", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kl_blowup (steps 21-30, still firing)") and "raise algorithm.beta" in out
    assert main(["doctor", str(run), "--strict"]) == 1
    (run / "config.yaml").write_text("doctor:\n  kl_max: 5.0\n")  # the run's own thresholds
    assert run_doctor_config(run).kl_max == 5.0
    assert main(["doctor", str(run), "--strict"]) == 0
    assert main(["doctor", str(FIXTURE)]) == 0
    assert "No problems found" in capsys.readouterr().out
    # mistakes: no run there; a corrupt line in the middle of the metrics
    assert main(["doctor", str(tmp_path / "nope")]) == 2
    assert "a thinkrl run directory?" in capsys.readouterr().err
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2,\n{"step": 3}\n')
    assert main(["doctor", str(run)]) == 2
    assert "metrics.jsonl:2: not valid JSON" in capsys.readouterr().err
