"""A Caddy restart that failed after the block moved into place is retried by the next run,
and does not keep a down devpi down."""

from __future__ import annotations

import json
import plistlib
import re
import time
from pathlib import Path

import pytest

from .harness import free_port, http, http_ok, remote_commands, wait_until
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def host(shared_host) -> DeployedStack:
    """The deployed host (devpi behind Caddy) the module's tests share with other modules."""
    return shared_host.get()


@pytest.fixture
def stack(host, e2e_log_dirs) -> DeployedStack:
    """The module's host, converged as first deployed: the tests move Caddy's site
    address, break its restart, stop devpi, and load Caddy elsewhere or nowhere."""
    e2e_log_dirs.append(host.root)
    host.reset()
    return host


def test_failed_caddy_restart_is_retried_after_the_fix(stack):
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


def test_a_failing_caddy_step_does_not_keep_devpi_down(stack):
    """The Caddy block's step runs before devpi's job (its hold covers devpi's restart).
    When it fails, the run still brings a down devpi back, then fails naming Caddy; the
    deploy lock is released, and the fixed rerun restarts Caddy."""
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


def caddy_pid(launchd, domain: str, label: str) -> int | None:
    printed = launchd.run("print", f"{domain}/{label}", check=False)
    match = re.search(r"^\s*pid = (\d+)", printed.stdout, re.M)
    return int(match.group(1)) if printed.returncode == 0 and match else None


def load_caddy_in(launchd, domain: str, plist: Path) -> None:
    """``launchctl bootstrap <domain>``, retried while launchd still tears down the job
    just booted out elsewhere (error 5)."""
    deadline = time.monotonic() + 10
    while True:
        proc = launchd.run("bootstrap", domain, str(plist), check=False)
        if proc.returncode != 5 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("where", ["user", "system"])
def test_caddys_label_is_kickstarted_where_it_is_loaded(stack, sshd, launchd, where):
    """Caddy is not always in the deploy's own domain: `sudo brew services start caddy` makes
    it a LaunchDaemon in system, and a headless deploy's domain is user/<uid> while a console
    login's Caddy is in gui/<uid>. The deploy kickstarts it where it is loaded; where it is
    loaded nowhere, the preflight says so before any change."""
    label = stack.caddy_label
    domain = f"user/{sshd.uid}" if where == "user" else "system"
    assert domain != launchd.domain
    plist = stack.caddy.plist
    if where == "system":  # a LaunchDaemon's plist: the system's session, no session type
        definition = plistlib.loads(plist.read_bytes())
        del definition["LimitLoadToSessionType"]
        plist = plist.with_name(f"{label}.daemon.plist")
        plist.write_bytes(plistlib.dumps(definition))
    launchd.bootout(label)
    try:
        load_caddy_in(launchd, domain, plist)
        stack.wait_caddy()
        before = caddy_pid(launchd, domain, label)

        new_address = f"http://127.0.0.1:{free_port()}"
        stack.update(devpi_caddy_site_address=new_address)
        moved = stack.deploy()
        assert caddy_pid(launchd, domain, label) not in (None, before), moved.describe()
        wait_until(lambda: http_ok(f"{new_address}/+api"), 30, 0.1, f"Caddy to serve {new_address}")
        assert launchd.run("print", launchd.target(label), check=False).returncode != 0  # not loaded here

        # The lookup is part of the one batch: a rerun costs two remote commands.
        rerun = stack.deploy("--debug")
        assert rerun.grand_total()[0] == 0, rerun.describe()
        assert len(remote_commands(rerun.output)) == 2, remote_commands(rerun.output)
    finally:
        launchd.run("bootout", f"{domain}/{label}", check=False)

    # Loaded nowhere: refused before any change, naming the label and where it looked.
    site = stack.site_file.read_text()
    refused = stack.deploy(check=False, devpi_caddy_site_address=f"http://127.0.0.1:{free_port()}")
    assert refused.returncode != 0
    assert "is not ready for devpi; nothing was changed" in refused.output, refused.describe()
    assert (f"Caddy's launchd label {label}, which is not loaded in {launchd.domain}, "
            f"{domain if where == 'user' else f'user/{sshd.uid}'}, system") in refused.output
    assert "caddy reload --config" in refused.output
    assert stack.site_file.read_text() == site


def test_a_headless_launchagent_is_said_not_to_come_back_after_a_reboot(sshd, launchd, upstream, tmp_path):
    """Over SSH without a console login the agent lands in user/<uid>, which launchd does
    not load at boot: the plan says so once, in --dry too; not for gui/<uid>, nor for the
    daemon scope."""
    warning = "devpi will not come back after a reboot until a rerun of this deploy or a console login"
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "reboot", deploy=False, caddy=False) as stack:
        assert stack.deploy("--dry").output.count(warning) == 0  # the SSH user owns the console: gui/<uid>
        # user/<uid>, as the session rule picks it on a headless Mac (or set by hand)
        dry = stack.deploy("--dry", devpi_launchd_domain=f"user/{sshd.uid}")
        assert dry.output.count(warning) == 1, dry.describe()
        assert f"loaded into user/{sshd.uid}" in dry.output
        assert 'devpi_launchd_scope = "daemon"' in dry.output
        daemon = stack.deploy("--dry", devpi_launchd_scope="daemon")
        assert daemon.output.count(warning) == 0, daemon.describe()
