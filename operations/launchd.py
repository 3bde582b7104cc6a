"""
A launchd job (a LaunchAgent, or a LaunchDaemon run as the SSH user: ``devpi_launchd_scope``,
``pyinfra_devpi/launchd_scope.py``): its plist on disk and the job launchd has loaded from it.

Only launchctl's modern verbs are used (``enable``, ``bootstrap``, ``bootout``,
``kickstart``, ``print``). launchd reads a plist when the job is bootstrapped and
caches it; ``kickstart`` restarts from that cached definition, so a changed plist
needs ``bootout`` + ``bootstrap`` to take effect.

The plist on disk and the job launchd has loaded can drift apart: a run killed
between writing the plist and reloading leaves the new file with the old job loaded,
and a plist that became group/world-writable is refused by the next ``bootstrap``.
So ``agent`` compares both: the file (content and mode) with what it should be, and
the loaded job (``launchctl print``: program, arguments, working directory, log
paths, environment, the plist it came from, minimum runtime (ThrottleInterval) and the
``successful exit`` semaphore (KeepAlive's SuccessfulExit)) with the values of the
rendered plist.
"""

from __future__ import annotations

import plistlib
import shlex

from pyinfra import host, logger

from facts.files import FileMode
from facts.launchd import LaunchdJob
from facts.snapshot import FactRead, file_content, read

from .announce import log_once, operation
from .textfile import text_differs, write_root_text, write_text
from .triggers import any_changed

# How long `bootstrap` keeps retrying while launchd is still tearing the previous
# instance of the job down (it answers 5 or 37 until the old job is gone).
BOOTSTRAP_ATTEMPTS = 20
BOOTSTRAP_DELAY = 0.5

# How long a bootout may take to let the job go, and how often ``print`` asks meanwhile.
BOOTOUT_WAIT = 10
BOOTOUT_POLL = 0.25


def bootout_command(target: str, sudo: str = "", wait: float = BOOTOUT_WAIT) -> str:
    """Boot ``target`` (``<domain>/<label>``, unquoted) out and wait until launchd lets it
    go: the one bootout every operation uses. A subshell, so it can stand anywhere a
    command can (in ``one_command``, in a shell function): it exits 0 once ``print`` no
    longer finds the job, else non-zero with a message naming the target.

    launchctl's statuses: 0 booted out; 36 ("Operation now in progress") the bootout is
    under way, the job still stopping (osquery/osquery#5698): both are waited out, at
    most ``wait`` seconds. 3 (ESRCH) and 113 (no such service) mean it was not loaded;
    112 and 125 mean the domain is not there (``gui/<uid>`` without that user's console
    login), so nothing is loaded in it: fine. Any other status is fine only when
    ``print`` no longer finds the job. ``sudo``: the prefix for the system domain
    (``"sudo -n "``), or empty; ``print`` needs none.
    """
    quoted = shlex.quote(target)
    attempts = max(1, round(wait / BOOTOUT_POLL))
    gone_late = shlex.quote(f"%s is still loaded {wait:g} s after its bootout "
                            "(bootout exited %s): launchd did not let the job go\\n")
    return (
        f"( out=$({sudo}launchctl bootout {quoted} 2>&1); rc=$?; "
        "case $rc in 0|36) ;; 3|113|112|125) exit 0 ;; "
        f"*) if launchctl print {quoted} >/dev/null 2>&1; then "
        "printf '%s\\n' \"$out\" >&2; exit \"$rc\"; fi; exit 0 ;; esac; "
        f"i=0; while launchctl print {quoted} >/dev/null 2>&1; do i=$((i + 1)); "
        f"if [ $i -ge {attempts} ]; then printf {gone_late} {quoted} \"$rc\" >&2; exit 1; fi; "
        f"sleep {BOOTOUT_POLL:g}; done )"
    )


def removal_commands(label: str, domains, plists, found_only: bool = True) -> list[str]:
    """The one removal of a job: boot ``label`` out (and wait) in each of ``domains``,
    then remove each of ``plists``; both ``(where, the prefix that changes it)``. Only
    where the snapshot finds the job loaded and the plist present, unless ``found_only``
    is False (a job found under an old label: its domains were not read)."""
    commands = []
    for domain, sudo in domains:
        job = read(host, job_read(label, domain)) if found_only else None
        if not found_only or (job and job.get("loaded")):
            commands.append(bootout_command(f"{domain}/{label}", sudo))
    for path, sudo in plists:
        if not found_only or file_content(host, path) is not None:
            commands.append(f"{sudo}rm -f {shlex.quote(path)}")
    return commands


def bootstrap_command(domain: str, target: str, plist_path: str, delay: float = BOOTSTRAP_DELAY,
                      sudo: str = "") -> str:
    """``launchctl bootstrap`` with launchd's transient errors handled.

    Error 5 (EIO) is launchctl's catch-all and 37 (EALREADY) is answered while an
    old instance is still being torn down: both are retried for a while. If they
    persist, ``print`` tells whether the job is in fact loaded (someone else loaded
    it); only then is 5 taken as "already loaded". ``delay``: seconds between attempts
    (shorter where devpi is down meanwhile, as in a restore). ``sudo``: the prefix for
    the system domain (``"sudo -n "``), or empty; ``print`` needs none.
    """
    attempts = max(BOOTSTRAP_ATTEMPTS, int(BOOTSTRAP_ATTEMPTS * BOOTSTRAP_DELAY / delay))
    plist = shlex.quote(plist_path)
    return (
        f"i=0; while :; do "
        f"out=$({sudo}launchctl bootstrap {domain} {plist} 2>&1); rc=$?; "
        "if [ $rc -eq 0 ]; then break; fi; "
        "if [ $rc -ne 5 ] && [ $rc -ne 37 ]; then echo \"$out\" >&2; exit $rc; fi; "
        "i=$((i + 1)); "
        f"if [ $i -ge {attempts} ]; then "
        f"if launchctl print {target} >/dev/null 2>&1; then break; fi; "
        "echo \"$out\" >&2; exit $rc; fi; "
        f"sleep {delay}; done"
    )


def one_command(*steps: str) -> str:
    """``steps`` as one remote command, each only after the one before succeeded: one SSH
    round trip instead of one per step, where devpi may be down meanwhile (~70 ms each
    measured on the e2e harness's loopback sshd)."""
    return " && ".join(f"{{ {step}; }}" for step in steps) if len(steps) > 1 else steps[0]


def job_read(label: str, domain: str) -> FactRead:
    return FactRead.of(LaunchdJob, label=label, domain=domain)


def plist_mode_read(plist_path: str) -> FactRead:
    return FactRead.of(FileMode, path=plist_path)


def reads(label: str, domain: str, plist_path: str) -> list:
    """What ``agent`` reads from the host."""
    return [job_read(label, domain), plist_path, plist_mode_read(plist_path)]


# The plist's mode: launchd refuses (error 122, or 5 for a non-root caller) a plist
# that is group- or world-writable; the deploy keeps it at 0644. A LaunchDaemon's plist
# must also be root's ("Path had bad ownership/permissions"): root:wheel (uid/gid 0).
PLIST_MODE = "644"
PLIST_MODE_STRING = "-rw-r--r--"

# launchd's ThrottleInterval when the plist sets none (launchd.plist(5)).
DEFAULT_THROTTLE_INTERVAL = 10


def loaded_definition(plist: str) -> dict:
    """What ``launchctl print`` shows for a job loaded from ``plist`` (its text): the
    values the job runs with, in the ``LaunchdJob`` fact's keys."""
    data = plistlib.loads(plist.encode("utf-8"))
    arguments = list(data.get("ProgramArguments") or [])
    keep_alive = data.get("KeepAlive")
    successful_exit = keep_alive.get("SuccessfulExit") if isinstance(keep_alive, dict) else None
    return {
        "program": data.get("Program") or (arguments[0] if arguments else None),
        "arguments": arguments,
        "working_directory": data.get("WorkingDirectory"),
        "stdout_path": data.get("StandardOutPath"),
        "stderr_path": data.get("StandardErrorPath"),
        "environment": {str(k): str(v) for k, v in (data.get("EnvironmentVariables") or {}).items()},
        # print: "minimum runtime = N"; launchd's default when the plist sets none.
        "minimum_runtime": int(data.get("ThrottleInterval", DEFAULT_THROTTLE_INTERVAL)),
        # print: the "successful exit => 0|1" semaphore; none without the key.
        "successful_exit": bool(successful_exit) if successful_exit is not None else None,
    }


def definition_drift(job: dict, plist: str, plist_path: str, mode: dict | None) -> list[str]:
    """The fields in which the loaded job differs from ``plist``; empty when none does.

    Only what launchd reports verbatim is compared, so a job loaded from this very
    plist never differs: launchd adds variables of its own to the environment
    (``XPC_SERVICE_NAME``, ``OSLogRateLimit``), so only the plist's variables are
    looked for; the plist may be reported by its path as given or with the
    directory's symlinks resolved. A print without a ``minimum runtime`` line (every
    print seen has one) does not compare it: a reload could never make it appear.
    """
    want = loaded_definition(plist)
    drift = []
    for key in ("program", "arguments", "working_directory", "stdout_path", "stderr_path"):
        if key == "arguments" and not want["arguments"]:
            continue
        if job.get(key) != want[key]:
            drift.append(key)
    environment = job.get("environment") or {}
    if any(environment.get(k) != v for k, v in want["environment"].items()):
        drift.append("environment")
    if job.get("path") not in {plist_path, (mode or {}).get("physical")}:
        drift.append("path")
    if job.get("minimum_runtime") is not None and job["minimum_runtime"] != want["minimum_runtime"]:
        drift.append("minimum_runtime")
    if job.get("successful_exit") != want["successful_exit"]:
        drift.append("successful_exit")
    return drift


def _is_running(job: dict) -> bool:
    return job.get("state") == "running" and job.get("pid") is not None


@operation
def agent(
    label: str,
    plist: str,
    plist_path: str,
    domain: str,
    restart_after=(),
    directories=(),
    keep_running: bool = True,
    sudo: str = "",
    root_owned: bool = False,
    staged: str | None = None,
    log_files=(),
    displace=(),
):
    """
    Make launchd run the LaunchAgent ``label`` from ``plist``.

    + label: the job's label
    + plist: the plist's full text (rendered by the caller)
    + plist_path: where the plist lives (``~/Library/LaunchAgents/<label>.plist``)
    + domain: ``gui/<uid>`` or ``user/<uid>``
    + restart_after: operations whose change must restart the job (``kickstart -k``)
    + directories: directories the definition names (its log dir): made before the job
      is (re)loaded, since launchd creates a log file but not its directory
    + keep_running: a service (devpi) runs all the time: one that is not running is
      kickstarted. ``False`` for a job launchd starts on a schedule (the backup job):
      loaded and enabled is all it needs; it is never started by the deploy.
    + sudo: the prefix of every ``launchctl`` command that changes the domain and of every
      command on a root-owned plist (``"sudo -n "`` for the system domain when the SSH
      user is not root; else empty)
    + root_owned: a LaunchDaemon's plist: written root:wheel 0644 through ``staged`` (a
      path in devpi_home where its content is uploaded first)
    + log_files: files the job's definition names (its logs), created empty as the SSH
      user before the job is (re)loaded: launchd opens a LaunchDaemon's log files as
      root, so one it created would be root's and the job's user could not reopen it
    + displace: this job loaded in other domains (``retire.loaded_elsewhere``: (what to
      say, the bootout command)), e.g. the Ansible role's job loaded with legacy
      ``launchctl load``, which holds devpi's port: booted out in the load command, right
      before the bootstrap, after the plist is written, so the port is closed only for
      the switch itself; the job is then (re)started even if nothing else changed

    | observed                                   | commands                         |
    | plist changed, job loaded                  | write plist, bootout, bootstrap  |
    | plist changed, not loaded                  | write plist, enable, bootstrap   |
    | plist mode not 0644 (daemon: not root's)   | chmod 644 (chown 0:0)            |
    | loaded job differs from the plist          | bootout, bootstrap               |
    | not loaded                                 | enable, bootstrap                |
    | loaded, disabled                           | enable (then as below)           |
    | loaded, not running                        | kickstart                        |
    | running, a trigger changed                 | kickstart -k                     |
    """
    target = shlex.quote(f"{domain}/{label}")
    job = read(host, job_read(label, domain))
    mode = read(host, plist_mode_read(plist_path))
    loaded = bool(job and job.get("loaded"))
    plist_changed = text_differs(plist_path, plist)

    if root_owned:
        commands = list(write_root_text(plist_path, plist, staged, sudo, mode=PLIST_MODE))
    else:
        commands = list(write_text(plist_path, plist, mode=PLIST_MODE))
    if not plist_changed and mode is not None:
        if root_owned and mode.get("owner") != 0:
            commands.append(f"{sudo}chown 0:0 {shlex.quote(plist_path)}")
        if mode["mode"] != PLIST_MODE_STRING:
            # launchd refuses a group/world-writable plist at the next bootstrap.
            commands.append(f"{sudo}chmod {PLIST_MODE} {shlex.quote(plist_path)}")

    # A loaded job runs the definition launchd read when it was bootstrapped: a run
    # stopped between writing the plist and reloading leaves the file right and the
    # job wrong, so the job itself is compared with the plist.
    drift = definition_drift(job, plist, plist_path, mode) if loaded and not plist_changed else []
    if drift:
        log_once(
            f"{domain}/{label} runs another definition than {plist_path} "
            f"({', '.join(drift)} differ): reloading it"
        )

    # A disabled job cannot be bootstrapped and would not load at the next login.
    enable = [f"{sudo}launchctl enable {target}"] if not loaded or job.get("disabled") else []
    if loaded and job.get("disabled"):
        # System Settings' Login Items writes the same disabled store (MACOS.md): say
        # that the deploy undoes what someone may have switched off there.
        log_once(
            f"{domain}/{label} is disabled (`launchctl disable`, or switched off in System Settings > "
            "Login Items): enabling it again"
        )

    make_dirs = [f"mkdir -p {' '.join(shlex.quote(d) for d in directories)}"] if directories else []
    if log_files:
        make_dirs.append(f"touch {' '.join(shlex.quote(f) for f in log_files)}")
    for message, _ in displace:
        host.log(message, logger.info)
    displaced = [bootout for _, bootout in displace]
    if loaded and (plist_changed or drift):
        # The loaded job keeps its cached definition until it is booted out.
        start = [*make_dirs, *displaced, bootout_command(f"{domain}/{label}", sudo),
                 bootstrap_command(domain, target, plist_path, sudo=sudo)]
    elif not loaded:
        start = [*make_dirs, *displaced, bootstrap_command(domain, target, plist_path, sudo=sudo)]
    elif not keep_running:
        start = [*displaced]  # launchd starts it when its calendar says so
    elif not _is_running(job):
        start = [*displaced, f"{sudo}launchctl kickstart {target}"]
    elif any_changed(restart_after) or displaced:
        # Displaced: the other instance may have held the port this one needs.
        start = [*displaced, f"{sudo}launchctl kickstart -k {target}"]
    else:
        start = []
    if enable or start:
        commands.append(one_command(*enable, *start))

    if not commands:
        running = "running " if keep_running else ""
        host.noop(f"{domain}/{label} is loaded, enabled and {running}its current definition")
    yield from commands


@operation
def absent(label: str, domain: str, plist_path: str, sudo: str = ""):
    """
    No LaunchAgent ``label``: boot the job out (a run in progress is stopped) and
    remove its plist. Reads what ``agent`` reads (``reads(label, domain, plist_path)``).

    | observed                   | commands                 |
    | job loaded                 | bootout                  |
    | plist on disk              | rm -f plist              |

    ``sudo``: the prefix for the system domain and a LaunchDaemon's plist, or empty.
    """
    commands = removal_commands(label, [(domain, sudo)], [(plist_path, sudo)])
    if not commands:
        host.noop(f"no LaunchAgent {label}")
    yield from commands
