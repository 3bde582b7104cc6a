"""
Restore a backup (``deploys/devpi_restore.py``): each step is one command, so
``--dry --diff`` lists them all before anything runs.

While planning, the ``BackupCheck`` fact (``pyinfra_devpi/backup_check.py``, sizes only)
refuses a backup that is not the SSH user's own plain files exactly as its manifest
lists them; nothing has changed then. The steps, on the backup's physical path:

1. verify the backup again, every file's sha256 too (``backup_check.py --hashes``);
2. ``devpi-import`` (the live venv's) into ``<server dir>.restoring.pyinfra-new``
   (what a killed restore left there is removed first: it was never live);
3. ``devpi-fsck`` of the new dir (every file's checksum against the database);
4. a trial: devpi-server on the new dir on a spare loopback port, started and
   stopped by its pid, must answer ``/+api`` with the new dir's uuid;
5. stop the job (``bootout``), swap the new dir in under the server dir's name (one
   ``rename``: an atomic exchange where the OS has one), keep the replaced dir as
   ``<server dir>.before-restore-<stamp>``, start the job (``bootstrap``), and the
   deploy's health gate; when the restored dir does not come up, the previous dir is
   swapped back (the restored one kept as ``<server dir>.failed-restore-<stamp>``),
   devpi started on it and waited for, and the run fails naming what failed
   (``restore_swap.sh``).

Nothing is deleted: the replaced server dir stays, and so does the backup.
"""

from __future__ import annotations

import shlex

from pyinfra import host

from facts.backup import BackupSource
from facts.restore import BackupCheck, check_arguments, program_source
from facts.snapshot import FactRead, read
from pyinfra_devpi import backup as bk
from pyinfra_devpi import layout, shell_script
from pyinfra_devpi.config import DevpiConfig

from .announce import ProgressCommand, operation
from .devpi import wait_healthy_script
from .launchd import bootout_command, bootstrap_command

q = shlex.quote

# Seconds between bootstrap attempts after the swap (launchd refuses the label for a
# moment after its bootout).
BOOTSTRAP_RETRY = 0.1

# How long the trial devpi may take to answer, and to stop.
TRIAL_TIMEOUT = 120
TRIAL_STOP_TIMEOUT = 30

# Does the export hold root/pypi? (devpi-import then takes its settings; else it must
# not create devpi's default root/pypi, which would fetch PyPI's whole project list.)
HAS_ROOT_PYPI = (
    "import json, sys; sys.exit(0 if 'root/pypi' in json.load(open(sys.argv[1]))['indexes'] else 1)"
)

FREE_PORT = (
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()"
)

# Put ``new`` in place of ``live`` in one rename, keeping what was there as ``keep``
# (which must not exist yet).
# With ``live`` present: an atomic exchange where the OS offers one (Linux
# renameat2(RENAME_EXCHANGE), macOS renamex_np(RENAME_SWAP)), so the server dir's name
# never points at nothing, then the old dir (now under ``new``'s name) goes to ``keep``;
# else two renames back to back. Without ``live``: one rename.
SWAP = r"""
import ctypes, os, sys
new, live, keep = sys.argv[1:4]
if os.path.lexists(keep):
    sys.exit("%s exists already: nothing was moved" % keep)
if not os.path.lexists(live):
    os.rename(new, live)
    print("moved %s into place as %s" % (new, live))
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
print("put %s in place of %s (%s); the one it replaced is kept as %s"
      % (new, live, "atomic exchange" if swapped else "two renames", keep))
"""


def source_read(path: str) -> FactRead:
    return FactRead.of(BackupSource, path=path)


def check_read(config: DevpiConfig, path: str, uid: int) -> FactRead:
    return FactRead.of(BackupCheck, path=path, python=config.paths.bin("python"), uid=uid)


def reads(config: DevpiConfig, backup_path: str, uid: int) -> list:
    return [source_read(backup_path), check_read(config, backup_path, uid)]


def verify_command(config: DevpiConfig, backup: str, uid: int) -> str:
    return (
        "# verify the backup again: the SSH user's own plain files, exactly as its manifest lists them, "
        "each file's size and sha256\n"
        f"{q(config.paths.bin('python'))} -I -c {q(program_source())} {check_arguments(backup, uid)} --hashes --verify"
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
    """Stop devpi, swap the restored dir in, start devpi, the health gate; the previous
    dir back when the restored one does not come up (``operations/restore_swap.sh``)."""
    paths = config.paths
    target = f"{domain}/{config.label}"
    start = (f"{sudo}launchctl enable {q(target)} || exit $?\n"
             # devpi is down until this succeeds: retry often while launchd lets the old job go
             + bootstrap_command(domain, q(target), paths.plist_file, delay=BOOTSTRAP_RETRY, sudo=sudo))
    gate = wait_healthy_script(config.local_url, config.health_timeout, paths.err_log, paths.nodeinfo,
                               server_log=paths.server_log, job=target)
    return shell_script.render(
        __file__, "restore_swap",
        "stop devpi, swap the restored server dir in (the previous one kept), start devpi, wait for it "
        "(the previous server dir back if it does not answer)",
        new=paths.restoring_dir, live=paths.server_dir,
        keep_prefix=paths.server_dir + layout.BEFORE_RESTORE_SUFFIX,
        failed_prefix=paths.server_dir + layout.FAILED_RESTORE_SUFFIX,
        python=paths.bin("python"), swap_py=SWAP, loaded=loaded,
        stop=bootout_command(target, sudo), start=start, gate=gate,
    )


@operation
def server_dir(config: DevpiConfig, backup: str, uid: int, domain: str, job: dict | None, sudo: str = ""):
    """
    Replace the server dir with one imported from ``backup`` (see the module doc), and
    wait for devpi to answer from it (the previous dir back if it does not).

    + backup: the backup's physical path on the host (checked while planning)
    + uid: the SSH user's uid (who must own the backup)
    + job: devpi's ``LaunchdJob`` as the run found it (a loaded job is booted out first)
    """
    loaded = bool(job and job.get("loaded"))
    yield bk.wait_for_backup(config)  # no scheduled backup exports or prunes meanwhile
    yield verify_command(config, backup, uid)
    yield import_command(config, backup)
    yield fsck_command(config)
    yield trial_command(config)
    yield ProgressCommand(swap_command(config, domain, loaded, sudo))
