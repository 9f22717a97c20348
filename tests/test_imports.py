"""The import graph of ``jaxsparse/`` and ``experiments/``, read from the source (the AST;
nothing is imported), lazy imports inside functions included: no circles, the library
never imports the studies, studies never import each other (the bench may: it times
them), and a study's report never imports its run (the run passes the report what it
needs)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxsparse", "experiments")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _ours(name: str, mods: dict) -> str | None:
    """The module of ours that ``name`` (a module, or a name in one) lives in."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, path: Path, mods: dict) -> set[str]:
    """The modules of ours that module ``name`` imports anywhere in its source."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # ``from pkg import mod`` depends on pkg.mod, not on pkg's __init__
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
            ]
        else:
            continue
        out |= {t for t in (_ours(t, mods) for t in targets) if t and t != name}
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, mods) for name, path in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path around each circle found by a depth-first search."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_search_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    edges = graph()
    assert len(edges) > 50 and "experiments.harness" in edges["experiments.lottery.run"]
    assert circles(edges) == []


def test_imports_run_downward():
    edges = graph()
    studies = {
        name.split(".")[1]
        for name, path in modules().items()
        if name.count(".") == 1 and path.name == "__init__.py" and name != "experiments.harness"
    }  # one package a study; the harness is the floor they all stand on
    assert {"lottery", "early_bird", "bench"} <= studies and "harness" not in studies
    for name, targets in edges.items():
        if name.startswith("jaxsparse"):
            assert not [t for t in targets if t.startswith("experiments")], name
            continue
        parts = name.split(".")
        if len(parts) > 1 and parts[1] in studies - {"bench"}:  # the bench times studies
            others = {t.split(".")[1] for t in targets if t.startswith("experiments.")} & studies
            assert others <= {parts[1]}, f"{name} imports the study {others - {parts[1]}}"
        if parts[-1] == "report":
            assert ".".join([*parts[:-1], "run"]) not in targets, f"{name} imports its run"
