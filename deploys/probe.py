"""
First contact with a real Mac, before its first converge:
``pyinfra inventories/indri.py deploys/probe.py``.

It changes nothing on the host and reads no secret (no ``op``, no password: only the
host data's paths, label and port are used). It runs on the host every command whose
output the deploy parses, each as the deploy builds it (the facts' own ``command()``),
plus the raw launchctl / ps / ls / df / sw_vers / sudo answers those commands wrap,
and it opens a ``direct-tcpip`` channel to devpi's port as the deploy does. Everything
is written, with each command's exit code and the host's macOS version, to
``tests/fixtures/hosts/<host>-<date>/`` on the controller (``$PYINFRA_DEVPI_PROBE_DIR``
chooses another parent dir): one file per command and ``index.json`` naming each
command, its exit code and the fact that parses it. ``tests/test_probe_fixtures.py``
replays every capture there through those parsers. Two round trips: the login session
(its home and uid shape every other command), then one ``FactBatch`` of the rest.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import sys
from pathlib import Path

# The project's packages (facts, operations, pyinfra_devpi) live at the repo root.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pyinfra import host, logger  # noqa: E402
from pyinfra.api import deploy  # noqa: E402

from facts.batch import FactBatch, command_text  # noqa: E402
from facts.deploy_lock import DeployLock  # noqa: E402
from facts.files import FileMode  # noqa: E402
from facts.launchd import LaunchdJob, LaunchdSession  # noqa: E402
from facts.preflight import HostReadiness  # noqa: E402
from facts.probe import RenameSwap, SessionProcesses, parse_sw_vers, scrub  # noqa: E402
from facts.snapshot import FactRead  # noqa: E402
from facts.status import DevpiAnswers  # noqa: E402
from operations.devpi import server_dir_read, venv_read  # noqa: E402
from operations.preflight import tools_read  # noqa: E402
from operations.restore import SWAP  # noqa: E402
from pyinfra_devpi import layout  # noqa: E402
from pyinfra_devpi.config import build_config  # noqa: E402
from pyinfra_devpi.errors import DeployError  # noqa: E402
from pyinfra_devpi.launchd_scope import SYSTEM_DOMAIN, job_place  # noqa: E402
from pyinfra_devpi.preflight import owned_paths  # noqa: E402
from pyinfra_devpi.tunnel import _opener, requester  # noqa: E402

q = shlex.quote

OUTPUT_ENV = "PYINFRA_DEVPI_PROBE_DIR"
DEFAULT_OUTPUT = REPO / "tests" / "fixtures" / "hosts"
INDEX = "index.json"
FORMAT = 1

# Host data the index keeps (the replay builds the config from it). Nothing that names
# a secret: passwords and their references stay out.
KEPT_KEYS = (
    "devpi_label", "devpi_host", "devpi_port", "devpi_home", "devpi_log_dir", "devpi_launch_agents_dir",
    "devpi_launch_daemons_dir", "devpi_launchd_scope", "devpi_launchd_domain", "devpi_python", "devpi_uv",
    "devpi_caddy_bin", "devpi_caddy_restart", "devpi_caddy_site_address", "devpi_caddy_site_file",
    "devpi_outside_url", "devpi_allow_remote_bind",
)


def raw(text: str) -> str:
    """A command whose whole answer (stderr too) is captured as it is."""
    return "exec 2>&1\n" + text


class Capture:
    """One command of the probe: its file name, shell text, and who reads its output."""

    def __init__(self, name: str, text: str, reads_it: str, fact: type | None = None, arguments: dict | None = None):
        self.name, self.text, self.reads_it = name, text, reads_it
        self.fact, self.arguments = fact, arguments or {}

    @classmethod
    def of(cls, name: str, fact_read: FactRead, reads_it: str) -> "Capture":
        return cls(name, command_text(fact_read.fact, fact_read.kwargs), reads_it, fact_read.fact, fact_read.kwargs)

    def entry(self, status: int) -> dict:
        return {
            "name": self.name,
            "file": f"{self.name}.txt",
            "exit": status,
            "reader": f"{self.fact.__module__}.{self.fact.__qualname__}" if self.fact else None,
            "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in self.arguments.items()},
            "reads_it": self.reads_it,
            "command": self.text,
        }


def domain_print(domain: str) -> str:
    # The domain's own listing is long and holds other jobs' environments: only its
    # exit status (what HostReadiness reads) and an error's text are kept.
    return raw(
        f"out=$(launchctl print {q(domain)} 2>&1); rc=$?\n"
        'if [ "$rc" -eq 0 ]; then printf \'(answered with %s lines, not kept)\\n\' '
        '"$(printf \'%s\\n\' "$out" | wc -l | tr -d \' \')"; else printf \'%s\\n\' "$out"; fi\n'
        'exit "$rc"'
    )


def captures(config, session: dict) -> list[Capture]:
    """Every command of the second round trip, in order."""
    place = job_place(config, session)
    paths = config.paths
    uid = session["uid"]
    domains = {"gui": f"gui/{uid}", "user": f"user/{uid}", "system": SYSTEM_DOMAIN}
    home = q(paths.home)
    out = [
        Capture("uname", raw("uname -srm"), "the index (the host's OS)"),
        Capture("sw_vers", raw("sw_vers"), "the index (macOS version); absent off macOS"),
        Capture("managername", raw("launchctl managername"),
                "MACOS.md: 'Background' over SSH, 'Aqua' in Terminal.app"),
        Capture("console", raw("ls -ln /dev/console"),
                "LaunchdSession/_DOMAIN_SHELL: awk '{print $3}' is the console owner"),
    ]
    for kind, domain in domains.items():
        out.append(Capture(f"domain-{kind}", domain_print(domain),
                           "HostReadiness: `launchctl print <domain>`'s exit status (domain_status)",
                           arguments={"domain": domain}))
    for kind, domain in domains.items():
        out.append(Capture.of(f"job-{kind}", FactRead.of(LaunchdJob, label=config.label, domain=domain),
                              "LaunchdJob: devpi's job (operations/launchd, operations/retire)"))
    out.append(Capture.of("job-session-rule", FactRead.of(LaunchdJob, label=config.label),
                          "LaunchdJob without a domain (deploys/status.py): the session rule on the host"))
    out.append(Capture.of("backup-job", FactRead.of(LaunchdJob, label=paths.backup_label, domain=place.domain),
                          "LaunchdJob: the backup job (operations/backup)"))
    caddy_label = (config.caddy_restart or {}).get("label")
    if caddy_label:
        for kind, domain in domains.items():
            out.append(Capture.of(f"caddy-job-{kind}", FactRead.of(LaunchdJob, label=caddy_label, domain=domain),
                                  "LaunchdJob: Caddy's job (devpi_caddy_restart's label)"))
    for kind, domain in domains.items():
        out.append(Capture(f"disabled-{kind}", raw(f"launchctl print-disabled {q(domain)}"),
                           "LaunchdJob: grep -F '\"<label>\" => true|disabled' (@disabled)",
                           arguments={"domain": domain}))
    out += [
        Capture.of("session-processes", FactRead.of(SessionProcesses, target=place.target(config.label)),
                   "the deploy lock's dl_anchor / dl_started (ps -o comm=, ps -o lstart=)"),
        Capture("ps-lstart", raw("ps -o lstart= -p $$"), "the deploy lock's dl_started (compared as text)"),
        # As the preflight asks it, with root forced so that sudo is asked too.
        Capture.of("readiness", FactRead.of(HostReadiness, domain=place.domain, path=paths.home,
                                            owned=owned_paths(config), root=True, root_if=()),
                   "HostReadiness, then pyinfra_devpi.preflight.check"),
        Capture("df", raw(f"d={home}\nwhile [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done\ndf -k \"$d\""),
                "HostReadiness: facts.preflight.parse_df"),
        Capture("sudo", raw("if command -v sudo >/dev/null 2>&1; then sudo -n true </dev/null; "
                            "else echo 'no sudo on PATH'; exit 127; fi"),
                "HostReadiness: sudo_status (the preflight's sudo problem)"),
        Capture("ls", raw("for p in " + " ".join(q(p) for p in _listed_paths(config)) + "; do "
                          'ls -lnd "$p" || true; done'),
                "HostReadiness (owner=, ls -lnd | awk $3) and FileMode (ls -lnLd)",
                arguments={"paths": list(_listed_paths(config))}),
        Capture.of("plist-mode", FactRead.of(FileMode, path=paths.plist_file), "FileMode (operations/launchd)"),
        Capture.of("tools", tools_read(config), "HostTools, then pyinfra_devpi.preflight.check"),
        Capture.of("deploy-lock", FactRead.of(DeployLock, home=paths.home, wait=0), "DeployLock (operations/deploy_lock)"),
        Capture.of("serverdir", server_dir_read(config), "ServerDir (operations/devpi)"),
        Capture.of("venv-versions", venv_read(config), "VenvVersions (operations/devpi)"),
        Capture.of("answers", FactRead.of(DevpiAnswers, url=config.local_url), "DevpiAnswers (deploys/status.py)"),
        Capture.of("rename-swap", FactRead.of(RenameSwap, home=paths.home, swap=SWAP,
                                              pythons=(paths.bin("python"), *layout.BOOTSTRAP_PYTHON_CANDIDATES)),
                   "operations/restore SWAP (renameat2 / renamex_np) and renamex_np itself"),
    ]
    return out


def _listed_paths(config) -> tuple[str, ...]:
    paths = config.paths
    return tuple(dict.fromkeys((
        "/dev/console", paths.home, paths.server_dir, paths.launch_agents_dir, paths.plist_file,
        paths.agent_plist_file, paths.daemon_plist_file, paths.log_dir, paths.caddy_site_file,
    )))


def tunnel(config) -> dict:
    """What the deploy's channel to devpi's port does: opened or not, and ``GET /+api``."""
    address, port = config.local_address, config.port
    found = {"address": address, "port": port, "connector": type(host.connector).__name__,
             "opened": False, "error": None, "api_status": None}
    try:
        opener = _opener(host, address, port, timeout=10)
        opener().close()
        found["opened"] = True
        header = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        found["api_status"], _ = requester(opener, header, 10)("GET", "/+api")
    except Exception as error:  # noqa: BLE001 - what happened is the capture, not a failure
        found["error"] = f"{type(error).__name__}: {error}"
    return found


def output_dir() -> Path:
    parent = Path(os.environ.get(OUTPUT_ENV) or DEFAULT_OUTPUT)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", host.name)
    return parent / f"{name}-{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"


def write(directory: Path, index: dict, outputs: dict[str, list[str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.txt"):  # a second probe the same day replaces the first
        old.unlink()
    for name, lines in outputs.items():
        (directory / f"{name}.txt").write_text("".join(line + "\n" for line in scrub(lines)))
    (directory / INDEX).write_text(json.dumps(index, indent=2, sort_keys=False, default=str) + "\n")


@deploy("devpi probe")
def probe():
    """Capture what the deploy would parse on this host; change nothing."""
    data = host.data.dict()
    session_command = LaunchdSession().command()
    (first,) = host.get_fact(FactBatch, commands=[session_command])
    session = LaunchdSession().process(first["lines"])
    config = build_config(data, session["home"])
    planned = captures(config, session)
    results = host.get_fact(FactBatch, commands=[c.text for c in planned])
    if not isinstance(results, list) or len(results) != len(planned):
        raise DeployError(f"{host.name}: the probe's batch gave {results!r}")

    session_capture = Capture("session", session_command, "LaunchdSession (every deploy's first command)",
                              LaunchdSession)
    entries = [session_capture.entry(first["status"])]
    outputs = {"session": first["lines"]}
    for capture, result in zip(planned, results):
        entries.append(capture.entry(result["status"]))
        outputs[capture.name] = result["lines"]

    uname = " ".join(outputs["uname"]).strip()
    sw_vers = parse_sw_vers(outputs["sw_vers"])
    index = {
        "format": FORMAT,
        "host": host.name,
        "captured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "os": {"uname": uname, "macos": sw_vers.get("ProductVersion"), "build": sw_vers.get("BuildVersion")},
        "host_data": {k: data[k] for k in KEPT_KEYS if data.get(k) is not None},
        "session": session,
        "tunnel": tunnel(config),
        "commands": entries,
    }
    directory = output_dir()
    write(directory, index, outputs)
    macos = f"macOS {index['os']['macos']}" if index["os"]["macos"] else f"not macOS ({uname})"
    host.log(f"probe: {len(entries)} commands captured into {directory} ({macos}); nothing was changed",
             logger.info)


probe()
