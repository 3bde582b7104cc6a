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

# The lock's own functions (need $lock, $owner_file and, to take over, $guard):
#   dl_owner             the owner text ('' while it is being written, or no lock)
#   dl_stale             0 when the lock exists and its owner is gone (or it has had no
#                        owner for a minute: its maker died between mkdir and writing)
#   dl_anchor CTL        the pid whose life is this run's: the nearest ancestor that is
#                        an SSH session process, or pyinfra itself (pid CTL, @local)
#   dl_takeover TEXT     remove the lock if it still holds TEXT (the stale owner), under
#                        the takeover guard, so two runs never both remove a lock
LOCK_FUNCTIONS = r"""dl_owner() { cat "$owner_file" 2>/dev/null; }
dl_stale() {
  [ -e "$lock" ] || return 1
  _o=$(dl_owner)
  if [ -n "$_o" ]; then dl_gone "$_o"; else dl_old "$lock"; fi
}
dl_anchor() {
  _p=$$
  while [ -n "$_p" ] && [ "$_p" -gt 1 ] 2>/dev/null; do
    case "$(ps -o comm= -p "$_p" 2>/dev/null)" in *sshd*) echo "$_p"; return;; esac
    if [ "$_p" = "$1" ]; then echo "$_p"; return; fi
    _p=$(ps -o ppid= -p "$_p" 2>/dev/null | tr -d ' ')
  done
}"""


def _printf(template: str, values: dict[str, str]) -> str:
    """A shell command printing ``template`` to stderr, each ``{name}`` replaced by the
    shell expression ``values[name]`` (expanded by the host, passed as printf arguments)."""
    names = re.findall(r"\{(\w+)\}", template)
    fmt = re.sub(r"\{(\w+)\}", "%s", template.replace("%", "%%"))
    return f"printf {q('pyinfra-devpi: ' + fmt + chr(10))} {' '.join(values[n] for n in names)} >&2"


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
    ``wait`` seconds, or the host changed after the run read it.
    """
    lock = q(paths.lock)
    owner_vals = _owner_values("owner")
    return "\n".join(
        [
            f"# take the deploy lock {paths.lock} (one deploy at a time changes this host)",
            f"lock={lock}; owner_file={q(paths.owner)}; guard={q(paths.takeover)}; serial={q(paths.serial)}",
            f"home={q(paths.home)}; token={q(token)}; expect={q(expect)}; wait={int(wait)}",
            f"controller={int(controller_pid)}; by={q(by)}",
            PROCESS_FUNCTIONS,
            LOCK_FUNCTIONS,
            "dl_takeover() {",
            '  if mkdir "$guard" 2>/dev/null; then',
            '    if [ -e "$lock" ] && [ "$(dl_owner)" = "$1" ]; then rm -rf "$lock"; owner=$1; '
            + _printf(TOOK_OVER, {"lock": '"$lock"', **owner_vals})
            + "; fi",
            '    rmdir "$guard" 2>/dev/null',
            # a guard left by a run that died while taking over
            '  elif dl_old "$guard"; then rmdir "$guard" 2>/dev/null',
            "  else sleep 1; fi",
            "}",
            '(umask 077; mkdir -p "$home") || exit 1',
            'if [ "$(dl_field run "$(dl_owner)")" = "$token" ]; then exit 0; fi',
            'anchor=$(dl_anchor "$controller")',
            "me=$(printf 'run=%s\\npid=%s\\nstarted=%s\\nhost=%s\\nsince=%s\\nby=%s' "
            '"$token" "$anchor" "$(dl_started "$anchor")" "$(uname -n)" '
            "\"$(date '+%Y-%m-%d %H:%M:%S %Z')\" \"$by\")",
            'end=$(( $(date +%s) + wait ))',
            "while :; do",
            '  if mkdir "$lock" 2>/dev/null; then',
            '    printf \'%s\\n\' "$me" > "$owner_file" || { rm -rf "$lock"; exit 1; }',
            '    now=$(head -n 1 "$serial" 2>/dev/null)',
            # The host changed after this run read it: its plan is out of date.
            '    if [ "$now" != "$expect" ] && [ "$now" != "$token" ]; then',
            '      rm -rf "$lock"',
            "      " + _printf(CHANGED, {"lock": '"$lock"', "serial": '"$now"'}),
            f"      exit {LOCK_EXIT}",
            "    fi",
            '    printf \'%s\\n\' "$token" > "$serial".new && mv -f "$serial".new "$serial" '
            '|| { rm -rf "$lock"; exit 1; }',
            "    exit 0",
            "  fi",
            "  owner=$(dl_owner)",
            '  [ -e "$lock" ] || continue',
            '  if [ -n "$owner" ] && [ "$(dl_field run "$owner")" = "$token" ]; then exit 0; fi',
            '  if dl_stale; then dl_takeover "$owner"; continue; fi',
            '  if [ "$(date +%s)" -ge "$end" ]; then',
            "    " + _printf(HELD, {"lock": '"$lock"', "wait": '"$wait"', **owner_vals}),
            f"    exit {LOCK_EXIT}",
            "  fi",
            "  sleep 1",
            "done",
        ]
    )


def release_script(paths: LockPaths, token: str) -> str:
    """Release the lock if run ``token`` holds it (always exits 0)."""
    return "\n".join(
        [
            f"# release the deploy lock {paths.lock}",
            f"lock={q(paths.lock)}; owner_file={q(paths.owner)}; token={q(token)}",
            PROCESS_FUNCTIONS,
            LOCK_FUNCTIONS,
            "owner=$(dl_owner)",
            'if [ "$(dl_field run "$owner")" = "$token" ]; then rm -rf "$lock"; '
            'elif [ -n "$owner" ]; then '
            + _printf(NOT_OURS, {"lock": '"$lock"', **_owner_values("owner")})
            + "; fi",
            "true",
        ]
    )


def state_script(paths: LockPaths, wait: int) -> str:
    """Print the lock's state once no other live run holds it, or after ``wait`` seconds.

    Output: ``state=free|held|stale``, ``serial=<the serial file's first line>``, and
    ``owner_<key>=<value>`` for each line of the owner file. Always exits 0.
    """
    return "\n".join(
        [
            f"lock={q(paths.lock)}; owner_file={q(paths.owner)}; serial={q(paths.serial)}; wait={int(wait)}",
            PROCESS_FUNCTIONS,
            LOCK_FUNCTIONS,
            'end=$(( $(date +%s) + wait ))',
            "while :; do",
            "  owner=$(dl_owner)",
            '  if [ ! -e "$lock" ]; then state=free; owner=',
            "  elif dl_stale; then state=stale",
            "  else state=held; fi",
            '  if [ "$state" != held ] || [ "$(date +%s)" -ge "$end" ]; then break; fi',
            "  sleep 1",
            "done",
            'echo "state=$state"',
            'echo "serial=$(head -n 1 "$serial" 2>/dev/null)"',
            "printf '%s\\n' \"$owner\" | sed -n 's/^\\([a-z]*\\)=/owner_\\1=/p'",
            "true",
        ]
    )


def held_message(paths: LockPaths, owner: dict, wait: int) -> str:
    """``HELD`` for the owner the ``DeployLock`` fact reported."""
    fields = {key: owner.get(key) or "?" for key in ("run", "by", "since", "pid", "host")}
    return "pyinfra-devpi: " + HELD.format(lock=paths.lock, wait=wait, **fields)
