"""
Restore a backup (``deploys/devpi_restore.py``): each step is one command, so
``--dry --diff`` lists them all before anything runs.

1. verify the backup against its manifest (every file's size and sha256);
2. ``devpi-import`` (the live venv's) into ``<server dir>.restoring.pyinfra-new``
   (what a killed restore left there is removed first: it was never live);
3. ``devpi-fsck`` of the new dir (every file's checksum against the database);
4. a trial: devpi-server on the new dir on a spare loopback port, started and
   stopped by its pid, must answer ``/+api`` with the new dir's uuid;
5. stop the job (``bootout``), swap the new dir in under the server dir's name (one
   ``rename``: an atomic exchange where the OS has one), keep the replaced dir as
   ``<server dir>.before-restore-<stamp>``, start the job (``bootstrap``).

Then the deploy's health gate (``devpi.wait_healthy``) waits for the restored devpi.
Nothing is deleted: the replaced server dir stays, and so does the backup.
"""

from __future__ import annotations

import shlex

from pyinfra import host

from facts.backup import BackupSource
from facts.snapshot import FactRead, read
from pyinfra_devpi import backup as bk
from pyinfra_devpi import layout, shell_script
from pyinfra_devpi.config import DevpiConfig

from .announce import operation
from .launchd import bootout_command, bootstrap_command

q = shlex.quote

# Seconds between bootstrap attempts after the swap (launchd refuses the label for a
# moment after its bootout).
BOOTSTRAP_RETRY = 0.1

# How long the trial devpi may take to answer, and to stop.
TRIAL_TIMEOUT = 120
TRIAL_STOP_TIMEOUT = 30

VERIFY = r"""
import hashlib, json, os, sys
root, manifest_name, export_name = sys.argv[1:4]
manifest = json.load(open(os.path.join(root, manifest_name)))
bad = []
for entry in manifest["files"]:
    path = os.path.join(root, export_name, entry["path"])
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if os.path.getsize(path) != entry["size"] or h.hexdigest() != entry["sha256"]:
            bad.append(entry["path"] + ": differs from the manifest")
    except OSError as e:
        bad.append(entry["path"] + ": " + str(e))
if bad:
    sys.stderr.write("the backup %s does not match its manifest (%d of %d files):\n  %s\n"
                     % (root, len(bad), len(manifest["files"]), "\n  ".join(bad[:20])))
    sys.exit(1)
print("%d files, %d bytes: all match the manifest" % (len(manifest["files"]), manifest.get("size", 0)))
"""

# Does the export hold root/pypi? (devpi-import then takes its settings; else it must
# not create devpi's default root/pypi, which would fetch PyPI's whole project list.)
HAS_ROOT_PYPI = (
    "import json, sys; sys.exit(0 if 'root/pypi' in json.load(open(sys.argv[1]))['indexes'] else 1)"
)

FREE_PORT = (
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()"
)

# Put ``new`` in place of ``live`` in one rename, keeping what was there as ``keep``.
# With ``live`` present: an atomic exchange where the OS offers one (Linux
# renameat2(RENAME_EXCHANGE), macOS renamex_np(RENAME_SWAP)), so the server dir's name
# never points at nothing, then the old dir (now under ``new``'s name) goes to ``keep``;
# else two renames back to back. Without ``live``: one rename.
SWAP = r"""
import ctypes, os, sys
new, live, keep = sys.argv[1:4]
if not os.path.lexists(live):
    os.rename(new, live)
    print("moved the restored server dir into place")
    sys.exit(0)
libc = ctypes.CDLL(None, use_errno=True)
swapped = False
if hasattr(libc, "renameat2"):
    swapped = libc.renameat2(-100, new.encode(), -100, live.encode(), 2) == 0
elif hasattr(libc, "renamex_np"):
    swapped = libc.renamex_np(new.encode(), live.encode(), 2) == 0
if swapped:
    os.rename(new, keep)
else:
    os.rename(live, keep)
    try:
        os.rename(new, live)
    except OSError:
        os.rename(keep, live)
        raise
print("swapped in the restored server dir (%s); the previous one is kept as %s"
      % ("atomic exchange" if swapped else "two renames", keep))
"""


def source_read(path: str) -> FactRead:
    return FactRead.of(BackupSource, path=path)


def reads(backup_path: str) -> list:
    return [source_read(backup_path)]


def verify_command(config: DevpiConfig, backup: str) -> str:
    return (
        f"# verify the backup against its manifest (size and sha256 of every file)\n"
        f"{q(config.paths.bin('python'))} -I -c {q(VERIFY)} {q(backup)} "
        f"{q(layout.BACKUP_MANIFEST)} {q(layout.BACKUP_EXPORT_DIR)}"
    )


def import_command(config: DevpiConfig, backup: str) -> str:
    """devpi-import the backup into a new server dir beside the live one (``restore_import.sh``)."""
    paths = config.paths
    export = f"{backup}/{layout.BACKUP_EXPORT_DIR}"
    return shell_script.render(
        __file__, "restore_import",
        f"devpi-import the backup into {paths.restoring_dir} (a new server dir beside the live one)",
        new=paths.restoring_dir, python=paths.bin("python"), devpi_import=paths.bin("devpi-import"),
        config_file=paths.config_file, export=export, dataindex=f"{export}/{layout.DATAINDEX}",
        has_root_pypi_py=HAS_ROOT_PYPI,
    )


def fsck_command(config: DevpiConfig) -> str:
    paths = config.paths
    return (
        f"# devpi-fsck the new server dir (every file's checksum against devpi's database)\n"
        f"{q(paths.bin('devpi-fsck'))} --configfile {q(paths.config_file)} --serverdir {q(paths.restoring_dir)}"
    )


def trial_command(config: DevpiConfig) -> str:
    """devpi-server on the new dir on a spare loopback port, by pid: it must answer
    ``/+api`` with the new dir's uuid; then it is stopped (SIGTERM, SIGKILL after
    ``TRIAL_STOP_TIMEOUT``). The script is ``operations/restore_trial.sh``."""
    paths = config.paths
    return shell_script.render(
        __file__, "restore_trial",
        "trial: devpi-server on the new dir on a spare loopback port, health-checked, stopped by its pid",
        new=paths.restoring_dir, python=paths.bin("python"), devpi_server=paths.bin("devpi-server"),
        config_file=paths.config_file, log=paths.restore_trial_log, free_port_py=FREE_PORT,
        nodeinfo_name=layout.NODEINFO, timeout=TRIAL_TIMEOUT, stop_timeout=TRIAL_STOP_TIMEOUT,
    )


def swap_command(config: DevpiConfig, domain: str, loaded: bool, sudo: str = "") -> str:
    paths = config.paths
    target = q(f"{domain}/{config.label}")
    keep = q(paths.server_dir + layout.BEFORE_RESTORE_SUFFIX) + '"$stamp"'
    lines = [
        "# stop devpi, swap the restored server dir in (the previous one kept), start devpi",
        "stamp=$(date -u +%Y%m%dT%H%M%SZ)",
        f"new={q(paths.restoring_dir)}; live={q(paths.server_dir)}",
    ]
    if loaded:
        lines.append(f"{bootout_command(f'{domain}/{config.label}', sudo)} || exit $?")
    lines += [
        f'{q(paths.bin("python"))} -I -c {q(SWAP)} "$new" "$live" {keep} || exit $?',
        f"{sudo}launchctl enable {target} || exit $?",
        # devpi is down until this succeeds: retry often while launchd lets the old job go
        bootstrap_command(domain, target, paths.plist_file, delay=BOOTSTRAP_RETRY, sudo=sudo),
    ]
    return "\n".join(lines)


@operation
def server_dir(config: DevpiConfig, backup: str, domain: str, job: dict | None, sudo: str = ""):
    """
    Replace the server dir with one imported from ``backup`` (see the module doc).

    + backup: the backup's directory on the host (checked while planning)
    + job: devpi's ``LaunchdJob`` as the run found it (a loaded job is booted out first)
    """
    found = read(host, source_read(backup))
    if found is None:
        raise ValueError(f"no backup at {backup}")
    loaded = bool(job and job.get("loaded"))
    yield bk.wait_for_backup(config)  # no scheduled backup exports or prunes meanwhile
    yield verify_command(config, backup)
    yield import_command(config, backup)
    yield fsck_command(config)
    yield trial_command(config)
    yield swap_command(config, domain, loaded, sudo)
