"""A renamed devpi_label: the job under the old label is retired before the new one loads."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_renamed_label_retires_the_old_job(shared_host, launchd, e2e_log_dirs):
    stack = shared_host.get()
    e2e_log_dirs.append(stack.root)
    old_label, old_plist = stack.label, stack.plist
    assert launchd.pid(old_label) is not None
    new_label = "e2e.retire.renamed"
    try:
        result = stack.deploy(devpi_label=new_label)
        assert "is this devpi under an old label: retiring it" in result.output, result.describe()
        # The old job is gone, its plist removed; the new one owns the port.
        assert launchd.print(old_label).returncode != 0
        assert not old_plist.exists()
        new_pid = launchd.pid(new_label)
        assert new_pid is not None
        assert stack.api_ok()
        # The job that answers is the new one (the old one would have kept the port).
        assert "e2e.retire.renamed.err.log" in launchd.print(new_label).stdout
        assert stack.deploy(devpi_label=new_label).grand_total()[0] == 0
        assert launchd.pid(new_label) == new_pid
    finally:
        launchd.bootout(new_label)


def test_label_and_home_renamed_together_retire_the_old_job_and_leave_a_foreign_one(shared_host, launchd,
                                                                                      e2e_log_dirs):
    """devpi_label and devpi_home renamed in one run: the old job runs with another config
    file, yet one the deploy wrote for this port, so it is retired before the new job
    loads (which would otherwise find the port taken). A marked plist whose job runs
    something else is named and left alone, running."""
    import json

    from pyinfra_devpi.render import job_plist

    from .harness import http

    stack = shared_host.get()
    e2e_log_dirs.append(stack.root)
    old_label, old_plist = stack.label, stack.plist
    assert launchd.pid(old_label) is not None
    foreign_label = "e2e.retire.foreign"
    foreign_plist = stack.home / "Library/LaunchAgents" / f"{foreign_label}.plist"
    foreign_plist.write_text(job_plist(
        str(stack.home), None, label=foreign_label, program_arguments=["/bin/sleep", "600"],
        when={"RunAtLoad": True}, process_type="Background", stdout_path=str(stack.log_dir / "foreign.log"),
        stderr_path=str(stack.log_dir / "foreign.log")))
    new_label, new_home = "e2e.retire.moved", stack.home / "devpi-moved"
    try:
        assert launchd.bootstrap(foreign_plist).returncode == 0
        foreign_pid = launchd.pid(foreign_label)
        assert foreign_pid is not None
        result = stack.deploy(devpi_label=new_label, devpi_home=new_home)
        assert (f"{old_label} is this devpi under an old label and an earlier devpi_home (its config "
                f"{stack.devpi_home}/devpi-server.yml serves port {stack.devpi_port}): retiring it") in result.output, \
            result.describe()
        assert (f"{foreign_plist} ({foreign_label}) was written by this deploy but runs /bin/sleep, no devpi "
                "config: not this devpi's job, left alone") in result.output
        # The old job is gone and its plist with it; the new one holds the port and answers
        # from the new server dir.
        assert launchd.print(old_label).returncode != 0 and not old_plist.exists()
        assert launchd.pid(new_label) is not None
        uuid = json.loads((new_home / "server-dir" / ".nodeinfo").read_text())["uuid"]
        status, headers, _ = http("GET", f"{stack.devpi_url}/+api", timeout=10)
        assert status == 200 and {k.lower(): v for k, v in headers.items()}.get("x-devpi-uuid") == uuid
        # The foreign job runs on, untouched.
        assert launchd.pid(foreign_label) == foreign_pid and foreign_plist.exists()
        # And back: the job of devpi_home moved away is this devpi's as well.
        back = stack.deploy()
        assert f"{new_label} is this devpi under an old label and an earlier devpi_home" in back.output
        assert launchd.print(new_label).returncode != 0
        stack.wait_healthy()
    finally:
        launchd.bootout(foreign_label)
        foreign_plist.unlink(missing_ok=True)
        launchd.bootout(new_label)
