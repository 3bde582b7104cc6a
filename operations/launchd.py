"""
A launchd LaunchAgent: its plist on disk and the job launchd has loaded from it.

Only launchctl's modern verbs are used (``enable``, ``bootstrap``, ``bootout``,
``kickstart``, ``print``). launchd reads a plist when the job is bootstrapped and
caches it; ``kickstart`` restarts from that cached definition, so a changed plist
needs ``bootout`` + ``bootstrap`` to take effect.
"""

from __future__ import annotations

import shlex

from pyinfra import host

from facts.launchd import LaunchdJob
from pyinfra_devpi.snapshot import FactRead, read

from .announce import operation
from .textfile import text_differs, write_text
from .triggers import any_changed

# How long `bootstrap` keeps retrying while launchd is still tearing the previous
# instance of the job down (it answers 5 or 37 until the old job is gone).
BOOTSTRAP_ATTEMPTS = 20
BOOTSTRAP_DELAY = 0.5


def bootout_command(target: str) -> str:
    # 3 (ESRCH) and 113 ("Could not find service") mean it was not loaded: fine.
    return (
        f"launchctl bootout {target}; rc=$?; "
        'if [ $rc -ne 0 ] && [ $rc -ne 3 ] && [ $rc -ne 113 ]; then exit $rc; fi'
    )


def bootstrap_command(domain: str, target: str, plist_path: str) -> str:
    """``launchctl bootstrap`` with launchd's transient errors handled.

    Error 5 (EIO) is launchctl's catch-all and 37 (EALREADY) is answered while an
    old instance is still being torn down: both are retried for a while. If they
    persist, ``print`` tells whether the job is in fact loaded (someone else loaded
    it); only then is 5 taken as "already loaded".
    """
    plist = shlex.quote(plist_path)
    return (
        f"i=0; while :; do "
        f"out=$(launchctl bootstrap {domain} {plist} 2>&1); rc=$?; "
        "if [ $rc -eq 0 ]; then break; fi; "
        "if [ $rc -ne 5 ] && [ $rc -ne 37 ]; then echo \"$out\" >&2; exit $rc; fi; "
        "i=$((i + 1)); "
        f"if [ $i -ge {BOOTSTRAP_ATTEMPTS} ]; then "
        f"if launchctl print {target} >/dev/null 2>&1; then break; fi; "
        "echo \"$out\" >&2; exit $rc; fi; "
        f"sleep {BOOTSTRAP_DELAY}; done"
    )


def job_read(label: str, domain: str) -> FactRead:
    return FactRead.of(LaunchdJob, label=label, domain=domain)


def reads(label: str, domain: str, plist_path: str) -> list:
    """What ``agent`` reads from the host."""
    return [job_read(label, domain), plist_path]


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

    | observed                      | commands                              |
    | plist changed, job loaded     | write plist, bootout, bootstrap       |
    | plist changed, not loaded     | write plist, enable, bootstrap        |
    | not loaded                    | enable, bootstrap                     |
    | loaded, disabled              | enable (then as below)                |
    | loaded, not running           | kickstart                             |
    | running, a trigger changed    | kickstart -k                          |
    """
    target = shlex.quote(f"{domain}/{label}")
    job = read(host, job_read(label, domain))
    loaded = bool(job and job.get("loaded"))
    plist_changed = text_differs(plist_path, plist)

    commands = list(write_text(plist_path, plist, mode="644"))

    # A disabled job cannot be bootstrapped and would not load at the next login.
    if not loaded or job.get("disabled"):
        commands.append(f"launchctl enable {target}")

    make_dirs = [f"mkdir -p {' '.join(shlex.quote(d) for d in directories)}"] if directories else []
    if plist_changed and loaded:
        # The loaded job keeps its cached definition until it is booted out.
        commands += [*make_dirs, bootout_command(target), bootstrap_command(domain, target, plist_path)]
    elif not loaded:
        commands += [*make_dirs, bootstrap_command(domain, target, plist_path)]
    elif not _is_running(job):
        commands.append(f"launchctl kickstart {target}")
    elif any_changed(restart_after):
        commands.append(f"launchctl kickstart -k {target}")

    if not commands:
        host.noop(f"{domain}/{label} is loaded, enabled and running its current definition")
    yield from commands
