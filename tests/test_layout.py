"""The package layout keeps its layering: a walk over every import statement of the four packages.

Rules (docs/architecture.md):

* ``config`` describes, it imports none of ``gateway``, ``ca``, ``cmc``;
* ``cmc`` is a library: it imports neither ``gateway`` nor ``ca``;
* ``ca`` never imports ``gateway``;
* ``gateway`` uses the CA's code only through the public APIs ``ca.keys`` (the key-backend
  interface both services share) and ``ca.publish`` (the LDAP writer both publish with);
* no import cycles between modules (imports inside functions and ``if TYPE_CHECKING:``
  blocks count too: a cycle only for the type checker is still two modules that need each
  other);
* no module over 450 lines.

The ``cmcgate`` command root (:mod:`gateway.main`) names each group's ``cli`` module as a string
and loads only the one asked for; that is a plug-in table, not an import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cmc", "ca", "config", "gateway")
MAX_LINES = 450

#: (importer prefix, imported prefix) pairs that break the layering.
FORBIDDEN = (
    ("config", "gateway"),
    ("config", "ca"),
    ("config", "cmc"),
    ("cmc", "gateway"),
    ("cmc", "ca"),
    ("ca", "gateway"),
)
#: What gateway may import from ca: these modules exactly (their __init__ is the public API).
GATEWAY_MAY_USE_FROM_CA = ("ca.keys", "ca.publish")


def _module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _imports(tree: ast.AST) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) of every import statement, at any depth."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, tuple(a.name for a in node.names)
        stack.extend(ast.iter_child_nodes(node))


def _targets(module: str, names: tuple[str, ...]) -> set[str]:
    """The project modules an import statement loads (``from a import b`` may name module a.b)."""
    found = {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
    if module in MODULES and (not names or len(found) < len(names)):
        found.add(module)
    return found


def _edges() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        out = graph.setdefault(name, {})
        for line, module, names in _imports(tree):
            for target in _targets(module, names):
                if target != name:
                    out.setdefault(target, line)
    return graph


GRAPH = _edges()


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layering_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    found = []
    for source, targets in graph.items():
        for target, line in targets.items():
            for low, high in FORBIDDEN:
                if _within(source, low) and _within(target, high):
                    found.append(f"{source}:{line} imports {target} ({low} -> {high})")
            if (
                _within(source, "gateway")
                and _within(target, "ca")
                and target not in GATEWAY_MAY_USE_FROM_CA
            ):
                found.append(
                    f"{source}:{line} imports {target}: gateway uses only"
                    f" {' and '.join(GATEWAY_MAY_USE_FROM_CA)} of the CA"
                )
    return found


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph.get(root, {})))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, {}))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_packages_keep_their_layering() -> None:
    assert layering_violations(GRAPH) == []


def test_there_are_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_no_module_is_over_450_lines() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"config.model": {"gateway.policy": 3}}, "config -> gateway"),
        ({"cmc.client": {"ca.keys": 9}}, "cmc -> ca"),
        ({"ca.cli": {"gateway.main": 1}}, "ca -> gateway"),
        ({"gateway.pipeline": {"ca.keys.errors": 54}}, "gateway uses only"),
    ],
)
def test_the_checker_catches_a_broken_rule(graph: dict[str, dict[str, int]], expected: str) -> None:
    (violation,) = layering_violations(graph)
    assert expected in violation


def test_the_checker_catches_a_cycle() -> None:
    graph = {"ca.store.orders": {"ca.store.audit": 1}, "ca.store.audit": {"ca.store.orders": 2}}
    assert cycles({**GRAPH, **graph}) == [["ca.store.audit", "ca.store.orders"]]
