"""
The four floors, every import pointing down: ``pyinfra_devpi/`` (the model) <
``facts/`` (reads the host) < ``operations/`` (changes it) < ``deploys/`` (composes).
A module may import its own floor and those below it, never one above; the model
knows nothing of pyinfra's host or state. No exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("pyinfra_devpi", "facts", "operations", "deploys")
# What only a run has: the model takes values, never the host or the run's state.
RUN_ONLY = {"pyinfra.host", "pyinfra.state", "pyinfra.api.deploy", "pyinfra.api.operation", "pyinfra.api.FactBase"}


def modules() -> list[Path]:
    return sorted(p for floor in FLOORS for p in (ROOT / floor).rglob("*.py"))


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def imported_names(path: Path) -> list[tuple[int, str]]:
    """Every name ``path`` imports (top level or inside a function), relative imports
    resolved, as ``(line, dotted name)``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package_of(path).split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return names


def floor_of(name: str) -> int | None:
    top = name.split(".")[0]
    return FLOORS.index(top) if top in FLOORS else None


def test_every_import_points_down():
    upward = []
    for path in modules():
        own = floor_of(path.relative_to(ROOT).parts[0])
        for line, name in imported_names(path):
            target = floor_of(name)
            if target is not None and target > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert upward == []


def test_the_model_knows_no_run():
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules()
        if path.relative_to(ROOT).parts[0] == "pyinfra_devpi"
        for line, name in imported_names(path)
        if name in RUN_ONLY
    ]
    assert found == []


def test_the_walk_sees_every_floor_and_an_upward_import():
    # The test above is only as good as its walk: it finds each floor's modules,
    # resolves a relative import, and would see an upward one.
    assert {path.relative_to(ROOT).parts[0] for path in modules()} == set(FLOORS)
    assert "pyinfra_devpi.layout.venv_bin" in {n for _, n in imported_names(ROOT / "facts/devpi.py")}
    assert floor_of("deploys._service.devpi_service") > floor_of("facts.snapshot")
