"""``thinkrl check-reward``: the R1-Zero rewards pay no attack; a naive substring reward is shown paying."""

from __future__ import annotations

from pathlib import Path

from thinkrl.cli import main as cli_main
from thinkrl.rewards.attacks import ANSWER_ATTACKS
from thinkrl.rewards.check import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["grading.math_timeout_s=1"]


def test_r1_zero_rewards_pay_no_attack(capsys) -> None:
    assert cli_main(["check-reward", str(REPO / "configs" / "r1-zero.yaml"), *FAST]) == 0
    out = capsys.readouterr().out
    n = len(ANSWER_ATTACKS)
    assert f"accuracy: {n}/{n} OK (all contained)" in out and f"format: {n}/{n} OK (all contained)" in out
    assert out.startswith("sandbox: ") and "PAID" not in out


def test_naive_substring_reward_shows_what_it_pays(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "naive.py").write_text(
        "def substring(prompts, completions, answer, **columns):\n"
        "    return [float(str(a) in c) for c, a in zip(completions, answer)]\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["naive:substring", *FAST]) == 1
    out = capsys.readouterr().out
    paid = [line for line in out.splitlines() if line.rstrip().endswith("PAID")]
    for attack in ("boxed answer only inside think", "hedge: list", "false equation", "huge completion"):
        assert any(attack in line for line in paid), out
    # not a code reward (its code control is not paid): code attacks are only timed
    assert "correct program (control)" in out and "not its role" in out
    assert "substring: " in out and " paid)" in out
