"""Code reward: run the completion's Python against the row's tests in the sandbox (``sandbox/``).

Column ``tests`` holds, per row, test cases in one of the shapes of :data:`code_tests.SHAPES`:

- stdin/stdout: the program runs once per case; it passes iff it exits with status 0 within the limits and
  its stdout equals ``output`` up to trailing whitespace on each line and trailing blank lines. The
  expected output stays outside; only ``input`` enters the sandbox.
- asserts (``"assert f(2) == 4"``): split outside the sandbox into the program's calls and a judge
  (``code_tests.py``). The program is loaded once per row; then each call is evaluated in its namespace
  and its value comes back as plain data on a results channel (not stdout), and the judge runs here. If
  loading the program raises or exits (``sys.exit(0)`` included), no case passes.

The program is the last fenced ```python block of the completion (in the ``<answer>`` tag first). Score:
1.0 iff all cases pass (``code``), or the fraction passed (``code_partial``); 0.0 without code; None when
the row has no tests. A malformed ``tests`` cell raises :class:`TestsFormatError` naming the row.
Rows run in parallel (``workers`` threads; each sandbox run is a separate process).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from thinkrl.rewards.code_tests import (
    CallCase,
    StdioCase,
    TestsFormatError,
    judge,
    parse_tests,
    read_results,
    same_output,
)
from thinkrl.rewards.extract import extract_code, with_prefill
from thinkrl.rewards.sandbox import Sandbox, SandboxLimits, default_sandbox, run_python
from thinkrl.rewards.stats import count

CODE_WORKERS = 2
"""Rows graded at once by default (each sandbox run is a process)."""


def run_tests(
    program: str,
    cases: list[StdioCase | CallCase],
    limits: SandboxLimits | None = None,
    sandbox: Sandbox | None = None,
) -> list[bool]:
    """Pass/fail of each case for ``program``.

    >>> prog = "def f(x):\\n    return 2 * x"
    >>> run_tests(prog, parse_tests(["assert f(2) == 4", "assert f(2) == 5"]))
    [True, False]
    """
    results = [False] * len(cases)
    calls: list[str] = []
    spans: list[tuple[int, int, int]] = []  # (case index, first call, end call)
    for i, case in enumerate(cases):
        if isinstance(case, StdioCase):
            r = run_python(program, stdin=case.input, limits=limits, sandbox=sandbox)
            count("sandbox_timeouts", int(r.timed_out))
            results[i] = r.returncode == 0 and not r.timed_out and same_output(r.stdout, case.output)
        else:
            spans.append((i, len(calls), len(calls) + len(case.calls)))
            calls.extend(case.calls)
    if spans:
        r = run_python(program, limits=limits, calls=calls, sandbox=sandbox)
        count("sandbox_timeouts", int(r.timed_out))
        values = read_results(r.results, len(calls))
        for i, lo, hi in spans:
            got = values[lo:hi]
            case = cases[i]
            assert isinstance(case, CallCase)
            results[i] = all(ok for ok, _ in got) and judge(case, [v for _, v in got])
    return results


def score_code(
    completions: list[Any],
    tests: list[Any] | None,
    partial: bool,
    limits: SandboxLimits | None = None,
    sandbox: Sandbox | None = None,
    workers: int = CODE_WORKERS,
    prompts: list[Any] | None = None,
) -> list[float | None]:
    """Per-row code scores: all-or-nothing, or the fraction of cases passed when ``partial``.

    ``prompts`` (one per row, or one for all) tell whether the template pre-filled ``<think>``.
    """
    if tests is None:
        return [None] * len(completions)
    cases: list[list[StdioCase | CallCase]] = []
    for row, t in enumerate(tests):
        try:
            cases.append(parse_tests(t) if t is not None else [])
        except TestsFormatError as e:
            raise TestsFormatError(f"row {row}: column 'tests': {e}") from None

    rows = list(prompts or [""]) * len(completions) if len(prompts or [""]) == 1 else list(prompts or [])

    def one(row: int) -> float | None:
        program = extract_code(with_prefill(rows[row], completions[row]))
        if not cases[row]:
            return None
        if program is None:
            return 0.0
        passed = run_tests(program, cases[row], limits, sandbox)
        frac = sum(passed) / len(passed)
        return frac if partial else float(frac == 1.0)

    todo = [r for r in range(len(completions)) if cases[r]]
    if todo:
        (sandbox or default_sandbox()).chosen()  # refuse up front, once, when code may not run here
    out: list[float | None] = [None] * len(completions)
    with ThreadPoolExecutor(max(1, workers)) as ex:
        for r, s in zip(todo, ex.map(one, todo)):
            out[r] = s
    return out


def code_reward(
    prompts: list[Any],
    completions: list[Any],
    tests: list[Any] | None = None,
    *,
    partial: bool = False,
    code_limits: SandboxLimits | None = None,
    code_sandbox: Sandbox | None = None,
    code_workers: int = CODE_WORKERS,
    **columns: Any,
) -> list[float | None]:
    """1.0 iff the completion's program passes every test case of the row (column ``tests``); with
    ``partial``, the fraction of the cases it passes (registered as ``code_partial``)."""
    return score_code(completions, tests, partial, code_limits, code_sandbox, code_workers, prompts)


code_partial_reward = functools.partial(code_reward, partial=True)
"""The fraction of the row's test cases the completion's program passes."""
