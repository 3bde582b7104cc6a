"""The hermetic upstream index: a static PEP 503 index of self-built wheels served by
``python3 -m http.server`` on loopback."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterable

from .common import LOOPBACK, HarnessError
from .logs import tail
from .network import free_port, http, wait_for_port
from .processes import spawn, stop_process


def normalize_name(name: str) -> str:
    """PEP 503 normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclasses.dataclass(frozen=True)
class WheelInfo:
    name: str
    version: str
    filename: str
    path: Path
    sha256: str
    requires: tuple[str, ...]


_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    requires: Iterable[str] = (),
    *,
    modules: dict[str, str] | None = None,
    scripts: dict[str, str] | None = None,
) -> WheelInfo:
    """Write a minimal pure-Python ``py3-none-any`` wheel by hand (no build backend, no
    network): package ``<name_with_underscores>`` with ``__version__``, METADATA, WHEEL and a
    RECORD with sha256 digests. Byte-for-byte reproducible (fixed zip timestamps).
    ``modules``: more modules of the package (``{"main": source}``); ``scripts``: console
    scripts (``{"devpi-server": "devpi_server.main:main"}``)."""
    requires = tuple(requires)
    dist = re.sub(r"[-_.]+", "_", name).lower()
    dist_info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{dist}/__init__.py": (
            f'"""{name} {version}: a package built by the e2e harness."""\n'
            f'__version__ = "{version}"\n'
        ).encode(),
        **{f"{dist}/{module}.py": source.encode() for module, source in (modules or {}).items()},
    }
    if scripts:
        files[f"{dist_info}/entry_points.txt"] = (
            "[console_scripts]\n" + "".join(f"{n} = {target}\n" for n, target in scripts.items())
        ).encode()
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {name} (hermetic test package)",
        "Requires-Python: >=3.8",
        *(f"Requires-Dist: {req}" for req in requires),
        "",
        "",
    ]
    files[f"{dist_info}/METADATA"] = "\n".join(metadata).encode()
    files[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests-e2e-harness\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n"
    ).encode()
    files[f"{dist_info}/top_level.txt"] = f"{dist}\n".encode()
    record_lines = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{rel},sha256={digest},{len(data)}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, data in files.items():
            info = zipfile.ZipInfo(rel, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    dest_dir.mkdir(parents=True, exist_ok=True)
    filename = f"{dist}-{version}-py3-none-any.whl"
    path = dest_dir / filename
    path.write_bytes(buffer.getvalue())
    return WheelInfo(name, version, filename, path, hashlib.sha256(buffer.getvalue()).hexdigest(), requires)


@dataclasses.dataclass
class Upstream:
    """A static PEP 503 index on loopback: ``url`` is the ``/simple/`` URL."""

    root: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    #: ``wheels[filename]`` for every wheel; ``projects[normalized name]`` -> list of them.
    wheels: dict[str, WheelInfo] = dataclasses.field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/simple/"

    @property
    def projects(self) -> dict[str, list[WheelInfo]]:
        out: dict[str, list[WheelInfo]] = {}
        for wheel in self.wheels.values():
            out.setdefault(normalize_name(wheel.name), []).append(wheel)
        return out

    def wheel(self, name: str, version: str) -> WheelInfo:
        for info in self.wheels.values():
            if normalize_name(info.name) == normalize_name(name) and info.version == version:
                return info
        raise KeyError((name, version))

    def add_project(self, name: str, version: str, requires: Iterable[str] = (), **wheel: Any) -> WheelInfo:
        """Build one more wheel (``build_wheel``'s keywords) and republish the index
        (served immediately)."""
        info = build_wheel(self.root / "files", name, version, requires, **wheel)
        self.wheels[info.filename] = info
        self.write_index()
        return info

    def add_wheels(self, wheels: Iterable[Path]) -> None:
        """Publish wheels built elsewhere (copied into the index's files)."""
        files = self.root / "files"
        files.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            dest = files / wheel.name
            shutil.copyfile(wheel, dest)
            name, version = wheel.name.split("-")[:2]
            sha256 = hashlib.sha256(dest.read_bytes()).hexdigest()
            self.wheels[wheel.name] = WheelInfo(name, version, wheel.name, dest, sha256, ())
        self.write_index()

    def write_index(self) -> None:
        simple = self.root / "simple"
        simple.mkdir(parents=True, exist_ok=True)
        projects = self.projects
        root_links = "\n".join(
            f'    <a href="{html.escape(p)}/">{html.escape(p)}</a><br/>' for p in sorted(projects)
        )
        _atomic_write(simple / "index.html", _simple_page("Simple index", root_links))
        for project, wheels in projects.items():
            links = "\n".join(
                f'    <a href="../../files/{html.escape(w.filename)}#sha256={w.sha256}"'
                f' data-requires-python="&gt;=3.8">{html.escape(w.filename)}</a><br/>'
                for w in sorted(wheels, key=lambda w: w.filename)
            )
            (simple / project).mkdir(exist_ok=True)
            _atomic_write(simple / project / "index.html", _simple_page(f"Links for {project}", links))

    def requests(self) -> list[str]:
        """Request lines http.server logged so far (e.g. ``GET /simple/hermetic-alpha/ HTTP/1.1``)."""
        return re.findall(r'"((?:GET|HEAD|POST) [^"]*)"', self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        stop_process(self.proc)


def _simple_page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    )


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


DEFAULT_UPSTREAM_PROJECTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("hermetic-alpha", "1.0", ()),
    ("hermetic-alpha", "1.1", ()),
    ("hermetic-beta", "2.0", ("hermetic-alpha>=1.0",)),
)


def start_upstream(
    root: Path,
    python: Path | str = sys.executable,
    projects: Iterable[tuple[str, str, Iterable[str]]] = DEFAULT_UPSTREAM_PROJECTS,
    *,
    attempts: int = 3,
) -> Upstream:
    """Build the wheels, write the simple index and serve ``root`` on a loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    upstream = Upstream(root=root, port=0, log_path=root.parent / f"{root.name}-http.log")
    for name, version, requires in projects:
        info = build_wheel(root / "files", name, version, requires)
        upstream.wheels[info.filename] = info
    upstream.write_index()
    last_error = ""
    for _ in range(attempts):
        upstream.port = free_port()
        upstream.proc = spawn(
            [str(python), "-m", "http.server", "--bind", LOOPBACK, "--directory", str(root), str(upstream.port)],
            upstream.log_path,
        )
        try:
            wait_for_port(upstream.port, timeout=15, proc=upstream.proc, what="http.server")
            status = http("GET", upstream.url)[0]
            if status != 200:
                raise HarnessError(f"GET {upstream.url} -> {status}")
            return upstream
        except HarnessError as error:
            upstream.stop()
            last_error = f"{error}\n{tail(upstream.log_path)}"
    raise HarnessError(f"upstream index did not start:\n{last_error}")


def rebuild_wheel(wheel: Path, dest_dir: Path, version: str, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of a real pure-Python wheel as another ``version``, with ``edits``
    (``{"pkg/module.py": (old, new)}``: each ``old`` must occur) applied: the dist-info
    renamed, METADATA's version and the RECORD's digests rewritten. Returns the new wheel."""
    name, old_version = wheel.name.split("-")[:2]
    old_info, new_info = f"{name}-{old_version}.dist-info", f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as archive:
        for item in archive.infolist():
            files[item.filename.replace(old_info, new_info, 1)] = archive.read(item)
    for rel, (old, new) in edits.items():
        text = files[rel].decode()
        if old not in text:
            raise HarnessError(f"{wheel.name}: {old!r} not in {rel}")
        files[rel] = text.replace(old, new).encode()
    metadata = files[f"{new_info}/METADATA"].decode()
    files[f"{new_info}/METADATA"] = metadata.replace(f"\nVersion: {old_version}\n", f"\nVersion: {version}\n", 1).encode()
    record = []
    for rel, data in files.items():
        if rel == f"{new_info}/RECORD":
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{new_info}/RECORD,,")
    files[f"{new_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / wheel.name.replace(f"-{old_version}-", f"-{version}-", 1)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, data in files.items():
            info = zipfile.ZipInfo(rel, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def wheels_of_lock(lock: Path, dest_dir: Path, uv: Path | str, python: Path | str) -> list[Path]:
    """Every wheel of a hashed requirements lock (sdists built into wheels), fetched from
    PyPI with pip in a scratch venv (``pip wheel --isolated``: the machine's pip config
    and find-links are not used)."""
    scratch = dest_dir.parent / (dest_dir.name + "-pip")
    subprocess.run([str(uv), "venv", "--quiet", "--seed", "--python", str(python), str(scratch)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run(
        [str(scratch / "bin" / "pip"), "wheel", "--isolated", "--quiet", "--require-hashes", "-r", str(lock),
         "-w", str(dest_dir)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    if proc.returncode != 0:
        raise HarnessError(f"pip wheel -r {lock} failed:\n{proc.stdout}{proc.stderr}")
    return sorted(dest_dir.glob("*.whl"))


# devpi-server / devpi-web releases that install, import and report their version, but
# exit at once when started: what a rollback is tested and measured with.
UNSTARTABLE_SERVER = "6.20.99"
UNSTARTABLE_WEB = "5.1.99"


def add_unstartable_devpi(upstream: Upstream, built_by: str) -> None:
    """Add devpi-server UNSTARTABLE_SERVER and devpi-web UNSTARTABLE_WEB to ``upstream``
    (setuptools too, which the pins also ask for)."""
    main = (
        'DATABASE_VERSION = "4"\n'
        "import sys\n"
        "def main():\n"
        '    if "--version" in sys.argv:\n'
        f'        print("{UNSTARTABLE_SERVER}")\n'
        "        return 0\n"
        f'    sys.stderr.write("devpi-server {UNSTARTABLE_SERVER}: a release that cannot start ({built_by})\\n")\n'
        "    return 1\n"
    )
    upstream.add_project("devpi-server", UNSTARTABLE_SERVER, modules={"main": main},
                         scripts={"devpi-server": "devpi_server.main:main"})
    upstream.add_project("devpi-web", UNSTARTABLE_WEB, modules={"main": ""})
    upstream.add_project("setuptools", "80.0")
