"""What a restore trusts, and what it puts back, end to end on the shared host (issues 22
and 23): a backup whose wheel is a symlink to devpi's secret (every hash rewritten to
match) is refused before anything changes, and the secret is never served; a restored
server dir that fails the health gate is swapped back out, devpi answering again from
the previous one.

The backups are made by the backup program itself (``pyinfra_devpi/backup_program.py``,
with the host's venv and ``devpi-export``, as the backup job runs it), into a dir of the
SSH user's outside ``devpi_home``; the module leaves the host as it found it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from pyinfra_devpi import backup as backup_model
from pyinfra_devpi import layout
from pyinfra_devpi.config import build_config

from . import devpi_client
from .harness import build_wheel

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
INDEX = "root/trust"
PROJECT = "trust-alpha"


@pytest.fixture(scope="module")
def host(shared_host, tools, tmp_path_factory):
    """The shared host with a private index holding one uploaded wheel; afterwards the
    index and every dir this module made are removed."""
    stack = shared_host.get()
    devpi_client.ensure_index(stack.devpi_url, stack.root_auth, INDEX, type="stage", bases=[])
    wheel = build_wheel(tmp_path_factory.mktemp("dist"), PROJECT, "1.0")
    published = devpi_client.uv_publish(tools.uv, wheel.path, f"{stack.devpi_url}/{INDEX}/", "root", stack.password)
    assert published.returncode == 0, published.stdout + published.stderr
    yield stack
    devpi_client.request("DELETE", f"{stack.devpi_url}/{INDEX}", auth=stack.root_auth)
    for leftover in stack.devpi_home.glob("server-dir.*restore*"):
        shutil.rmtree(leftover)
    shutil.rmtree(stack.root / "trust-backups", ignore_errors=True)


def make_backup(stack) -> Path:
    """A backup by the backup program, with the arguments the backup job gets."""
    dest = stack.root / "trust-backups"
    data = {k: str(v) if isinstance(v, Path) else v for k, v in stack.data.items()}
    config = build_config({**data, "devpi_backup": {"hour": 3, "minute": 17, "keep": 9, "dir": str(dest)}},
                          str(stack.home))
    arguments = backup_model.program_arguments(config)
    arguments[arguments.index(config.paths.backup_program)] = str(REPO / "pyinfra_devpi" / "backup_program.py")
    arguments[arguments.index("--status") + 1] = str(stack.root / "trust-backup.status.json")
    before = set(dest.glob(layout.BACKUP_PREFIX + "*"))
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (made,) = set(dest.glob(layout.BACKUP_PREFIX + "*")) - before
    return made


def served(base: str) -> dict[str, str]:
    """Every file of the index's project as served at ``base``: name -> sha256."""
    return {name: devpi_client.sha256(devpi_client.download(url))
            for name, url in devpi_client.simple_links(base, INDEX, PROJECT).items()}


def server_dir_digests(stack) -> dict[str, str]:
    """sha256 of every file of the server dir (its database, release files, identity) but
    what devpi itself writes in the background after an upload: its event bookkeeping
    (``.event_serial``) and devpi-web's search index (``.indices``)."""
    return {str(p.relative_to(stack.server_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(stack.server_dir.rglob("*"))
            if p.is_file() and p.relative_to(stack.server_dir).parts[0] not in (".indices", ".event_serial")}


def uuid_of(server_dir: Path) -> str:
    return json.loads((server_dir / layout.NODEINFO).read_text())["uuid"]


def hashes_of(entry: dict, data: bytes) -> None:
    """Rewrite a dataindex.json file entry's hashes to ``data``'s, as an attacker would."""
    mapping = entry["entrymapping"]
    for name in mapping["hashes"]:
        mapping["hashes"][name] = hashlib.new(name, data).hexdigest()
    if "hash_spec" in mapping:
        name = mapping["hash_spec"].partition("=")[0]
        mapping["hash_spec"] = f"{name}={hashlib.new(name, data).hexdigest()}"


def rewrite_manifest(backup: Path, manifest: dict) -> None:
    """Write ``manifest`` with every listed file's size and sha256 as the export now holds it."""
    export = backup / layout.BACKUP_EXPORT_DIR
    for listed in manifest["files"]:
        data = (export / listed["path"]).read_bytes()
        listed.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (backup / layout.BACKUP_MANIFEST).write_text(json.dumps(manifest))


def restore(stack, backup: Path):
    return stack.pyinfra("deploys/devpi_restore.py", "--data", f"devpi_restore_from={backup}", check=False)


def test_a_backup_whose_wheel_is_a_symlink_to_the_secret_is_refused_and_nothing_changes(host):
    stack = host
    stack.wait_caddy()
    good = served(stack.caddy_url)
    (wheel_name,) = good
    backup = make_backup(stack)
    secret = stack.devpi_home / "secret"
    secret_sha256 = hashlib.sha256(secret.read_bytes()).hexdigest()

    # Anyone who can write the backup: the wheel becomes a symlink to ~/devpi/secret, and
    # every hash of it in dataindex.json and manifest.json is rewritten to match.
    export = backup / layout.BACKUP_EXPORT_DIR
    dataindex = json.loads((export / layout.DATAINDEX).read_text())
    (entry,) = [f for f in dataindex["indexes"][INDEX]["files"] if f["relpath"].endswith(wheel_name)]
    wheel = export / entry["relpath"]
    wheel.unlink()
    wheel.symlink_to(secret)
    hashes_of(entry, secret.read_bytes())
    (export / layout.DATAINDEX).write_text(json.dumps(dataindex))
    manifest = json.loads((backup / layout.BACKUP_MANIFEST).read_text())
    rewrite_manifest(backup, manifest)

    pid, digests, uuid = stack.pid(), server_dir_digests(stack), uuid_of(stack.server_dir)
    result = restore(stack, backup)

    # The secret is not served (before the change, the restore passed every step and
    # Caddy served the secret as that wheel, to anyone).
    now = served(stack.caddy_url)
    assert secret_sha256 not in now.values()
    assert now == good
    # Refused while planning, naming the symlink; nothing on the host changed.
    assert result.returncode != 0, result.describe()
    assert f"refusing to restore {backup}" in result.output, result.describe()
    assert f"{wheel}: is a symlink (to {secret})" in result.output
    assert "devpi-import" not in result.output  # no step ran
    assert stack.pid() == pid and uuid_of(stack.server_dir) == uuid
    assert server_dir_digests(stack) == digests
    assert list(stack.devpi_home.glob("server-dir.*")) == []


def test_a_dataindex_entry_that_leads_out_of_the_backup_is_refused(host):
    # No symlink at all: devpi-import opens <export>/<relpath>, and a relpath with ".."
    # reaches the secret. The wheel's file is dropped from the export and the manifest,
    # so every file there is listed and matches.
    stack = host
    good = served(stack.devpi_url)
    backup = make_backup(stack)
    secret = stack.devpi_home / "secret"
    export = backup / layout.BACKUP_EXPORT_DIR
    dataindex = json.loads((export / layout.DATAINDEX).read_text())
    (entry,) = dataindex["indexes"][INDEX]["files"]
    dropped = entry["relpath"]
    (export / dropped).unlink()
    entry["relpath"] = os.path.relpath(secret, export)
    hashes_of(entry, secret.read_bytes())
    (export / layout.DATAINDEX).write_text(json.dumps(dataindex))
    # the manifest as the attacker leaves it: the dropped file gone, dataindex.json's new
    # size and hash (other modules' uploads on the shared host stay listed as they are)
    manifest = json.loads((backup / layout.BACKUP_MANIFEST).read_text())
    manifest["files"] = [listed for listed in manifest["files"] if listed["path"] != dropped]
    rewrite_manifest(backup, manifest)

    pid, digests = stack.pid(), server_dir_digests(stack)
    result = restore(stack, backup)
    assert served(stack.devpi_url) == good
    assert result.returncode != 0, result.describe()
    assert f"names the file {entry['relpath']!r}, which is not a file the manifest lists" in result.output, \
        result.describe()
    assert stack.pid() == pid and server_dir_digests(stack) == digests


def test_a_restored_server_dir_that_fails_the_health_gate_is_rolled_back(host):
    stack = host
    good = served(stack.devpi_url)
    backup = make_backup(stack)
    uuid = uuid_of(stack.server_dir)

    # The restored dir passes the trial on its spare port; once it is swapped in, it is
    # damaged before devpi starts on it (a database version devpi-server cannot run).
    damaged = threading.Event()
    stop = threading.Event()

    def damage_once_swapped_in() -> None:
        while not stop.wait(0.002):
            if list(stack.devpi_home.glob("server-dir" + layout.BEFORE_RESTORE_SUFFIX + "*")):
                try:
                    if uuid_of(stack.server_dir) != uuid:
                        (stack.server_dir / ".serverversion").write_text("3")
                        damaged.set()
                        return
                except (OSError, ValueError):
                    pass

    watcher = threading.Thread(target=damage_once_swapped_in, daemon=True)
    watcher.start()
    try:
        result = restore(stack, backup)
    finally:
        stop.set()
        watcher.join()
    assert damaged.is_set(), result.describe()

    # The run fails naming what failed; devpi answers again from the previous dir.
    assert result.returncode != 0, result.describe()
    assert "the restore failed: devpi on the restored server dir did not pass the health gate" in result.output
    assert "Incompatible state" in result.output  # devpi's own error, from the error log's tail
    assert f"rolled back: devpi answers again from the previous server dir {stack.server_dir}" in result.output
    stack.wait_healthy()
    assert uuid_of(stack.server_dir) == uuid
    assert served(stack.devpi_url) == good
    (failed,) = stack.devpi_home.glob("server-dir" + layout.FAILED_RESTORE_SUFFIX + "*")
    assert (failed / ".serverversion").read_text() == "3"
    assert list(stack.devpi_home.glob("server-dir" + layout.BEFORE_RESTORE_SUFFIX + "*")) == []
    assert not (stack.devpi_home / ("server-dir" + layout.RESTORING_SUFFIX)).exists()
    # the deploy lock was released: a converge runs and finds nothing to change
    rerun = stack.deploy()
    assert rerun.grand_total()[0] == 0, rerun.describe()
