"""A Caddy restart that failed after the block moved into place is retried by the next run."""

from __future__ import annotations

import pytest

from .harness import free_port, http
from .stack import start_stack

pytestmark = pytest.mark.e2e


def test_failed_caddy_restart_is_retried_after_the_fix(sshd, launchd, upstream, tmp_path):
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "caddyretry") as stack:
        stack.wait_caddy()
        new_address = f"http://127.0.0.1:{free_port()}"

        # A wrong restart command: the new block is in place, Caddy still serves the old one.
        failed = stack.deploy(check=False, devpi_caddy_site_address=new_address,
                              devpi_caddy_restart={"command": "false"})
        assert failed.returncode != 0
        assert new_address.split("//")[1] in stack.site_file.read_text()

        # Fixed: the block is unchanged since the last run, but Caddy never restarted.
        stack.update(devpi_caddy_site_address=new_address)
        fixed = stack.deploy()
        assert fixed.grand_total()[0] >= 1, fixed.describe()
        assert http("GET", f"{new_address}/+api", headers={"Accept": "application/json"})[0] == 200

        # And then it is quiet again.
        assert stack.deploy().grand_total()[0] == 0
