"""
pyinfra fact ``LaunchdJob``: launchd's view of one job (a LaunchAgent) on a macOS host.

The fact runs ``launchctl print <domain>/<label>`` and ``launchctl print-disabled <domain>``,
and parses what they print into a dict: loaded or not, state, pid, last exit code or
terminating signal, program, arguments, plist path, run count, disabled flag, minimum
runtime (ThrottleInterval) and the ``successful exit`` semaphore (KeepAlive).

Only ``print`` is asked: legacy ``launchctl list <label>`` answers from the caller's own
session, not from the domain asked about (Homebrew/brew PR #588), so over SSH it finds a
``user/<uid>`` job when ``gui/<uid>`` is asked about (issue 20). A domain that is not
there (``gui/<uid>`` without that user's console login: print exits 125 or 112) holds
no job: ``None``.

Command output protocol (one shell script, always exits 0, stderr folded into stdout)::

    @domain <domain>             the launchd domain that was queried
    @no-launchctl                (only) launchctl is not on PATH; nothing follows
    <launchctl print <domain>/<label> 2>&1>
    @exit <status of that print>  0 loaded; 113 not loaded; 112/125 no such domain
    @disabled <true|false>       the label is listed as disabled by print-disabled

``process`` also accepts the bare output of ``launchctl print``, without any marker line.
Any other print status is a ``FactProcessError`` naming it.

Result contract:

* launchctl missing: ``{"loaded": False, "launchctl_available": False, "domain": ...}``
* job not loaded in the domain, or no such domain: ``None``
* job loaded: a dict with the keys of ``_EMPTY_JOB`` in ``facts/_launchctl.py`` (every
  key always present, ``None`` when that launchctl output does not carry the value).

``LaunchdSession`` reports who the SSH user is to launchd and the domain their
LaunchAgent belongs in. That domain rule is written once, as the shell snippet
``_DOMAIN_SHELL``: ``LaunchdSession`` runs it and reports its answer, ``LaunchdJob``
runs it only when it is given no domain. The parsing (``process``) of both facts is
in ``facts/_launchctl.py``.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from facts._launchctl import (
    NO_DOMAIN_STATUSES,
    NOT_FOUND_STATUS,
    NOT_LOADED_STATUSES,
    parse_job,
    parse_session,
)

# Names other modules import from here; the parsers live in facts/_launchctl.py.
__all__ = [
    "NOT_FOUND_STATUS",
    "NO_DOMAIN_STATUSES",
    "NOT_LOADED_STATUSES",
    "LaunchdJob",
    "LaunchdSession",
]

# The launchd domain a LaunchAgent of the SSH user belongs in, Homebrew's rule: the GUI
# domain exists only for the user logged in at the console; over SSH without it, only
# the per-user background domain does. So ``gui/<uid>`` when the user owns
# /dev/console, else ``user/<uid>``. Sets $uid, $console_uid (digits or empty) and
# $domain. `ls -ln` prints the numeric owner on BSD/macOS and GNU alike (`stat` does
# not: BSD `stat -f %u` is GNU's "file system status").
_DOMAIN_SHELL = (
    "uid=$(id -u); "
    "console_uid=$(ls -ln /dev/console 2>/dev/null | awk '{print $3}'); "
    'case "$console_uid" in *[!0-9]*) console_uid=;; esac; '
    'if [ -n "$console_uid" ] && [ "$console_uid" = "$uid" ]; then domain="gui/$uid"; '
    'else domain="user/$uid"; fi; '
)


class LaunchdJob(FactBase):
    """
    Returns launchd's view of one job: ``None`` when it is not loaded in the domain,
    else a dict (loaded, state, pid, last exit code, program, plist path, ...).

    + label: the job's Label
    + domain: launchd domain target (``gui/501``, ``user/501``, ``system``); by default
      the one ``LaunchdSession`` reports (``_DOMAIN_SHELL``, Homebrew's rule)
    """

    def command(self, label: str, domain: str | None = None) -> str:
        if not label or "\n" in label:
            raise ValueError(f"invalid launchd label: {label!r}")
        if domain is None:
            pick_domain = _DOMAIN_SHELL
        else:
            pick_domain = f"domain={shlex.quote(domain)}; "
        disabled_patterns = " ".join(
            f"-e {shlex.quote(pattern)}"
            # print-disabled prints '"label" => true' on older releases and
            # '"label" => disabled' on recent ones; the quotes make the match exact.
            for pattern in (f'"{label}" => true', f'"{label}" => disabled')
        )
        return (
            f"label={shlex.quote(label)}; "
            + pick_domain
            + "printf '@domain %s\\n' \"$domain\"; "
            + "if ! command -v launchctl >/dev/null 2>&1; then "
            + "echo '@no-launchctl'; exit 0; fi; "
            + 'out=$(launchctl print "$domain/$label" 2>&1); rc=$?; '
            + 'printf \'%s\\n@exit %s\\n\' "$out" "$rc"; '
            + 'if launchctl print-disabled "$domain" 2>/dev/null | '
            + f"grep -F -q {disabled_patterns}; then "
            + "echo '@disabled true'; else echo '@disabled false'; fi; "
            + "exit 0"
        )

    def process(self, output: list[str]) -> dict | None:
        return parse_job(output)


class LaunchdSession(FactBase):
    """
    Who the SSH user is to launchd: uid, user and primary group names (a LaunchDaemon's
    ``UserName`` / ``GroupName``), home, the console owner (``None`` when unknown), and
    the domain a LaunchAgent of theirs belongs in, as ``_DOMAIN_SHELL``
    decides it on the host. ``launchctl`` tells whether launchd is there at all (it is
    not on Linux).
    """

    def command(self):
        return (
            _DOMAIN_SHELL
            + "printf '%s\\n' \"uid=$uid\" \"home=$HOME\" \"console_uid=$console_uid\" "
            + '"domain=$domain" "user=$(id -un)" "group=$(id -gn)"; '
            + "if command -v launchctl >/dev/null 2>&1; then echo launchctl=true; "
            + "else echo launchctl=false; fi"
        )

    def process(self, output):
        return parse_session(output)
