"""The layout of the code: no import cycle (module or package), the flow's direction (reference <- candidate <-
parity; within parity, capture and judge never import each other, measure imports neither, present renders), and
no file in parity/ over 600 lines unless it holds one concern (named here).

Every import counts, function-level ones included (a cycle hidden in a function is still a cycle); only
``if TYPE_CHECKING:`` blocks (annotations) are left out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("parity", "reference", "candidate")
MAX_LINES = 600
# files over MAX_LINES that hold one concern each (splitting them would split the concern, not a mix)
ONE_CONCERN = {
    "parity/measure/metrics.py": "the pair statistics of two tensors (one measurement per function)",
    "parity/measure/audio_metrics.py": "the audio-domain statistics of a reference/candidate pair",
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    skip = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and getattr(n.test, "id", getattr(n.test, "attr", None)) == "TYPE_CHECKING":
            for b in n.body:
                for m in ast.walk(b):
                    if hasattr(m, "lineno"):
                        skip.add(m.lineno)
    return skip


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        deps: set[str] = set()
        for n in ast.walk(tree):
            if not isinstance(n, (ast.Import, ast.ImportFrom)) or n.lineno in skip:
                continue
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            else:
                if n.level:
                    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = base[:len(base) - (n.level - 1)]
                    mod = ".".join(base + ([n.module] if n.module else []))
                else:
                    mod = n.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in n.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is no edge
                    deps.add(t)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def unit(module: str) -> str:
    """A module's package for the package-level graph: ``reference``, ``candidate``, a subpackage of parity
    (``parity.capture``, ``parity.judge``, ...), or one of parity's own modules (the command layer and the
    shared vocabulary)."""
    parts = module.split(".")
    if parts[0] != "parity":
        return parts[0]
    if len(parts) > 1 and (ROOT / "parity" / parts[1]).is_dir():
        return f"parity.{parts[1]}"
    return module


def test_no_module_import_cycle():
    assert _cycles(import_graph()) == []


def test_no_package_import_cycle():
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for m, deps in graph.items():
        packages.setdefault(unit(m), set()).update(unit(d) for d in deps if unit(d) != unit(m))
    assert _cycles(packages) == []


def test_the_flow_runs_one_way():
    """reference imports neither candidate nor parity; candidate does not import parity; in parity, capture and
    judge do not import each other, measure imports neither (nor the floor), present imports neither."""
    edges = {(unit(m), unit(d)) for m, deps in import_graph().items() for d in deps}
    forbidden = {("reference", "candidate"), ("parity.capture", "parity.judge"), ("parity.judge", "parity.capture"),
                 ("parity.measure", "parity.capture"), ("parity.measure", "parity.judge"),
                 ("parity.measure", "parity.floor"), ("parity.present", "parity.capture"),
                 ("parity.present", "parity.judge")}
    bad = sorted(e for e in edges if e in forbidden or (e[0] in ("reference", "candidate") and e[1].startswith("parity")))
    assert not bad, bad


def test_no_file_over_600_lines_that_mixes_concerns():
    long = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "parity").rglob("*.py")}
    over = {p: n for p, n in long.items() if n > MAX_LINES and p not in ONE_CONCERN}
    assert not over, f"split by concern: {over}"
    stale = [p for p in ONE_CONCERN if long.get(p, 0) <= MAX_LINES]
    assert not stale, f"no longer over {MAX_LINES} lines: drop from ONE_CONCERN: {stale}"
