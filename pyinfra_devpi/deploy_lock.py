"""
The deploy lock: one deploy at a time changes a host. The shell scripts that take,
check and release it (POSIX sh, macOS's BSD userland and Linux alike; no ``flock``,
which macOS does not have), and the messages they print.

Two deploys at once interleave their changes: both build a venv (in the same second,
under the same name), one's prune deletes the other's venv, both run ``devpi-init``,
both upload to the same transient names. Both fail. The lock serialises the runs:

* The lock is a directory, ``<devpi_home>/.pyinfra-deploy.lock``: ``mkdir`` is atomic
  on every filesystem. Its ``owner`` file says who holds it: the run's token, the pid
  and start time of the process that lives exactly as long as the run's connection
  (the SSH session process on the host; with ``@local``, pyinfra itself), the host
  name, the time, and who runs the deploy (user, controller, pyinfra's pid).
* It is taken by the first command of every operation that changes something (a run
  that holds it goes on at once), so a no-change rerun takes no lock and runs no extra
  command. It is released by the deploy's last operation, or by a callback when an
  operation fails; a run that dies (killed, connection lost) leaves a lock whose owner
  process is gone on that host: stale, and taken over by the next run. A lock whose
  owner cannot be checked (written on another host, or without a pid) is never taken
  over: the message says how to remove it.
* A run reads the host (``DeployLock``, first in the fact batch) only once no other
  live run holds the lock, waiting for it a bounded time: so it plans from the host
  as the other run left it. If runs start together, both read before either takes
  the lock; then the serial decides: each run that takes the lock writes its token to
  ``<devpi_home>/.pyinfra-deploy.serial``, and a run whose serial is no longer the one
  it read stops before its first change (its plan was made from a host that has
  changed since), with a message to run it again.
* Waiting is bounded (``devpi_lock_wait``): a run that cannot get the lock stops with
  a message naming the lock, its owner and how to remove a stale one.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shlex
import socket

from . import shell_script
from .layout import LockPaths

q = shlex.quote

# The exit status of a run stopped by the lock (sysexits' EX_TEMPFAIL: try again).
LOCK_EXIT = 75

# Messages. ``{name}`` fields are filled by Python (the fact's answer) or, in the
# scripts, by the host's shell (see ``_printf``): one wording for both.
HELD = (
    "{lock} is held by another deploy (run {run} by {by}, since {since}; its process {pid} "
    "on {host}) and was not released within {wait}s; this run changed nothing. If that "
    "deploy is no longer running (see `ps -p {pid}` on {host}, and its pyinfra on the "
    "controller), remove the stale lock: rm -r {lock}"
)
CHANGED = (
    "{lock}: another deploy (run {serial}) changed this host after this run read it; "
    "this run changed nothing: run it again"
)
TOOK_OVER = "took over the stale deploy lock {lock} (run {run} by {by}, since {since}: its process {pid} on {host} is gone)"
NOT_OURS = "the deploy lock {lock} was not this run's at the end (run {run} by {by} holds it): left as it is"

# Shell functions shared by the scripts (dl_field, dl_started, dl_gone, dl_old): what
# each does is said in the file.
PROCESS_FUNCTIONS = shell_script.render(__file__, "deploy_lock_process")

# The lock's own functions (dl_owner, dl_stale, dl_anchor) are deploy_lock_owner.sh,
# included by the scripts beside it.


def _printf(template: str, values: dict[str, str]) -> str:
    """A shell command printing ``template`` to stderr, each ``{name}`` replaced by the
    shell expression ``values[name]`` (expanded by the host, passed as printf arguments)."""
    names = re.findall(r"\{(\w+)\}", template)
    fmt = re.sub(r"\{(\w+)\}", "%s", template.replace("%", "%%"))
    return f"printf {q('pyinfra-devpi: ' + fmt + chr(10))} {' '.join(values[n] for n in names)} >&2"


def _say(function: str, template: str, values: dict[str, str]) -> str:
    """A one-line shell function ``function`` printing ``template`` (``_printf``)."""
    return f"{function}() {{ {_printf(template, values)}; }}"


def _owner_values(text: str) -> dict[str, str]:
    """Shell expressions for the owner fields of the owner text in shell variable ``text``."""
    return {key: f'"$(dl_field {key} "${text}")"' for key in ("run", "by", "since", "pid", "host")}


def run_token() -> str:
    """This run's token: random, so two runs (on any controllers) never share one."""
    return secrets.token_hex(8)


def run_by() -> str:
    """Who runs the deploy, for the owner file: user@controller (pyinfra pid N)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    text = f"{user}@{socket.gethostname()} (pyinfra pid {os.getpid()})"
    return re.sub(r"[^\w.@:()+ -]", "?", text)


def acquire_script(paths: LockPaths, token: str, expect: str, wait: int, controller_pid: int, by: str) -> str:
    """Take the lock for run ``token``, or make sure this run holds it.

    ``expect`` is the serial the run read (``''`` when there was none). Exits 0 holding
    the lock, or ``LOCK_EXIT`` with a message on stderr: another live run held it for
    ``wait`` seconds, or the host changed after the run read it. The script is
    ``pyinfra_devpi/deploy_lock_acquire.sh``.
    """
    owner_vals = _owner_values("owner")
    return shell_script.render(
        __file__, "deploy_lock_acquire",
        f"take the deploy lock {paths.lock} (one deploy at a time changes this host)",
        [
            _say("say_took_over", TOOK_OVER, {"lock": '"$lock"', **owner_vals}),
            _say("say_changed", CHANGED, {"lock": '"$lock"', "serial": '"$now"'}),
            _say("say_held", HELD, {"lock": '"$lock"', "wait": '"$wait"', **owner_vals}),
        ],
        lock=paths.lock, owner_file=paths.owner, guard=paths.takeover, serial=paths.serial, home=paths.home,
        token=token, expect=expect, wait=int(wait), controller=int(controller_pid), by=by, lock_exit=LOCK_EXIT,
    )


def release_script(paths: LockPaths, token: str) -> str:
    """Release the lock if run ``token`` holds it (always exits 0): ``deploy_lock_release.sh``."""
    return shell_script.render(
        __file__, "deploy_lock_release", f"release the deploy lock {paths.lock}",
        [_say("say_not_ours", NOT_OURS, {"lock": '"$lock"', **_owner_values("owner")})],
        lock=paths.lock, owner_file=paths.owner, token=token,
    )


def state_script(paths: LockPaths, wait: int) -> str:
    """Print the lock's state once no other live run holds it, or after ``wait`` seconds.

    Output: ``state=free|held|stale``, ``serial=<the serial file's first line>``, and
    ``owner_<key>=<value>`` for each line of the owner file. Always exits 0.
    The script is ``deploy_lock_state.sh``.
    """
    return shell_script.render(
        __file__, "deploy_lock_state", None, (),
        lock=paths.lock, owner_file=paths.owner, serial=paths.serial, wait=int(wait),
    )


def held_message(paths: LockPaths, owner: dict, wait: int) -> str:
    """``HELD`` for the owner the ``DeployLock`` fact reported."""
    fields = {key: owner.get(key) or "?" for key in ("run", "by", "since", "pid", "host")}
    return "pyinfra-devpi: " + HELD.format(lock=paths.lock, wait=wait, **fields)
