"""Test cases of the code reward: parsed, split and judged OUTSIDE the sandbox, so the program cannot forge them.

A row's ``tests`` is a list (or its JSON) of cases:

- ``{"input": "...", "output": "..."}`` (stdin/stdout); ``{"inputs": [...], "outputs": [...]}`` (APPS/TACO).
- an assert, as a string ``"assert f(2) == 4"`` or ``{"assert": "..."}``. It is parsed here with ``ast`` and
  split: the parts that need the program (``f(2)``: calls, names, attributes of the program) become *calls*
  evaluated inside the sandbox, whose plain-data values come back; the rest (``== 4``, ``abs(... - 0.5) <
  1e-6``, ``sorted(...)``, ``and``) is the *judge*, evaluated here on those values. Expected values never
  enter the sandbox, and ``==`` is never delegated to an object the program made (only plain data crosses:
  see ``sandbox/_boot.py``).

Shapes that cannot be split (several statements, a comprehension or lambda outside a call's arguments, a
walrus, an f-string) raise :class:`TestsFormatError`, which names the row and the fix.

>>> case = parse_tests(["assert f(2) == 4"])[0]
>>> case.calls, judge(case, [4]), judge(case, [5])
(('f(2)',), True, False)
"""

from __future__ import annotations

import ast
import json
import math
import operator
from dataclasses import dataclass
from typing import Any

MAX_TESTS = 64
"""Cases per row; more than this is a data error (the row would cost too many sandbox runs)."""


class TestsFormatError(ValueError):
    """A ``tests`` cell has a shape we cannot grade; the message names the problem and the fix."""

    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class StdioCase:
    """Run the program with ``input`` on stdin; pass iff it exits 0 and prints ``output`` (see ``same_output``)."""

    input: str
    output: str


@dataclass(frozen=True)
class CallCase:
    """An assert split in two: ``calls`` run inside the sandbox, ``tree`` judges their values outside."""

    source: str
    calls: tuple[str, ...]
    tree: ast.expr  # the assert's test, each call replaced by ast.Name(id=f"__slot{k}")


SHAPES = (
    'a list (or its JSON) of {"input": str, "output": str} or assert strings ("assert f(2) == 4" or '
    '{"assert": "..."}), or {"inputs": [...], "outputs": [...]}'
)

_SAFE_FUNCS: dict[str, Any] = {
    f.__name__: f
    for f in (
        abs,
        round,
        len,
        sorted,
        set,
        frozenset,
        tuple,
        list,
        dict,
        int,
        float,
        str,
        bool,
        min,
        max,
        sum,
        all,
        any,
        isinstance,
        repr,
    )  # fmt: skip
}
_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple, "dict": dict,
               "set": set, "frozenset": frozenset, "complex": complex, "bytes": bytes, "type(None)": type(None)}  # fmt: skip
_MATH = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf, "nan": math.nan, "isclose": math.isclose,
         "sqrt": math.sqrt, "floor": math.floor, "ceil": math.ceil, "fabs": math.fabs}  # fmt: skip
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}  # fmt: skip
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
        ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
        ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}  # fmt: skip
_MAX_ITEMS = 1_000_000  # largest sequence the judge may build (a * n, a + b)
_MAX_POW_BITS = 100_000


def _is_judge_node(node: ast.AST) -> bool:
    """Can ``node`` itself be evaluated by the judge (its children are checked separately)?"""
    if isinstance(node, (ast.Constant, ast.BoolOp, ast.Compare, ast.Tuple, ast.List, ast.Set, ast.Dict)):
        return True
    if isinstance(node, ast.UnaryOp):
        return type(node.op) in _UNARY
    if isinstance(node, ast.BinOp):
        return type(node.op) in _BINOPS
    if isinstance(node, ast.Name):
        return node.id in ("True", "False", "None") or node.id in _SAFE_FUNCS
    if isinstance(node, ast.Attribute):
        return isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in _MATH
    if isinstance(node, ast.Call):
        f = node.func
        safe = (isinstance(f, ast.Name) and f.id in _SAFE_FUNCS) or _is_judge_node(f)
        return safe and not any(isinstance(a, ast.Starred) for a in node.args)
    return isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Slice)


_UNSPLITTABLE = (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.NamedExpr,
                 ast.JoinedStr, ast.Await, ast.Yield, ast.YieldFrom, ast.Starred, ast.IfExp, ast.Slice)  # fmt: skip


class _Splitter(ast.NodeTransformer):
    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[str] = []

    def visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.expr) and not _is_judge_node(node):
            if isinstance(node, _UNSPLITTABLE):
                raise TestsFormatError(
                    f"cannot split {self.text!r}: a {type(node).__name__} outside the program's calls; write one "
                    "assert per case comparing a call to a value, e.g. 'assert f(2) == 4'"
                )
            src = ast.get_source_segment(self.text, node) or ast.unparse(node)
            self.calls.append(src)
            return ast.copy_location(ast.Name(id=f"__slot{len(self.calls) - 1}", ctx=ast.Load()), node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            if len(node.args) != 2 or node.keywords or not _type_names(node.args[1]):
                raise TestsFormatError(
                    f"cannot split {self.text!r}: isinstance(x, T) needs T among {', '.join(_TYPE_NAMES)}"
                )
            node.args[0] = self.visit(node.args[0])
            return node
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):  # a safe function's name: keep it
            node.args = [self.visit(a) for a in node.args]
            node.keywords = [ast.keyword(arg=k.arg, value=self.visit(k.value)) for k in node.keywords]
            return node
        if isinstance(node, ast.Attribute):  # math.pi and friends
            return node
        return self.generic_visit(node)


def split_assert(text: str) -> CallCase:
    """Split one assert statement into calls (run inside) and a judge (run here); TestsFormatError if not one.

    >>> c = split_assert("assert abs(area(2) - 12.56) < 0.01 and sorted(f([3, 1])) == [1, 3]")
    >>> c.calls
    ('area(2)', 'f([3, 1])')
    """
    try:
        mod = ast.parse(text.strip())
    except SyntaxError as e:
        raise TestsFormatError(
            f"test {text!r} is not valid Python ({e.msg}); give one assert per case"
        ) from None
    if len(mod.body) != 1 or not isinstance(mod.body[0], ast.Assert):
        raise TestsFormatError(
            f"test {text[:120]!r} is not a single assert statement; give one assert per case, e.g. "
            "['assert f(1) == 2', 'assert f(2) == 4'] (multi-statement check functions cannot be split)"
        )
    splitter = _Splitter(text.strip())
    tree = splitter.visit(mod.body[0].test)
    if not splitter.calls:
        raise TestsFormatError(f"test {text!r} does not call the program; every assert must use it")
    return CallCase(text.strip(), tuple(splitter.calls), tree)


def parse_tests(tests: Any) -> list[StdioCase | CallCase]:
    """A row's ``tests`` as cases; TestsFormatError (naming the shape we accept) for anything else.

    >>> parse_tests('{"inputs": ["1\\\\n"], "outputs": ["2\\\\n"]}')
    [StdioCase(input='1\\n', output='2\\n')]
    """
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError:
            if tests.lstrip().startswith("assert"):
                tests = [tests]
            else:
                raise TestsFormatError(
                    f"tests is a string but not JSON: {tests[:80]!r}; expected {SHAPES}"
                ) from None
    if isinstance(tests, dict) and "inputs" in tests:
        ins, outs = tests.get("inputs"), tests.get("outputs")
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise TestsFormatError(
                f"tests: 'inputs' and 'outputs' must be lists of equal length; expected {SHAPES}"
            )
        tests = [{"input": i, "output": o} for i, o in zip(ins, outs)]
    elif isinstance(tests, dict):
        tests = [tests]
    if not isinstance(tests, (list, tuple)):
        raise TestsFormatError(f"tests is a {type(tests).__name__}; expected {SHAPES}")
    if len(tests) > MAX_TESTS:
        raise TestsFormatError(f"{len(tests)} test cases in one row; at most {MAX_TESTS} (split the row)")
    out: list[StdioCase | CallCase] = []
    for t in tests:
        if isinstance(t, str):
            out.append(split_assert(t))
        elif isinstance(t, dict) and isinstance(t.get("assert"), str):
            out.append(split_assert(t["assert"]))
        elif isinstance(t, dict) and "output" in t and isinstance(t["output"], str):
            if not isinstance(t.get("input", ""), str):
                raise TestsFormatError(f"test case {t!r}: 'input' must be a string (stdin text)")
            out.append(StdioCase(t.get("input", ""), t["output"]))
        else:
            raise TestsFormatError(f"test case {str(t)[:120]!r} has an unknown shape; expected {SHAPES}")
    return out


def same_output(got: str, want: str) -> bool:
    """stdout equality up to trailing whitespace on each line and trailing blank lines.

    >>> same_output("1 \\n2\\n\\n", "1\\n2"), same_output("1\\n", "2\\n")
    (True, False)
    """

    def norm(s: str) -> list[str]:
        return [ln.rstrip() for ln in s.strip("\n").rstrip().splitlines()]

    return norm(got) == norm(want)


def decode(x: Any, depth: int = 0) -> Any:
    """A value written by the sandbox (tagged JSON, ``_boot.encode``) back to plain data; ValueError if forged."""
    if depth > 64:
        raise ValueError("too deep")
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is list:
        return [decode(v, depth + 1) for v in x]
    if type(x) is dict and len(x) == 1:
        tag, v = next(iter(x.items()))
        if tag == "t" and type(v) is list:
            return tuple(decode(e, depth + 1) for e in v)
        if tag in ("s", "f") and type(v) is list:
            items = [decode(e, depth + 1) for e in v]
            return set(items) if tag == "s" else frozenset(items)
        if tag == "d" and type(v) is list and all(type(p) is list and len(p) == 2 for p in v):
            return {decode(k, depth + 1): decode(e, depth + 1) for k, e in v}
        if tag == "b" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "c" and type(v) is list and len(v) == 2 and all(type(e) in (int, float) for e in v):
            return complex(*v)
    raise ValueError("not an encoded value")


def read_results(lines: list[str], n: int) -> list[tuple[bool, Any]]:
    """The sandbox's result lines as ``(ok, value)`` per call index; the first well-formed line per index wins."""
    got: dict[int, tuple[bool, Any]] = {}
    for line in lines:
        try:
            rec = json.loads(line)
            i = rec["i"]
            if type(i) is not int or not 0 <= i < n or i in got:
                continue
            got[i] = (True, decode(rec["v"])) if "v" in rec else (False, None)
        except (ValueError, TypeError, KeyError, RecursionError):
            continue
    return [got.get(i, (False, None)) for i in range(n)]


def judge(case: CallCase, values: list[Any]) -> bool:
    """Does the assert hold for these call values? Evaluated here, on plain data only; never raises."""
    try:
        return bool(_eval(case.tree, values))
    except Exception:  # noqa: BLE001 - a TypeError, overflow or bound hit on the program's values: a failure
        return False


def _eval(node: ast.AST, slots: list[Any]) -> Any:
    ev = lambda n: _eval(n, slots)  # noqa: E731
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id.startswith("__slot"):
            return slots[int(node.id[6:])]
        consts = {"True": True, "False": False, "None": None}
        return consts[node.id] if node.id in consts else _SAFE_FUNCS[node.id]
    if isinstance(node, ast.Attribute):
        return _MATH[node.attr]
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](ev(node.operand))
    if isinstance(node, ast.BinOp):
        return _binop(type(node.op), ev(node.left), ev(node.right))
    if isinstance(node, ast.BoolOp):
        vals = (ev(v) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare):
        left = ev(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = ev(right_node)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [ev(e) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, ast.Subscript):
        return ev(node.value)[ev(node.slice)]
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            return _isinstance(ev(node.args[0]), node.args[1])
        fn = _SAFE_FUNCS[node.func.id] if isinstance(node.func, ast.Name) else ev(node.func)
        return fn(*[ev(a) for a in node.args], **{k.arg: ev(k.value) for k in node.keywords})
    raise ValueError(f"not judgeable: {type(node).__name__}")


def _type_names(node: ast.AST) -> bool:
    names = node.elts if isinstance(node, ast.Tuple) else [node]
    return all(ast.unparse(n) in _TYPE_NAMES for n in names)


def _isinstance(value: Any, types: ast.AST) -> bool:
    names = types.elts if isinstance(types, ast.Tuple) else [types]
    return isinstance(value, tuple(_TYPE_NAMES[ast.unparse(n)] for n in names))


def _binop(op: type, a: Any, b: Any) -> Any:
    """Arithmetic on plain data with size bounds (the program chooses one operand)."""
    if (
        op is ast.Pow
        and isinstance(a, int)
        and isinstance(b, int)
        and abs(b) * max(a.bit_length(), 1) > _MAX_POW_BITS
    ):
        raise OverflowError("power too large to judge")
    if op is ast.Mod and isinstance(a, (str, bytes)):
        raise TypeError("no %-formatting in the judge")  # the program could pick a format of any width
    if op is ast.Mult and isinstance(a, int) and isinstance(b, (str, bytes, list, tuple)):
        a, b = b, a
    if (
        op is ast.Mult
        and isinstance(a, (str, bytes, list, tuple))
        and isinstance(b, int)
        and len(a) * b > _MAX_ITEMS
    ):
        raise OverflowError("sequence too large to judge")
    return _BINOPS[op](a, b)
