"""The deploy on this Mac's real launchd (``@local``), as the Linux e2e runs it on the
launchctl double: first converge, a rerun with nothing to change, uninstall with purge.
The steps are tests/deploy_scenarios.py's, shared with tests/e2e. The tests run in file
order on one host (module scope)."""

from __future__ import annotations

from tests.deploy_scenarios import check_purged, first_converge, no_change_rerun


def test_first_converge_is_healthy_behind_caddy(local_host):
    result, pid = first_converge(local_host)
    assert local_host.api_ok(local_host.caddy_url), result.describe()
    assert local_host.loaded_in() in ([d] for d in local_host.agent_domains)


def test_rerun_with_nothing_to_change_changes_nothing(local_host):
    no_change_rerun(local_host)


def test_uninstall_with_purge_removes_the_job_and_its_files(local_host):
    result = local_host.uninstall(devpi_uninstall_purge=True)
    check_purged(local_host, result)
    assert local_host.loaded_in() == []
    assert not local_host.api_ok(local_host.caddy_url)
    assert not local_host.devpi_home.exists()
