"""A Caddy restart that failed after the block moved into place is retried by the next run,
and does not keep a down devpi down."""

from __future__ import annotations

import json

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


def test_a_failing_caddy_step_does_not_keep_devpi_down(sshd, launchd, upstream, tmp_path):
    """The Caddy block's step runs before devpi's job (its hold covers devpi's restart).
    When it fails, the run still brings a down devpi back, then fails naming Caddy; the
    deploy lock is released, and the fixed rerun restarts Caddy."""
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "caddydown") as stack:
        stack.wait_caddy()
        new_address = f"http://127.0.0.1:{free_port()}"
        stack.stop_devpi()  # devpi crashed, or was booted out by hand

        failed = stack.deploy(check=False, devpi_caddy_site_address=new_address,
                              devpi_caddy_restart={"command": "echo caddy-restart-broke >&2; false"})
        assert failed.returncode != 0, failed.describe()
        assert "caddy-restart-broke" in failed.output
        assert "Caddy is not serving devpi's new site block" in failed.output, failed.describe()
        assert 'the step "Caddy site block for devpi" failed' in failed.output
        # devpi is back, and its operations ran after the failed Caddy step.
        stack.wait_healthy(timeout=10)
        assert stack.api_ok()
        assert "Wait for devpi to answer" in failed.output

        # The status says Caddy's restart is pending (the block file itself is as deployed).
        stack.update(devpi_caddy_site_address=new_address)
        report = stack.pyinfra("deploys/status.py", "--data", "devpi_status_format=json", check=False)
        caddy = json.loads(report.stdout.strip().splitlines()[-1])["sections"]["caddy"]
        assert (caddy["as_deployed"], caddy["restart_pending"]) == (True, True), report.describe()

        # The lock went back with the failed run: the next run takes it as usual.
        fixed = stack.deploy()
        assert "left by a deploy that is no longer running" not in fixed.output, fixed.describe()
        assert "Caddy is not serving" not in fixed.output
        assert http("GET", f"{new_address}/+api", headers={"Accept": "application/json"})[0] == 200
        assert stack.deploy().grand_total()[0] == 0
        report = stack.pyinfra("deploys/status.py", "--data", "devpi_status_format=json")
        assert json.loads(report.stdout.strip().splitlines()[-1])["sections"]["caddy"]["restart_pending"] is False
