"""Every on-host path is derived in ``pyinfra_devpi/layout.py`` and nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pyinfra_devpi.config import build_config

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("pyinfra_devpi", "facts", "operations", "deploys")
LAYOUT = ROOT / "pyinfra_devpi" / "layout.py"

# Fragments of the paths and file names the deploy uses on the host.
ON_HOST = [
    r"server-dir",
    r"devpi-server\.yml$",
    r"(^|/)venvs?(/|$)",
    r"\.pyinfra-new",
    r"\.new$",
    r"prewarm\.state",
    r"users\.pyinfra\.json",
    r"root-passwd-hash",
    r"/bin/",
    r"\+files",
    r"Library/",
    r"\.config/caddy",
    r"\.nodeinfo",
    r"\.serverversion",
    r"\.plist$",
    r"\.lock\.txt",
    r"pre-existing-",
    r"\.indices",
]


def string_constants(path: Path):
    """Every string literal in the module's code (docstrings excepted), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def product_modules():
    for folder in PRODUCT:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_on_host_path_literal_outside_the_layout_module():
    found = []
    for module in product_modules():
        if module == LAYOUT:
            continue
        for line, value in string_constants(module):
            for pattern in ON_HOST:
                if re.search(pattern, value):
                    found.append(f"{module.relative_to(ROOT)}:{line}: {value!r} ({pattern})")
    assert found == []


def test_the_layout_module_holds_each_fragment():
    """The patterns above match real paths: a pattern matching nothing guards nothing."""
    text = " ".join(value for _, value in string_constants(LAYOUT))
    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/alice")
    paths = config.paths
    everything = [
        text, paths.venv, paths.venvs_dir, paths.server_dir, paths.nodeinfo, paths.serverversion,
        paths.files_dir, paths.whoosh_index, paths.config_file, paths.plist_file, paths.users_state_file,
        paths.prewarm_marker, paths.root_hash_upload, paths.lock_upload("x"),
        paths.bin("python"), paths.out_log, paths.caddy_site_file,
    ]
    for pattern in ON_HOST:
        if pattern == r"\.new$":
            continue  # the transient suffix is ".pyinfra-new"; ".new" is the old spelling
        assert any(re.search(pattern, value) for value in everything), pattern


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "/Users/alice/devpi/venv"),
        ({"devpi_home": "/opt/devpi"}, "/opt/devpi/venv"),
        ({"devpi_home": "~/srv/devpi/"}, "/Users/alice/srv/devpi/venv"),
    ],
)
def test_paths_follow_devpi_home(data, expected):
    config = build_config({"devpi_outside_url": "https://pypi.example.org", **data}, "/Users/alice")
    assert config.paths.venv == expected
    assert config.paths.server_dir == expected.replace("/venv", "/server-dir")
