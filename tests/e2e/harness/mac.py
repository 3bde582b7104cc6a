"""A Mac's SSH session, as the deploy meets it, stood in for on Linux.

A non-interactive SSH command on macOS gets ``PATH=/usr/bin:/bin:/usr/sbin:/sbin``
(:data:`MAC_SSH_PATH`); ``launchctl`` is ``/bin/launchctl``, on that PATH; Homebrew's
programs are in ``/opt/homebrew/bin`` and uv's installer puts uv in ``~/.local/bin``,
neither on that PATH. The harness gives the target's SSH sessions exactly that:

* ``/bin/launchctl`` is the launchctl double and ``/opt/homebrew/bin/caddy`` the
  project's Caddy, in a private mount namespace of the harness's sshd (and so of every
  session and job it starts): read-only overlays of the system's ``/bin`` (``/usr/bin``
  where ``/bin`` is a link to it) and ``/opt`` with a directory of symlinks on top
  (:func:`namespace_argv`). Nothing is written to the machine's own ``/bin`` or ``/opt``,
  and other processes (another worktree's tests, the controller) do not see them. It
  needs root (CAP_SYS_ADMIN) and overlayfs, as CI's throwaway machine has.
* uv is ``~/.local/bin/uv`` in the session's sandbox ``HOME`` (a symlink to the
  controller's uv; :func:`install_user_tools`), where uv's installer puts it.
* Who is at the console: on Linux ``/dev/console`` is root's, so the SSH user (root)
  owns it, as a Mac's user logged in at the console does (the GUI domain ``gui/<uid>``
  exists). A headless Mac (a Mac mini nobody is logged in to) has a console that is not
  the SSH user's: ``namespace_argv(..., console_owner=uid)`` bind-mounts a file of
  ``uid``'s over ``/dev/console`` in the namespace, so the deploy's domain rule (``ls -ln
  /dev/console``) and the launchctl double both see someone else there.

The deploy is not told any of this: it finds these places itself (its candidate lists
name them as macOS has them).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from .common import CADDY_BIN, LAUNCHCTL_DOUBLE, HarnessError
from .tools import ToolPaths

#: What sshd gives a non-interactive session on macOS (its compiled-in default).
MAC_SSH_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
#: Where macOS has launchctl.
MAC_LAUNCHCTL = "/bin/launchctl"
#: Homebrew's bin on Apple silicon.
HOMEBREW_BIN = "/opt/homebrew/bin"
#: uv's installer dir, under the session's HOME.
UV_INSTALLER_DIR = ".local/bin"

#: The console owner of a headless Mac as the harness stands it in: not root (the SSH
#: user), so root has no GUI domain (nobody, who never logs in anywhere).
HEADLESS_CONSOLE_OWNER = 65534
#: Where the device is that tells who is logged in at the console.
CONSOLE = "/dev/console"

#: The programs stood in for on the target, by where the deploy finds them.
STANDINS = {MAC_LAUNCHCTL: LAUNCHCTL_DOUBLE, f"{HOMEBREW_BIN}/caddy": CADDY_BIN}


def _overlay_tree(root: Path) -> list[tuple[Path, str]]:
    """Directories of symlinks to lay over system directories: (upper tree, target)."""
    overlays: dict[str, Path] = {}
    for where, real in STANDINS.items():
        top = "/" + where.strip("/").split("/", 1)[0]  # "/bin", "/opt"
        target = os.path.realpath(top)  # Debian's /bin is a link to /usr/bin
        if not os.path.isdir(target):
            raise HarnessError(f"cannot stand in for {where}: {top} is not a directory on this machine")
        upper = overlays.setdefault(target, root / target.strip("/").replace("/", "_"))
        link = upper / where.strip("/").split("/", 1)[1]
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(real)
    for target, upper in overlays.items():
        if any(c in str(upper) + target for c in ":,\\"):
            raise HarnessError(f"overlay paths cannot hold ':', ',' or '\\': {upper}, {target}")
    return [(upper, target) for target, upper in overlays.items()]


def _console_stand_in(root: Path, owner: int) -> Path:
    """A file of ``owner``'s to bind over /dev/console (only its owner is ever read)."""
    if not os.path.exists(CONSOLE):
        raise HarnessError(f"cannot stand in for a headless Mac's console: {CONSOLE} is missing on this machine")
    console = root / "console"
    console.parent.mkdir(parents=True, exist_ok=True)
    console.touch(mode=0o600)
    os.chown(console, owner, -1)
    return console


def namespace_argv(root: Path, argv: list[str], console_owner: int | None = None) -> list[str]:
    """``argv`` run in a private mount namespace where :data:`STANDINS` are in place,
    and, with ``console_owner``, /dev/console is a file of that uid's (a headless Mac).

    ``unshare`` execs the shell, which mounts the overlays and execs ``argv``: the
    process keeps its pid (what ``spawn`` returns is ``argv``'s pid)."""
    if os.geteuid() != 0:
        raise HarnessError(
            "the end-to-end harness stands in for macOS's /bin/launchctl and /opt/homebrew/bin in a "
            "private mount namespace, which needs root (CI runs as root)"
        )
    unshare = shutil.which("unshare", path=MAC_SSH_PATH)
    if unshare is None:
        raise HarnessError("unshare (util-linux) is missing; .ci/run should install it")
    mounts = " && ".join(
        f"mount -t overlay overlay -o lowerdir={upper}:{target} {target}"
        for upper, target in _overlay_tree(root)
    )
    if console_owner is not None:
        mounts += f" && mount --bind {shlex.quote(str(_console_stand_in(root, console_owner)))} {CONSOLE}"
    return [unshare, "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", f'{mounts} && exec "$@"', "sh", *argv]


def install_user_tools(home: Path, tools: ToolPaths, owner=None) -> Path:
    """uv where its installer puts it, under the session's HOME; returns that path.
    ``owner`` (a ``pwd`` entry): another user's HOME, who cannot reach the controller's
    uv: a copy of it, theirs."""
    uv = home / UV_INSTALLER_DIR / "uv"
    uv.parent.mkdir(parents=True, exist_ok=True)
    if uv.is_symlink() or uv.exists():
        uv.unlink()
    if owner is None:
        uv.symlink_to(tools.uv)
        return uv
    shutil.copy2(os.path.realpath(tools.uv), uv)
    for path in (home / ".local", uv.parent, uv):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return uv
