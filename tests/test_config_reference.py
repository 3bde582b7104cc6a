"""
docs/configuration.md is the config's own declarations rendered; the keys other docs
name exist.
"""

import re
from pathlib import Path

import pytest

from pyinfra_devpi.config import KEYS, ConfigError
from pyinfra_devpi.config_reference import REGENERATE, literal, may_be_unset, render_reference

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"

# A `devpi_*` name that is not part of a path, a file name or a glob (`devpi_caddy_*`).
KEY_NAME_RE = re.compile(r"(?<![\w/.])devpi_[a-z0-9_]+(?![\w*/]|\.py)")
# Host data that is not the config's: deploys/devpi_restore.py takes the backup to restore.
RUN_KEYS = {"devpi_restore_from"}


def test_the_reference_matches_the_declarations():
    assert REFERENCE.read_text() == render_reference(), (
        f"docs/configuration.md is stale: regenerate it with `{REGENERATE}`"
    )


def test_the_reference_names_every_key_once_in_declaration_order():
    headings = re.findall(r"^## `(devpi_\w+)`$", REFERENCE.read_text(), re.MULTILINE)
    assert headings == list(KEYS)


@pytest.mark.parametrize("name", KEYS)
def test_every_key_is_documented(name):
    doc = KEYS[name].doc
    assert doc.strip(), f"{name}: give key() a doc in pyinfra_devpi/config.py"
    assert doc == doc.strip() and doc.endswith("."), f"{name}: its doc should be whole sentences"


@pytest.mark.parametrize("name", KEYS)
def test_may_be_unset_is_what_the_check_accepts(name):
    spec = KEYS[name]
    if may_be_unset(spec):
        spec.check(f"`{name}`", None)
    else:
        with pytest.raises(ConfigError, match=name):
            spec.check(f"`{name}`", None)


def test_defaults_read_as_inventory_values():
    assert literal("~/devpi") == '"~/devpi"'
    assert literal({"root/pypi": {"mirror_no_project_list": True}}) == '{"root/pypi": {"mirror_no_project_list": True}}'
    assert literal(["requests", 3]) == '["requests", 3]'
    reference = render_reference()
    assert "## `devpi_outside_url`\n\nDefault: unset.\n" in reference
    assert "## `devpi_port`\n\nDefault: `3141`; cannot be unset.\n" in reference


def _docs():
    """README and the docs a person reads (architecture.md names functions, not keys;
    configuration.md is checked above)."""
    yield ROOT / "README.md"
    for path in sorted((ROOT / "docs").glob("*.md")):
        if path.name not in ("architecture.md", "configuration.md"):
            yield path


def test_every_key_the_docs_name_exists():
    stale = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _docs()
        for name in KEY_NAME_RE.findall(path.read_text())
        if name not in KEYS and name not in RUN_KEYS
    }
    assert not stale, f"docs name keys pyinfra_devpi/config.py does not declare: {sorted(stale)}"


def test_every_key_a_doc_names_exists():
    stale = {
        f"{name}: {other}"
        for name, spec in KEYS.items()
        for other in KEY_NAME_RE.findall(spec.doc)
        if other not in KEYS
    }
    assert not stale, f"key docs name keys that do not exist: {sorted(stale)}"


def test_the_key_name_pattern_skips_paths_and_globs():
    text = "`devpi_home`, deploys/devpi_uninstall.py, `devpi_caddy_*`, devpi_server/importexport.py, `devpi_port`."
    assert KEY_NAME_RE.findall(text) == ["devpi_home", "devpi_port"]
