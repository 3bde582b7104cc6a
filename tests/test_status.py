"""deploys/status.py's pure parts: commands built for the host's $HOME, devpi's event
queue rule, and the sections' verdicts from prepared facts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from facts.batch import command_text
from facts.files import FileContents
from facts.status import DevpiAnswers, DiskUsage, LogTail
from deploys import _status as status
from pyinfra_devpi.config import build_config
from pyinfra_devpi.render import render_caddy_site

DATA = {"devpi_outside_url": "https://pypi.example.org", "devpi_home": "~/dev pi/it's"}


def run(command: str, home) -> list[str]:
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env={"HOME": str(home),
                            "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_commands_built_for_the_probe_home_read_the_hosts_home(tmp_path):
    home = tmp_path / "a home"
    probe = build_config(DATA, status.PROBE_HOME)
    real = build_config(DATA, str(home))
    marker = real.paths.prewarm_marker
    (tmp_path / "a home" / "dev pi" / "it's").mkdir(parents=True)
    with open(marker, "w") as f:
        f.write("warm\n")
    command = status.at_home(command_text(FileContents, {"paths": (probe.paths.prewarm_marker,)}))
    assert status.PROBE_HOME not in command
    assert FileContents().process(run(command, home)) == {marker: "warm\n"}
    usage = status.at_home(command_text(DiskUsage, {"path": probe.paths.home}))
    assert DiskUsage().process(run(usage, home))["kib"] >= 0


def test_log_tail_and_missing_files(tmp_path):
    log = tmp_path / "err.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    tail = LogTail().process(run(LogTail().command(str(log), 3), tmp_path))
    assert tail == {"size": log.stat().st_size, "lines": ["line 27", "line 28", "line 29"]}
    assert LogTail().process(run(LogTail().command(str(tmp_path / "none"), 3), tmp_path)) is None
    assert DiskUsage().process(run(DiskUsage().command(str(tmp_path / "none")), tmp_path)) is None


def test_nothing_answering_is_no_status():
    output = run(DevpiAnswers().command("http://127.0.0.1:9"), "/")
    assert DevpiAnswers().process(output)["api_status"] is None
    assert DevpiAnswers().process(output)["status"] is None


NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("status_", "levels"),
    [
        ({"serial": 5, "event-serial": 5}, []),
        ({"serial": 9, "event-serial": 5, "last-commit-timestamp": NOW - 10}, []),  # just started
        ({"serial": 9, "event-serial": 5, "last-commit-timestamp": NOW - 400}, ["fatal"]),
        ({"serial": 9, "event-serial": 5, "event-serial-in-sync-at": NOW - 60, "event-serial-timestamp": NOW - 60},
         []),
        ({"serial": 9, "event-serial": 5, "event-serial-in-sync-at": NOW - 4000, "event-serial-timestamp": NOW - 400},
         ["warn", "warn"]),
        ({"serial": 9, "event-serial": 5, "event-serial-in-sync-at": NOW - 30000,
          "event-serial-timestamp": NOW - 2000}, ["fatal", "fatal"]),
    ],
)
def test_the_event_queue_is_judged_as_devpi_web_does(status_, levels):
    assert [level for level, _ in status.event_queue_messages(status_, NOW)] == levels


def found_for(values: dict, data=None):
    data = data or {"devpi_outside_url": "https://pypi.example.org"}
    probe = build_config(data, status.PROBE_HOME)
    config = build_config(data, "/Users/alice")
    return status.Found(config, "gui/501", values, {}), probe, config


def test_a_stopped_job_and_a_crash_loop_are_problems():
    found, probe, _ = found_for({})
    found.values[status._job(probe)] = None
    part = status.launchd_report(found, probe)
    assert part.fields["loaded"] is False and "is not loaded (stopped)" in part.problems[0]
    found.values[status._job(probe)] = {"loaded": True, "state": "spawn scheduled", "pid": None, "runs": 7,
                                        "last_exit_code": 2, "domain": "gui/501", "disabled": False}
    part = status.launchd_report(found, probe)
    assert "not running (spawn scheduled; last exit code 2; runs 7)" in part.problems[0]


def test_another_devpi_on_the_port_is_a_problem():
    found, probe, _ = found_for({})
    found.values[status._answers(probe)] = {"api_status": 200, "uuid": "other", "status": {}, "now": NOW}
    found.values[status._server_dir(probe)] = {"nodeinfo": {"uuid": "mine"}}
    assert "another devpi answers" in status.http_report(found, probe).problems[0]


def test_the_caddy_block_is_compared_with_what_the_deploy_writes():
    found, probe, config = found_for({})
    found.values[status._files(probe)] = {config.paths.caddy_site_file: render_caddy_site(config)}
    part = status.caddy_report(found, probe)
    assert part.fields["as_deployed"] is True and not part.warnings
    found.values[status._files(probe)] = {config.paths.caddy_site_file: "x"}
    assert status.caddy_report(found, probe).warnings


def test_a_pending_caddy_restart_is_a_warning():
    """A block moved in whose restart failed: the file is as deployed, Caddy is not."""
    found, probe, config = found_for({})
    found.values[status._files(probe)] = {config.paths.caddy_site_file: render_caddy_site(config),
                                          config.paths.caddy_restart_pending: ""}
    part = status.caddy_report(found, probe)
    assert part.fields["as_deployed"] is True and part.fields["restart_pending"] is True
    assert "has not been restarted since the block last changed" in part.warnings[0] and "devpi_caddy_restart" in part.warnings[0]
    assert not part.problems


def test_an_unreadable_fact_is_a_problem_of_its_section():
    found, probe, _ = found_for({})
    found.errors[status._venv(probe)] = "VenvVersions exited 1"
    with pytest.raises(status.Unreadable):
        status.versions_report(found, probe)


def test_the_table_names_the_verdict_and_every_problem():
    report = {"healthy": False, "problems": ["x is not loaded (stopped)"], "warnings": ["w"], "sections": {}}
    table = status.format_table("indri", report)
    assert table.splitlines()[0] == "devpi on indri: UNHEALTHY"
    assert "problem   x is not loaded (stopped)" in table and "warning   w" in table


def test_the_table_prints_no_terminal_escape_from_logs_or_the_backup_record():
    escape = "\x1b]0;pwned\x07\x1b[2J\x9b31m"
    report = {
        "healthy": False, "problems": [f"backup failed: {escape}"], "warnings": [],
        "sections": {
            "backups": {"configured": True, "count": 1, "dir": "/b", "kib": 1, "last_failure": None,
                        "last_skipped": None, "unverified": [{"name": f"devpi-backup-{escape}", "reason": "x"}],
                        "newest": {"name": f"devpi-backup-{escape}", "created": "t"},
                        "last_success": {"name": f"devpi-backup-{escape}"}},
            "logs": {"err_log": {"path": "/l/err.log", "size": 9, "last_lines": [f"Traceback {escape}"]}},
        },
    }
    table = status.format_table("indri", report)
    assert not any(c in table for c in "\x1b\x07\x9b")
    assert "Traceback \\x1b]0;pwned\\x07\\x1b[2J\\x9b31m" in table
    assert "newest devpi-backup-\\x1b]0;pwned" in table


def test_no_gnu_only_forms_in_the_status_commands():
    from .prepared import gnu_only_forms

    probe = build_config(DATA, status.PROBE_HOME)
    commands = [status.at_home(command_text(r.fact, r.kwargs)) for s in status.SECTIONS for r in s.reads(probe)]
    assert commands and [form for c in commands for form in gnu_only_forms(c)] == []


def test_backups_are_reported_and_a_stale_one_is_warned_about():
    data = {"devpi_outside_url": "https://pypi.example.org", "devpi_backup": {"hour": 3, "minute": 17, "keep": 3}}
    found, probe, config = found_for({}, data)
    backups, usage = status._backups(probe)
    verified = [{"name": "a", "epoch": NOW - 7200, "created": "t1"}, {"name": "b", "epoch": NOW - 3600, "created": "t2"}]
    found.values[backups] = {"count": 2, "names": ["a", "b"], "backups": verified, "now": NOW, "unverified": [],
                             "dir_problem": None, "last_success": {"name": "b", "epoch": NOW - 3600, "time": "t"},
                             "last_failure": None, "last_skipped": None}
    found.values[usage] = {"kib": 2048}
    part = status.backups_report(found, probe)
    assert part.fields["count"] == 2 and part.fields["kib"] == 2048 and part.fields["dir"] == config.backup_dir
    assert part.fields["newest"]["name"] == "b"
    assert not part.warnings and not part.problems
    verified[-1]["epoch"] = NOW - 3 * 24 * 3600
    assert "older than twice the daily schedule" in status.backups_report(found, probe).warnings[0]
    assert "b (t2)" in dict(status.summary_lines({"backups": part.fields}))["backups"]
    # a run that waited for a deploy, one that skipped: the status says so
    verified[-1]["epoch"] = NOW - 3600
    found.values[backups]["last_success"].update(waited_seconds=42.5, waited_for="a deploy holds /l")
    found.values[backups]["last_skipped"] = {"time": "t3", "epoch": NOW, "reason": "a deploy holds /l"}
    row = dict(status.summary_lines({"backups": status.backups_report(found, probe).fields}))["backups"]
    assert "; last skipped t3" in row and "the last success waited 42.5 s for a deploy" in row
    assert "the scheduled backup at t3 was skipped: a deploy holds /l" in status.backups_report(found, probe).warnings
    # a backup dir others can write: a problem (the status fails), nothing in it counted
    found.values[backups].update(backups=[], count=0, names=[], dir_problem="/b is writable by others (mode 0777)",
                                 unverified=[{"name": "a", "reason": "in /b is writable by others (mode 0777)"}])
    part = status.backups_report(found, probe)
    assert "the backup dir cannot be trusted (/b is writable by others (mode 0777))" in part.problems[0]
    assert any("a in the backup dir is not counted" in w for w in part.warnings)
    assert "newest none; 1 not vouched for" in dict(status.summary_lines({"backups": part.fields}))["backups"]


def test_without_backups_the_status_reads_nothing_for_them():
    found, probe, _ = found_for({})
    assert status._backups(probe) == []
    assert status.backups_report(found, probe).fields == {"configured": False}


def test_a_launchdaemon_is_read_in_the_system_domain_without_root():
    data = {"devpi_outside_url": "https://pypi.example.org", "devpi_launchd_scope": "daemon"}
    probe = build_config(data, status.PROBE_HOME)
    assert status._job(probe).arguments == status.FactRead.of(object, label="net.devpi", domain="system").arguments
    found = status.Found(build_config(data, "/Users/alice"), "system", {}, {})
    found.values[status._job(probe)] = {"loaded": True, "state": "running", "pid": 77, "runs": 1, "domain": "system",
                                        "disabled": True}
    part = status.launchd_report(found, probe)
    assert (part.fields["scope"], part.fields["domain"]) == ("daemon", "system")
    assert part.problems == [] and part.warnings == ["system/net.devpi is disabled: it will not load at the next boot"]
    rows = dict(status.summary_lines({"launchd": part.fields}))
    assert rows["launchd"].startswith("system/net.devpi: running, pid 77")


def test_damaged_files_are_reported_and_everything_else_still_is(tmp_path):
    """The status's one batch, run for real on a home holding a Caddy block and a backup
    status record with bytes that are not UTF-8 and a garbled ``.nodeinfo``: the output
    is UTF-8 (pyinfra's reader would stop with a traceback otherwise), every section
    reports, and each damage is named."""
    from facts.batch import FactBatch

    from pyinfra_devpi.layout import NODEINFO

    data = {"devpi_outside_url": "https://pypi.example.org", "devpi_backup": {"hour": 3, "minute": 17, "keep": 3}}
    home = tmp_path / "home"
    config = build_config(data, str(home))
    server_dir = Path(config.paths.server_dir)
    server_dir.mkdir(parents=True)
    Path(config.paths.nodeinfo).write_bytes(b'{"uuid": "\xff\xfe')
    Path(config.paths.serverversion).write_text("4\n")
    site = config.paths.caddy_site_file
    (tmp_path / "home" / ".config" / "caddy" / "sites").mkdir(parents=True, exist_ok=True)
    with open(site, "wb") as f:
        f.write(render_caddy_site(config).encode().replace(b"reverse_proxy", b"reverse_\xe9proxy"))
    with open(config.paths.backup_status, "wb") as f:
        f.write(b'{"last_success": {"name": "devpi-backup-\x80"}}\n')
    probe = build_config(data, status.PROBE_HOME)
    reads = list(dict.fromkeys(r for s in status.SECTIONS for r in s.reads(probe)))
    batch = FactBatch().command([status.at_home(command_text(r.fact, r.kwargs)) for r in reads])
    result = subprocess.run(["/bin/sh", "-c", batch], capture_output=True, env={"HOME": str(home),
                            "PATH": "/usr/bin:/bin"})
    lines = result.stdout.decode("utf-8").splitlines()  # as pyinfra reads it: strict UTF-8
    values = {}
    for read, answer in zip(reads, FactBatch().process(lines)):
        assert answer["status"] == 0, read
        values[read] = read.fact().process(answer["lines"]) if answer["lines"] else read.fact().default()
    found = status.Found(config, "gui/501", values, {})
    parts = {s.name: s.report(found, probe) for s in status.SECTIONS}
    problems = [p for part in parts.values() for p in part.problems]
    warnings = [w for part in parts.values() for w in part.warnings]
    assert any(f"{config.paths.server_dir}/{NODEINFO} is damaged (not UTF-8 text (byte 0xff" in p for p in problems), problems
    assert f"{site} is damaged (not UTF-8 text (byte 0xe9 at offset" in "\n".join(warnings)
    assert f"{config.paths.backup_status} is damaged (not UTF-8 text (byte 0x80" in "\n".join(warnings)
    # ... and the rest is still reported: nothing answers, no job, no venv.
    assert any("GET http://127.0.0.1:3141/+api: nothing answers" in p for p in problems)
    assert any(p.startswith(f"no venv at {config.paths.venv}") for p in problems)
    assert parts["backups"].fields["count"] == 0 and parts["caddy"].fields["exists"] is True


def test_a_log_line_that_is_not_utf8_does_not_stop_the_status(tmp_path):
    log = tmp_path / "err.log"
    log.write_bytes(b"first\nTraceback: caf\xe9\nlast\n")
    command = LogTail().command(str(log), 2)
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True)
    tail = LogTail().process(result.stdout.decode("utf-8").splitlines())  # strict, as pyinfra reads
    assert tail == {"size": log.stat().st_size, "lines": ["Traceback: caf\ufffd", "last"]}
    log.write_bytes(b"no newline at the end")
    assert LogTail().process(run(LogTail().command(str(log), 5), tmp_path))["lines"] == ["no newline at the end"]
    log.write_bytes(b"")
    assert LogTail().process(run(LogTail().command(str(log), 5), tmp_path)) == {"size": 0, "lines": []}


REPLICA_STATUS = {"role": "REPLICA", "serial": 40, "primary-serial": 42, "primary-url": "https://pypi.example.org",
                  "replica-started-at": NOW - 3600, "update-from-primary-at": NOW - 10,
                  "replica-in-sync-at": NOW - 20, "replication-errors": {}}


@pytest.mark.parametrize(("changes", "levels"), [
    ({}, []),  # 2 behind, in sync 20 s ago: catching up
    ({"update-from-primary-at": NOW - 90}, ["warn"]),
    ({"update-from-primary-at": NOW - 400}, ["fatal"]),
    ({"update-from-primary-at": None}, ["fatal"]),  # started an hour ago, never heard from its primary
    ({"update-from-primary-at": None, "replica-started-at": NOW - 90}, ["warn"]),
    ({"replica-in-sync-at": NOW - 600}, ["warn"]),
    ({"replica-in-sync-at": None, "update-from-primary-at": NOW - 400}, ["fatal", "fatal"]),
    ({"serial": 42, "replication-errors": {"x": "y"}}, ["fatal"]),
    ({"serial": -1, "replica-in-sync-at": None}, ["warn"]),  # in contact, never in sync: behind
])
def test_a_replica_is_judged_as_devpi_web_does(changes, levels):
    messages = status.replication_messages({**REPLICA_STATUS, **changes}, NOW)
    assert [level for level, _ in messages] == levels


def test_the_replication_section_reports_a_replica_and_its_lag():
    data = {"devpi_outside_url": "https://mirror2.example.org", "devpi_role": "replica", "devpi_primary": "indri"}
    found, probe, _ = found_for({}, data)
    found.values[status._answers(probe)] = {"api_status": 200, "uuid": "u", "status": REPLICA_STATUS, "now": NOW}
    part = status.replication_report(found, probe)
    assert part.fields == {"configured_role": "replica", "role": "replica", "primary_url": "https://pypi.example.org",
                           "serial": 40, "primary_serial": 42, "behind": 2, "last_update_age": 10, "errors": 0}
    assert part.problems == [] and part.warnings == []
    rows = dict(status.summary_lines({"replication": part.fields}))
    assert rows["replication"] == ("replica of https://pypi.example.org: serial 40 of 42 (2 behind), "
                                   "last update from the primary 10 s ago")


def test_a_role_other_than_the_host_datas_is_a_problem():
    found, probe, _ = found_for({})  # devpi_role primary (the default)
    found.values[status._answers(probe)] = {"api_status": 200, "uuid": "u", "status": REPLICA_STATUS, "now": NOW}
    assert "devpi_role is 'primary' but the devpi answering" in status.replication_report(found, probe).problems[0]
    primary = {"role": "MASTER", "serial": 42, "polling_replicas": {"uuid-1": {"serial": 42}}}
    found.values[status._answers(probe)] = {"api_status": 200, "uuid": "u", "status": primary, "now": NOW}
    part = status.replication_report(found, probe)
    assert part.problems == [] and part.fields == {"configured_role": "primary", "role": "primary",
                                                   "polling_replicas": 1}
    assert dict(status.summary_lines({"replication": part.fields}))["replication"] == "primary, 1 replicas polling"
