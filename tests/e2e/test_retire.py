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
