"""
Run the project's operations against prepared facts, without a host.

An operation's ``_inner`` generator is iterated inside pyinfra's host/state context
with a stand-in host whose ``get_fact`` answers from a dict, so a test states what
the host looks like and asserts exactly which commands the operation yields.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from types import SimpleNamespace

from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.context import ctx_host, ctx_state

from facts.backup import Backups, BackupSource
from facts.deploy_lock import DeployLock
from facts.devpi import ServerDir, VenvVersions
from facts.files import FileContents, FileMode, PathsFound, RealPaths
from facts.launchd import LaunchdJob
from facts.managed_agents import ManagedAgents
from facts.users_indexes import UsersIndexes


@dataclass
class Upload:
    dest: str
    content: str


@dataclass
class PreparedHost:
    """Host facts as a test wants them; records every fact the operations asked for."""

    job: dict | None = None
    server_dir: dict | None = None
    venv: dict | None = None
    files: dict = field(default_factory=dict)
    # FileMode answers: by default a file that exists is 0644 at its own path.
    modes: dict = field(default_factory=dict)
    lock: dict = field(default_factory=lambda: {"state": "free", "serial": "", "owner": None})
    asked: list = field(default_factory=list)
    logged: list = field(default_factory=list)
    noops: list = field(default_factory=list)
    # launchd's view of the label in the other domain (user/<uid>), and the plists the
    # deploy wrote ({path: {"label", "arguments"}}) in the LaunchAgents dir.
    elsewhere: dict | None = None
    agents: dict = field(default_factory=dict)
    # The domain ``job`` (and ``jobs``) are loaded in; launchd's view of the label in the
    # system domain when that is not it (a LaunchDaemon left by the other scope).
    job_domain: str = "gui/501"
    system: dict | None = None
    # PathsFound answers: {path: {"kind", "kib"}}; a path not named is missing.
    paths: dict = field(default_factory=dict)
    # Other LaunchAgents (the backup job) by label; the Backups fact; BackupSource by path.
    jobs: dict = field(default_factory=dict)
    backups: dict | None = None
    sources: dict = field(default_factory=dict)
    # Other labels' jobs by domain, {(label, domain): job} (e.g. Caddy's): a label named
    # here is loaded in these domains only.
    placed: dict = field(default_factory=dict)
    # The UsersIndexes fact (devpi's users and indexes, as the deploy reads them).
    users_indexes: dict | None = None
    # RealPaths answers: {path: real path} (a path not named lands where it is written),
    # and the SSH user's home.
    real: dict = field(default_factory=dict)
    user_home: str = "/Users/alice"
    # The step names ``converge`` went through, in order.
    ran: list = field(default_factory=list)
    name: str = "prepared"
    print_prefix: str = "[prepared] "

    def get_fact(self, cls, **kwargs):
        self.asked.append((cls.__name__, kwargs))
        domain = kwargs.get("domain") if cls is LaunchdJob else None
        if cls is LaunchdJob and any(label == kwargs["label"] for label, _ in self.placed):
            return self.placed.get((kwargs["label"], domain))
        if cls is LaunchdJob and kwargs["label"] in self.jobs:
            return self.jobs[kwargs["label"]] if domain in (None, self.job_domain) else None
        if cls is Backups:
            return self.backups
        if cls is BackupSource:
            return self.sources.get(kwargs["path"])
        if cls is LaunchdJob:
            if domain is None or domain == self.job_domain:
                return self.job
            if domain == "system":
                return _of_label(self.system, kwargs["label"])
            if domain.startswith("user/") or self.job_domain == "system":
                return _of_label(self.elsewhere, kwargs["label"])
            return self.job
        if cls is ManagedAgents:
            under = kwargs["directory"].rstrip("/") + "/"
            return {path: agent for path, agent in self.agents.items() if path.startswith(under)}
        if cls is ServerDir:
            return self.server_dir
        if cls is VenvVersions:
            return self.venv
        if cls is FileContents:
            return {path: self.files.get(path) for path in kwargs["paths"]}
        if cls is UsersIndexes:
            return self.users_indexes
        if cls is DeployLock:
            return self.lock
        if cls is PathsFound:
            return {path: self.paths.get(path) for path in kwargs["paths"]}
        if cls is RealPaths:
            return {"home": {"real": self.user_home, "folds": False},
                    "paths": {p: {"real": self.real.get(p, p), "folds": False} for p in kwargs["paths"]}}
        if cls is FileMode:
            path = kwargs["path"]
            if path in self.modes:
                return self.modes[path]
            if self.files.get(path) is None:
                return None
            return {"mode": "-rw-r--r--", "physical": path, "owner": 0 if path.startswith("/Library/") else 501}
        raise AssertionError(f"unexpected fact {cls.__name__}")

    def log(self, message, log_func=None):
        self.logged.append(message)

    def noop(self, description):
        self.noops.append(description)


def _of_label(job: dict | None, label: str) -> dict | None:
    """A job prepared for another domain answers for its own label (any, if it names none)."""
    return job if job is None or job.get("label") in (None, label) else None


def as_text(command) -> str | Upload:
    if isinstance(command, FileUploadCommand):
        src = command.src
        src.seek(0)
        return Upload(command.dest, src.read().decode())
    if isinstance(command, FunctionCommand):
        return command  # runs on the controller: nothing is sent to the host
    if isinstance(command, StringCommand):
        return str(command)  # the masked form: what pyinfra prints
    return str(command)


def prepared_state(executing=True, diff=False):
    # executing: a `-y` run (nothing checked first); not executing: change detection.
    return SimpleNamespace(is_executing=executing, check_for_changes=not executing,
                           config=SimpleNamespace(DIFF=diff))


def run_op(op, host: PreparedHost, executing=True, diff=False, **kwargs) -> list:
    with ctx_host.use(host), ctx_state.use(prepared_state(executing, diff)):
        return [as_text(c) for c in op._inner(**kwargs)]


def in_context(host: PreparedHost, func, *args, executing=True, **kwargs):
    """Call ``func`` (not an operation, e.g. ``deploy_lock.begin``) as the deploy would."""
    with ctx_host.use(host), ctx_state.use(prepared_state(executing)):
        return func(*args, **kwargs)


class Meta:
    """An executed operation's result, for ``restart_after`` / ``after``."""

    def __init__(self, changed: bool, failed: bool = False, complete: bool = True):
        self._changed = changed
        self._failed = failed
        self._complete = complete

    @property
    def will_change(self):
        return self._changed

    def is_complete(self):
        return self._complete

    def did_change(self):
        return self._changed and not self._failed

    def did_error(self):
        return self._failed


# The shells a host script must work under (macOS's sh is bash in POSIX mode or
# dash-like; Debian's sh is dash).
SHELLS = [s for s in ("/bin/sh", shutil.which("dash"), shutil.which("bash")) if s]


def shell_lines(commands) -> list[str]:
    return [c for c in commands if isinstance(c, str)]


# Forms that exist only in GNU userland (DESIGN.md, "Host commands run on macOS").
GNU_ONLY = [
    (re.compile(r"\bstat\s+-c\b"), "stat -c"),
    (re.compile(r"\bstat\s+--"), "stat --long-option"),
    (re.compile(r"\bsed\s+(-[a-zA-Z]*)?-i(\s|$)(?!['\"]?\.)"), "sed -i without a suffix"),
    (re.compile(r"\bsed\s+-i\s+-e\b"), "sed -i without a suffix"),
    (re.compile(r"date\s+\+%[^\s]*%N|date\s+\+%N"), "date +%N"),
    (re.compile(r"\bsha256sum\b|\bmd5sum\b|\bsha1sum\b"), "GNU checksum tools"),
    (re.compile(r"\breadlink\s+-f\b"), "readlink -f"),
    (re.compile(r"(^|[;&|(]\s*|\s)timeout\s+\d"), "timeout"),
    (re.compile(r"\binstall\s+-D\b"), "install -D"),
    (re.compile(r"\b(mkdir|rm|cp|mv|ln|ls|chmod|chown|cat|head|tail|cut|wc|tr|touch|date|sort|base64)\s+--\w"), "a long option of a coreutils tool"),
    (re.compile(r"\bmv\s+-T\b|\bln\s+-T\b|\bcp\s+-T\b"), "-T (no target directory)"),
    (re.compile(r"\becho\s+-e\b"), "echo -e"),
    (re.compile(r"\[\["), "[[ (a bashism)"),
]


def gnu_only_forms(command: str) -> list[str]:
    return [name for pattern, name in GNU_ONLY if pattern.search(command)]
