"""
The server dir's data across devpi's database versions, and a server dir brought
over from another machine.

``server_dir_functions.sh``: devpi-export with one venv, devpi-import with another into
a new dir, checked on a spare loopback port (shared by the upgrade here; a restore
from a backup is the same import without the export). ``upgrade.sh``: the whole
upgrade of ``devpi_allow_export_import`` around it: stop the job, move the data over,
swap server dir and venv, start, check; put the old ones back on failure.
``adopt``: ``devpi-fsck`` of a server dir the deploy has not managed yet.

devpi-export reads the database inside one read transaction (a consistent snapshot,
``importexport.do_export``), so it could run against a live devpi; but an upload
committed after the export would be missing from the new server dir. The upgrade
stops devpi first: the downtime is the export, the import, the check and a start.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, StringCommand

from facts.files import PathsFound
from pyinfra_devpi import backup as bk
from pyinfra_devpi import layout, shell_script
from pyinfra_devpi.config import DevpiConfig

from .announce import log_once, operation
from .devpi import RENAME, say, server_dir, smoke_inputs
from .launchd import bootout_command, bootstrap_command
from .triggers import any_changed

q = shlex.quote

# The database version a venv's devpi-server reads and writes.
DB_VERSION_PY = "from devpi_server.main import DATABASE_VERSION as v; print(v)"
# A free loopback port for the check of a new server dir (bound, then released).
SPARE_PORT_PY = (
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
)
# The new server dir holds every index the export holds (argv: dataindex.json, devpi's URL).
SAME_INDEXES_PY = (
    "import json, sys, urllib.request as u; "
    "want = set(json.load(open(sys.argv[1]))['indexes']); "
    "o = u.build_opener(u.ProxyHandler({})); "
    "got = json.load(o.open(u.Request(sys.argv[2], headers={'Accept': 'application/json'}), timeout=30))['result']; "
    "have = {n + '/' + i for n, v in got.items() for i in (v.get('indexes') or {})}; "
    "missing = sorted(want - have); "
    "sys.exit('indexes missing after the import: ' + ', '.join(missing) if missing else 0)"
)


def function_inputs(timeout: int) -> dict:
    """The inputs of ``server_dir_functions.sh``: ``up``/``down``/``uuid_of`` (the probes
    of a devpi on a URL), ``export_import`` (devpi-export with one venv, devpi-import with
    another into a new dir, which must then hold devpi's three files) and
    ``check_on_spare`` (that dir's devpi on a free loopback port, offline, answering from
    its uuid with every index the export holds)."""
    return dict(
        timeout=int(timeout), nodeinfo_name=layout.NODEINFO, serverversion_name=layout.SERVERVERSION,
        sqlite_name=layout.SQLITE, check_log=layout.CHECK_LOG, spare_port_py=SPARE_PORT_PY,
        same_indexes_py=SAME_INDEXES_PY,
    )


def export_import_functions(timeout: int) -> str:
    """``server_dir_functions.sh`` alone (the upgrade includes it)."""
    return shell_script.render(__file__, "server_dir_functions", **function_inputs(timeout))


def upgrade_script(config: DevpiConfig, domain: str, sudo: str = "") -> str:
    """Move the server dir's data to the new venv's database version, if the venv build
    left a venv waiting for it (``layout.upgrade_pending``); else do nothing.

    Order: the live job is stopped (a consistent export); the live venv exports, the
    new one imports into ``<server dir>.pyinfra-new``; that dir is checked on a spare
    loopback port; then the server dir moves to ``<server dir>.before-db<old>-<stamp>``
    (kept) and the new one into place, the venv link moves to the new venv, the job
    starts and must answer from the new dir and pass the health gate's smoke check.
    Until the swap the live server dir is never touched: any failure removes the
    transient dirs and starts the old job again. A failure after the swap puts the old dir and the old venv back (the new
    dir is kept as ``<server dir>.failed-db<new>-<stamp>``) and starts devpi again.
    The run fails in both cases, naming what failed. ``sudo``: the prefix of the
    launchctl commands for the system domain (``"sudo -n "``), or empty.

    The script is ``operations/upgrade.sh`` (with ``server_dir_functions.sh``).
    """
    paths = config.paths
    target = f"{domain}/{config.label}"
    return shell_script.render(
        __file__, "upgrade",
        "the server dir's data to the new venv's database version: stop devpi, devpi-export with the "
        "live venv, devpi-import with the new one into a new dir, check it on a spare port, swap dirs "
        "and venv (the old ones kept), start, check; the old ones back on failure",
        pending=paths.upgrade_pending, live=paths.venv, venvs=paths.venvs_dir, cfg=paths.config_file,
        plist=paths.plist_file, url=config.local_url, server_dir=paths.server_dir, upgrade_log=paths.upgrade_log,
        err_log=paths.err_log, venv_previous=paths.venv_previous,
        start_job_cmd=bootstrap_command(domain, q(target), paths.plist_file, sudo=sudo),
        stop_job_cmd=bootout_command(target, sudo),
        db_version_py=DB_VERSION_PY, rename=RENAME, transient_suffix=layout.TRANSIENT_SUFFIX,
        export_suffix=layout.EXPORT_SUFFIX, kept_infix=layout.KEPT_INFIX, failed_infix=layout.FAILED_INFIX,
        pre_existing_prefix=layout.PRE_EXISTING_PREFIX, **smoke_inputs(config),
        **function_inputs(config.health_timeout),
    )


def upgrade_steps(config: DevpiConfig, found: str | None, wanted: str | None) -> str:
    """What the upgrade will do, for the plan (``--dry`` shows it)."""
    paths = config.paths
    versions = (f"from database version {found} to {wanted}" if found and wanted and found != wanted
                else "to the new devpi's database version")
    return (
        f"devpi_allow_export_import: if devpi-server {config.server_version} uses another database version "
        f"than {paths.server_dir} ({found or 'unknown'}), this run moves the data {versions}: "
        f"1. build the new venv beside the live one (not swapped in); 2. stop devpi; "
        f"3. devpi-export with the live venv into {layout.export_dir(paths.server_dir)}; "
        f"4. devpi-import with the new venv into {layout.transient(paths.server_dir)}; "
        "5. start it on a spare loopback port and check it answers with every exported index; "
        f"6. move {paths.server_dir} to {paths.server_dir}{layout.KEPT_INFIX}{found or '<version>'}-<time> (kept) "
        "and the new dir into place, point the venv link at the new venv; 7. start devpi, wait for it and "
        "run the smoke check; "
        "on failure, the old server dir and venv go back. No secret is read."
    )


def needs_fsck(found: dict) -> bool:
    """A complete server dir the deploy has not managed yet (no secret file: the deploy
    makes one on its first run) is checked with devpi-fsck before it is adopted."""
    return bool(found["complete"] and not (found.get("secret_file") or {}).get("exists"))


@operation
def adopt(config: DevpiConfig):
    """Check a server dir brought over from elsewhere with the deployed venv's
    ``devpi-fsck`` (every file the database names is there, with its checksum)
    before devpi first starts on it; a failure stops the run, the dir unchanged."""
    found = server_dir(config)
    if not needs_fsck(found):
        host.noop(f"{config.paths.server_dir} is new or already managed by this deploy")
        return
    paths = config.paths
    yield (
        f"{q(paths.bin('devpi-fsck'))} --serverdir {q(paths.server_dir)} >&2 || {{ "
        + say(
            "devpi-fsck found problems in %s (listed above): refusing to start devpi on it; nothing in it was "
            "changed. Copy the server dir over again from its source (every file in it, e.g. rsync -a), "
            "or run devpi-fsck there first",
            q(paths.server_dir),
        )
        + "; exit 1; }"
    )


@operation
def upgrade(config: DevpiConfig, domain: str, venv_op=None, server_db_version: str | None = None,
            wanted_db_version: str | None = None, sudo: str = ""):
    """
    With ``devpi_allow_export_import``, after a new venv was built: move the server
    dir's data to its database version when the build found that it differs (the
    script does nothing otherwise).

    + venv_op: the venv build; nothing to do when it builds nothing
    + server_db_version / wanted_db_version: for the plan's message

    Only the venv build knows the new venv's database version: the plan says the upgrade
    may run; at execution it runs only when the build left a venv waiting for it, so a
    new devpi that keeps the database version reports no change here (and its venv,
    swapped in by the build, is started by the job's restart).
    """
    if not config.allow_export_import or venv_op is None or not any_changed([venv_op]):
        host.noop("no upgrade across database versions (devpi_allow_export_import unset, or no new venv)")
        return
    if not server_dir(config)["complete"]:
        host.noop(f"{config.paths.server_dir} holds no data to move over")
        return
    if state.is_executing and not upgrade_pending(config):
        host.noop(f"devpi-server {config.server_version} keeps the database version of {config.paths.server_dir}: "
                  "nothing to move over")
        return
    log_once(upgrade_steps(config, server_db_version, wanted_db_version), logger.info)
    yield bk.wait_for_backup(config)  # no scheduled backup exports the dir being swapped
    yield reported(upgrade_script(config, domain, sudo))


def upgrade_pending(config: DevpiConfig) -> bool:
    """At execution, after the venv build: did it leave a venv waiting for the upgrade
    (``layout.upgrade_pending``)? Read from the host now, not from the plan's snapshot."""
    return bool((host.get_fact(PathsFound, paths=(config.paths.upgrade_pending,)) or {}).get(
        config.paths.upgrade_pending))


def reported(script: str) -> FunctionCommand:
    """Run ``script`` on the host and show what it says (its stderr) in the run's
    output, success or not: pyinfra prints a command's output only when it fails (or
    at ``-vvv``), and an upgrade says which dirs it kept and how long devpi was down."""

    def run_on_host(state, host):
        ok, output = host.run_shell_command(StringCommand(script), print_output=False)
        for line in output.stderr_lines:
            host.log(line, logger.info if ok else logger.error)
        return ok

    run_on_host.shown_as = script  # what --diff's "Will run:" shows (announce.describe)
    return FunctionCommand(run_on_host, (), {})
