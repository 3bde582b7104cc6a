"""A devpi installed the way the Ansible role this deploy replaces left indri (issue 11).

What the role leaves, and :func:`install_ansible_devpi` builds:

* ``<devpi_home>/venv``, a real directory: ``uv venv`` + ``uv pip install`` of the pins,
  resolved by uv at the time the role ran, not from this project's lock: here one
  dependency (:data:`ROLE_DRIFT`) at another version than the lock's;
* ``<devpi_home>/server-dir`` made by that venv's ``devpi-init`` (with the root
  password, as the role's ``op read`` pre-task passed it);
* the plist ``<label>.plist`` running ``devpi-server --serverdir … --host 127.0.0.1
  --port … --outside-url …``: no config file, no secret file, ``KeepAlive`` true, no
  ``LimitLoadToSessionType`` (an Aqua agent), logs where the role put them; loaded with
  legacy ``launchctl load -w`` from an SSH session. Legacy verbs target the GUI session
  (launchctl(1)): the job lands in ``gui/<uid>`` because the SSH user owns the console,
  as erichblume does on indri; headless, that load loads nothing (../shared/MACOS.md),
  so :func:`install_ansible_devpi` refuses to build the role's install there;
* devpi-web's default indexer, Whoosh, so the server dir holds ``.indices``.

:func:`populate` then does what the operator did by hand: ``root/pypi`` (a mirror of
the hermetic upstream here: ``devpi-init``'s own would point at PyPI, whose project
list devpi-web would fetch and index), a user with an index, an upload, and one
mirrored file fetched. :func:`write_proxy_block` is the role's Caddy block (a plain
proxy).
"""

from __future__ import annotations

import dataclasses
import os
import plistlib
import subprocess
from pathlib import Path

from .common import LOOPBACK, HarnessError, wait_until
from .launchd import LaunchdDouble
from .logs import tail
from .network import http, http_ok
from .tools import ToolPaths

#: What the role installed: the pins, and setuptools as devpi-server needs it.
ROLE_PINS = ("devpi-server==6.20.3", "devpi-web==5.1.1", "setuptools<=81")
#: One dependency the role's resolution left at another version than the project's
#: lock (locks/devpi-6.20.3-5.1.1.txt has pluggy 1.7.0): the venv is not the lock's.
ROLE_DRIFT = "pluggy==1.6.0"


@dataclasses.dataclass
class AnsibleDevpi:
    """The role's devpi, as installed."""

    home: Path
    label: str
    port: int
    plist: Path
    out_log: Path
    err_log: Path
    outside_url: str

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def server_dir(self) -> Path:
        return self.home / "server-dir"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        return [
            str(self.venv / "bin" / "devpi-server"), "--serverdir", str(self.server_dir),
            "--host", LOOPBACK, "--port", str(self.port), "--outside-url", self.outside_url,
        ]


def _run(argv: list, what: str, env: dict | None = None, timeout: float = 600) -> None:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise HarnessError(f"{what} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def install_ansible_devpi(
    launchd: LaunchdDouble,
    tools: ToolPaths,
    *,
    home: Path,
    label: str,
    port: int,
    launch_agents_dir: Path,
    out_log: Path,
    err_log: Path,
    outside_url: str,
    root_password: str,
    python: Path | str,
    timeout: float = 120,
) -> AnsibleDevpi:
    """Install, initialise and load devpi as the role did (see the module docstring);
    returns once it answers ``/+api``."""
    role = AnsibleDevpi(home=home, label=label, port=port, plist=launch_agents_dir / f"{label}.plist",
                        out_log=out_log, err_log=err_log, outside_url=outside_url)
    home.mkdir(parents=True, exist_ok=True)
    _run([tools.uv, "venv", "--quiet", "--python", python, role.venv], "uv venv (the role's venv)")
    _run([tools.uv, "pip", "install", "--quiet", "--python", role.venv / "bin" / "python", *ROLE_PINS, ROLE_DRIFT],
         "uv pip install (the role's venv)")
    _run([role.venv / "bin" / "devpi-init", "--serverdir", role.server_dir, "--no-root-pypi",
          "--root-passwd", root_password], "devpi-init (the role's server dir)")
    launch_agents_dir.mkdir(parents=True, exist_ok=True)
    out_log.parent.mkdir(parents=True, exist_ok=True)
    with role.plist.open("wb") as handle:
        plistlib.dump(
            {
                "Label": label,
                "ProgramArguments": role.argv(),
                "RunAtLoad": True,
                "KeepAlive": True,
                "StandardOutPath": str(out_log),
                "StandardErrorPath": str(err_log),
            },
            handle,
        )
    role.plist.chmod(0o644)
    if not launchd.domain.startswith("gui/"):
        raise HarnessError(f"the role's `launchctl load` needs the SSH user at the console (gui/<uid>); "
                           f"this session's domain is {launchd.domain}: headless, it would load nothing")
    launchd.run("load", "-w", str(role.plist))
    wait_until(lambda: http_ok(f"{role.url}/+api", timeout=2), timeout, 0.2,
               f"the role's devpi on {role.url}", detail=lambda: tail(err_log))
    return role


def populate(role: AnsibleDevpi, *, root_password: str, mirror_url: str, user: str, user_password: str,
             index: str, upload: Path, uv: Path, mirrored: tuple[str, str]) -> None:
    """What the operator made by hand on the role's devpi: ``root/pypi`` mirroring
    ``mirror_url``, ``user`` with ``user/index`` (bases ``root/pypi``), ``upload``
    published to it, and ``mirrored`` (project, file name) fetched through the mirror
    (so ``+files`` holds a mirrored file too)."""
    from ..devpi_client import DevpiApi, ensure_index, ensure_user, simple_links, uv_publish

    api = DevpiApi(role.url, root_password)
    api.put_mirror("pypi", mirror_url, title="PyPI")
    ensure_user(role.url, ("root", root_password), user, user_password)
    ensure_index(role.url, (user, user_password), f"{user}/{index}", bases=["root/pypi"])
    proc = uv_publish(uv, upload, f"{role.url}/{user}/{index}/", user, user_password)
    if proc.returncode != 0:
        raise HarnessError(f"uv publish to the role's devpi failed:\n{proc.stdout}\n{proc.stderr}")
    project, filename = mirrored
    url = simple_links(role.url, "root/pypi", project)[filename]
    status = http("GET", url)[0]
    if status != 200:
        raise HarnessError(f"GET {url} through the role's mirror -> {status}")


def write_proxy_block(site_file: Path, address: str, port: int) -> None:
    """The role's Caddy site block: a plain proxy to devpi."""
    site_file.parent.mkdir(parents=True, exist_ok=True)
    site_file.write_text(f"{address} {{\n\treverse_proxy {LOOPBACK}:{port}\n}}\n")
