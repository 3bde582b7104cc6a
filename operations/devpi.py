"""
devpi on the host: its venv, its config file, its secret, its one-time init, and
the wait for it to answer after a (re)start.

All commands are POSIX sh for macOS's BSD userland as much as for Linux. No value
reaches a shell unquoted: paths and names go through ``shlex.quote``, messages
that name them through ``say`` (``printf`` with the message as one quoted argument).
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand

from facts.devpi import ServerDir, VenvVersions
from facts.snapshot import FactRead, read
from pyinfra_devpi import deploy_lock, layout, search, shell_script
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.smoke import Recheck

from .announce import ProgressCommand, log_once, operation, progress
from .textfile import upload_private, write_text
from .triggers import any_changed

q = shlex.quote


# Swap a symlink in one rename (POSIX ``mv`` cannot replace a link to a directory
# atomically on every system); run by a venv's own Python.
RENAME = "import os, sys; os.replace(sys.argv[1], sys.argv[2])"


def say(message: str, *shell_values: str) -> str:
    """A shell command printing ``message`` to stderr; ``%s`` in it takes each of
    ``shell_values`` (shell expressions such as ``"$version"``, expanded by the host)."""
    return f"printf {q(message + chr(10))} {' '.join(shell_values)} >&2".rstrip()


def server_dir_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(ServerDir, path=config.paths.server_dir, secret_file=config.paths.secret_file)


def venv_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(VenvVersions, venv=config.paths.venv)


def reads(config: DevpiConfig) -> list:
    """What this module's operations read from the host."""
    return [server_dir_read(config), venv_read(config), config.paths.config_file, config.paths.logging_config]


def server_dir(config: DevpiConfig) -> dict:
    """The ``ServerDir`` fact as the run found it: the one way it is read."""
    return read(host, server_dir_read(config))


def venv_is_current(config: DevpiConfig, installed: dict | None) -> bool:
    """The live venv holds the pinned versions and is one this deploy built (the link
    points into ``venvs/``): a venv made otherwise (by hand, by the Ansible role this
    deploy replaces) is not built from the lock, so it is rebuilt like an upgrade."""
    return bool(
        installed
        and installed.get("devpi-server") == config.server_version
        and installed.get("devpi-web") == config.web_version
        and (installed.get("link") or "").startswith(config.paths.venvs_dir + "/"),
    )


# A new venv holds no bytecode: the first interpreter to import a module compiles it.
# devpi's first start from a new venv compiled ~250 modules (whoosh, strictyaml, docutils,
# pyramid, waitress: 1-3 s on a 2-core machine) while the port was closed, during an
# upgrade or a takeover. The check imports every module of devpi-server and devpi-web
# instead (their own imports follow), and by name what devpi imports only inside the
# functions that start it (its config file, the WSGI server, pyramid's configurator,
# date parsing, py.path), so the bytecode is written while the old devpi still serves;
# devpi-init and the first start then compile nothing. A module that does not import
# here is left to devpi to report; ``__main__`` would run devpi. (``uv pip sync
# --compile-bytecode`` compiles all ~1,800 files of the venv: 4-8 s more for the build
# on that machine.)
STARTUP_IMPORTS = (
    "strictyaml", "waitress.server", "pyramid.config", "pyramid.router", "pyramid.static",
    "dateutil.parser", "dateutil.tz", "py._path.local", "pyramid_chameleon.localization",
)
WARM_BYTECODE = (
    "import importlib, pkgutil\n"
    "names = [m.name for pkg in (devpi_server, devpi_web)\n"
    "         for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.')\n"
    "         if not m.name.rsplit('.', 1)[1].startswith(('_', 'test'))]\n"
    f"for name in names + {list(STARTUP_IMPORTS)!r}:\n"
    "    try: importlib.import_module(name)\n"
    "    except Exception: pass"
)


def build_venv_script(config: DevpiConfig, lock: str | None = None) -> str:
    """Build a new venv beside the live one, prove it, then swap the live link.

    The live venv is never modified: the new one gets a fresh directory under
    ``venvs/``, is checked to import and to report the pinned version (and the
    database version the server dir holds), and only then does ``<home>/venv``
    (a symlink) move to it with one rename. The previous venv is kept for a
    rollback; older ones are removed, except a venv another build is still making
    (``venv_prune.sh``). A failed build removes its own directory.

    ``lock``: the path on the host of a complete lock (every package pinned and
    hashed): ``uv pip sync`` installs exactly it without resolving anything (``uv pip
    install`` of the same file resolves it again and revalidates its index pages:
    measured 5.4 s against 0.9 s with a warm cache). Without one, uv resolves the pins.

    A server dir holding another database version than the new devpi's is refused
    (the new venv is removed, nothing live changed), or, with
    ``devpi_allow_export_import``, the new venv is left beside the live one, not
    swapped in, and named in the pending file for the upgrade
    (``operations/server_dir.py``), which runs next.

    The script is ``operations/venv_build.sh``; these are its inputs.
    """
    paths = config.paths
    # One interpreter proves the venv imports and says what it holds: the database
    # version and devpi-server's own version (a second interpreter for
    # ``devpi-server --version`` would import, and on a new venv byte-compile, it all again).
    check = "\n".join((
        "import devpi_server, devpi_web.main",
        "from devpi_server.main import DATABASE_VERSION as v",
        "print(v, devpi_server.__version__)",
    ))
    # Meanwhile, on the other core, a second interpreter writes the bytecode of the rest
    # of devpi and of what devpi's start imports (WARM_BYTECODE), so the (re)start onto
    # this venv compiles nothing while devpi's port is closed. Both compile some modules
    # alike, each writing the whole file (Python replaces a .pyc by a rename): 3.0 s for
    # both against 4.0 s in one interpreter, measured here.
    warm = "import devpi_server, devpi_web\n" + WARM_BYTECODE
    return shell_script.render(
        __file__, "venv_build",
        f"build devpi-server {config.server_version} + devpi-web {config.web_version} in a new "
        "venv under venvs/, then point the live venv link at it",
        home=paths.home, venvs=paths.venvs_dir, live=paths.venv, uv=config.uv, sv=paths.serverversion,
        pending=paths.upgrade_pending, venv_previous=paths.venv_previous, venv_name=config.venv_name,
        python=config.python, server_version=config.server_version, web_version=config.web_version,
        index_url=config.index_url, lock=lock,
        # pyramid imports pkg_resources, which setuptools 82 removed.
        setuptools_pin="setuptools<=81",
        warm=warm, check=check, rename=RENAME, allow_export_import=config.allow_export_import,
        opt_in_hint=opt_in_hint(), transient_suffix=layout.TRANSIENT_SUFFIX,
        pre_existing_prefix=layout.PRE_EXISTING_PREFIX, **prune_inputs(),
    )


def opt_in_hint() -> str:
    """How the operator allows an upgrade across database versions."""
    return (
        "to move the data over with devpi-export and devpi-import (the old server dir is kept), rerun "
        "with `--data devpi_allow_export_import=true` (or set devpi_allow_export_import = True in the "
        "host's inventory data)"
    )


def prune_inputs() -> dict:
    return dict(venv_prefix=layout.VENV_PREFIX, building_suffix=layout.BUILDING_SUFFIX)


def prune_script() -> str:
    """``prune_venvs VENVS NEW PREV LIVE BUILDING`` (``operations/venv_prune.sh``): remove
    the deploy's older venvs from VENVS. Kept: the new one, the previous one (physical),
    the one the live link points at now, and every venv whose builder still runs (its
    ``.building`` marker names a live process of this host). A marker whose builder is
    gone is removed first, so its venv goes too, unless it is one of those kept (a
    builder killed after its swap). Needs ``dl_gone`` (``deploy_lock.PROCESS_FUNCTIONS``)."""
    return shell_script.render(__file__, "venv_prune", **prune_inputs())


@operation
def venv(config: DevpiConfig, lock: str | None = None):
    """
    Install the pinned devpi-server and devpi-web into a new venv and make it live.

    + config: the validated deploy config
    + lock: the full requirements lock for the pinned pair (``locks/``), or None to
      let uv resolve the pins
    """
    installed = read(host, venv_read(config))
    if venv_is_current(config, installed):
        host.noop(f"devpi-server {config.server_version} + devpi-web {config.web_version} are installed")
        return

    lock_path = None
    if lock is not None:
        lock_path = config.paths.lock_upload(config.venv_name)
        yield f"mkdir -p {q(config.paths.venvs_dir)}"
        yield FileUploadCommand(BytesIO(lock.encode("utf-8")), lock_path)
    yield ProgressCommand(build_venv_script(config, lock_path))


@operation
def server_config(config: DevpiConfig, content: str):
    """Write devpi-server's YAML config file (mode 0600: it names the secret file)."""
    commands = list(write_text(config.paths.config_file, content, mode="600"))
    if not commands:
        host.noop(f"{config.paths.config_file} is up to date")
    yield from commands


# What devpi-gen-secret writes (devpi_server.config.new_secret: 32 random bytes,
# base64), written by the venv's Python with the standard library alone: 0600 from its
# first byte, never over an existing file (O_EXCL). devpi-gen-secret would load devpi
# and its plugins first, about a second of a first converge, to write 44 bytes.
GEN_SECRET = (
    "import base64, os, secrets, sys; "
    "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600); "
    "os.write(fd, base64.b64encode(secrets.token_bytes(32))); os.close(fd)"
)


@operation
def logging_config(config: DevpiConfig, content: str):
    """Write devpi's logging config (``--logger-cfg``: the rotating handler and its bound),
    and make the log dir it names: every devpi program reading the YAML config (devpi-init
    too) opens the log file, and cannot make its directory."""
    commands = list(write_text(config.paths.logging_config, content, mode="644"))
    if not commands:
        host.noop(f"{config.paths.logging_config} is up to date")
        return
    yield f"mkdir -p {q(config.paths.log_dir)}"
    yield from commands


@operation
def secret(config: DevpiConfig):
    """Create devpi's secret file once: what ``devpi-gen-secret`` writes (``GEN_SECRET``).

    The secret signs login tokens: a persistent one keeps logins valid across
    restarts. It is never rewritten, so existing tokens stay valid.
    """
    paths = config.paths
    if server_dir(config)["secret_file"]["exists"]:
        host.noop(f"devpi's secret file {paths.secret_file} exists")
        return
    # devpi refuses a secret file whose directory is group/world writable.
    yield (
        f"(umask 077; mkdir -p {q(paths.home)}) && chmod 700 {q(paths.home)} && "
        f"{q(paths.bin('python'))} -I -c {q(GEN_SECRET)} {q(paths.secret_file)}"
    )


def needs_init(found: dict) -> bool:
    """Only a missing or empty server dir is initialised; any other is complete (devpi's
    own) or refused by the deploy (``check_server_dir``), never initialised over."""
    return not found["exists"] or (found["is_dir"] and not found["has_data"])


def init_script(config: DevpiConfig) -> str:
    """devpi-init into a transient dir beside the server dir; rename it into place once
    it is complete, so the server dir is either missing/empty or devpi's whole init.

    The root password hash arrives in a 0600 file (uploaded before), is read into
    devpi-init's environment and the file removed before anything else runs. A
    transient dir found at the start is a killed run's: it was never live and is
    removed. devpi-init runs with ``--no-root-pypi``: the users/indexes step creates
    ``root/pypi`` with ``mirror_no_project_list`` set, so devpi never starts with a
    mirror that would fetch PyPI's whole project list. A symlinked server dir is
    initialised where it points.

    The script is ``operations/devpi_init.sh``.
    """
    paths = config.paths
    return shell_script.render(
        __file__, "devpi_init",
        "devpi-init (without root/pypi) into a transient dir beside the server dir, checked, then renamed into place",
        hash_file=paths.root_hash_upload, server_dir=paths.server_dir, devpi_init=paths.bin("devpi-init"),
        config_file=paths.config_file, transient_suffix=layout.TRANSIENT_SUFFIX,
        serverversion_name=layout.SERVERVERSION, nodeinfo_name=layout.NODEINFO, sqlite_name=layout.SQLITE,
    )


@operation
def init(config: DevpiConfig, password_hash=None):
    """
    Initialise a missing or empty server dir with ``devpi-init``, once, all or nothing.

    + password_hash: called (only while executing) for a ``HiddenValue`` with the root
      password's argon2 hash, made on the controller. It reaches the host through SFTP
      into a 0600 file in the 0700 devpi home, is read into devpi-init's environment
      and the file removed before devpi-init starts: never in argv, output or a
      leftover file.
    """
    paths = config.paths
    if not needs_init(server_dir(config)):
        host.noop(f"{paths.server_dir} is initialised")
        return
    if password_hash is None:
        raise ValueError("init needs the root password hash")

    # Before execution (--dry, change detection) there is nothing to upload.
    content = password_hash().unmask() if state.is_executing else ""
    # The hash file is 0600 from its first byte: made so before SFTP writes into it.
    make_private, upload = upload_private(content.encode("utf-8"), paths.root_hash_upload)
    yield f"(umask 077; mkdir -p {q(paths.home)}) && chmod 700 {q(paths.home)} && {make_private}"
    yield upload
    yield ProgressCommand(init_script(config))


# How often (seconds) the health wait says it is still waiting.
HEALTH_PROGRESS_EVERY = 5

# The smoke check, once /+api answers (argv: devpi's URL, the result file, its transient
# name, the declared private indexes one a line): real requests a broken devpi fails while /+api still
# answers. ``GET /`` (every user and index, from the database); the simple page of one
# project a mirror has cached (the first flagged mirror with any: its ``+simple/`` lists
# only what it holds, so the upstream's whole list is never asked for); devpi-web's page
# of the first declared private index devpi holds. Prints what it asked and got, records
# it (JSON, through a transient name) for the status, and exits 1 on a failure. Run by
# the live venv's Python (-I), standard library only.
SMOKE_PY = r"""
import json, os, re, sys, time, urllib.request as u
url, result, new, private = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4].split("\n")
opener = u.build_opener(u.ProxyHandler({}))
checks = []
def get(path, accept):
    try:
        answer = opener.open(u.Request(url + path, headers={"Accept": accept}), timeout=60)
        status, body = answer.status, answer.read()
    except u.HTTPError as error:
        status, body = error.code, b""
    except Exception:
        status, body = 0, b""
    checks.append([path, status])
    return status, body
def run():
    status, body = get("/", "application/json")
    if status != 200:
        return False
    indexes = {}
    for user, config in (json.loads(body)["result"] or {}).items():
        for index, ixconfig in ((config or {}).get("indexes") or {}).items():
            indexes[user + "/" + index] = ixconfig or {}
    mirrors = sorted(n for n, c in indexes.items()
                     if c.get("type") == "mirror" and c.get("mirror_no_project_list") is True)
    for name in mirrors:
        status, body = get("/" + name + "/+simple/", "text/html")
        if status != 200:
            return False
        cached = re.findall(r'href="([^"/]+)/"', body.decode("utf-8", "replace"))
        if cached:
            if get("/" + name + "/+simple/" + cached[0] + "/", "text/html")[0] != 200:
                return False
            break
    for name in private:
        if indexes.get(name, {}).get("type", "mirror") != "mirror":
            return get("/" + name, "text/html")[0] == 200
    return True
try:
    ok = run()
except Exception as error:
    ok = False
    checks.append(["(" + type(error).__name__ + ")", 0])
venv = os.path.realpath(sys.prefix)
record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ok": ok, "venv_dir": venv, "checks": checks}
try:
    with open(new, "w", encoding="utf-8") as out:
        json.dump(record, out)
    os.replace(new, result)
except OSError:
    pass
try:  # the run's connection may be gone (a killed run): the verdict stands without it
    print("smoke check %s on %s (%s): %s" % ("passed" if ok else "FAILED", url, os.path.basename(venv),
          ", ".join("GET %s %s" % (path, status or "no answer") for path, status in checks)), flush=True)
except OSError:
    pass
sys.exit(0 if ok else 1)
"""


def smoke_inputs(config: DevpiConfig) -> dict:
    """The health gate's smoke check (``SMOKE_PY``) for this config."""
    private = sorted(name for name, spec in config.indexes.items()
                     if spec.get("state", "present") != "absent" and spec.get("type", "stage") != "mirror")
    return {"smoke": SMOKE_PY, "smoke_python": config.paths.bin("python"),
            "smoke_result": config.paths.smoke_result, "smoke_indexes": "\n".join(private),
            "smoke_new": layout.transient(config.paths.smoke_result)}


def wait_healthy_script(
    url: str, timeout: int, err_log: str, nodeinfo: str | None = None, rollback: dict | None = None,
    server_log: str | None = None, job: str | None = None, smoke: dict | None = None,
) -> str:
    """Poll ``GET /+api`` until it answers 200 from *this* server dir's devpi.

    devpi sends its server dir's uuid (``.nodeinfo``) in ``X-DEVPI-UUID`` on every
    answer: a 200 from another devpi on the port (a job under an old label, a previous
    ``devpi_home``) is not health. On timeout, say what answered and print the
    error log's tail (launchd's stderr file: a traceback from before devpi's logging is
    set up) and of ``server_log`` (what devpi logged, errors included).

    ``rollback`` (after this run swapped in a new venv): ``version`` (the devpi-server
    that failed), ``previous`` (the file naming the venv it replaced), ``live`` (the
    venv link) and ``target`` (the job's ``domain/label``). When the new venv's devpi
    does not come up, the link goes back to the previous venv, the job restarts, and
    the gate waits again; the run still fails, naming the version that failed.

    ``job`` (the job's ``domain/label``): the gate also watches the process launchd
    started. When launchd says, on three polls in a row, that the job is loaded but
    not running (no pid; ``spawn scheduled`` while it throttles a KeepAlive restart),
    devpi exited before it answered (a venv that cannot start, a port taken, a bad
    config): the gate stops at once with launchd's state and exit status instead of
    waiting out the timeout, and a rollback starts seconds sooner. While the pid
    launchd reported is alive (``kill -0``, the shell's own), a poll runs no
    ``launchctl``; a pid that is gone is looked up again, since a restart (``kickstart
    -k``) replaces it.

    ``smoke`` (``smoke_inputs``): once ``/+api`` answers, the smoke check's real requests
    must pass too; a failure fails the gate as a devpi that does not answer would (and
    rolls a new venv back), its result shown in the run and recorded for the status.

    The script is ``operations/wait_healthy.sh``; these are its inputs.
    """
    rollback = rollback or {}
    api = url.rstrip("/") + "/+api"
    return shell_script.render(
        __file__, "wait_healthy",
        f"wait up to {int(timeout)}s for devpi to answer {api}"
        + (" (the previous venv back if it does not)" if rollback else ""),
        (),
        api=api, url=url, timeout=int(timeout), every=HEALTH_PROGRESS_EVERY,
        nodeinfo=nodeinfo, err_log=err_log, server_log=server_log, job=job, rollback=bool(rollback),
        version=rollback.get("version"), previous=rollback.get("previous"), live=rollback.get("live"),
        target=rollback.get("target"), sudo=bool(rollback.get("sudo", "").strip()),
        suffix=layout.TRANSIENT_SUFFIX, rename=RENAME,
        **(smoke or dict.fromkeys(("smoke", "smoke_python", "smoke_result", "smoke_indexes", "smoke_new"))),
    )


@operation
def wait_healthy(config: DevpiConfig, after=(), new_venv=(), target: str | None = None, sudo: str = "",
                 recheck: Recheck | None = None):
    """After a (re)start, wait (bounded) for ``GET /+api`` to answer 200.

    + after: the operations that may have (re)started devpi; nothing to wait for
      when none of them changed anything
    + new_venv: the operation that swaps in a new venv: when it changed something
      and devpi then fails the gate, roll back to the previous venv
    + target: the job's ``domain/label``: watched by the gate (a devpi that exits fails it
      at once; ``launchctl print`` of the system domain needs no root), restarted by a rollback
    + sudo: the prefix of that restart (``"sudo -n "`` for the system domain), or empty
    + recheck: the live venv had not passed a gate (``pyinfra_devpi.smoke.recheck``): when
      it names the venv that last passed, a failure rolls back to that one
    """
    if not any_changed(after):
        host.noop("devpi was not (re)started")
        return
    paths = config.paths
    rollback = None
    if (any_changed(new_venv) or (recheck is not None and recheck.rollback_to)) and target:
        rollback = {"version": config.server_version, "previous": paths.venv_previous, "live": paths.venv,
                    "target": target, "sudo": sudo}
    yield ProgressCommand(
        wait_healthy_script(config.local_url, config.health_timeout, paths.err_log, paths.nodeinfo, rollback,
                            server_log=paths.server_log, job=target, smoke=smoke_inputs(config)),
    )


def format_kib(kib: int) -> str:
    """A size as ``du -sk`` measures it, for a message: ``820 KB``, ``34 MB``, ``1.2 GB``."""
    if kib < 1024:
        return f"{kib} KB"
    if kib < 1024 * 1024:
        return f"{round(kib / 1024)} MB"
    return f"{kib / 1024 / 1024:.1f} GB"


@operation
def orphaned_index(config: DevpiConfig, indexer_backend: str):
    """
    Report devpi-web's Whoosh search index in the server dir (``.indices``) when the
    indexer devpi runs with at the end of this run does not use it (``devpi_search =
    False``: ``null``; the Ansible role's devpi ran Whoosh), with its size; remove it only
    when ``devpi_remove_orphaned_index`` is set. Runs after the health wait: the devpi that
    answers then runs this config, so nothing writes the index any more.

    + indexer_backend: the backend devpi runs with at the end of this run (``search``)
    """
    paths = config.paths
    kib = server_dir(config)["whoosh_index_kib"]
    if kib is None:
        host.noop(f"no Whoosh search index in {paths.server_dir}")
        return
    if indexer_backend == search.WHOOSH:
        host.noop(f"{paths.whoosh_index} is devpi-web's search index (indexer-backend whoosh)")
        return
    found = (
        f"{paths.server_dir} holds an orphaned Whoosh search index {layout.WHOOSH_INDEX_DIR} "
        f"({format_kib(kib)}), unused with indexer-backend {indexer_backend}"
    )
    if not config.remove_orphaned_index:
        log_once(f"{found}; set devpi_remove_orphaned_index = True to remove it")
        host.noop(f"{paths.whoosh_index} kept (devpi_remove_orphaned_index is not set)")
        return
    log_once(f"{found}: removing it (devpi_remove_orphaned_index)", logger.info)
    yield f"rm -rf {q(paths.whoosh_index)}"
