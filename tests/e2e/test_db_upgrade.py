"""A devpi-server with another database version: refused without the opt-in, the data
moved over with devpi-export / devpi-import with it (``devpi_allow_export_import``).

The new release is the real devpi-server 6.20.3 wheel rebuilt as 6.20.99 whose
``DATABASE_VERSION`` is "5": it refuses the server dir devpi-server 6.20.3 wrote
("Incompatible state"), as a real release with a new database version would. It is
served from a private hermetic upstream together with every other wheel of the
locked tree, so the new venv installs from loopback only.

The tests share one deployed host, in this order: the failed import and the rollbacks
after the swap (no answer; a failed smoke check) each leave it as it was (that is what
they assert), a version bump that keeps the database version (no upgrade), then the
upgrade, which cannot be undone, runs last.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.pyinfra_cli import PYINFRA_BIN

from . import devpi_client as devpi
from .harness import REPO, pyinfra_env, rebuild_wheel, start_upstream, wait_until, wheels_of_lock
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e

NEW_SERVER = "6.20.99"
FAILING_SERVER = "6.20.98"
OFFLINE_ONLY_SERVER = "6.20.97"
SAME_DB_SERVER = "6.20.95"
SMOKE_FAILING_SERVER = "6.20.94"
LOCK = REPO / "locks" / "devpi-6.20.3-5.1.1.txt"


@pytest.fixture(scope="module")
def devpi_wheels(tmp_path_factory, tools) -> list[Path]:
    """The locked tree's wheels, and devpi-server 6.20.99 with database version 5."""
    root = tmp_path_factory.mktemp("dbupgrade-wheels")
    wheels = wheels_of_lock(LOCK, root / "wheels", tools.uv, tools.python3)
    (server,) = [w for w in wheels if w.name.startswith("devpi_server-")]

    def db5(version: str, edits: dict | None = None) -> Path:
        """devpi-server 6.20.3 as ``version``, with database version 5 and ``edits``."""
        return rebuild_wheel(server, root / "rebuilt", version, {
            "devpi_server/main.py": ('DATABASE_VERSION = "4"', 'DATABASE_VERSION = "5"'),
            "devpi_server/__init__.py": ('__version__ = "6.20.3"', f'__version__ = "{version}"'),
            **(edits or {}),
        })

    new = db5(NEW_SERVER)
    # 6.20.98: the same database version 5, but its devpi-import fails
    failing = db5(FAILING_SERVER, {"devpi_server/importexport.py": (
        '""" devpi-import command line entry point. """',
        '""" devpi-import command line entry point. """\n'
        '    raise SystemExit("devpi-import 6.20.98: an import that fails (built by the e2e test)")',
    )})
    # 6.20.97: database version 5, but it starts only offline: the check on the spare
    # port (offline) passes, the job (online) fails after the swap
    offline_only = rebuild_wheel(db5(OFFLINE_ONLY_SERVER), root / "rebuilt-offline", OFFLINE_ONLY_SERVER, {
        "devpi_server/main.py": (
            '    """ devpi-server command line entry point. """\n',
            '    """ devpi-server command line entry point. """\n'
            '    if not {"--offline-mode", "--version"} & set(sys.argv):\n'
            '        raise SystemExit("devpi-server 6.20.97: starts only offline (built by the e2e test)")\n',
        ),
    })
    # 6.20.94: database version 5; online (the job) it answers /+api but 500 to every
    # other request: the spare port's check (offline) passes, the smoke check does not
    smoke_failing = db5(SMOKE_FAILING_SERVER, {"devpi_server/views.py": (
        '        tag = f"[req{next(req_count)}]"\n',
        '        if request.path != "/+api" and "--offline-mode" not in __import__("sys").argv:\n'
        '            return Response("6.20.94: only /+api answers (built by the e2e test)", status=500)\n'
        '        tag = f"[req{next(req_count)}]"\n',
    )})
    # 6.20.95: a version bump that keeps database version 4
    same_db = rebuild_wheel(server, root / "rebuilt", SAME_DB_SERVER, {
        "devpi_server/__init__.py": ('__version__ = "6.20.3"', f'__version__ = "{SAME_DB_SERVER}"'),
    })
    return [*wheels, new, failing, offline_only, smoke_failing, same_db]


@pytest.fixture(scope="module")
def upstream(tools, tmp_path_factory, devpi_wheels):
    """A private upstream: the rebuilt release must not show up in other modules' tests."""
    index = start_upstream(tmp_path_factory.mktemp("dbupgrade-upstream"), python=tools.python3)
    index.add_wheels(devpi_wheels)
    yield index
    index.stop()


@pytest.fixture(scope="module")
def host(sshd, launchd, upstream, tmp_path_factory) -> DeployedStack:
    """One deployed host (devpi-server 6.20.3, database version 4) for the module's tests."""
    with start_stack(sshd, launchd, upstream, tmp_path_factory.mktemp("dbupgrade-stack"), "dbupgrade",
                     caddy=False) as deployed:
        yield deployed


@pytest.fixture
def stack(host, e2e_log_dirs) -> DeployedStack:
    e2e_log_dirs.append(host.root)
    host.wait_healthy()
    return host


#: What a running devpi rewrites on its own: the serial of the last event it processed
#: (devpi-web's handlers run after an upload is committed; devpi writes it to
#: ``.event_serial-tmp`` and renames that over it: fileutil.write_int_to_file, so a
#: snapshot may catch either), and devpi-web's Whoosh search index, which its indexer
#: thread writes in the background.
BOOKKEEPING = {".event_serial", ".event_serial-tmp"}
SEARCH_INDEX = ".indices"


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its sha256 (and every symlink with its target),
    devpi's bookkeeping aside."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            full = Path(root) / name
            rel = str(full.relative_to(path))
            if rel in BOOKKEEPING or rel.split(os.sep)[0] == SEARCH_INDEX:
                continue
            if full.is_symlink():
                out[rel] = "-> " + os.readlink(full)
            elif full.is_file():
                out[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def test_a_failed_import_leaves_the_server_dir_and_the_service_as_they_were(stack, upstream):
    server_dir, venv = tree(stack.server_dir), stack.venv_target()
    uuid = (stack.server_dir / ".nodeinfo").read_text()

    result = stack.deploy("--data", "devpi_allow_export_import=true", check=False,
                          devpi_server_version=FAILING_SERVER, devpi_index_url=upstream.url)

    assert result.returncode != 0, result.describe()
    assert "an import that fails" in result.output  # devpi-import's own words, from upgrade.log
    assert "devpi runs again on the unchanged server dir" in result.output, result.describe()
    assert "the upgrade across database versions failed" in result.output
    # devpi's own files and every release file as they were (devpi restarted: its
    # database may have been written since)
    kept = lambda t: {k: v for k, v in t.items() if k in (".serverversion", ".nodeinfo") or k.startswith("+")}  # noqa: E731
    assert kept(tree(stack.server_dir)) == kept(server_dir) and stack.venv_target() == venv
    assert not list(stack.devpi_home.glob("server-dir.*"))  # no transient or kept dir left
    stack.wait_healthy()
    assert (stack.server_dir / ".nodeinfo").read_text() == uuid


def test_a_new_server_dir_that_fails_after_the_swap_is_rolled_back(stack, upstream):
    venv = stack.venv_target()
    uuid = (stack.server_dir / ".nodeinfo").read_text()

    result = stack.deploy("--data", "devpi_allow_export_import=true", check=False,
                          devpi_server_version=OFFLINE_ONLY_SERVER, devpi_index_url=upstream.url,
                          devpi_health_timeout=20)

    assert result.returncode != 0, result.describe()
    assert "devpi did not answer from the new server dir within 20s: putting the old server dir and venv " \
        "back" in result.output, result.describe()
    assert "starts only offline" in result.output  # the error log's tail
    assert "rolled back: devpi answers again from" in result.output
    assert (stack.server_dir / ".serverversion").read_text().strip() == "4"
    assert (stack.server_dir / ".nodeinfo").read_text() == uuid
    assert stack.venv_target() == venv
    (failed,) = stack.devpi_home.glob("server-dir.failed-db5-*")  # the new dir, kept
    assert (failed / ".serverversion").read_text().strip() == "5"
    assert not list(stack.devpi_home.glob("server-dir.before-db*"))
    stack.wait_healthy()


def test_a_new_server_dir_that_answers_but_fails_the_smoke_check_is_rolled_back(stack, upstream):
    """devpi answers /+api from the new dir but fails real requests: the old dir and venv
    go back, as when it does not answer at all (the gate's venv-only rollback cannot)."""
    venv = stack.venv_target()
    uuid = (stack.server_dir / ".nodeinfo").read_text()
    failed_before = set(stack.devpi_home.glob("server-dir.failed-db5-*"))

    result = stack.deploy("--data", "devpi_allow_export_import=true", check=False,
                          devpi_server_version=SMOKE_FAILING_SERVER, devpi_index_url=upstream.url)

    assert result.returncode != 0, result.describe()
    assert "smoke check FAILED" in result.output and "GET / 500" in result.output, result.describe()
    assert "devpi answers from the new server dir but failed the smoke check (the requests above): putting the " \
        "old server dir and venv back" in result.output
    assert "rolled back: devpi answers again from" in result.output
    assert "smoke check passed" in result.output  # the old venv's devpi, on the old dir
    assert (stack.server_dir / ".serverversion").read_text().strip() == "4"
    assert (stack.server_dir / ".nodeinfo").read_text() == uuid
    assert stack.venv_target() == venv
    (failed,) = set(stack.devpi_home.glob("server-dir.failed-db5-*")) - failed_before  # the new dir, kept
    assert (failed / ".serverversion").read_text().strip() == "5"
    assert not list(stack.devpi_home.glob("server-dir.before-db*"))
    stack.wait_healthy()
    assert devpi.request("GET", f"{stack.devpi_url}/")[0] == 200


def test_a_run_killed_during_the_upgrade_still_finishes_it_on_the_host(stack, upstream):
    """pyinfra (and its SSH connection) killed while the upgrade exports: the script goes
    on on the host with nowhere to write, and ends as it would have (here: the new dir
    fails the smoke check, so the old dir and venv go back and devpi serves again)."""
    venv = stack.venv_target()
    uuid = (stack.server_dir / ".nodeinfo").read_text()
    failed_before = set(stack.devpi_home.glob("server-dir.failed-db5-*"))
    inventory = stack.write_inventory(devpi_server_version=SMOKE_FAILING_SERVER, devpi_index_url=upstream.url,
                                      devpi_allow_export_import=True)
    proc = subprocess.Popen([str(PYINFRA_BIN), "-y", str(inventory), "deploys/devpi.py"], cwd=str(REPO),
                            env=pyinfra_env(stack.env_extra), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # The export under way: devpi is stopped, the live dir about to be swapped.
        wait_until(lambda: (stack.devpi_home / "server-dir.export.pyinfra-new").exists() or proc.poll() is not None,
                   300, 0.02, "the upgrade's export to start")
        assert proc.poll() is None, "the run ended before the export started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    wait_until(lambda: set(stack.devpi_home.glob("server-dir.failed-db5-*")) - failed_before, 120, 0.2,
               "the upgrade left running on the host to put the old dir back")
    stack.wait_healthy()
    assert (stack.server_dir / ".serverversion").read_text().strip() == "4"
    assert (stack.server_dir / ".nodeinfo").read_text() == uuid
    assert stack.venv_target() == venv
    assert not list(stack.devpi_home.glob("server-dir.before-db*"))
    assert not list(stack.devpi_home.glob("*.pyinfra-new"))


def upgrade_step(result) -> str:
    """The upgrade step's row of pyinfra's results table: its Success / Error / No Change counts."""
    match = re.search(r"Move the server dir to the new database version\s+1\s+(\S+)\s+(\S+)\s+(\S+)", result.output)
    assert match, result.describe()
    return "changed" if match.group(1) == "1" else "error" if match.group(2) == "1" else "no change"


def test_a_bump_that_keeps_the_database_version_reports_no_upgrade_with_the_opt_in(stack, upstream):
    uuid = (stack.server_dir / ".nodeinfo").read_text()
    bump = {"devpi_server_version": SAME_DB_SERVER, "devpi_index_url": upstream.url}

    result = stack.deploy("--data", "devpi_allow_export_import=true", **bump)

    assert upgrade_step(result) == "no change"
    assert f"devpi-server-{SAME_DB_SERVER}-" in os.path.realpath(stack.devpi_home / "venv")
    assert (stack.server_dir / ".serverversion").read_text().strip() == "4"
    assert (stack.server_dir / ".nodeinfo").read_text() == uuid
    assert not list(stack.devpi_home.glob("server-dir.before-db*")) and not list(stack.devpi_home.glob("*.pyinfra-new"))
    stack.wait_healthy()
    # and a rerun reports no change at all
    assert stack.deploy("--data", "devpi_allow_export_import=true", **bump).grand_total()[0] == 0


def test_a_new_database_version_is_refused_then_moved_over_with_the_opt_in(stack, upstream, tools):
    # what a user keeps in devpi: a user, an index, an uploaded package
    devpi.ensure_user(stack.devpi_url, stack.root_auth, "alice", "alice-pw")
    devpi.ensure_index(stack.devpi_url, stack.root_auth, "alice/dev", bases=["root/pypi"], acl_upload=["alice"])
    wheel = upstream.add_project("alice-tool", "0.1", [])
    published = devpi.uv_publish(tools.uv, wheel.path, f"{stack.devpi_url}/alice/dev/", "alice", "alice-pw")
    assert published.returncode == 0, published.stdout + published.stderr
    users_indexes = stack.state()
    server_dir = tree(stack.server_dir)
    venv, venvs, pid = stack.venv_target(), sorted(os.listdir(stack.devpi_home / "venvs")), stack.pid()
    bump = {"devpi_server_version": NEW_SERVER, "devpi_index_url": upstream.url}

    # Without the opt-in: refused, the exact opt-in in the message, nothing live changed.
    refused = stack.deploy(check=False, **bump)
    assert refused.returncode != 0, refused.describe()
    assert f"devpi-server {NEW_SERVER} uses database version 5 but {stack.server_dir} holds version 4" \
        in refused.output
    assert "--data devpi_allow_export_import=true" in refused.output
    assert tree(stack.server_dir) == server_dir
    assert stack.venv_target() == venv and stack.pid() == pid
    assert sorted(os.listdir(stack.devpi_home / "venvs")) == venvs  # the new venv was removed

    # A dry run with it lists every step, changes nothing and reads no secret.
    dry = stack.deploy("--dry", "--diff", "--data", "devpi_allow_export_import=true", **bump)
    for step in ("stop devpi", "devpi-export with the live venv", "devpi-import with the new venv",
                 "spare loopback port", "server-dir.before-db4-<time> (kept)", "No secret is read",
                 "Will run: # the server dir's data to the new venv's database version"):
        assert step in dry.output, dry.describe()
    assert stack.password not in dry.output and "Will read devpi_root_password" not in dry.output
    assert tree(stack.server_dir) == server_dir and stack.pid() == pid

    # With it: exported, imported, checked, swapped; the old dir kept.
    result = stack.deploy("--data", "devpi_allow_export_import=true", **bump)
    assert f"upgraded {stack.server_dir} from database version 4 to 5" in result.output, result.describe()
    assert upgrade_step(result) == "changed"
    # devpi started once, by the upgrade (bootstrap): no kickstart -k after it
    assert re.search(r"^\s*runs = 1$", stack.printed(), re.M), stack.printed()
    assert "smoke check passed" in result.output  # the gate's smoke check on the new server dir
    assert (stack.server_dir / ".serverversion").read_text().strip() == "5"
    (kept,) = stack.devpi_home.glob("server-dir.before-db4-*")
    assert tree(kept) == server_dir  # the old server dir, untouched
    assert not list(stack.devpi_home.glob("*.pyinfra-new"))
    assert os.path.realpath(venv) != os.path.realpath(stack.devpi_home / "venv")
    assert (stack.devpi_home / "venv" / "bin" / "devpi-server").exists()
    assert Path(venv).is_dir()  # the previous venv is kept
    stack.wait_healthy()
    assert stack.state() == users_indexes
    assert stack.login("alice", "alice-pw") == 200
    links = devpi.simple_links(stack.devpi_url, "alice/dev", "alice-tool")
    assert devpi.sha256(devpi.download(links[wheel.filename])) == wheel.sha256

    # The next run finds everything as it should be.
    again = stack.deploy(**bump)
    assert again.grand_total()[0] == 0, again.describe()
