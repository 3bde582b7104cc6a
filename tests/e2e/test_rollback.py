"""A new devpi-server that installs and imports but cannot start is rolled back."""

from __future__ import annotations

import os

import pytest

from .harness import add_unstartable_devpi, start_upstream

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_upstream(tools, tmp_path):
    """A private hermetic index: the broken release must not show up in other tests'."""
    index = start_upstream(tmp_path / "upstream", python=tools.python3)
    yield index
    index.stop()


def test_a_bad_upgrade_is_rolled_back_to_the_previous_venv(shared_host, private_upstream, e2e_log_dirs):
    # devpi-server 6.20.99 and devpi-web 5.1.99 install and import, report their
    # version, and exit at once when started.
    upstream = private_upstream
    add_unstartable_devpi(upstream, "built by the e2e test")
    stack = shared_host.get()
    e2e_log_dirs.append(stack.root)
    good = os.path.realpath(stack.devpi_home / "venv")
    pid = stack.wait_healthy()

    result = stack.deploy(check=False, devpi_server_version="6.20.99", devpi_web_version="5.1.99",
                          devpi_index_url=upstream.url, devpi_health_timeout=60)

    assert result.returncode != 0, result.describe()
    # The gate saw the new devpi exit and did not wait out its 60 s: launchd's account.
    assert "exited before it answered" in result.output, result.describe()
    assert "last exit code = " in result.output
    assert "devpi-server 6.20.99 failed the health gate: rolling back to the previous venv" in result.output
    assert "rolled back: devpi answers again from" in result.output, result.describe()
    assert "a release that cannot start" in result.output  # the error log's tail
    assert os.path.realpath(stack.devpi_home / "venv") == good
    assert stack.wait_healthy() != pid  # restarted, from the good venv
    assert stack.api_ok()
