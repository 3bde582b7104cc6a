"""
``deploys/status.py``: devpi's state on a host in one command, changing nothing and
reading no secret. One remote round trip: every fact below, the login session included,
runs in one ``FactBatch``.

The session (``LaunchdSession``: the SSH user's home) is what turns ``~/`` in host data
into paths; it is read in the same batch as the facts that use those paths. So the
facts' commands are built from a *probe* config whose home is ``PROBE_HOME``, and each
command's ``PROBE_HOME`` becomes ``"$HOME"`` before it runs (``at_home``); the report is
then made with the real config (``~/`` expanded with the home the session reported).

The report is a list of sections (``SECTIONS``), each declaring the facts it reads and
turning their values into fields, problems (devpi is not serving: the run fails, so it
works as a monitoring check) and warnings (a deploy would change something).

Output: a table on stdout (``devpi_status_format = "table"``, the default) or one JSON
object per host and line (``"json"``, e.g. ``--data devpi_status_format=json``);
pyinfra's own output goes to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Callable

import click
from pyinfra import host, logger, state
from pyinfra.api import deploy

from facts.backup import Backups
from facts.devpi import ServerDir, VenvVersions
from facts.files import Damaged, FileContents
from facts.launchd import LaunchdJob, LaunchdSession
from facts.snapshot import FactRead, read_batch
from facts.status import DevpiAnswers, DiskUsage, LogTail

from pyinfra_devpi import backup as bk
from pyinfra_devpi import prewarm as pw
from pyinfra_devpi import smoke
from pyinfra_devpi.config import DevpiConfig, build_config
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.launchd_scope import DAEMON_SCOPE, job_place, pinned_domain
from pyinfra_devpi.render import render_caddy_site

# The home the facts' commands are built with; ``"$HOME"`` on the host (``at_home``).
# Only characters shlex.quote leaves bare, so it appears verbatim in every command.
PROBE_HOME = "/__pyinfra_devpi_status_home__"

# Lines of each log the report shows.
LOG_LINES = 10


def at_home(command: str) -> str:
    """``command`` with ``PROBE_HOME`` as the host's ``$HOME``: inside a single-quoted
    word (``'/probe/a b'`` → ``"$HOME"'/a b'``) and bare (``/probe/x`` → ``"$HOME"/x``)."""
    return command.replace("'" + PROBE_HOME, "\"$HOME\"'").replace(PROBE_HOME, '"$HOME"')


@dataclasses.dataclass
class Part:
    """One section's share of the report."""

    fields: dict
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


class Unreadable(Exception):
    """A fact of the batch failed or could not be parsed."""


@dataclasses.dataclass
class Found:
    """What a section's ``report`` gets: the real config, the domain, and the facts as read."""

    config: DevpiConfig
    domain: str
    values: dict
    errors: dict

    def get(self, read: FactRead):
        if read in self.errors:
            raise Unreadable(self.errors[read])
        return self.values[read]

    def file(self, probe_read: FactRead, path: str) -> str | None:
        """A file of a ``FileContents`` read (keyed by the host's real paths)."""
        return (self.get(probe_read) or {}).get(path)


@dataclasses.dataclass(frozen=True)
class Section:
    """A part of the report: ``reads(probe)`` lists its facts (built from the probe config),
    ``report(found, probe)`` turns them into a ``Part``."""

    name: str
    reads: Callable[[DevpiConfig], list[FactRead]]
    report: Callable[[Found, DevpiConfig], Part]


def _server_dir(probe: DevpiConfig) -> FactRead:
    return FactRead.of(ServerDir, path=probe.paths.server_dir)


def _venv(probe: DevpiConfig) -> FactRead:
    return FactRead.of(VenvVersions, venv=probe.paths.venv)


def _job(probe: DevpiConfig) -> FactRead:
    # With no domain pinned, the job's fact picks it on the host by the session rule.
    return FactRead.of(LaunchdJob, label=probe.label, domain=pinned_domain(probe))


def _answers(probe: DevpiConfig) -> FactRead:
    return FactRead.of(DevpiAnswers, url=probe.local_url)


def _files(probe: DevpiConfig) -> FactRead:
    return FactRead.of(FileContents, paths=(probe.paths.caddy_site_file, probe.paths.prewarm_marker,
                                            probe.paths.caddy_restart_pending))


def _files_usage(probe: DevpiConfig) -> FactRead:
    return FactRead.of(DiskUsage, path=probe.paths.files_dir)


def _backups(probe: DevpiConfig) -> list[FactRead]:
    if probe.backup is None:
        return []
    return [FactRead.of(Backups, status_file=probe.paths.backup_status, directory=probe.backup_dir,
                        python=probe.paths.bin("python")),
            FactRead.of(DiskUsage, path=probe.backup_dir)]


def _smoke_file(probe: DevpiConfig) -> FactRead:
    return FactRead.of(FileContents, paths=(probe.paths.smoke_result,))


def _err_tail(probe: DevpiConfig) -> FactRead:
    return FactRead.of(LogTail, path=probe.paths.err_log, lines=LOG_LINES)


def _log_tail(probe: DevpiConfig) -> FactRead:
    return FactRead.of(LogTail, path=probe.paths.server_log, lines=LOG_LINES)


# --------------------------------------------------------------------------- sections


def versions_report(found: Found, probe: DevpiConfig) -> Part:
    config = found.config
    installed = found.get(_venv(probe))
    part = Part({
        "pinned": {"devpi-server": config.server_version, "devpi-web": config.web_version},
        "installed": None if installed is None else {
            "devpi-server": installed.get("devpi-server"), "devpi-web": installed.get("devpi-web"),
            "python": installed.get("python"), "path": installed.get("path"),
        },
    })
    if installed is None:
        part.problems.append(f"no venv at {config.paths.venv}")
    elif (installed.get("devpi-server"), installed.get("devpi-web")) != (config.server_version, config.web_version):
        part.warnings.append(
            f"installed devpi-server {installed.get('devpi-server')} + devpi-web {installed.get('devpi-web')}, "
            f"pinned {config.server_version} + {config.web_version}: a deploy would build a new venv",
        )
    return part


def launchd_report(found: Found, probe: DevpiConfig) -> Part:
    job = found.get(_job(probe))
    target = f"{found.domain}/{found.config.label}"
    if isinstance(job, dict) and job.get("launchctl_available") is False:
        return Part({"loaded": False}, problems=["launchctl is not available on this host"])
    if not job:
        return Part(
            {"loaded": False, "scope": found.config.launchd_scope, "domain": found.domain,
             "label": found.config.label},
            problems=[f"{target} is not loaded (stopped): a deploy loads it again"],
        )
    fields = {
        "loaded": True,
        "scope": found.config.launchd_scope,
        "domain": job.get("domain") or found.domain,
        "label": found.config.label,
        "state": job.get("state"),
        "pid": job.get("pid"),
        "runs": job.get("runs"),
        "last_exit_code": job.get("last_exit_code"),
        "last_exit_signal": job.get("last_exit_signal"),
        "disabled": job.get("disabled"),
        "plist": job.get("path"),
    }
    part = Part(fields)
    if job.get("state") != "running" or job.get("pid") is None:
        last = (f"last exit code {job.get('last_exit_code')}" if job.get("last_exit_code") is not None
                else f"last exit {job.get('last_exit_signal') or 'unknown'}")
        part.problems.append(f"{target} is loaded but not running ({job.get('state')}; {last}; runs {job.get('runs')})")
    if job.get("disabled"):
        when = "boot" if found.config.launchd_scope == DAEMON_SCOPE else "login"
        part.warnings.append(f"{target} is disabled: it will not load at the next {when}")
    return part


def event_queue_messages(status: dict, now: int | None) -> list[tuple[str, str]]:
    """devpi-web's own rule for its event queue (``devpiweb_get_status_info``):
    ``(level, message)`` with level ``fatal`` or ``warn``."""
    serial, event_serial = status.get("serial"), status.get("event-serial")
    if now is None or not isinstance(serial, int) or not isinstance(event_serial, int) or serial <= event_serial:
        return []
    in_sync_at = status.get("event-serial-in-sync-at")
    processed_at = status.get("event-serial-timestamp")
    commit_at = status.get("last-commit-timestamp") or now
    sync_age = None if in_sync_at is None else now - in_sync_at
    processed_age = None if processed_at is None else now - processed_at
    found = []
    if sync_age is None and processed_age is None:
        if now - commit_at > 300:
            found.append(("fatal", "the event processing doesn't seem to start"))
    elif sync_age is None or sync_age > 21600:
        found.append(("fatal", "the event processing hasn't been in sync for more than 6 hours"))
    elif sync_age > 3600:
        found.append(("warn", "the event processing hasn't been in sync for more than 1 hour"))
    if sync_age is not None and (processed_age is None or processed_age > 1800):
        found.append(("fatal", "no changes processed by plugins for more than 30 minutes"))
    elif sync_age is not None and processed_age > 300:
        found.append(("warn", "no changes processed by plugins for more than 5 minutes"))
    return found


def http_report(found: Found, probe: DevpiConfig) -> Part:
    config = found.config
    answers = found.get(_answers(probe))
    server_dir = found.get(_server_dir(probe))
    want = ((server_dir or {}).get("nodeinfo") or {}).get("uuid")
    status = answers["status"] or {}
    fields = {
        "url": config.local_url,
        "api_status": answers["api_status"],
        "uuid": answers["uuid"],
        "server_dir_uuid": want,
        "running_version": (status.get("versioninfo") or {}).get("devpi-server"),
        "serial": status.get("serial"),
        "event_serial": status.get("event-serial"),
        "event_queue": (status["serial"] - status["event-serial"])
        if isinstance(status.get("serial"), int) and isinstance(status.get("event-serial"), int) else None,
    }
    part = Part(fields)
    for name, reason in sorted(((server_dir or {}).get("damaged") or {}).items()):
        # devpi's own file: the deploy refuses to start devpi on it, naming the way out.
        part.problems.append(f"{config.paths.server_dir}/{name} is damaged ({reason}): devpi will not start on "
                             "it again; a deploy names the way out (it never replaces devpi's own files)")
    if answers["api_status"] != 200:
        got = "nothing answers" if answers["api_status"] is None else f"it answers {answers['api_status']}"
        part.problems.append(f"GET {config.local_url}/+api: {got}")
    elif want and answers["uuid"] != want:
        part.problems.append(
            f"another devpi answers on {config.local_url} (server dir uuid {answers['uuid']}, "
            f"this one's is {want}): a job under an old label or a previous devpi_home holds the port",
        )
    elif not status:
        part.warnings.append(f"GET {config.local_url}/+status gave no status")
    for level, message in event_queue_messages(status, answers["now"]):
        (part.problems if level == "fatal" else part.warnings).append(f"devpi: {message}")
    running = fields["running_version"]
    if running and running != config.server_version:
        part.warnings.append(f"devpi-server {running} is running, {config.server_version} is pinned")
    return part


def replication_messages(status: dict, now: int | None) -> list[tuple[str, str]]:
    """devpi-web's own rule for a replica (``devpiweb_get_status_info``): ``(level,
    message)`` with level ``fatal`` or ``warn``."""
    if status.get("role") != "REPLICA" or now is None:
        return []
    found, sync_level = [], "fatal"
    started, last_update = status.get("replica-started-at"), status.get("update-from-primary-at")
    if started is not None:
        if last_update is None:
            if now - started > 300:
                found.append(("fatal", "no contact to its primary for more than 5 minutes"))
            elif now - started > 60:
                found.append(("warn", "no contact to its primary for more than 1 minute"))
        elif now - last_update > 300:
            found.append(("fatal", "no update from its primary for more than 5 minutes"))
        elif now - last_update > 60:
            found.append(("warn", "no update from its primary for more than 1 minute"))
        else:
            sync_level = "warn"
    in_sync_at, primary_serial = status.get("replica-in-sync-at"), status.get("primary-serial")
    if isinstance(primary_serial, int) and isinstance(status.get("serial"), int) and primary_serial > status["serial"]:
        if in_sync_at is None or now - in_sync_at > 3600:
            found.append((sync_level, "the replica is behind its primary for more than 60 minutes"))
        elif now - in_sync_at > 300:
            found.append(("warn", "the replica is behind its primary for more than 5 minutes"))
    elif status.get("replication-errors"):
        found.append(("fatal", "unhandled replication errors"))
    return found


def replication_report(found: Found, probe: DevpiConfig) -> Part:
    """What devpi's ``/+status`` says of replication: a replica's primary, serials and
    errors (devpi-web's own rule), a primary's polling replicas; and a role other than the
    host data's."""
    config = found.config
    answers = found.get(_answers(probe))
    status = answers["status"] or {}
    role = status.get("role")
    polling = status.get("polling_replicas") or {}
    fields = {"configured_role": config.role, "role": None if role is None else
              "replica" if role == "REPLICA" else "primary" if polling else "primary or standalone"}
    part = Part(fields)
    if role == "REPLICA":
        serial, primary_serial = status.get("serial"), status.get("primary-serial")
        fields.update({
            "primary_url": status.get("primary-url"),
            "serial": serial,
            "primary_serial": primary_serial,
            "behind": primary_serial - serial
            if isinstance(primary_serial, int) and isinstance(serial, int) else None,
            "last_update_age": None if status.get("update-from-primary-at") is None or answers["now"] is None
            else round(answers["now"] - status["update-from-primary-at"]),
            "errors": len(status.get("replication-errors") or {}),
        })
        for level, message in replication_messages(status, answers["now"]):
            (part.problems if level == "fatal" else part.warnings).append(f"devpi: {message}")
    elif role is not None:
        fields["polling_replicas"] = len(polling)
    if role is not None and (config.role == "replica") != (role == "REPLICA"):
        part.problems.append(
            f"devpi_role is {config.role!r} but the devpi answering on {config.local_url} runs as "
            f"{'a replica' if role == 'REPLICA' else 'a primary or standalone'}: a deploy converges it, or refuses "
            "its server dir naming the way out",
        )
    return part


def disk_report(found: Found, probe: DevpiConfig) -> Part:
    usage = found.get(_files_usage(probe))
    return Part({"files_dir": found.config.paths.files_dir, "files_kib": None if usage is None else usage["kib"]})


def prewarm_report(found: Found, probe: DevpiConfig) -> Part:
    config = found.config
    if not config.prewarm:
        return Part({"configured": False, "marker": None})
    marker = found.file(_files(probe), config.paths.prewarm_marker)
    digest = pw.digest(config.prewarm, config.prewarm_index, config.indexes.get(config.prewarm_index))
    warm = pw.is_warm(marker, digest, found.get(_server_dir(probe)) or {})
    part = Part({"configured": True, "projects": len(config.prewarm), "index": config.prewarm_index,
                 "marker": config.paths.prewarm_marker if marker is not None else None, "warm": warm})
    if not warm:
        part.warnings.append(f"{config.prewarm_index} is not warm for devpi_prewarm: a deploy would warm it")
    return part


def caddy_report(found: Found, probe: DevpiConfig) -> Part:
    config = found.config
    on_host = found.file(_files(probe), config.paths.caddy_site_file)
    same = on_host == render_caddy_site(config)
    # The deploy's marker of a block moved in whose Caddy restart has not succeeded.
    pending = found.file(_files(probe), config.paths.caddy_restart_pending) is not None
    part = Part({"site_file": config.paths.caddy_site_file, "exists": on_host is not None, "as_deployed": same,
                 "restart_pending": pending})
    if isinstance(on_host, Damaged):
        part.fields["damaged"] = on_host.reason
        part.warnings.append(f"{config.paths.caddy_site_file} is damaged ({on_host.reason}): a deploy replaces it")
    elif on_host is None:
        part.warnings.append(f"no Caddy site block at {config.paths.caddy_site_file}: a deploy writes it")
    elif not same:
        part.warnings.append(f"{config.paths.caddy_site_file} differs from what the deploy writes: a deploy replaces it")
    if pending:
        part.warnings.append(
            f"Caddy has not been restarted since the block last changed ({config.paths.caddy_restart_pending}: "
            "the restart failed, or the run stopped before it): Caddy may still serve the old block; fix "
            "devpi_caddy_restart if it failed and rerun the deploy, which restarts Caddy",
        )
    return part


def backups_report(found: Found, probe: DevpiConfig) -> Part:
    """The scheduled backups (``devpi_backup``): the verified backups the backup dir
    holds (not the last success recorded: a backup pruned, removed or in a previous dir
    is not one), the newest, the last failure and skip, the disk they use. A problem when
    the dir cannot be trusted; a warning when the newest is stale or none is there, and
    for each entry the backup program cannot vouch for."""
    config = found.config
    if config.backup is None:
        return Part({"configured": False})
    backups_read, usage_read = _backups(probe)
    backups = found.get(backups_read) or {}
    usage = found.get(usage_read)
    part = Part({
        "configured": True,
        "dir": config.backup_dir,
        "count": backups.get("count"),
        "newest": (backups.get("backups") or [None])[-1],
        "unverified": backups.get("unverified") or [],
        "dir_problem": backups.get("dir_problem"),
        "last_success": backups.get("last_success"),
        "last_failure": backups.get("last_failure"),
        "last_skipped": backups.get("last_skipped"),
        "kib": None if usage is None else usage["kib"],
    })
    if backups.get("status_damaged"):
        part.fields["status_damaged"] = backups["status_damaged"]
        part.warnings.append(f"{config.paths.backup_status} is damaged ({backups['status_damaged']}): the last "
                             "backups' record is unknown; a deploy replaces it")
    part.problems += bk.problems(backups or None, config.backup_dir)
    part.warnings += bk.warnings(backups or None, config.backup_dir)
    return part


def smoke_report(found: Found, probe: DevpiConfig) -> Part:
    """The health gate's last smoke check (real requests once /+api answered), as it
    recorded it: when, on which venv, each request and its status."""
    path = found.config.paths.smoke_result
    text = found.file(_smoke_file(probe), path)
    if text is None:
        return Part({"result_file": None})
    record = smoke.parse_record(text)
    if record is None:
        return Part({"result_file": path, "ok": None}, warnings=[
            f"{path} is not the smoke check's record: the next deploy that restarts devpi rewrites it"])
    fields = {"result_file": path, **record}
    part = Part(fields)
    if not fields["ok"]:
        part.warnings.append(f"devpi failed its last smoke check ({', '.join(fields['checks'])}): see {path}")
    try:
        live = (found.get(_venv(probe)) or {}).get("path")
    except Unreadable:  # the versions section says why
        live = None
    if live and live != fields["venv_dir"]:
        part.warnings.append(f"the live venv {live} has not passed a smoke check (the last one ran on "
                             f"{fields['venv_dir']}): the next deploy restarts devpi and checks it")
    return part


def logs_report(found: Found, probe: DevpiConfig) -> Part:
    paths = found.config.paths
    fields = {}
    for name, read, path in (("err_log", _err_tail(probe), paths.err_log), ("log", _log_tail(probe), paths.server_log)):
        tail = found.get(read)
        fields[name] = {"path": path, "size": None if tail is None else tail["size"],
                        "last_lines": [] if tail is None else tail["lines"]}
    return Part(fields)


SECTIONS: list[Section] = [
    Section("versions", lambda probe: [_venv(probe)], versions_report),
    Section("launchd", lambda probe: [_job(probe)], launchd_report),
    Section("http", lambda probe: [_answers(probe), _server_dir(probe)], http_report),
    Section("disk", lambda probe: [_files_usage(probe)], disk_report),
    Section("prewarm", lambda probe: [_files(probe), _server_dir(probe)], prewarm_report),
    Section("caddy", lambda probe: [_files(probe)], caddy_report),
    Section("backups", _backups, backups_report),
    Section("logs", lambda probe: [_err_tail(probe), _log_tail(probe)], logs_report),
    Section("smoke", lambda probe: [_smoke_file(probe), _venv(probe)], smoke_report),
    Section("replication", lambda probe: [_answers(probe)], replication_report),
]


# --------------------------------------------------------------------------- reading


def read_all(reads: list[FactRead]) -> tuple[dict, dict]:
    """Every read in one ``FactBatch``, run with the host's ``$HOME``: ``(values, errors)`` by read."""
    return read_batch(host, list(dict.fromkeys(reads)), wrap=at_home)


def collect(data: dict) -> dict:
    """The report for the current host: one round trip, then every section."""
    probe = build_config(data, PROBE_HOME)
    session_read = FactRead.of(LaunchdSession)
    reads = [session_read] + [r for section in SECTIONS for r in section.reads(probe)]
    values, errors = read_all(reads)
    session = values.get(session_read)
    if not session or not session.get("home"):
        return {"healthy": False, "problems": [f"could not read the login session: {errors.get(session_read)}"],
                "warnings": [], "sections": {}}
    if not session.get("launchctl"):
        return {"healthy": False, "problems": [f"launchd is not available on {host.name}"], "warnings": [],
                "sections": {}}
    config = build_config(data, session["home"])
    found = Found(config, job_place(config, session).domain, values, errors)
    report = {"healthy": True, "problems": [], "warnings": [], "sections": {}}
    for section in SECTIONS:
        try:
            part = section.report(found, probe)
        except Unreadable as error:
            part = Part({"unreadable": str(error)}, problems=[f"{section.name}: could not read the host ({error})"])
        report["sections"][section.name] = part.fields
        report["problems"] += part.problems
        report["warnings"] += part.warnings
    report["healthy"] = not report["problems"]
    return report


# --------------------------------------------------------------------------- output


def _kib(kib: int | None) -> str:
    if kib is None:
        return "missing"
    return f"{kib / 1024:.1f} MiB" if kib >= 1024 else f"{kib} KiB"


def summary_lines(sections: dict) -> list[tuple[str, str]]:
    """(label, text) rows of the built-in sections; other sections as their fields."""
    rows = []
    v = sections.get("versions")
    if v and "pinned" in v:
        installed = v["installed"] or {}
        rows.append(("versions", f"pinned devpi-server {v['pinned']['devpi-server']} + devpi-web "
                     f"{v['pinned']['devpi-web']}; installed {installed.get('devpi-server')} + "
                     f"{installed.get('devpi-web')} (Python {installed.get('python')})"))
    j = sections.get("launchd")
    if j and "loaded" in j:
        if j["loaded"]:
            exit_ = j["last_exit_code"] if j["last_exit_code"] is not None else j.get("last_exit_signal") or "-"
            rows.append(("launchd", f"{j['domain']}/{j['label']}: {j['state']}, pid {j['pid']}, runs {j['runs']}, "
                         f"last exit {exit_}"))
        else:
            rows.append(("launchd", f"{j.get('domain')}/{j.get('label')}: not loaded"))
    h = sections.get("http")
    if h and "url" in h:
        rows.append(("http", f"{h['url']}/+api: {h['api_status'] or 'no answer'}"
                     + (f", uuid {h['uuid']}" if h["uuid"] else "")
                     + (f"; devpi-server {h['running_version']}" if h["running_version"] else "")))
        if h["serial"] is not None:
            rows.append(("status", f"serial {h['serial']}, event serial {h['event_serial']} "
                         f"(queue {h['event_queue']})"))
    d = sections.get("disk")
    if d and "files_dir" in d:
        rows.append(("disk", f"{_kib(d['files_kib'])} in {d['files_dir']}"))
    p = sections.get("prewarm")
    if p and "configured" in p:
        rows.append(("prewarm", f"{p['index']}: {'warm' if p['warm'] else 'not warm'} for {p['projects']} projects"
                     if p["configured"] else "devpi_prewarm is not set"))
    c = sections.get("caddy")
    if c and "site_file" in c:
        rows.append(("caddy", f"{c['site_file']}: " + ("missing" if not c["exists"] else
                     "as the deploy writes it" if c["as_deployed"] else "differs from what the deploy writes")
                     + ("; Caddy's restart is pending" if c.get("restart_pending") else "")))
    b = sections.get("backups")
    if b and "configured" in b:
        if not b["configured"]:
            rows.append(("backups", "devpi_backup is not set"))
        else:
            newest = b["newest"] or {}
            failure = b["last_failure"] or {}
            skipped = b["last_skipped"] or {}
            waited = (b["last_success"] or {}).get("waited_seconds")
            rows.append(("backups", f"{b['count']} verified in {b['dir']} ({_kib(b['kib'])}); newest "
                         + (f"{newest['name']} ({newest.get('created')})" if newest else "none")
                         + (f"; {len(b['unverified'])} not vouched for" if b["unverified"] else "")
                         + (f"; last failure {failure.get('time')} (exit {failure.get('exit_code')})" if failure else "")
                         + (f"; last skipped {skipped.get('time')}" if skipped else "")
                         + (f"; the last success waited {waited} s for a deploy" if waited else "")))
    s = sections.get("smoke")
    if s and "result_file" in s:
        verdict = "passed" if s.get("ok") else "FAILED"
        rows.append(("smoke", "no smoke check recorded" if s["result_file"] is None else
                     "unreadable record" if s.get("ok") is None else
                     f"{verdict} at {s['time']} on {s['venv_dir']}: {', '.join(s['checks'])}"))
    r = sections.get("replication")
    if r and r.get("role") == "replica":
        behind = "" if r["behind"] is None else f" ({r['behind']} behind)"
        rows.append(("replication", f"replica of {r['primary_url']}: serial {r['serial']} of {r['primary_serial']}"
                     + behind + ("" if r["last_update_age"] is None else
                                 f", last update from the primary {r['last_update_age']} s ago")
                     + (f", {r['errors']} replication errors" if r["errors"] else "")))
    elif r and r.get("role"):
        rows.append(("replication", f"{r['role']}, {r['polling_replicas']} replicas polling"))
    for name, fields in sections.items():
        if name not in ("versions", "launchd", "http", "disk", "prewarm", "caddy", "backups", "logs", "smoke",
                        "replication"):
            rows.append((name, json.dumps(fields, sort_keys=True)))
    return rows


# C0 and C1 controls and DEL: a log line or backup.status.json field holding a terminal
# escape would otherwise act on the operator's terminal; shown as \xNN instead.
_UNPRINTABLE_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN`` (what the status prints)."""
    return _UNPRINTABLE_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def format_table(name: str, report: dict) -> str:
    verdict = "healthy" if report["healthy"] else "UNHEALTHY"
    lines = [f"devpi on {name}: {verdict}"]
    for label, text in summary_lines(report["sections"]):
        lines.append(f"  {label:<9} {text}")
    for problem in report["problems"]:
        lines.append(f"  problem   {problem}")
    for warning in report["warnings"]:
        lines.append(f"  warning   {warning}")
    for key in ("err_log", "log"):
        log = (report["sections"].get("logs") or {}).get(key)
        if log:
            size = "missing" if log["size"] is None else f"{log['size']} bytes"
            lines.append(f"  {key:<9} {log['path']} ({size})" + (", last lines:" if log["last_lines"] else ""))
            lines += [f"    {line}" for line in log["last_lines"]]
    return "\n".join(printable(line) for line in lines)


@deploy("devpi status")
def devpi_status():
    """Report devpi's state on the host; fail the host when devpi is not serving."""
    data = host.data.dict()
    report = collect(data)
    if build_config(data, PROBE_HOME).status_format == "json":
        click.echo(json.dumps({"host": host.name, **report}, sort_keys=True))
    else:
        click.echo(format_table(host.name, report))
    if report["healthy"]:
        return
    reasons = printable("; ".join(report["problems"]))
    if len(state.active_hosts) > 1:
        # Other hosts still get their report; the run exits non-zero at the end.
        logger.error(f"{host.print_prefix}devpi is unhealthy: {reasons}")
        state.fail_hosts({host})
        return
    raise DeployError(f"devpi on {host.name} is unhealthy: {reasons}")

