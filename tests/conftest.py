"""Which end-to-end suite this machine runs (README, "Tests").

``tests/e2e`` builds a stand-in Mac out of Linux parts (root, mount namespaces, a private
sshd, the launchctl double): it cannot run on a Mac. ``tests/mac`` runs the deploy through
``@local`` against the Mac's real launchd: it cannot run anywhere else. So ``uv run pytest``
deselects the suite this platform cannot run (deselected, not skipped: none of it is a
result) and says so in one line of the report, under "collected N items".
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS_DIR = Path(__file__).resolve().parent

LINUX_E2E_REASON = (
    "the Linux e2e harness needs Linux, root and mount namespaces; "
    "tests/mac runs against this Mac's real launchd instead"
)
MAC_E2E_REASON = "tests/mac needs macOS's launchd (`uv run pytest` on a Mac runs it)"


class PlatformSelection:
    """The plugin: on ``darwin`` the items under ``tests_dir/e2e`` are deselected, on any
    other platform those under ``tests_dir/mac``."""

    def __init__(self, platform: str, tests_dir: Path = TESTS_DIR):
        self.platform = platform
        self.tests_dir = tests_dir
        self.line: str | None = None

    def split(self, items: list[pytest.Item]) -> tuple[list[pytest.Item], list[pytest.Item], str | None]:
        """``(kept, deselected, report line)``; the line is None when nothing goes."""
        suite, reason = ("e2e", LINUX_E2E_REASON) if self.platform == "darwin" else ("mac", MAC_E2E_REASON)
        gone_dir = self.tests_dir.resolve() / suite
        kept, deselected = [], []
        for item in items:
            (deselected if gone_dir in Path(str(item.path)).resolve().parents else kept).append(item)
        if not deselected:
            return kept, deselected, None
        count = f"{len(deselected)} test{'' if len(deselected) == 1 else 's'}"
        return kept, deselected, f"tests/{suite} deselected ({count}): {reason}"

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        kept, deselected, self.line = self.split(items)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept

    def pytest_report_collectionfinish(self) -> list[str]:
        return [self.line] if self.line else []


def end_to_end_first(items: list[pytest.Item], tests_dir: Path = TESTS_DIR) -> None:
    """Order ``items`` (stably) so the end-to-end modules come before the unit modules.
    The workers (pytest-xdist, ``--dist loadfile``) take whole modules in this order as
    they become free: the long e2e modules start first and the many short unit modules
    fill the gaps at the end, instead of one e2e module running alone at the tail."""
    suites = {tests_dir.resolve() / "e2e", tests_dir.resolve() / "mac"}
    items.sort(key=lambda item: not suites & set(Path(str(item.path)).resolve().parents))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    end_to_end_first(items)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(PlatformSelection(sys.platform), "platform-selection")
