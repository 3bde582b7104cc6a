"""
The preflight, on the host side: what it reads (``reads``, prefetched with every other
operation module's reads, so a rerun still costs two remote commands), the refusal
before any change (``ready``), and bootstrapping uv when the host has none
(``uv_bootstrap``). The decisions are in ``pyinfra_devpi/preflight.py``.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand

from facts.files import RealPaths
from facts.host_tools import HostTools
from facts.managed_agents import MARKER
from facts.preflight import HostReadiness
from facts.snapshot import FactRead, file_content, read
from pyinfra_devpi import layout, real_paths, shell_script
from pyinfra_devpi import preflight as decide
from pyinfra_devpi.config import UV_BOOTSTRAP_VERSION, DevpiConfig, python_request
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.launchd_scope import JobPlace

from . import caddy
from .announce import ProgressCommand, operation

q = shlex.quote

# The preflight's uv sources that bootstrap uv: none found, or the deploy's own is old.
BOOTSTRAPPING = ("bootstrap", "upgrade")


def tools_read(config: DevpiConfig) -> FactRead:
    uv = (config.uv,) if config.uv else (*layout.UV_CANDIDATES, config.paths.bootstrap_uv)
    caddy = (config.caddy_bin,) if config.caddy_bin else layout.CADDY_CANDIDATES
    python = None if python_request(config.python) else config.python
    # The deploy's own uv (never one the operator installed) is checked against the pin.
    own = {} if config.uv else {"bootstrapped": config.paths.bootstrap_uv, "pinned": UV_BOOTSTRAP_VERSION}
    return FactRead.of(
        HostTools, uv=uv, caddy=caddy, python=python, bootstrap_python=layout.BOOTSTRAP_PYTHON_CANDIDATES, **own
    )


def readiness_read(config: DevpiConfig, domain: str, place: JobPlace) -> FactRead:
    # sudo is asked about for a LaunchDaemon, or when a LaunchDaemon's plist is there to
    # be retired (a switch back to the agent scope), or Caddy's (its kickstart in system).
    root_if = () if place.daemon else (config.paths.daemon_plist_file, config.paths.daemon_backup_plist_file,
                                       *caddy_daemon_plist(config))
    return FactRead.of(HostReadiness, domain=domain, path=config.paths.home, owned=decide.owned_paths(config),
                       root=place.needs_sudo, root_if=root_if)


def caddy_daemon_plist(config: DevpiConfig) -> tuple[str, ...]:
    """Where Caddy's LaunchDaemon plist would be (``sudo brew services start caddy``
    writes /Library/LaunchDaemons/<label>.plist), for a restart by label."""
    label = (config.caddy_restart or {}).get("label")
    return (f"{config.paths.launch_daemons_dir}/{label}{layout.PLIST_SUFFIX}",) if label else ()


def real_paths_read(config: DevpiConfig) -> FactRead:
    """Where every configured path lands on the host (``pyinfra_devpi/real_paths.py``)."""
    return FactRead.of(RealPaths, paths=real_paths.to_read(config))


def reads(config: DevpiConfig, domain: str, place: JobPlace) -> list:
    """What the preflight reads from the host (Caddy's job only for a restart by label)."""
    return [tools_read(config), readiness_read(config, domain, place), real_paths_read(config),
            config.paths.caddy_site_file, *caddy.job_reads(config.caddy_restart, place)]


def ready(config: DevpiConfig, domain: str, needs: decide.Needs, place: JobPlace) -> decide.Tools:
    """The tools this run uses, said once in the plan; or the run refused with every
    problem in one message."""
    label = (config.caddy_restart or {}).get("label")
    site = file_content(host, config.paths.caddy_site_file)
    tools, problems = decide.check(
        config, tools=read(host, tools_read(config)), readiness=read(host, readiness_read(config, domain, place)),
        needs=needs, caddy_jobs=caddy.found_jobs(config.caddy_restart, place) if label else None,
        resolved=read(host, real_paths_read(config)), site_file_ours=None if site is None else MARKER in site,
    )
    if problems:
        raise DeployError(decide.message(host.name, problems))
    host.log(tools.describe(), logger.info)
    if tools.caddy is None and needs.caddy_block:
        logger.warning(f"{host.print_prefix}no caddy binary found: the new Caddy site block is not validated")
    return tools


def bootstrap_script(config: DevpiConfig, python: str, lock_path: str) -> str:
    """pip-install the pinned uv (``--require-hashes``, wheels only) into a scratch venv made
    by ``python``, prove it runs, and keep only its binary at ``paths.bootstrap_uv``: a
    rename over the uv an earlier release bootstrapped, so a run killed midway leaves
    that one working. Then the other releases' requirement files go.
    The script is ``operations/uv_bootstrap.sh``."""
    paths = config.paths
    lock_prefix, lock_suffix = paths.uv_lock_glob.split("*")
    return shell_script.render(
        __file__, "uv_bootstrap",
        f"bootstrap uv {UV_BOOTSTRAP_VERSION} from PyPI into {paths.bootstrap_uv} (no uv on the host, or an older "
        "one there)",
        home=paths.home, new=paths.uv_build_venv, py=python, version=UV_BOOTSTRAP_VERSION,
        index_url=config.index_url, lock=lock_path, target=paths.bootstrap_uv,
        staged=layout.transient(paths.bootstrap_uv), tools_dir=paths.tools_dir, lock_prefix=lock_prefix,
        lock_suffix=lock_suffix,
    )


@operation
def uv_bootstrap(config: DevpiConfig, tools: decide.Tools, lock: str):
    """
    Install uv into ``<devpi_home>/tools`` when the host has none and a venv must be built,
    or over the uv bootstrapped there before when it is not the pinned release.

    + tools: the preflight's answer (``uv_source`` ``"bootstrap"`` or ``"upgrade"``: do it)
    + lock: the hashed requirement for the pinned uv (``locks/uv-<version>.txt``)
    """
    if tools.uv_source not in BOOTSTRAPPING:
        host.noop(f"uv is {tools.uv}" if tools.uv else "no venv to build: uv is not needed")
        return
    lock_path = config.paths.uv_lock_upload(UV_BOOTSTRAP_VERSION)
    yield f"(umask 077; mkdir -p {q(config.paths.home)}) && mkdir -p {q(config.paths.tools_dir)}"
    yield FileUploadCommand(BytesIO(lock.encode("utf-8")), lock_path)
    yield ProgressCommand(bootstrap_script(config, tools.bootstrap_python, lock_path))
