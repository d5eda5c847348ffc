"""``thinkrl check-reward CONFIG_OR_SPEC``: attack a reward before spending GPU hours on it.

Runs every attack of ``attacks.py`` that applies to the reward (hedged answers, answers hidden in think, tag
spam, huge inputs, sympy bombs; for code rewards forged equality, verdict-channel rewriting, frame
inspection, host files, network, fork bombs, detached daemons, exit-0-early, output floods, ...) and prints a
table: which attacks were PAID (scored > 0 where they must not), which ESCAPED (left a trace on the host:
a file, a process, a network connection, a killed host process), which were SLOW (past the time bound), and
the isolation in force. Exit status 1 if any attack succeeded or a control was not paid.

    thinkrl check-reward configs/r1_zero.yaml
    thinkrl check-reward accuracy,format
    thinkrl check-reward my_rewards.py:substring_reward
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from thinkrl.rewards.attacks import ATTACKS, GOLD, Attack

ROLES: dict[str, frozenset[str]] = {
    "format": frozenset({"format"}),
    "accuracy": frozenset({"answer"}),
    "exact_match": frozenset({"answer"}),
    "code": frozenset({"code"}),
    "code_partial": frozenset({"code"}),
    "routed": frozenset({"answer", "code"}),
}
"""Registry key -> roles it is attacked in (others: time bound only). A user's function: answer and code."""
SECRET = "s3cret-value"


@dataclass
class AttackResult:
    reward: str
    attack: str
    group: str
    judged: str
    """``pay`` (must not be paid; a control must be) or ``time`` (only the time bound applies to this reward)."""
    score: float | None
    seconds: float
    verdict: str
    """OK, PAID, ESCAPED, SLOW, NOT PAID (a control), NOT RUN (no isolation), or ERROR."""
    detail: str = ""


def roles_of(name: str) -> frozenset[str]:
    """The roles a reward is attacked in, from its registry key (``module:function``: answer and code)."""
    if ":" in name:
        return frozenset({"answer", "code"})
    return ROLES.get(name, frozenset())


class _Probes:
    """Host-side traps an escaping program would trip: a listener, a sentinel process, a secret file."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self.dir = tempfile.mkdtemp(prefix="thinkrl-check-")
        self.secret_path = os.path.join(self.dir, "expected_output.txt")
        Path(self.secret_path).write_text("5\n")
        os.chmod(self.dir, 0o755)
        os.chmod(self.secret_path, 0o644)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.sentinel = self._start_sentinel()
        self._old_env = os.environ.get("THINKRL_CHECK_SECRET")
        os.environ["THINKRL_CHECK_SECRET"] = SECRET

    @staticmethod
    def _start_sentinel() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
        )

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            try:
                conn.sendall(b"5\n")
            finally:
                conn.close()

    def fill(self, attack: Attack) -> str:
        if attack.tests is None:
            return attack.completion
        return attack.completion.format(
            token=self.token, port=self.listener.getsockname()[1], sentinel=self.sentinel.pid,
            secret_path=self.secret_path,
        )  # fmt: skip

    def escapes(self, attack: Attack, connections_before: int) -> list[str]:
        found = []
        marker = f"thinkrl-escape-{self.token}"
        for d in ("/tmp", "/dev/shm", "/var/tmp"):
            p = os.path.join(d, marker)
            if os.path.exists(p):
                found.append(f"wrote {p}")
                os.unlink(p)
        time.sleep(0.1 if attack.escape else 0.0)
        for pid in _pids_with(marker):
            found.append(f"process {pid} outlived the run")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.connections > connections_before:
            found.append("reached a host listener on 127.0.0.1")
        if self.sentinel.poll() is not None:
            found.append("killed a host process")
            self.sentinel = self._start_sentinel()
        return found

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self._thread.join(1)
        self.sentinel.kill()
        self.sentinel.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._old_env is None:
            os.environ.pop("THINKRL_CHECK_SECRET", None)
        else:
            os.environ["THINKRL_CHECK_SECRET"] = self._old_env


def _pids_with(marker: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    out.append(int(entry))
            except OSError:
                continue
    return out


def run_attacks(
    reward: Callable[..., list],
    name: str,
    roles: frozenset[str],
    attacks: Sequence[Attack] = ATTACKS,
    bound_s: float = 10.0,
    isolated: bool = True,
    probe_roles: bool = False,
) -> list[AttackResult]:
    """Run the attacks that apply to ``reward`` (plain callable, one row per call) and judge each one.

    ``bound_s``: seconds an attack may take before it is SLOW. ``isolated``: False (code runs unsandboxed)
    skips attacks that would harm this machine, reporting them NOT RUN. ``probe_roles`` (a user's reward,
    whose roles we do not know): a role whose control is not paid is dropped, and its attacks are only
    timed (a reward that never pays a correct program is not a code reward).
    """
    results: list[AttackResult] = []
    probes = _Probes()
    try:
        for a in sorted(attacks, key=lambda a: not a.control):  # controls first: they may settle the roles
            if (a.tests is not None) != ("code" in roles) and (a.tests is not None or roles == {"code"}):
                continue  # programs attack code rewards; code rewards read no answers
            if not isolated and a.harms_host:
                results.append(AttackResult(name, a.name, a.group, "-", None, 0.0, "NOT RUN", "no isolation"))
                continue
            r = _run_one(reward, name, roles, a, probes, bound_s)
            if a.control and probe_roles and r.verdict == "NOT PAID":
                roles = roles - a.roles
                r.verdict, r.judged, r.detail = (
                    "OK",
                    "time",
                    "control not paid: not its role, attacks only timed",
                )
            results.append(r)
    finally:
        probes.close()
    return results


def _run_one(
    reward: Callable[..., list], name: str, roles: frozenset[str], a: Attack, probes: _Probes, bound_s: float
) -> AttackResult:
    cols: dict[str, list] = {
        "answer": [GOLD],
        "tests": [a.tests],
        "verifier": ["code" if a.tests else "math"],
    }
    completion, before = probes.fill(a), probes.connections
    t = time.monotonic()
    try:
        score, error = reward([a.prompt], [completion], **cols)[0], ""
    except Exception as e:  # noqa: BLE001 - a reward that crashes on an attack is reported, not fatal
        score, error = None, f"{type(e).__name__}: {e}"[:200]
    took = time.monotonic() - t
    esc = probes.escapes(a, before)
    score = None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score)
    paid = score is not None and score > 0
    if error:
        verdict = "ERROR"
    elif a.control:
        verdict = "OK" if paid or not roles & a.roles else "NOT PAID"
    elif esc:
        verdict = "ESCAPED"
    elif paid and roles & a.roles:
        verdict = "PAID"
    elif took > bound_s:
        verdict = "SLOW"
    else:
        verdict = "OK"
    judged = "pay" if roles & a.roles else "time"
    return AttackResult(name, a.name, a.group, judged, score, took, verdict, error or "; ".join(esc))


def format_table(results: list[AttackResult], isolation_line: str) -> str:
    """The results as an aligned text table, with one summary line per reward."""
    lines = [isolation_line, ""]
    w = max([len(r.attack) for r in results] + [6])
    lines.append(f"{'reward':<14} {'attack':<{w}} {'judged':>6} {'score':>6} {'seconds':>8}  verdict")
    for r in results:
        score = "-" if r.score is None else f"{r.score:.2f}"
        detail = f"  ({r.detail})" if r.detail else ""
        lines.append(
            f"{r.reward:<14} {r.attack:<{w}} {r.judged:>6} {score:>6} {r.seconds:>8.2f}  {r.verdict}{detail}"
        )
    lines.append("")
    for name in dict.fromkeys(r.reward for r in results):
        rs = [r for r in results if r.reward == name]
        bad = [r for r in rs if r.verdict != "OK"]
        counts = {
            v: sum(r.verdict == v for r in rs)
            for v in ("PAID", "ESCAPED", "SLOW", "NOT PAID", "NOT RUN", "ERROR")
        }
        summary = ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n) or "all contained"
        lines.append(f"{name}: {len(rs) - len(bad)}/{len(rs)} OK ({summary})")
    return "\n".join(lines)


def _specs(target: str, overrides: list[str]) -> tuple[list[Any], Any]:
    """(reward specs, grading config) from a config file or a comma-separated list of names/specs."""
    from types import SimpleNamespace

    from thinkrl.config import load_config

    if os.path.isfile(target) and target.endswith((".yaml", ".yml")):
        cfg = load_config(target, overrides)
        return list(cfg.rewards), cfg.grading
    cfg = load_config(None, overrides)
    return [
        SimpleNamespace(name=n.strip(), weight=1.0, kwargs={}) for n in target.split(",") if n.strip()
    ], cfg.grading


def check_reward(target: str, overrides: list[str] | None = None, as_json: bool = False) -> int:
    """Run the check on a config's rewards or on named rewards; print the table; 0 iff all attacks are contained."""
    from thinkrl.rewards.registry import build_reward_funcs
    from thinkrl.rewards.sandbox import SandboxUnavailable
    from thinkrl.rewards.scorer import RewardScorer
    from thinkrl.rewards.settings import sandbox_for

    specs, grading = _specs(target, overrides or [])
    report = sandbox_for(grading).report()
    funcs, _ = build_reward_funcs(specs, grading)
    results: list[AttackResult] = []
    for spec, fn in zip(specs, funcs):
        name, roles = fn.__name__, roles_of(spec.name)
        if "code" in roles and report["backend"] == "refused":
            results.append(
                AttackResult(
                    name, "(all code attacks)", "", "-", None, 0.0, "NOT RUN", str(report["warning"])[:200]
                )
            )
            roles = roles - {"code"}
        scorer = RewardScorer([fn], grading=grading)

        def call(
            prompts: list, completions: list, _s: RewardScorer = scorer, _n: str = name, **cols: Any
        ) -> list:
            try:
                values = _s.score(prompts, completions, cols).per_function[_n].tolist()
            except SandboxUnavailable:
                raise
            return [None if math.isnan(v) else v for v in values]

        bound = max(grading.math_timeout_s, grading.timeout_s if ":" in spec.name else 0) + 3.0
        if "code" in roles:
            bound = max(bound, 2 * grading.sandbox.wall_s + 3.0)
        try:
            results += run_attacks(
                call,
                name,
                roles,
                bound_s=bound,
                isolated=bool(report["isolated"]),
                probe_roles=":" in spec.name,
            )
        finally:
            scorer.close()
    if as_json:
        print(json.dumps({"isolation": report, "results": [asdict(r) for r in results]}, indent=1))
    else:
        print(format_table(results, str(report["summary"])))
    return int(any(r.verdict != "OK" for r in results))


def add_check_reward_command(subparsers: Any) -> None:
    """Register ``check-reward`` on the CLI's subparsers; the handler is ``args.func(args) -> exit status``."""
    p = subparsers.add_parser(
        "check-reward",
        help="attack a reward with adversarial completions and programs; print what it pays",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument(
        "target", metavar="CONFIG_OR_SPEC", help="a YAML config, or rewards: accuracy,format or mod:fn"
    )
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. grading.math_timeout_s=2")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=lambda args: check_reward(args.target, args.overrides, args.json))


def main(argv: list[str] | None = None) -> int:
    """``python -m thinkrl.rewards.check CONFIG_OR_SPEC``."""
    parser = argparse.ArgumentParser(prog="thinkrl")
    add_check_reward_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check-reward", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
