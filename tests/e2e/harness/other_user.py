"""A throwaway non-root SSH user with passwordless sudo: the realistic LaunchDaemon case
(indri's admin user), for ``test_daemon_scope.py``.

Everything here is visible machine-wide (a user account, a sudoers drop-in), so it is
named for the harness, made only when missing, and removed at teardown: the account
only if this run created it, the drop-in always. The user's files live in a
world-traversable directory of the run's own (pytest's temporary dirs are root's alone),
so that user can reach them; nothing else of the machine is touched. The session's
``/bin/launchctl`` is the double, in sshd's private mount namespace as for every test.

sudo resets the environment: the drop-in keeps ``LAUNCHCTL_DOUBLE_STATE`` for this user
(``env_keep``), so the double run through sudo finds its state dir. That line is the
test's scaffolding; the deploy knows nothing of it.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .common import HarnessError

#: The account (made if missing, removed at teardown if this run made it).
USER = "pyinfra-devpi-e2e"
#: The sudoers drop-in (always this run's; removed at teardown).
SUDOERS = Path("/etc/sudoers.d/pyinfra-devpi-e2e")


@dataclasses.dataclass
class OtherUser:
    name: str
    uid: int
    gid: int
    group: str
    home: Path  # their HOME, in ``area``
    area: Path  # a world-traversable dir of this run's: the user's files go here
    created: bool  # this run made the account

    def own(self, *paths: Path) -> None:
        """Give ``paths`` (recursively) to the user."""
        for path in paths:
            for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
                os.lchown(entry, self.uid, self.gid)

    def sudoers(self, *, passwordless: bool = True) -> None:
        """The drop-in: the double's state variable kept through sudo, and (unless
        ``passwordless`` is False) every command as root without a password. Checked
        with ``visudo -c`` before it is moved in (a broken drop-in breaks all of sudo)."""
        lines = [
            "# made by tests/e2e/harness/other_user.py for the end-to-end tests; removed at teardown",
            f'Defaults:{self.name} env_keep += "LAUNCHCTL_DOUBLE_STATE"',
            f"{self.name} ALL=(root) {'NOPASSWD: ' if passwordless else ''}ALL",
            "",
        ]
        new = SUDOERS.with_name(SUDOERS.name + ".new")  # sudo ignores names with a dot
        new.write_text("\n".join(lines))
        new.chmod(0o440)
        visudo = shutil.which("visudo", path="/usr/sbin:/usr/bin:/sbin:/bin")
        if visudo:
            check = subprocess.run([visudo, "-c", "-f", str(new)], capture_output=True, text=True)
            if check.returncode != 0:
                new.unlink()
                raise HarnessError(f"visudo refused the e2e drop-in: {check.stdout}{check.stderr}")
        os.replace(new, SUDOERS)

    def remove(self) -> None:
        SUDOERS.unlink(missing_ok=True)
        if self.created:
            subprocess.run(["userdel", self.name], capture_output=True, text=True)
            try:
                grp.getgrnam(self.name)
                subprocess.run(["groupdel", self.name], capture_output=True, text=True)
            except KeyError:
                pass
        shutil.rmtree(self.area, ignore_errors=True)


def make_other_user() -> OtherUser:
    """The throwaway user (made if missing), with a HOME in a fresh world-traversable
    dir, and passwordless sudo. Needs root (CI runs as root) and ``sudo`` (``.ci/run``)."""
    if os.geteuid() != 0:
        raise HarnessError("making a throwaway SSH user needs root (CI runs as root)")
    if shutil.which("sudo", path="/usr/bin:/bin:/usr/sbin:/sbin") is None:
        raise HarnessError("sudo is missing; .ci/run should install it (apt-get install sudo)")
    area = Path(tempfile.mkdtemp(prefix="devpi-e2e-daemon-", dir="/tmp"))
    area.chmod(0o755)
    home = area / "home"
    home.mkdir()
    created = False
    try:
        pwd.getpwnam(USER)
        subprocess.run(["usermod", "-d", str(home), USER], check=True, capture_output=True, text=True)
    except KeyError:
        subprocess.run(["useradd", "--user-group", "--no-create-home", "--home-dir", str(home),
                        "--shell", "/bin/sh", USER], check=True, capture_output=True, text=True)
        created = True
    # sshd without PAM refuses a locked account ("!" in shadow): "*" logs in by key only.
    subprocess.run(["usermod", "-p", "*", USER], check=True, capture_output=True, text=True)
    entry = pwd.getpwnam(USER)
    user = OtherUser(name=USER, uid=entry.pw_uid, gid=entry.pw_gid, group=grp.getgrgid(entry.pw_gid).gr_name,
                     home=home, area=area, created=created)
    user.own(home)
    home.chmod(0o755)
    user.sudoers()
    return user
