"""tests/mac: the deploy on this Mac's real launchd, through ``@local`` (only on macOS:
tests/conftest.py deselects it elsewhere)."""

from __future__ import annotations

import pytest

from .local_host import CADDY_BIN, LocalHost, start_local_host


@pytest.fixture(scope="module")
def local_host(tmp_path_factory: pytest.TempPathFactory) -> LocalHost:
    if not CADDY_BIN.is_file():
        pytest.fail(f"{CADDY_BIN} is missing: run `uv sync --locked` (caddy-bin is in the dev group)", pytrace=False)
    host = start_local_host(tmp_path_factory.mktemp("mac"))
    try:
        yield host
    finally:
        host.stop()
