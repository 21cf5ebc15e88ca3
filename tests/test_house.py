"""The house stays as built: imports run one way, top to bottom,

    server (and the cli) → api, admin, lifecycle → pipeline → guards, upstreams, media,
    redaction, policy, observe, audit → core → errors, config

with no import cycle, type-only imports (under TYPE_CHECKING) included: a reader follows them
too. A new cycle or an upward import fails here with the edge that made it.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "guardproxy"
# Below the wire APIs: none of these may import `api/`.
BELOW_API = frozenset(
    {"pipeline", "core", "guards", "upstreams", "media", "redaction", "policy", "observe",
     "audit", "engine", "health", "config", "errors", "yamlfile"}
)  # fmt: skip
ABOVE_PIPELINE = frozenset({"api", "admin", "lifecycle", "server", "cli"})
# The typed runtime the admin pages read; the rest of `server/` is imported by the cli alone.
SERVER_TYPES = "guardproxy.server.runtime"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                above = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*above, *([node.module] if node.module else [])])
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets = subs + ([base] if len(subs) < len(node.names) else [])
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_not_even_a_type_only_one() -> None:
    assert cycles(graph()) == []


def edges_where(rule: Callable[[str, str], bool]) -> list[str]:
    return [
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in sorted(targets)
        if rule(module, target)
    ]


def test_nothing_below_the_wire_apis_imports_them() -> None:
    assert edges_where(lambda m, t: layer(m) in BELOW_API and layer(t) == "api") == []


def test_the_pipeline_imports_nothing_above_it() -> None:
    below = ("pipeline", "core")
    assert edges_where(lambda m, t: layer(m) in below and layer(t) in ABOVE_PIPELINE) == []


def test_the_core_imports_only_itself_and_the_error_tree() -> None:
    inside = ("core", "errors")
    assert edges_where(lambda m, t: layer(m) == "core" and layer(t) not in inside) == []


def test_the_server_edge_is_imported_by_nothing_but_the_cli() -> None:
    def inward(module: str, target: str) -> bool:
        admin_reads_types = target == SERVER_TYPES and layer(module) == "admin"
        outside = layer(module) not in ("server", "cli")
        return layer(target) == "server" and outside and not admin_reads_types

    assert edges_where(inward) == []
