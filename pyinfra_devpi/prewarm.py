"""
Warming the mirror: the project list (``devpi_prewarm``), the marker that says which
list was warmed on which mirror, and the script the host runs to warm it.

Why: devpi-server 6.20.3 answers most of several simultaneous first requests for a
project on a cold mirror with ``200`` and an empty file list (docs/cold-mirror-race.md).
Once a project's simple page is cached (even expired) concurrent requests are fine, so
the deploy fetches the operator's projects through the mirror, one at a time, after a
converge. It does so only when the list, the index or the mirror changed: the marker
(``Layout.prewarm_marker``) holds a digest of (index, mirror settings, sorted
names) and the uuid of the server dir's ``.nodeinfo`` (a re-initialised server dir is a
new, cold mirror). The marker is read with the deploy's other small files in the one
``FileContents`` command, so a no-change rerun runs no extra command.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable

from packaging.requirements import InvalidRequirement, Requirement

# PEP 508 project names (the grammar pip and uv accept).
NAME_RE = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")
INDEX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def normalize(name: str) -> str:
    """PEP 503 normalisation (what devpi's ``+simple/<name>/`` URLs use)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(normalize(name), None)
    return tuple(seen)


# pip's options that name another requirements file (followed) or a constraints file
# (not followed: a constraint pins a version, it asks for no project).
_INCLUDE_RE = re.compile(r"^(-r|--requirement)(\s+|=)(?P<path>\S+)$")
_CONSTRAINT_RE = re.compile(r"^(-c|--constraint)(\s+|=)\S+$")


def names_from_requirements(text: str, include=None) -> list[str]:
    """Project names of a requirements file (``pip freeze``, ``uv pip compile`` output).

    Each requirement is parsed with ``packaging`` (extras, versions and environment
    markers included; a project behind a marker is warmed too: the mirror serves
    clients on every platform). ``-r``/``--requirement`` lines are passed to
    ``include(path)``, which returns that file's names. Other options (``-c``,
    ``--hash``, ``--index-url``, ``-e``, ...), comments, blank lines, and direct
    references (``name @ url``, paths, URLs: not served by an index) are skipped.
    """
    names = []
    joined = re.sub(r"\\\r?\n", " ", text)
    for raw in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            match = _INCLUDE_RE.match(line)
            if match:
                if include is None:
                    raise ValueError(f"cannot follow {line!r} here")
                names.extend(include(match.group("path")))
            continue
        # Per-requirement options (--hash=..., --config-settings ...) follow the requirement.
        requirement = re.split(r"\s--?[A-Za-z]", " " + line, maxsplit=1)[0].strip()
        if requirement.startswith((".", "/")) or "://" in requirement.split(";")[0].split("@")[0]:
            continue  # a local path or a URL
        try:
            parsed = Requirement(requirement)
        except InvalidRequirement:
            raise ValueError(f"cannot read a project name from the line {raw.strip()!r}") from None
        if parsed.url:
            continue
        names.append(parsed.name)
    return names


def names_from_toml(text: str) -> list[str]:
    """Project names of a ``uv.lock`` (``[[package]]``) or ``pylock.toml`` (``[[packages]]``),
    keeping only packages that come from an index."""
    data = tomllib.loads(text)
    names = []
    for package in data.get("package", []):  # uv.lock
        source = package.get("source", {})
        if "registry" in source:
            names.append(package["name"])
    for package in data.get("packages", []):  # pylock.toml (PEP 751)
        if not any(k in package for k in ("vcs", "directory", "archive")):
            names.append(package["name"])
    if not data.get("package") and not data.get("packages"):
        raise ValueError("no [[package]] (uv.lock) or [[packages]] (pylock.toml) tables")
    return names


class ProjectFileError(ValueError):
    """A requirements or lock file that cannot give project names; the message names it."""


def read_project_file(path: str, _seen: tuple[Path, ...] = ()) -> tuple[str, ...]:
    """Names from a requirements/lock file on the controller (``~`` is the controller's home,
    a relative path is relative to where pyinfra runs; an included file's path is
    relative to the file that includes it)."""
    file = Path(os.path.expanduser(path))
    if file.resolve() in _seen:
        raise ProjectFileError(f"{str(file)!r} includes itself (through {' -> '.join(str(p) for p in _seen)})")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ProjectFileError(
            f"cannot read {str(file)!r} on this machine ({reason}): use a list of "
            "project names, or the path of a requirements or lock file (uv.lock, pylock.toml)"
        ) from None

    def include(other: str) -> tuple[str, ...]:
        return read_project_file(str(file.parent / os.path.expanduser(other)), (*_seen, file.resolve()))

    try:
        if file.suffix == ".toml" or file.name == "uv.lock":
            names = names_from_toml(text)
        elif file.suffix == ".lock":  # uv.lock-like TOML, or a requirements file (rye, pdm export)
            try:
                names = names_from_toml(text)
            except (ValueError, tomllib.TOMLDecodeError):
                names = names_from_requirements(text, include)
        else:
            names = names_from_requirements(text, include)
    except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ProjectFileError(f"cannot read project names from {str(file)!r}: {error}") from None
    except ProjectFileError:
        raise  # an included file's own error, naming that file
    except ValueError as error:
        raise ProjectFileError(f"cannot read project names from {str(file)!r}: {error}") from None
    if not names:
        raise ProjectFileError(f"{str(file)!r} names no project to warm")
    return _unique(names)


def prewarm_projects(value: Any) -> tuple[str, ...]:
    """The ``devpi_prewarm`` value as normalised, de-duplicated names (in the given order).

    ``None`` or an empty list: nothing to warm. A list of project names. A string: the
    path of a requirements or lock file on the controller.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return read_project_file(value)
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            "use a list of project names such as ['requests', 'numpy'], or the path of a "
            "requirements or lock file on this machine"
        )
    for name in value:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a project name: use names such as 'requests' or 'zope.interface' "
                "(no versions, extras or URLs)"
            )
    return _unique(value)


def check_index(value: Any) -> str:
    if not isinstance(value, str) or not INDEX_RE.fullmatch(value):
        raise ValueError("use a devpi index as 'user/index', e.g. 'root/pypi'")
    return value


# --------------------------------------------------------------------------- marker


def digest(projects: Iterable[str], index: str, mirror: dict | None = None) -> str:
    """What was warmed: the index, its mirror settings and the (sorted) names."""
    payload = json.dumps(
        {"index": index, "mirror": mirror or {}, "projects": sorted(set(projects))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def marker_line(digest_hex: str, uuid: str) -> str:
    return f"{digest_hex} {uuid}\n"


def is_warm(marker: str | None, digest_hex: str, server_dir: dict) -> bool:
    """True when the marker says this list was warmed on this server dir."""
    uuid = (server_dir.get("nodeinfo") or {}).get("uuid") if server_dir.get("initialised") else None
    if not uuid or marker is None:
        return False
    return marker == marker_line(digest_hex, uuid)


# --------------------------------------------------------------------------- the host side

# Run on the host by the devpi venv's own Python (stdlib only), isolated (-I). One
# request at a time; the first answer that is not "200 with at least one file" stops
# the run naming the project, and the marker is written only after all succeed.
SCRIPT = r'''
import json, os, sys, urllib.error, urllib.request
from html.parser import HTMLParser

url, index, marker, tmp, digest, nodeinfo, timeout = sys.argv[1:8]
names = sys.argv[8:]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Links(HTMLParser):
    count = 0

    def handle_starttag(self, tag, attrs):
        if tag == "a" and dict(attrs).get("href"):
            self.count += 1


for number, name in enumerate(names, 1):
    page = "%s/%s/+simple/%s/" % (url, index, name)
    request = urllib.request.Request(page, headers={"Accept": "text/html"})
    try:
        with opener.open(request, timeout=float(timeout)) as response:
            status, body = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        status, body = error.code, ""
    except OSError as error:
        sys.exit("prewarm: GET %s failed for project %r: %s" % (page, name, error))
    if status != 200:
        sys.exit(
            "prewarm: GET %s answered %s for project %r: is it on the upstream of %s?"
            % (page, status, name, index)
        )
    links = Links()
    links.feed(body)
    if not links.count:
        sys.exit(
            "prewarm: devpi answered GET %s with 200 and an EMPTY file list for project %r. "
            "Either the project has no files upstream, or a client asked for it at the same "
            "time (devpi's cold-mirror race, docs/cold-mirror-race.md). Nothing was retried; "
            "rerun the deploy to warm it again." % (page, name)
        )
    # one line per project, as it is done: the operator's progress (flushed: stdout is a pipe)
    print("prewarm %d/%d: %s (%d files)" % (number, len(names), name, links.count), flush=True)

with open(nodeinfo, encoding="utf-8") as handle:
    uuid = json.load(handle)["uuid"]
with open(tmp, "w", encoding="utf-8") as handle:
    handle.write("%s %s\n" % (digest, uuid))
os.chmod(tmp, 0o644)
os.replace(tmp, marker)
print("prewarm: warmed %d projects on %s" % (len(names), index), flush=True)
'''
