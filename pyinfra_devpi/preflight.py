"""
The preflight: what this run needs from the host, decided in Python from facts read in
the plan's one round trip (``facts/host_tools.py``, ``facts/preflight.py``).

``check`` resolves the tools the run uses (uv, Caddy, devpi's Python: an explicit key
wins, else the first candidate found, else uv is bootstrapped from PyPI) and lists
every problem at once; the deploy refuses the run, before any change, with all of them
in one message. Only what this run needs is required: uv, Python and disk space when
the venv will be built, Caddy when a changed site block is to be validated; the launchd
domain and the ownership of the devpi dirs always.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import layout, real_paths
from .config import (
    DEVPI_SERVER_VERSION,
    PYTHON_MINIMUM,
    UV_BOOTSTRAP_VERSION,
    DevpiConfig,
    python_name,
    python_request,
)

# What building a venv needs on the file system of devpi_home, with room to spare.
# Measured (Linux, uv 0.13.9, the 6.20.3/5.1.1 lock): the venv 42 MB, uv's cache of
# its wheels 12 MB, uv bootstrapped into <home>/tools 64 MB while it is built (40 MB
# kept). A CPython that uv downloads unpacks to roughly 100 MB more (not measurable
# here: the sandbox reaches PyPI only).
VENV_BUILD_MB = 256

# uv's wheels declare Requires-Python >=3.8.
BOOTSTRAP_PYTHON_MINIMUM = (3, 8)


@dataclass(frozen=True)
class Needs:
    """What this run will do that needs something from the host."""

    venv: bool  # a venv will be built (uv, Python, disk space)
    caddy_block: bool  # a changed Caddy site block will be validated and moved in
    # the run changes the system domain or /Library/LaunchDaemons as a user who is not
    # root (a LaunchDaemon, or one to retire): passwordless sudo
    root: bool = False
    # Caddy will be restarted (its block changes, or an earlier run's restart is pending)
    caddy_restart: bool = False


@dataclass(frozen=True)
class Tools:
    """The programs the run uses, as resolved on the host."""

    uv: str | None  # None: not found and not needed
    # "devpi_uv", "found", "bootstrap", "upgrade" (the deploy's own uv, of another
    # version than UV_BOOTSTRAP_VERSION: bootstrapped again over it), "missing"
    uv_source: str
    bootstrap_python: str | None  # the python3 that bootstraps uv (uv_source "bootstrap"/"upgrade")
    caddy: str | None
    caddy_source: str  # "devpi_caddy_bin", "found", "missing"
    python: str  # what ``uv venv --python`` is given
    python_note: str  # how that was decided, for the plan
    # the version of the uv the deploy bootstrapped earlier, when that is the uv found
    bootstrapped_version: str | None = None

    def describe(self) -> str:
        """One line for the plan: which uv, Caddy and Python the run uses."""
        if self.uv_source == "bootstrap":
            uv = f"none found; bootstrapping uv {UV_BOOTSTRAP_VERSION} from PyPI into {self.uv} with {self.bootstrap_python}"
        elif self.uv_source == "upgrade":
            uv = (f"{self.uv} (bootstrapped, uv {self.bootstrapped_version or 'of unknown version'}); "
                  f"replacing it with uv {UV_BOOTSTRAP_VERSION} from PyPI with {self.bootstrap_python}")
        elif self.uv_source == "found" and self.bootstrapped_version not in (None, UV_BOOTSTRAP_VERSION):
            uv = (f"{self.uv} (bootstrapped, uv {self.bootstrapped_version}; uv {UV_BOOTSTRAP_VERSION} is "
                  "pinned, but no python3 with venv and pip was found to bootstrap it: kept)")
        elif self.uv is None:
            uv = "none found (not needed by this run)"
        else:
            uv = f"{self.uv} ({self.uv_source})"
        if self.caddy is None:
            caddy = "none found (site block not validated)"
        else:
            caddy = f"{self.caddy} ({self.caddy_source})"
        return f"uv: {uv}; caddy: {caddy}; devpi's Python: {self.python} ({self.python_note})"


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    return tuple(int(part) for part in text.split("."))


def _looked_in(candidates) -> str:
    names = [c for c in candidates if "/" not in c]
    places = [c.rsplit("/", 1)[0] for c in candidates if "/" in c]
    found = [f"{n} on the SSH session's PATH" for n in names] + places
    return ", ".join(found)


def resolve_python(config: DevpiConfig, probed: dict | None) -> tuple[str, str, list[str]]:
    """What ``uv venv --python`` gets, a note for the plan, and problems (if any)."""
    if python_request(config.python) is not None:
        return config.python, "a version uv finds on the host or downloads", []
    probed = probed or {}
    path = probed.get("path")
    fix = "set devpi_python to '3.12' (uv finds or downloads it) or to a newer interpreter's path"
    if not path:
        where = "an executable file" if "/" in config.python else "a command on the SSH session's PATH"
        return config.python, "devpi_python", [f"python: devpi_python is {config.python}, which is not {where}; {fix}"]
    named = config.python if path == config.python else f"{config.python} ({path})"
    if probed.get("shim"):
        return path, "devpi_python", [
            f"python: devpi_python is {named}, macOS's placeholder python3, and the Command Line Tools "
            f"are not installed; {fix}"
        ]
    version = _version_tuple(probed.get("version"))
    if version is None:
        return path, "devpi_python", [f"python: devpi_python is {named}, which did not say its version; {fix}"]
    if version[:2] < PYTHON_MINIMUM:
        return path, "devpi_python", [
            f"python: devpi_python is {named}, which is Python {probed['version']}; devpi-server "
            f"{DEVPI_SERVER_VERSION} with its locked dependencies needs Python {python_name(PYTHON_MINIMUM)} "
            f"or newer: {fix}"
        ]
    return path, f"Python {probed['version']}, devpi_python", []


def _explicit_tool(what: str, key: str, value: str, found, needed: bool, problems: list[str]) -> str:
    """The source of a tool the operator named (``key``); a problem when it is needed
    and not there."""
    if not found and needed:
        problems.append(
            f"{what}: {key} is {value}, which is not an executable file on the host"
            + ("" if "/" in value else " nor a command on the SSH session's PATH")
        )
    return key if found else "missing"


def check(
    config: DevpiConfig,
    *,
    tools: dict,
    readiness: dict,
    needs: Needs,
    caddy_jobs: dict | None = None,
    resolved: dict | None = None,
    site_file_ours: bool | None = None,
) -> tuple[Tools, list[str]]:
    """The tools this run uses and every problem that must stop it (empty: go ahead).

    ``caddy_jobs``: ``{domain: LaunchdJob}`` of Caddy's label in each domain it was
    looked for in (a restart by label), in lookup order. ``resolved``: the ``RealPaths``
    answer for ``real_paths.to_read(config)`` (None: not read). ``site_file_ours``:
    whether the Caddy site file carries the deploy's marker (None: it does not exist)."""
    problems: list[str] = []
    paths = config.paths

    # Every configured path, where the host resolves it (pyinfra_devpi/real_paths.py).
    if resolved is not None:
        problems += real_paths.problems(config, resolved)
    if site_file_ours is False and not config.caddy_adopt_site_file:
        # Never replaced, and never shown in a diff: its content is the operator's.
        problems.append(
            f"paths: `devpi_caddy_site_file` = {paths.caddy_site_file} exists and was not written by this "
            "deploy (no \"Managed by pyinfra-devpi\" line): the deploy replaces only its own site file; move "
            f"that file away, set devpi_caddy_site_file to a path of its own, such as "
            f"{layout.DEFAULT_CADDY_SITE_FILE!r}, or set devpi_caddy_adopt_site_file = True to replace it "
            "(e.g. the Ansible role's block)"
        )

    # uv
    uv, bootstrap_python, bootstrapped_version = tools.get("uv"), None, None
    candidate = tools.get("bootstrap_python")
    if config.uv is not None:
        uv_source = _explicit_tool("uv", "devpi_uv", config.uv, uv, needs.venv, problems)
    elif uv and uv == paths.bootstrap_uv:
        # The deploy's own uv (never one the operator installed): replaced by the pinned
        # release when it is another (a new release of this deploy, or a broken binary).
        uv_source, bootstrapped_version = "found", tools.get("uv_version")
        version = _version_tuple(candidate["version"]) if candidate else None
        if (bootstrapped_version != UV_BOOTSTRAP_VERSION and version is not None
                and version[:2] >= BOOTSTRAP_PYTHON_MINIMUM):
            uv_source, bootstrap_python = "upgrade", candidate["path"]
    elif uv:
        uv_source = "found"
    else:
        uv_source = "missing"
        version = _version_tuple(candidate["version"]) if candidate else None
        if needs.venv and version is not None and version[:2] >= BOOTSTRAP_PYTHON_MINIMUM:
            uv, uv_source, bootstrap_python = paths.bootstrap_uv, "bootstrap", candidate["path"]
        elif needs.venv:
            problems.append(
                f"uv: not found ({_looked_in(layout.UV_CANDIDATES)}), and no python3 with venv and pip "
                f"to bootstrap it from PyPI ({_looked_in(layout.BOOTSTRAP_PYTHON_CANDIDATES)}): "
                "install uv (e.g. `brew install uv`) or set devpi_uv to its path"
            )

    # devpi's Python
    python, python_note, python_problems = resolve_python(config, tools.get("python"))
    if needs.venv:
        problems += python_problems

    # Caddy
    caddy = tools.get("caddy")
    if config.caddy_bin is not None:
        caddy_source = _explicit_tool("caddy", "devpi_caddy_bin", config.caddy_bin, caddy, needs.caddy_block, problems)
    elif caddy:
        caddy_source = "found"
    else:
        caddy_source = "missing"
        if needs.caddy_block and config.caddy_restart:
            problems.append(
                f"caddy: not found ({_looked_in(layout.CADDY_CANDIDATES)}); the new site block is "
                "validated with it before Caddy is restarted: install Caddy (e.g. `brew install caddy`) "
                "or set devpi_caddy_bin to its path"
            )

    # Caddy's job, for a restart by label: where it is loaded, or a problem when a
    # restart is due and it is loaded nowhere.
    label = (config.caddy_restart or {}).get("label")
    caddy_domain = caddy_job_domain(caddy_jobs) if label and caddy_jobs is not None else None
    if label and needs.caddy_restart and caddy_jobs is not None and caddy_domain is None:
        problems.append(caddy_not_loaded(label, tuple(caddy_jobs)))

    user = readiness.get("user") or "the SSH user"

    # Caddy's LaunchDaemon is kickstarted through sudo -n (asked when its plist is there).
    if (label and needs.caddy_restart and caddy_domain == "system" and readiness.get("uid") != 0
            and readiness.get("sudo_ok") in (False, "missing")):
        problems.append(
            f"caddy: Caddy's launchd label {label} is loaded in system (a LaunchDaemon, e.g. `sudo brew services "
            f"start caddy`), whose kickstart needs root, and "
            + ("there is no sudo on the SSH session's PATH" if readiness.get("sudo_ok") == "missing"
               else "`sudo -n true` failed (the deploy never types a password)")
            + f": allow {user} passwordless sudo, or set devpi_caddy_restart to {layout.CADDY_RELOAD_EXAMPLE}"
        )

    # launchd
    domain = readiness.get("domain")
    if readiness.get("domain_ok") is False:
        uid = domain.split("/", 1)[1] if domain and "/" in domain else "<uid>"
        if domain and domain.startswith("gui/"):
            hint = (f"gui/{uid} exists only while {user} is logged in at the Mac's console: log in there, "
                    f"or set devpi_launchd_domain = 'user/{uid}' (the domain an SSH session reaches)")
        elif domain == "system":
            hint = "launchd's system domain should answer anyone: is this a Mac?"
        else:
            hint = "check devpi_launchd_domain"
        problems.append(
            f"launchd: the domain {domain} is not reachable from this SSH session "
            f"(`launchctl print {domain}` exited {readiness.get('domain_status')}); {hint}"
        )

    # root, for a LaunchDaemon (installed through sudo -n, never a password prompt)
    sudo_ok = readiness.get("sudo_ok")
    if needs.root and sudo_ok in (False, "missing"):
        problems.append(sudo_problem(config, user, sudo_ok, readiness.get("sudo_error")))

    # disk space, for the venv (and uv) to be built
    free_kb = readiness.get("free_kb")
    if needs.venv and free_kb is not None and free_kb < VENV_BUILD_MB * 1024:
        df_path = readiness.get("df_path")
        where = paths.home if df_path == paths.home else f"{df_path}, where {paths.home} will be,"
        problems.append(
            f"disk: {where} has {free_kb // 1024} MB free; building devpi's venv needs about "
            f"{VENV_BUILD_MB} MB: free some space or set devpi_home to a larger file system"
        )

    # the devpi dirs must be the SSH user's: devpi runs as that user
    uid = readiness.get("uid")
    for owned, owner in readiness.get("owners", {}).items():
        if uid is not None and owner != uid:
            problems.append(
                f"ownership: {owned} belongs to uid {owner}, but devpi runs as {user} (uid {uid}): give it "
                f"to {user} (sudo chown -R), or set devpi_home to a directory of theirs"
            )

    resolved = Tools(
        uv=uv,
        uv_source=uv_source,
        bootstrap_python=bootstrap_python,
        caddy=caddy,
        caddy_source=caddy_source,
        python=python,
        python_note=python_note,
        bootstrapped_version=bootstrapped_version,
    )
    return resolved, problems


def caddy_job_domain(jobs: dict) -> str | None:
    """The domain Caddy's job is kickstarted in, from ``{domain: LaunchdJob}`` in lookup
    order: the first where it runs, else the first where it is loaded; None when it is
    loaded nowhere."""
    loaded = [domain for domain, job in jobs.items()
              if isinstance(job, dict) and job.get("loaded", True) is not False]
    running = [domain for domain in loaded if jobs[domain].get("pid")]
    return (running or loaded or [None])[0]


def caddy_not_loaded(label: str, domains: tuple[str, ...]) -> str:
    """The problem when Caddy's launchd label is loaded in none of ``domains``."""
    return (
        f"caddy: devpi_caddy_restart is Caddy's launchd label {label}, which is not loaded in "
        f"{', '.join(domains)} (`launchctl print <domain>/{label}` found nothing), so Caddy cannot be "
        "restarted to pick up the new site block: load Caddy's job (e.g. `brew services start caddy`), "
        f"or set devpi_caddy_restart to {layout.CADDY_RELOAD_EXAMPLE} (a graceful reload that does not "
        "go through launchd)"
    )


def reboot_warning(place) -> str | None:
    """The plan's warning when devpi's LaunchAgent lands in ``user/<uid>`` (a headless
    Mac): launchd loads ~/Library/LaunchAgents into ``gui/<uid>`` at a console login
    only, never into ``user/<uid>`` (nix-community/home-manager PR #9660)."""
    if place.daemon or not place.agent_domain.startswith("user/"):
        return None
    return (
        f"devpi's LaunchAgent is loaded into {place.agent_domain} (the SSH user is not logged in at the "
        "console), and launchd does not load LaunchAgents there at boot: devpi will not come back after a "
        "reboot until a rerun of this deploy or a console login; use devpi_launchd_scope = \"daemon\" "
        "(a LaunchDaemon, started at boot) or automatic login"
    )


# What the deploy runs as root for a LaunchDaemon (each through ``sudo -n``): the
# plist's copy, owner, mode and rename, its removal, and launchctl on the system domain.
ROOT_COMMANDS = ("launchctl", "cp", "chown", "chmod", "mv", "rm", "mkdir")


def sudo_problem(config: DevpiConfig, user: str, sudo_ok, error: str | None) -> str:
    """The preflight's message when the run needs root and ``sudo -n`` does not give it."""
    if config.launchd_scope == "daemon":
        why = (f"devpi_launchd_scope = 'daemon' installs a LaunchDaemon ({config.paths.plist_file}, launchd's "
               "system domain), which needs root")
    else:
        why = (f"this devpi's LaunchDaemon ({config.paths.daemon_plist_file}) is to be removed now that "
               "devpi_launchd_scope is 'agent', which needs root")
    if sudo_ok == "missing":
        found = "and there is no sudo on the SSH session's PATH"
    else:
        found = "and `sudo -n true` failed" + (f" ({error})" if error else "") + " (the deploy never types a password)"
    return (
        f"sudo: {why}, {found}: allow {user} passwordless sudo, e.g. "
        f"`echo '{user} ALL=(root) NOPASSWD: ALL' | sudo tee /etc/sudoers.d/pyinfra-devpi && "
        "sudo chmod 0440 /etc/sudoers.d/pyinfra-devpi` (the commands it runs as root: "
        f"{', '.join(ROOT_COMMANDS)}; `sudo -n true` is how it checks), or deploy as root, "
        "or keep devpi_launchd_scope = 'agent' (with auto-login)"
    )


def owned_paths(config: DevpiConfig) -> tuple[str, ...]:
    """The dirs whose owner the preflight checks."""
    return (config.paths.home, config.paths.server_dir)


def message(host_name: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return f"{host_name} is not ready for devpi; nothing was changed. Fix these and rerun:\n{lines}"


def with_tools(config: DevpiConfig, tools: Tools) -> DevpiConfig:
    """The config the operations run with: uv, Caddy and Python as found on the host."""
    return replace(
        config,
        uv=tools.uv if tools.uv is not None else config.uv,
        caddy_bin=tools.caddy if tools.caddy is not None else config.caddy_bin,
        python=tools.python,
    )
