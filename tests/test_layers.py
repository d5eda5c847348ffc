"""The package's layers: imports point down (lazy ones inside functions too), no cycles, no module past 400 lines.

The order is docs/architecture.md's. A part may import any part on a lower line and the parts on its own line,
never one above; a new top-level part must be given a line here before it can import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "thinkrl"

LAYERS = [
    ("cli", "__main__", "pipeline"),  # commands and multi-stage runs
    ("demo",),  # the built-in demo
    ("sft", "rejection"),  # the other R1 stages
    ("train",),  # learner, collector glue, checkpoints, the parallel edge
    ("eval",),  # pass@k, cons@k, benchmark runs
    ("rollout",),  # engines, environments, the collector
    ("rewards",),  # reward callables, the sandbox
    ("algorithms",),  # pure tensor functions
    ("analysis",),  # text and metric analysis, run-folder readers
    ("data",),  # datasets, templates, built-in tasks
    ("config",),  # typed config dataclasses, YAML + overrides, structural validation
    ("core", "testing", "__init__"),  # model/tokenizer loading, device, tokenising; test models
]
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}

# The upward imports left to fix, each with its fix; any other one fails the test.
KNOWN_UPWARD = {}
MAX_LINES = 400


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def _part(module: str) -> str:
    """``thinkrl.train.trainer`` -> ``train``; ``thinkrl.cli`` -> ``cli``; ``thinkrl`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path) -> set[str]:
    """Every thinkrl module ``module`` imports, at any depth of its code (functions, TYPE_CHECKING blocks)."""
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return {m for m in found if m == "thinkrl" or m.startswith("thinkrl.")}


def _edges(package: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(from part, to part) -> the importing modules, for imports across parts."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in _modules(package).items():
        for target in _imports(module, path):
            a, b = _part(module), _part(target)
            if a != b and (module, b) not in KNOWN_UPWARD:
                edges.setdefault((a, b), []).append(module)
    return edges


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()}
    missing = sorted(parts - set(RANK))
    assert not missing, f"add {missing} to LAYERS in tests/test_layers.py (and to docs/architecture.md)"


def check_imports_point_down(package: Path = PACKAGE) -> None:
    upward = [
        f"{', '.join(sorted(set(mods)))} ({a}) imports {b}, a higher layer"
        for (a, b), mods in sorted(_edges(package).items())
        if a in RANK and b in RANK and RANK[b] < RANK[a]
    ]
    assert not upward, "\n".join(upward) + "\nmove the code down, or the import up (docs/architecture.md)"


def check_no_cycles(package: Path = PACKAGE) -> None:
    graph: dict[str, set[str]] = {}
    for a, b in _edges(package):
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = sorted(p for p in graph if reaches(p, p, set()))
    assert not cycles, f"parts on an import cycle: {cycles}"


def test_imports_point_down():
    check_imports_point_down()


def test_no_import_cycles():
    check_no_cycles()


def test_modules_stay_short():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := p.read_text().count("\n")) > MAX_LINES}  # fmt: skip
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


@pytest.mark.parametrize(
    ("where", "source", "check", "message"),
    [
        ("rollout/bad.py", "from thinkrl.train import GRPOTrainer\n", check_imports_point_down,
         r"thinkrl.rollout.bad \(rollout\) imports train, a higher layer"),
        ("rollout/bad.py", "def f():\n    import thinkrl.demo\n", check_imports_point_down,
         r"\(rollout\) imports demo, a higher layer"),
        ("sft/bad.py", "from thinkrl.rejection import filters\n", check_no_cycles, r"cycle: \['rejection', 'sft'\]"),
    ],
)  # fmt: skip
def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path, where, source, check, message):
    """The checks can fail: a copy of the package with one bad module added is reported."""
    fake = tmp_path / "thinkrl"
    for path in PACKAGE.rglob("*.py"):
        dest = fake / path.relative_to(PACKAGE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(path.read_text())
    (fake / where).write_text(source)
    if "rejection" in source:  # a same-layer pair becomes a cycle when each imports the other
        (fake / "rejection" / "back.py").write_text("import thinkrl.sft\n")
    with pytest.raises(AssertionError, match=message):
        check(fake)
