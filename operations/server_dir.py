"""
The server dir's data across devpi's database versions, and a server dir brought
over from another machine.

``export_import_script``: devpi-export with one venv, devpi-import with another into
a new dir, checked on a spare loopback port (shared by the upgrade here; a restore
from a backup is the same import without the export). ``upgrade_script``: the whole
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

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand

from pyinfra_devpi import layout
from pyinfra_devpi.config import DevpiConfig

from .announce import log_once, operation
from .devpi import RENAME, say, server_dir
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


def probe_function() -> str:
    """``up URL UUID SECONDS``: wait (bounded) until ``URL/+api`` answers 200 from the
    devpi whose server dir has ``UUID`` (``X-DEVPI-UUID``); ``down URL SECONDS``: wait
    until nothing answers there."""
    return (
        "up() { end=$(($(date +%s) + $3)); while :; do "
        "hdr=$(curl -s -D - -o /dev/null --max-time 5 \"$1/+api\" 2>/dev/null | tr -d '\\r') || true; "
        "code=$(printf '%s\\n' \"$hdr\" | sed -n 's/^HTTP\\/[0-9.]* \\([0-9]*\\).*/\\1/p' | tail -n 1); "
        "got=$(printf '%s\\n' \"$hdr\" | sed -n 's/^[Xx]-[Dd][Ee][Vv][Pp][Ii]-[Uu][Uu][Ii][Dd]: *//p' | tail -n 1); "
        'if [ "${code:-000}" = 200 ] && [ "$got" = "$2" ]; then return 0; fi; '
        'if [ "$(date +%s)" -ge "$end" ]; then return 1; fi; sleep 0.3; done; }\n'
        "down() { end=$(($(date +%s) + $2)); "
        'while curl -s -o /dev/null --max-time 2 "$1/+api" 2>/dev/null; do '
        'if [ "$(date +%s)" -ge "$end" ]; then return 1; fi; sleep 0.3; done; }\n'
        "uuid_of() { sed -n 's/.*\"uuid\": *\"\\([^\"]*\\)\".*/\\1/p' \"$1\"/"
        + layout.NODEINFO
        + " 2>/dev/null | head -n 1; }"
    )


def export_import_script(timeout: int) -> str:
    """Shell functions that move a server dir's data into a new one and check it.

    ``export_import FROM_VENV FROM_DIR TO_VENV TO_DIR EXPORT_DIR CONFIG LOG``:
    ``devpi-export`` of ``FROM_DIR`` with ``FROM_VENV`` into ``EXPORT_DIR`` (which must
    not exist), ``devpi-import`` with ``TO_VENV`` into ``TO_DIR`` (devpi-import makes
    the server dir itself: ``.serverversion``, ``.nodeinfo`` with a new uuid, users
    with their password hashes as exported, so no secret is needed; ``root/pypi``
    comes from the export with its settings, ``mirror_no_project_list`` included),
    then checks ``TO_DIR`` holds devpi's three files. Both tools' output goes to ``LOG``.

    ``check_on_spare VENV DIR CONFIG EXPORT_DIR``: start that devpi on a free loopback
    port (offline, its own process, stopped by its pid), wait for ``/+api`` from
    ``DIR``'s uuid and compare its indexes with the export's. Both return non-zero
    with a message on stderr; neither touches ``FROM_DIR``.
    """
    files = " ".join(q(name) for name in (layout.SERVERVERSION, layout.NODEINFO, layout.SQLITE))
    B1X, B3I = layout.venv_bin('"$1"', "devpi-export"), layout.venv_bin('"$3"', "devpi-import")
    B1P, B1S = layout.venv_bin('"$1"', "python"), layout.venv_bin('"$1"', "devpi-server")
    return "\n".join(
        [
            "export_import() {",
            f'  {B1X} --configfile "$6" --serverdir "$2" "$5" >"$7" 2>&1 || {{ '
            + say("devpi-export of %s failed; the end of its output (%s):", '"$2"', '"$7"')
            + '; tail -n 30 "$7" >&2; return 1; }',
            f'  {B3I} --configfile "$6" --serverdir "$4" "$5" >>"$7" 2>&1 || {{ '
            + say("devpi-import into %s failed; the end of its output (%s):", '"$4"', '"$7"')
            + '; tail -n 30 "$7" >&2; return 1; }',
            f'  for x in {files}; do if [ ! -s "$4/$x" ]; then '
            + say("devpi-import left no %s in %s", '"$x"', '"$4"') + "; return 1; fi; done",
            "}",
            "check_on_spare() {",
            f'  port=$({B1P} -I -c {q(SPARE_PORT_PY)}) || return 1',
            f'  {B1S} --configfile "$3" --serverdir "$2" --host 127.0.0.1 --port "$port" '
            f'--offline-mode >"$4"/{layout.CHECK_LOG} 2>&1 &',
            "  spare=$!",
            f'  ok=; if up "http://127.0.0.1:$port" "$(uuid_of "$2")" {int(timeout)} && '
            f'{B1P} -I -c {q(SAME_INDEXES_PY)} "$4"/dataindex.json "http://127.0.0.1:$port/" >&2; '
            "then ok=1; fi",
            '  kill "$spare" 2>/dev/null; wait "$spare" 2>/dev/null; spare=',
            '  if [ -z "$ok" ]; then '
            + say("the new server dir %s did not answer as expected on port %s; its log:", '"$2"', '"$port"')
            + f'; tail -n 30 "$4"/{layout.CHECK_LOG} >&2; return 1; fi',
            "}",
        ]
    )


def as_function(command: str) -> str:
    """A command for a shell function's body: its ``exit`` becomes ``return``."""
    return command.replace("exit $rc", "return $rc")


def upgrade_script(config: DevpiConfig, domain: str, sudo: str = "") -> str:
    """Move the server dir's data to the new venv's database version, if the venv build
    left a venv waiting for it (``layout.upgrade_pending``); else do nothing.

    Order: the live job is stopped (a consistent export); the live venv exports, the
    new one imports into ``<server dir>.pyinfra-new``; that dir is checked on a spare
    loopback port; then the server dir moves to ``<server dir>.before-db<old>-<stamp>``
    (kept) and the new one into place, the venv link moves to the new venv, the job
    starts and must answer from the new dir. Until the swap the live server dir is
    never touched: any failure removes the transient dirs and starts the old job
    again. A failure after the swap puts the old dir and the old venv back (the new
    dir is kept as ``<server dir>.failed-db<new>-<stamp>``) and starts devpi again.
    The run fails in both cases, naming what failed. ``sudo``: the prefix of the
    launchctl commands for the system domain (``"sudo -n "``), or empty.
    """
    paths = config.paths
    target = q(f"{domain}/{config.label}")
    url = q(config.local_url)
    timeout = int(config.health_timeout)
    new_python = layout.venv_bin('"$new"', "python")
    old_python = layout.venv_bin('"$old"', "python")
    lines = [
        "# the server dir's data to the new venv's database version: stop devpi, devpi-export with the "
        "live venv, devpi-import with the new one into a new dir, check it on a spare port, swap dirs "
        "and venv (the old ones kept), start, check; the old ones back on failure",
        f"pending={q(paths.upgrade_pending)}",
        'if [ ! -f "$pending" ]; then exit 0; fi',
        f"live={q(paths.venv)}; venvs={q(paths.venvs_dir)}; cfg={q(paths.config_file)}; "
        f"plist={q(paths.plist_file)}; url={url}",
        f"sd={q(paths.server_dir)}",
        'if [ -L "$sd" ]; then sd=$(cd "$sd" && pwd -P); fi',
        'new=$(head -n 1 "$pending")',
        f'nsd={layout.transient(chr(34) + "$sd" + chr(34))}; exp={layout.export_dir(chr(34) + "$sd" + chr(34))}',
        probe_function(),
        export_import_script(timeout),
        "stopped=; spare=",
        # As functions: a launchctl failure returns (the caller restores), never exits.
        "start_job() { " + as_function(bootstrap_command(domain, target, paths.plist_file, sudo=sudo)) + "; }",
        # The bootout is a subshell (its exit is its status): one that fails returns.
        "stop_job() { " + bootout_command(f"{domain}/{config.label}", sudo) + f" || return $?; down \"$url\" {timeout}; }}",
        # Before the swap the live server dir was never touched: drop the new one.
        "fail() { rc=$?; if [ -n \"$spare\" ]; then kill \"$spare\" 2>/dev/null; fi; "
        'rm -rf "$nsd" "$exp"; '
        'if [ -n "$stopped" ]; then start_job; up "$url" "$(uuid_of "$sd")" '
        + str(timeout)
        + " && "
        + say("devpi runs again on the unchanged server dir %s and the previous venv", '"$sd"')
        + "; fi; "
        + say("the upgrade across database versions failed; the server dir and the live venv are as they "
              "were, the new venv %s is kept", '"$new"')
        + "; exit 1; }",
        f'if [ ! -x {layout.venv_bin(chr(34) + "$new" + chr(34), "devpi-import")} ]; then '
        + say("%s (the venv waiting for the upgrade) is gone: rerun", '"$new"') + '; rm -f "$pending"; exit 1; fi',
        'old=$(cd "$live" 2>/dev/null && pwd -P) || old=',
        f'newdb=$({new_python} -I -c {q(DB_VERSION_PY)})',
        f'olddb=$(head -n 1 "$sd"/{layout.SERVERVERSION})',
        f'livedb=$({old_python} -I -c {q(DB_VERSION_PY)} 2>/dev/null) || livedb=',
        'if [ "$livedb" != "$olddb" ]; then '
        + say(
            "%s holds database version %s, but the live venv (%s) is no devpi-server that reads it: nothing "
            "here can export it. Export it with the devpi-server that wrote it (devpi-export), then import "
            "it into an empty server dir with this one (devpi-import)",
            '"$sd"', '"$olddb"', '"${old:-none}"',
        )
        + '; rm -f "$pending"; exit 1; fi',
        'if [ ! -f "$plist" ]; then '
        + say("%s is missing: the upgrade stops and starts devpi with it", '"$plist"') + "; exit 1; fi",
        # A killed run's transient dirs: never live.
        'rm -rf "$nsd" "$exp"',
        "t0=$(date +%s)",
        say("stopping devpi for the export (database version %s to %s)", '"$olddb"', '"$newdb"'),
        "stopped=1; stop_job || fail",
        f'export_import "$old" "$sd" "$new" "$nsd" "$exp" "$cfg" {q(paths.upgrade_log)} || fail',
        'check_on_spare "$new" "$nsd" "$cfg" "$exp" || fail',
        # The swap: the old server dir is kept under a name that says what it was.
        f'kept={layout.kept_server_dir(chr(34) + "$sd" + chr(34), chr(34) + "$olddb" + chr(34))}',
        'mv "$sd" "$kept" || fail',
        'if ! mv "$nsd" "$sd"; then mv "$kept" "$sd"; fail; fi',
        # A venv made by hand (a real directory) is moved aside, not deleted.
        'if [ -d "$live" ] && [ ! -L "$live" ]; then '
        f'old="$venvs"/{layout.PRE_EXISTING_PREFIX}{layout.VENV_STAMP_SHELL}; mv "$live" "$old"; fi',
        f'link="$live"{layout.TRANSIENT_SUFFIX}',
        f'rm -f "$link"; ln -s "$new" "$link"; {new_python} -I -c {q(RENAME)} "$link" "$live"',
        # The health gate's venv-only rollback would pair the old venv with the new dir.
        f"rm -f {q(paths.venv_previous)}",
        "start_job",
        f'if up "$url" "$(uuid_of "$sd")" {timeout}; then',
        '  rm -rf "$exp"; rm -f "$pending"',
        "  "
        + say(
            "upgraded %s from database version %s to %s in %ss of downtime; the previous server dir is kept "
            "as %s, the previous venv as %s",
            '"$sd"', '"$olddb"', '"$newdb"', '"$(($(date +%s) - t0))"', '"$kept"', '"$old"',
        ),
        "  exit 0",
        "fi",
        say("devpi did not answer from the new server dir within %ss: putting the old server dir and venv back",
            str(timeout)),
        f'tail -n 30 {q(paths.err_log)} >&2 2>/dev/null',
        "stop_job",
        f'failed={layout.failed_server_dir(chr(34) + "$sd" + chr(34), chr(34) + "$newdb" + chr(34))}',
        'mv "$sd" "$failed"; mv "$kept" "$sd"',
        f'rm -f "$link"; ln -s "$old" "$link"; {old_python} -I -c {q(RENAME)} "$link" "$live"',
        'rm -rf "$exp"; rm -f "$pending"',
        "start_job",
        f'if up "$url" "$(uuid_of "$sd")" {timeout}; then '
        + say("rolled back: devpi answers again from %s with the previous venv %s; the new dir is kept as %s",
              '"$sd"', '"$old"', '"$failed"')
        + "; else "
        + say("the rollback did not bring devpi back either: see %s", q(paths.err_log))
        + "; fi",
        "exit 1",
    ]
    return "\n".join(lines)


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
        "and the new dir into place, point the venv link at the new venv; 7. start devpi and wait for it; "
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
    """
    if not config.allow_export_import or venv_op is None or not any_changed([venv_op]):
        host.noop("no upgrade across database versions (devpi_allow_export_import unset, or no new venv)")
        return
    if not server_dir(config)["complete"]:
        host.noop(f"{config.paths.server_dir} holds no data to move over")
        return
    log_once(upgrade_steps(config, server_db_version, wanted_db_version), logger.info)
    yield reported(upgrade_script(config, domain, sudo))


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
