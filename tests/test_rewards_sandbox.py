"""The sandbox and the code reward against the attack corpus: as root, as a normal user, and under bubblewrap.

Every attack program of ``thinkrl.rewards.attacks`` (the corpus ``thinkrl check-reward`` runs) must score 0,
leave no trace on the host and end within its bound; the correct program (the control) must score 1. The
same corpus is run by a normal user (``setpriv`` to nobody, the system's ``/usr/bin/python3``), where the
sandbox uses unprivileged user namespaces, and with the bubblewrap backend when it is installed.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from thinkrl.rewards import RewardScorer, SandboxUnavailable, get_reward
from thinkrl.rewards.attacks import CODE_ATTACKS
from thinkrl.rewards.check import run_attacks
from thinkrl.rewards.code import score_code
from thinkrl.rewards.code_tests import TestsFormatError, parse_tests
from thinkrl.rewards.sandbox import Sandbox, SandboxLimits, isolation, run_python

REPO = Path(__file__).resolve().parents[1]
LIMITS = SandboxLimits(wall_s=1.5, cpu_s=1, memory_mb=256, file_mb=4)
CODE = frozenset({"code"})
NOBODY = 65534


def _code(body: str) -> str:
    return f"<think>..</think><answer>```python\n{body}\n```</answer>"


def _score(body: str, tests, sandbox: Sandbox | None = None) -> float | None:
    return score_code([_code(body)], [tests], partial=True, limits=LIMITS, sandbox=sandbox)[0]


def test_program_sees_only_the_minimal_view() -> None:
    body = (
        "import json, os\nprint(json.dumps([sorted(os.listdir('/')), os.listdir('/tmp'), os.listdir('/etc'),"
        " os.path.exists('/proc/self'), os.getcwd(), sorted(os.environ), os.path.exists('/root') and"
        " os.listdir('/root'), os.listdir('/dev')]))"
    )
    r = run_python(body, limits=LIMITS)
    assert r.returncode == 0, r.stderr
    top, tmp, etc, proc, cwd, env, root, dev = json.loads(r.stdout)
    assert set(top) <= {"dev", "etc", "lib", "lib64", "bin", "usr", "tmp", "root", "opt", "sbin", "nix"}, top
    assert tmp == ["main.py"] and cwd == "/tmp" and not proc and etc == ["ld.so.cache"]
    assert sorted(dev) == ["null", "urandom"] and env == ["HOME", "LANG", "PATH"]
    if root:  # only the way to an interpreter that lives under /root (pyenv), nothing else of it
        interp = str(isolation()["interpreter"])
        assert interp.startswith("/root/") and root == [interp.split("/")[2]]
    assert run_python(f"print(open({str(REPO / 'pyproject.toml')!r}).read())", limits=LIMITS).returncode != 0
    report = isolation()
    assert report["isolated"] and report["backend"] in ("namespaces", "bubblewrap")
    assert "isolated=True" in str(report["summary"])


def test_correct_programs_pass_and_partial_credit() -> None:
    stdio = [{"input": "3\n", "output": "6\n"}]
    assert _score("print(int(input()) * 2)", stdio) == 1.0
    prog = "def f(x):\n    return x * 2 if x < 3 else 0"
    tests = ["assert f(1) == 2", "assert f(2) == 4", {"assert": "assert f(5) == 10"}, "assert f(0) == 0"]
    assert _score(prog, tests) == 0.75
    assert get_reward("code")(["q"], [_code(prog)], tests=[tests]) == [0.0]
    assert get_reward("code")(["q"], ["no code here"], tests=[stdio]) == [0.0]
    assert get_reward("code")(["q"], ["x"], tests=[None]) == [None]
    judged = "import math\ndef area(r):\n    return math.pi * r * r\ndef pair():\n    return (1, [2, {3}])"
    tests = [
        "assert abs(area(2) - 12.566) < 0.01",
        "assert pair() == (1, [2, {3}])",
        "assert sorted(pair()[1][1]) == [3]",
    ]
    assert _score(judged, tests) == 1.0
    assert _score(judged, ["assert pair() == [1, [2, {3}]]"]) == 0.0  # a tuple is not a list, as in Python


def test_code_inside_think_does_not_count() -> None:
    stdio = [{"input": "3\n", "output": "6\n"}]
    hidden = "<think>```python\nprint(int(input()) * 2)\n```</think> done"
    assert get_reward("code")(["q"], [hidden], tests=[stdio]) == [0.0]


@pytest.mark.parametrize("attack", CODE_ATTACKS, ids=lambda a: a.group + ":" + a.name[:24])
def test_attack_is_contained(attack) -> None:
    fn = get_reward("code").with_settings(code_limits=LIMITS)
    (r,) = run_attacks(fn, "code", CODE, [attack], bound_s=LIMITS.wall_s + 4)
    assert r.verdict == "OK", r


def test_attack_probes_catch_an_unsandboxed_program(monkeypatch) -> None:
    """The traps work: without isolation (allowed explicitly), the harmless attacks are caught."""
    box = Sandbox(allow_unisolated=True)
    monkeypatch.setattr(box, "_candidates", lambda: [])
    fn = get_reward("code").with_settings(code_limits=LIMITS, code_sandbox=box)
    wanted = {"read host files (expected output)": "PAID", "network (host listener, DNS)": "ESCAPED",
              "write /tmp, /dev/shm": "ESCAPED", "detached daemon": "ESCAPED"}  # fmt: skip
    results = run_attacks(fn, "code", CODE, [a for a in CODE_ATTACKS if a.name in wanted], isolated=False)
    assert {r.attack: r.verdict for r in results} == wanted
    assert box.unisolated_runs == len(wanted) and box.report()["isolated"] is False


def _nonroot_python() -> str | None:
    for p in ("/usr/bin/python3", sys.executable):
        r = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", p, "-I", "-c",
             "import sys; assert sys.version_info >= (3, 10)"], capture_output=True, cwd="/tmp",
        )  # fmt: skip
        if r.returncode == 0:
            return p
    return None


@functools.cache
def _readable_package() -> Path:
    """A copy of the thinkrl package the nobody user can read: the checkout may sit in a folder only its owner
    can enter (a clean clone in a ``mktemp -d`` folder is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="thinkrl-nobody-"))
    root.chmod(0o755)
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(
        REPO / "thinkrl", root / "thinkrl", ignore=shutil.ignore_patterns("__pycache__", "assets")
    )
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _as_nobody(script: str, timeout: float = 240) -> dict:
    if os.geteuid() != 0:
        pytest.skip(
            "not root: the whole suite runs as a normal user, so the tests above are the non-root path"
        )
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop privileges to test the non-root path")
    py = _nonroot_python()
    if py is None:
        pytest.skip("no Python >= 3.10 that the nobody user can execute (/usr/bin/python3 or this venv's)")
    out = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", py, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(_readable_package())!r})\n" + script],
        capture_output=True, text=True, cwd="/tmp", timeout=timeout, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


_CORPUS_SCRIPT = """
import json
from thinkrl.rewards import get_reward
from thinkrl.rewards.attacks import CODE_ATTACKS
from thinkrl.rewards.check import run_attacks
from thinkrl.rewards.sandbox import Sandbox, SandboxLimits, SandboxUnavailable
box = Sandbox(backend={backend!r})
report = box.report()
results = []
if report["backend"] != "refused":
    fn = get_reward("code").with_settings(code_limits=SandboxLimits(wall_s=1.5, cpu_s=1), code_sandbox=box)
    attacks = [a for a in CODE_ATTACKS if {names!r} is None or a.name in {names!r}]
    results = [r.__dict__ for r in run_attacks(fn, "code", frozenset({{"code"}}), attacks, bound_s=6)]
print(json.dumps({{"report": report, "results": results}}))
"""


def test_attacks_are_contained_as_a_normal_user() -> None:
    """A normal user gets the same isolation through user namespaces, or a refusal naming the fixes."""
    got = _as_nobody(_CORPUS_SCRIPT.format(backend="auto", names=None))
    report = got["report"]
    if report["backend"] == "refused":  # no user namespaces, no bubblewrap here: refusing is right
        assert "install bubblewrap" in report["warning"] and "allow_unisolated" in report["warning"]
        return
    assert report["isolated"] and "user namespace" in report["identity"], report
    bad = [r for r in got["results"] if r["verdict"] != "OK"]
    assert not bad and len(got["results"]) == len(CODE_ATTACKS), bad


def test_bubblewrap_backend_contains_attacks() -> None:
    if shutil.which("bwrap") is None:
        pytest.skip(
            "bubblewrap is not installed (apt-get install bubblewrap); its backend is not testable here"
        )
    names = ["correct program (control)", "forged __eq__ (always True)", "read host files (expected output)",
             "network (host listener, DNS)", "detached daemon", "kill -1, parent, a host process", "fork bomb"]  # fmt: skip
    got = _as_nobody(_CORPUS_SCRIPT.format(backend="bubblewrap", names=names))
    assert got["report"]["backend"] == "bubblewrap", got["report"]
    assert [r["verdict"] for r in got["results"]] == ["OK"] * len(names), got["results"]


def test_no_backend_refuses_with_the_fixes(monkeypatch) -> None:
    box = Sandbox()
    monkeypatch.setattr(box, "_candidates", lambda: [])
    with pytest.raises(SandboxUnavailable, match=r"install bubblewrap.*allow_unisolated=true"):
        run_python("print(1)", sandbox=box)
    with pytest.raises(SandboxUnavailable, match="user namespaces"):
        get_reward("code").with_settings(code_sandbox=box)(["q"], [_code("")], tests=[["assert f(1) == 1"]])
    assert box.report()["backend"] == "refused"
    with pytest.raises(SandboxUnavailable, match="install bubblewrap"):  # at construction, before any step
        RewardScorer([get_reward("code").with_settings(code_sandbox=box)])
    monkeypatch.setattr("thinkrl.rewards.sandbox._bwrap_path", lambda: None)
    only_bwrap = Sandbox(backend="bubblewrap")
    with pytest.raises(SandboxUnavailable, match="backend='bubblewrap'.*no backend available"):
        only_bwrap.chosen()
    with pytest.raises(ValueError, match="valid: auto, namespaces, bubblewrap"):
        Sandbox(backend="firejail")


def test_unisolated_opt_in_runs_and_warns_every_step(monkeypatch, caplog) -> None:
    box = Sandbox(allow_unisolated=True)
    monkeypatch.setattr(box, "_candidates", lambda: [])
    monkeypatch.setattr("thinkrl.rewards.scorer.sandbox_for", lambda g: box)
    fn = get_reward("code").with_settings(code_sandbox=box, code_limits=LIMITS)
    stdio = [{"input": "3\n", "output": "6\n"}]
    with RewardScorer([fn]) as scorer:
        for _ in range(2):
            caplog.clear()
            r = scorer.score(["q"], [_code("print(int(input()) * 2)")], {"tests": [stdio]})
            assert r.total.tolist() == [1.0] and r.metrics()["reward/unisolated_runs"] == 1.0
            assert "WITHOUT a sandbox" in caplog.text
    assert "WARNING" in str(box.report()["summary"])


@pytest.mark.parametrize(
    "tests,match",
    [
        ("not json", "tests is a string but not JSON"),
        ([{"in": "1", "out": "2"}], "unknown shape"),
        ({"inputs": ["1"], "outputs": []}, "equal length"),
        (["def check(f):\n    assert f(1) == 2"], "not a single assert"),
        (["assert [f(x) for x in range(3)] == [0, 1, 2]"], "ListComp outside the program's calls"),
        (["assert 1 == 1"], "does not call the program"),
        ([f"assert f({i}) == {i}" for i in range(65)], "at most 64"),
    ],
)
def test_malformed_tests_name_the_row_and_the_fix(tests, match) -> None:
    with pytest.raises(TestsFormatError, match=match):
        parse_tests(tests)
    with pytest.raises(TestsFormatError, match="row 1: column 'tests'"):
        score_code([_code("print(1)")] * 2, [["assert f(1) == 1"], tests], partial=False)


def test_assert_split_keeps_expected_values_outside() -> None:
    (case,) = parse_tests(["assert math.isclose(f(0.1), 0.2, rel_tol=1e-9) and g('x') not in {'y', 'z'}"])
    assert case.calls == ("f(0.1)", "g('x')")  # only the program's calls enter the sandbox
    assert "0.2" not in "".join(case.calls) and "'y'" not in "".join(case.calls)


def test_hung_programs_end_at_their_limit() -> None:
    t = time.monotonic()
    assert _score("import time\ntime.sleep(60)", [{"input": "", "output": "x\n"}]) == 0.0
    assert time.monotonic() - t < LIMITS.wall_s + 3
