"""
Where the deploy's launchd jobs live, and what it takes to change them.

``devpi_launchd_scope``:

* ``"agent"`` (the default): LaunchAgents of the SSH user, in ``gui/<uid>`` (while they
  are logged in at the console) or ``user/<uid>``, plists in ``~/Library/LaunchAgents``.
  Nothing needs root. After a reboot launchd loads LaunchAgents only at a console login
  (into ``gui/<uid>``), never into ``user/<uid>``: a Mac without automatic login leaves
  devpi down until someone logs in at the console or the deploy runs again.
* ``"daemon"``: LaunchDaemons in the ``system`` domain, plists in ``/Library/LaunchDaemons``
  (root:wheel 0644, as launchd requires), with ``UserName`` / ``GroupName`` the SSH user
  and their primary group: launchd starts devpi at boot, without a login, as that user.
  The system domain and that dir need root: when the SSH user is not root, every command
  that changes them runs through ``sudo -n`` (never a prompt, never a password: without
  passwordless sudo the preflight refuses the run). Reading needs no root: launchctl(1),
  "Anyone may read or query the system domain, but root privileges are required to make
  modifications", and the plists are world-readable.

A job of this deploy's label must be loaded in one domain only (two would fight for
devpi's port): ``elsewhere`` lists the domains a run retires it from. Every question of
the kind "which domain" is answered here (``JobPlace``, ``pinned_domain``), nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import AGENT_SCOPE, DAEMON_SCOPE

SYSTEM_DOMAIN = "system"
# Non-interactive: fails at once instead of prompting for a password.
SUDO = "sudo -n"


def agent_domains(uid: int) -> tuple[str, str]:
    return (f"gui/{uid}", f"user/{uid}")


@dataclass(frozen=True)
class JobPlace:
    """The launchd domain of this run's jobs and how to reach it.

    + scope: ``"agent"`` or ``"daemon"``
    + agent_domain: the SSH user's own domain (``gui/<uid>`` or ``user/<uid>``), as the
      session rule (or ``devpi_launchd_domain``) picks it
    + uid: the SSH user's uid (0: root, who needs no sudo)
    + user, group: the SSH user's name and primary group (a LaunchDaemon's ``UserName`` /
      ``GroupName``)
    """

    scope: str
    agent_domain: str
    uid: int
    user: str | None = None
    group: str | None = None

    @property
    def daemon(self) -> bool:
        return self.scope == DAEMON_SCOPE

    @property
    def domain(self) -> str:
        """Where this run's jobs load."""
        return SYSTEM_DOMAIN if self.daemon else self.agent_domain

    @property
    def as_root(self) -> str:
        """The prefix of a command that changes the system domain or the LaunchDaemons dir
        (with its trailing space; empty for root)."""
        return "" if self.uid == 0 else SUDO + " "

    def prefix(self, domain: str) -> str:
        """The prefix of a ``launchctl`` command that changes ``domain``."""
        return self.as_root if domain == SYSTEM_DOMAIN else ""

    @property
    def sudo(self) -> str:
        """The prefix of a command that changes this run's jobs."""
        return self.prefix(self.domain)

    @property
    def needs_sudo(self) -> bool:
        return self.sudo != ""

    def target(self, label: str) -> str:
        return f"{self.domain}/{label}"

    @property
    def other_agent_domain(self) -> str:
        """The SSH user's agent domain that is not ``agent_domain`` (``user/<uid>`` for
        ``gui/<uid>`` and the other way round)."""
        return next(d for d in agent_domains(self.uid) if d != self.agent_domain)

    @property
    def own_domains(self) -> tuple[str, str]:
        """The SSH user's two agent domains, the one the session rule picks first (where
        a LaunchAgent under an old label is booted out)."""
        return (self.agent_domain, self.other_agent_domain)

    @property
    def everywhere(self) -> tuple[str, ...]:
        """Every domain a job of the deploy's may be loaded in, whatever the scope: the SSH
        user's two and the system domain (what the uninstall boots out)."""
        return (*agent_domains(self.uid), SYSTEM_DOMAIN)

    @property
    def lookup_order(self) -> tuple[str, ...]:
        """Where a job someone else loaded (Caddy's) is looked for, in order: the SSH
        user's domain, their other agent domain, ``system``."""
        return (*self.own_domains, SYSTEM_DOMAIN)

    @property
    def elsewhere(self) -> tuple[str, ...]:
        """The domains where this deploy's labels must not be loaded."""
        if self.daemon:
            return agent_domains(self.uid)
        return (self.other_agent_domain, SYSTEM_DOMAIN)

    @property
    def run_as(self) -> tuple[str, str] | None:
        """A LaunchDaemon's ``UserName`` and ``GroupName``; None for a LaunchAgent."""
        if not self.daemon:
            return None
        if not self.user or not self.group:
            raise ValueError("a LaunchDaemon needs the SSH user's name and primary group")
        return (self.user, self.group)


def pinned_domain(config) -> str | None:
    """The jobs' domain as the config alone says it: ``system`` for a LaunchDaemon,
    ``devpi_launchd_domain`` if set, else None (the session rule picks it on the host)."""
    return SYSTEM_DOMAIN if config.launchd_scope == DAEMON_SCOPE else config.launchd_domain


def job_place(config, session: dict) -> JobPlace:
    """This run's place from the config and the ``LaunchdSession`` fact."""
    return JobPlace(
        scope=config.launchd_scope,
        agent_domain=config.launchd_domain or session["domain"],
        uid=session["uid"],
        user=session.get("user"),
        group=session.get("group"),
    )


__all__ = ["AGENT_SCOPE", "DAEMON_SCOPE", "SUDO", "SYSTEM_DOMAIN", "JobPlace", "agent_domains", "job_place", "pinned_domain"]
