"""Code reward: run the completion's Python against the row's tests in the sandbox (``sandbox.py``).

Column ``tests`` holds, per row, a list of test cases (or that list JSON-encoded); each case is

- ``{"input": "...", "output": "..."}``: stdin/stdout. The program runs once per case; it passes iff it exits
  with status 0 within the limits and its stdout equals ``output`` up to trailing whitespace on each line and
  trailing blank lines.
- ``{"assert": "assert f(2) == 4"}`` or a bare string ``"assert f(2) == 4"``: the program is loaded once (its
  top level runs), then each assert runs in its namespace; a case passes iff it raises nothing. If loading the
  program raises or exits (``sys.exit(0)`` included), no case passes.

``{"inputs": [...], "outputs": [...]}`` (APPS/TACO style) is accepted too. The program is the last fenced
```python block of the completion (in the ``<answer>`` tag first). Score: 1.0 iff all cases pass
(``code``), or the fraction passed (``code_partial``); 0.0 without code; None when the row has no tests.

Assert results are reported on stdout with a random per-run token and counted only when the harness reaches
them, so exiting early or printing "passed" earns nothing. The program runs in the harness's own process,
though: code that deliberately inspects the harness's frames could forge results. Stdin/stdout cases have
no such gap: the verdict is computed outside the sandbox.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from thinkrl.rewards.extract import as_text, extract_code
from thinkrl.rewards.sandbox import SandboxLimits, run_python

MAX_TESTS = 64  # per row; more cases than this are ignored (and the row's score counts only these)

_HARNESS = """
import sys
def _harness():
    token = sys.stdin.readline().strip()
    tests = {tests!r}
    ns = {{"__name__": "__main__", "__builtins__": __builtins__}}
    try:
        exec(compile({program!r}, "solution.py", "exec"), ns)
    except BaseException:
        return
    for i, t in enumerate(tests):
        try:
            exec(compile(t, "test_%d.py" % i, "exec"), ns)
            ok = 1
        except BaseException:
            ok = 0
        sys.stdout.write("\\n%s %d %d\\n" % (token, i, ok))
        sys.stdout.flush()
_harness()
"""


def parse_tests(tests: Any) -> list[dict[str, str]]:
    """Normalize a row's ``tests`` to a list of ``{"input", "output"}`` or ``{"assert"}`` dicts.

    >>> parse_tests('{"inputs": ["1\\\\n"], "outputs": ["2\\\\n"]}')
    [{'input': '1\\n', 'output': '2\\n'}]
    >>> parse_tests(["assert f(1) == 2"])
    [{'assert': 'assert f(1) == 2'}]
    """
    if isinstance(tests, str):
        tests = json.loads(tests)
    if isinstance(tests, dict):
        if "inputs" in tests:
            return [{"input": str(i), "output": str(o)} for i, o in zip(tests["inputs"], tests["outputs"])]
        tests = [tests]
    out: list[dict[str, str]] = []
    for t in tests:
        if isinstance(t, str):
            out.append({"assert": t})
        elif "assert" in t:
            out.append({"assert": str(t["assert"])})
        else:
            out.append({"input": str(t.get("input", "")), "output": str(t["output"])})
    return out


def _same_output(got: str, want: str) -> bool:
    def norm(s: str) -> list[str]:
        return [ln.rstrip() for ln in s.strip("\n").rstrip().splitlines()]

    return norm(got) == norm(want)


def run_tests(program: str, tests: list[dict[str, str]], limits: SandboxLimits | None = None) -> list[bool]:
    """Pass/fail of each test case for ``program`` (see module docstring).

    >>> run_tests("def f(x):\\n    return 2 * x", [{"assert": "assert f(2) == 4"}, {"assert": "assert f(2) == 5"}])
    [True, False]
    """
    tests = tests[:MAX_TESTS]
    results = [False] * len(tests)
    asserts = [(i, t["assert"]) for i, t in enumerate(tests) if "assert" in t]
    for i, t in enumerate(tests):
        if "assert" not in t:
            r = run_python(program, stdin=t["input"], limits=limits)
            results[i] = r.returncode == 0 and not r.timed_out and _same_output(r.stdout, t["output"])
    if asserts:
        token = secrets.token_hex(16)
        src = _HARNESS.format(tests=[a for _, a in asserts], program=program)
        r = run_python(src, stdin=token + "\n", limits=limits)
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == token and parts[1].isdigit() and int(parts[1]) < len(asserts):
                results[asserts[int(parts[1])][0]] = parts[2] == "1"
    return results


def score_code(
    completions: list[Any], tests: list[Any] | None, partial: bool, limits: SandboxLimits | None = None
):
    """Per-row code scores: all-or-nothing, or the fraction of tests passed when ``partial``."""
    if tests is None:
        return [None] * len(completions)
    out: list[float | None] = []
    for c, t in zip(completions, tests):
        cases = parse_tests(t) if t is not None else []
        program = extract_code(as_text(c))
        if not cases:
            out.append(None)
        elif program is None:
            out.append(0.0)
        else:
            passed = run_tests(program, cases, limits)
            frac = sum(passed) / len(passed)
            out.append(frac if partial else float(frac == 1.0))
    return out


def code_reward(prompts: list[Any], completions: list[Any], tests: list[Any] | None = None, **kwargs: Any):
    """1.0 iff the completion's program passes every test case of the row (column ``tests``)."""
    return score_code(completions, tests, partial=False)


def code_partial_reward(
    prompts: list[Any], completions: list[Any], tests: list[Any] | None = None, **kwargs: Any
):
    """The fraction of the row's test cases the completion's program passes."""
    return score_code(completions, tests, partial=True)


code_reward.__name__ = "code"
code_partial_reward.__name__ = "code_partial"
