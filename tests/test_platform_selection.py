"""``uv run pytest`` runs the end-to-end suite the platform can run: on a Mac tests/mac
(real launchd), elsewhere tests/e2e (the Linux harness); the other one is deselected
with one line saying why (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import LINUX_E2E_REASON, MAC_E2E_REASON, PlatformSelection, end_to_end_first


@pytest.fixture
def suite(pytester: pytest.Pytester):
    """A tiny suite laid out like ours: tests/, tests/e2e/, tests/mac/."""
    pytester.makepyfile(**{
        "tests/test_unit": "def test_unit(): pass",
        "tests/e2e/test_linux": "def test_over_sshd(): pass\ndef test_takeover(): pass",
        "tests/mac/test_mac": "def test_real_launchd(): pass",
    })
    return pytester


def run(suite: pytest.Pytester, platform: str, *args: str):
    return suite.runpytest("-p", "no:cacheprovider", *args,
                           plugins=[PlatformSelection(platform, suite.path / "tests")])


def test_on_a_mac_the_linux_harness_is_deselected_with_one_line(suite):
    result = run(suite, "darwin", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    assert "skipped" not in result.stdout.str()
    passed = {line.split()[0] for line in result.outlines if line.endswith("%]") and " PASSED " in line}
    assert passed == {"tests/test_unit.py::test_unit", "tests/mac/test_mac.py::test_real_launchd"}
    lines = [line for line in result.outlines if "deselected (" in line]
    assert lines == [f"tests/e2e deselected (2 tests): {LINUX_E2E_REASON}"]


def test_on_linux_only_tests_mac_is_deselected_with_one_line(suite):
    result = run(suite, "linux", "-v")
    result.assert_outcomes(passed=3, deselected=1)
    passed = {line.split()[0] for line in result.outlines if line.endswith("%]") and " PASSED " in line}
    assert passed == {"tests/test_unit.py::test_unit", "tests/e2e/test_linux.py::test_over_sshd",
                      "tests/e2e/test_linux.py::test_takeover"}
    lines = [line for line in result.outlines if "deselected (" in line]
    assert lines == [f"tests/mac deselected (1 test): {MAC_E2E_REASON}"]


def test_the_line_shows_in_a_collect_only_run_too(suite):
    result = run(suite, "linux", "--collect-only", "-q")
    assert f"tests/mac deselected (1 test): {MAC_E2E_REASON}" in result.outlines
    assert "tests/test_unit.py::test_unit" in result.outlines
    assert not any("test_mac.py" in line for line in result.outlines)


def test_nothing_deselected_no_line(suite):
    result = run(suite, "linux", "tests/test_unit.py", "tests/e2e")
    result.assert_outcomes(passed=3)
    assert not any("deselected" in line for line in result.outlines if not line.startswith("rootdir:"))


def test_the_end_to_end_modules_are_handed_out_first_in_their_own_order(tmp_path):
    """The workers take whole modules in collection order: the e2e (or Mac) modules come
    first, each suite keeping its order, so the short unit modules fill the end."""
    tests = tmp_path / "tests"

    class Item:
        def __init__(self, name: str):
            self.path = tests / name

    names = ["test_a.py", "e2e/test_z.py", "test_b.py", "e2e/test_c.py", "mac/test_m.py"]
    items = [Item(name) for name in names]
    end_to_end_first(items, tests)
    assert [str(item.path.relative_to(tests)) for item in items] == [
        "e2e/test_z.py", "e2e/test_c.py", "mac/test_m.py", "test_a.py", "test_b.py"]
