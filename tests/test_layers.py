"""Dependencies point one way: entry points → services → pipeline and domain; no import cycle anywhere.

The import graph is read from the source (every import statement, function-level ones
included), so a cycle hidden inside a function fails here as surely as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reporting", "project")

# Entry points: they turn requests, messages and commands into one service call each.
ENTRY_POINTS = (
    "reporting.admin",
    "reporting.tasks",
    "reporting.management",
    "reporting.views",
    "reporting.urls",
    "reporting.api",
    "reporting.apps",
    "reporting.signals",
    "reporting.beat",
    "reporting.demo",
    "project",
)
SERVICES = ("reporting.services",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # "reporting.models.Report" → "reporting.models"
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def in_layer(name: str, layer: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in layer)


def is_package_init(name: str) -> bool:
    return (ROOT / Path(*name.split(".")) / "__init__.py").exists()


def test_there_is_no_import_cycle_among_the_projects_modules():
    assert cycles(import_graph()) == []


def test_the_reader_finds_function_level_imports_and_cycles():
    # The checks above are only as good as the graph they read: check it on the code itself.
    graph = import_graph()
    assert "reporting.models" in graph["reporting.runs"]
    assert "reporting.services.runs" in graph["reporting.tasks"]
    assert "reporting.health" in graph["project.celery"]  # imported inside a function there
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_entry_points_import_entry_points():
    wrong = {
        (name, target)
        for name, targets in import_graph().items()
        for target in targets
        if in_layer(target, ENTRY_POINTS)
        and not in_layer(name, ENTRY_POINTS)
        and not (is_package_init(target) and target == "project")
    }
    assert wrong == set()


def test_only_entry_points_and_services_import_services():
    wrong = {
        (name, target)
        for name, targets in import_graph().items()
        for target in targets
        if in_layer(target, SERVICES) and not in_layer(name, ENTRY_POINTS + SERVICES)
    }
    assert wrong == set()


def test_the_pipeline_imports_only_itself_the_period_arithmetic_and_the_settings():
    allowed = ("reporting.pipeline", "reporting.periods", "reporting.conf")
    wrong = {
        (name, target)
        for name, targets in import_graph().items()
        if in_layer(name, ("reporting.pipeline",))
        for target in targets
        if not in_layer(target, allowed)
    }
    assert wrong == set()


def test_the_settings_module_imports_nothing_of_the_app():
    assert {target for target in import_graph()["reporting.conf"] if in_layer(target, ("reporting",))} == set()


def test_enqueueing_and_auditing_happen_only_in_the_services():
    """Entry points make one service call: none publishes a task or writes an audit event itself.

    Beat is the exception that publishes: sending what falls due is the scheduler's whole job.
    """
    offenders = []
    for name, path in modules().items():
        if in_layer(name, SERVICES) or name in ("reporting.audit", "reporting.beat"):
            continue
        source = path.read_text()
        for habit in (".delay(", ".delay_on_commit(", ".apply_async(", "send_task(", "audit.record("):
            if habit in source:
                offenders.append((name, habit))
    assert offenders == []
