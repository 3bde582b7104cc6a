"""
Facts about a devpi installation: its server dir, its venv and its health.

Each fact is one shell command that works with macOS's BSD userland and with Linux,
and always exits 0 (pyinfra treats a non-zero exit as a failed fact), reporting
what it found in ``key=value`` lines or marked blocks that ``process`` parses.
"""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, split_blocks
from facts.files import Damaged, decode_text
from pyinfra_devpi import shell_script
from pyinfra_devpi.layout import NODEINFO, SERVERVERSION, SQLITE, WHOOSH_INDEX_DIR, venv_bin

# The keys devpi-server writes into ``.nodeinfo`` that are useful to an operator.
NODEINFO_KEYS = ("role", "uuid", "nodeinfo_version", "primary-url")


class ServerDir(FactBase):
    """
    The state of a devpi server dir: whether it exists and holds data, devpi's
    ``.nodeinfo`` (written by devpi-init before the database), ``.serverversion`` (the
    DB version) and the database itself (``.sqlite``, written last).

    Returns a dict: ``exists``, ``is_dir``, ``mode`` (``ls -ld`` mode string), ``entries`` (names in
    the dir, hidden ones included), ``has_data``, ``initialised`` (``.nodeinfo`` exists),
    ``nodeinfo`` (role, uuid, ...), ``has_serverversion`` (the file exists),
    ``serverversion`` (its first line; ``None`` when missing or empty), ``damaged``
    (``{file name: what is wrong}`` for devpi's own ``.nodeinfo`` / ``.serverversion``
    when devpi could not read it: never replaced by the deploy), ``has_database``
    (a non-empty ``.sqlite``), ``complete`` (all three: what a finished devpi-init
    leaves), ``whoosh_index_kib`` (the size of devpi-web's Whoosh search index
    ``.indices`` in KiB, ``du -sk``; ``None`` when there is none),
    ``whoosh_project_index`` (devpi-web's project index in it exists: ``_project_*.toc``); with ``secret_file``:
    ``secret_file`` (``exists``/``mode``, never the content).
    A dir that ``has_data`` but is not ``complete`` is neither new nor usable.
    """

    def command(self, path, secret_file=None):
        # facts/server_dir.sh
        return shell_script.render(
            __file__, "server_dir", d=path, s=secret_file, serverversion_name=SERVERVERSION,
            nodeinfo_name=NODEINFO, sqlite_name=SQLITE, whoosh_index_name=WHOOSH_INDEX_DIR,
        )

    def process(self, output):
        plain, blocks = split_blocks(output, ("nodeinfo",), "ServerDir")
        nodeinfo_lines = blocks.get("nodeinfo", [])
        values = key_values(plain)
        if "exists" not in values:
            raise FactProcessError(f"ServerDir: unexpected output: {output[:3]!r}")

        secret = None
        if "secret_mode" in values:
            mode = values["secret_mode"]
            secret = {"exists": bool(mode), "mode": mode or None}

        if values["exists"] != "true":
            result = {
                "exists": False, "is_dir": False, "mode": None, "entries": 0, "has_data": False,
                "initialised": False, "nodeinfo": None, "has_serverversion": False, "serverversion": None,
                "has_database": False, "complete": False, "whoosh_index_kib": None, "whoosh_project_index": False,
                "damaged": {},
            }
            if secret is not None:
                result["secret_file"] = secret
            return result

        nodeinfo = None
        damaged = {}
        if "nodeinfo" in blocks:
            text = decode_text(nodeinfo_lines)
            data, damage = _json_object(text)
            # A .nodeinfo devpi cannot read is still devpi's marker: report it as
            # initialised (so nothing re-initialises it) with unknown details.
            nodeinfo = {k: data.get(k) for k in NODEINFO_KEYS if k in data} if data is not None else {"unreadable": True}
            if damage:
                damaged[NODEINFO] = damage

        entries = int(values.get("entries") or 0)
        serverversion = values.get("serverversion") or None
        if serverversion is not None and not serverversion.isdigit():
            damaged[SERVERVERSION] = f"not a database version ({serverversion!r}, non-ASCII bytes as '?')"
        has_database = values.get("has_database") == "true"
        index_kib = values.get("whoosh_index_kib")
        result = {
            "exists": True,
            "is_dir": values.get("is_dir") == "true",
            "mode": values.get("mode"),
            "entries": entries,
            "has_data": entries > 0,
            "initialised": nodeinfo is not None,
            "nodeinfo": nodeinfo,
            "has_serverversion": values.get("has_serverversion") == "true",
            "serverversion": serverversion,
            "has_database": has_database,
            "complete": nodeinfo is not None and has_database and serverversion is not None,
            # A dir du cannot size (unreadable) still exists: 0, so it is reported.
            "whoosh_index_kib": None if index_kib is None else int(index_kib) if index_kib.isdigit() else 0,
            "whoosh_project_index": values.get("whoosh_project_index") == "true",
            "damaged": damaged,
        }
        if secret is not None:
            result["secret_file"] = secret
        if "foreign_count" in values:
            # Only for a dir not managed yet: {"count", "first"} of each kind.
            result["foreign_owned"] = {"count": int(values["foreign_count"] or 0),
                                       "first": values.get("foreign_first") or None}
            result["writable_by_others"] = {"count": int(values["writable_count"] or 0),
                                            "first": values.get("writable_first") or None}
        return result


def _json_object(text: str) -> tuple[dict | None, str | None]:
    """devpi's JSON object in ``text``, or what is wrong with it (an empty file is
    devpi-init's first step: no details, not damage)."""
    if isinstance(text, Damaged):
        return None, text.reason
    if not text.strip():
        return {}, None
    try:
        data = json.loads(text)
    except ValueError as error:
        return None, f"not JSON ({error})"
    return (data, None) if isinstance(data, dict) else (None, "not a JSON object")


# The distributions the fact reports, by the directory name an installer gives their
# metadata (``<name>-<version>.dist-info``, name escaped as in wheel file names).
_DISTS = {"devpi-server": "devpi_server", "devpi-web": "devpi_web"}


class VenvVersions(FactBase):
    """
    The devpi-server and devpi-web versions installed in a venv. Returns ``None``
    when there is no venv interpreter, else a dict: ``devpi-server``, ``devpi-web``
    (each a version or ``None``), ``python`` (from ``pyvenv.cfg``), ``path`` (the
    venv's real directory, the live link resolved) and ``link`` (what the live link
    says, as written; ``None`` when the venv is a real directory, e.g. made by hand) and
    ``database_version`` (``DATABASE_VERSION`` in its devpi-server's source: the
    ``.serverversion`` it reads and writes).

    Read from the ``.dist-info`` directory names rather than by importing
    ``importlib.metadata`` in the venv: this fact runs on every converge, and the
    import costs ~60 ms of the rerun where listing costs ~3. The interpreter is
    still started once (``-I -S``, ~15 ms): a venv whose Python cannot run is
    reported with no versions, so it is rebuilt.
    """

    def command(self, venv):
        quoted = shlex.quote(venv)
        globs = " ".join(f'"$v"/lib/python*/site-packages/{d}-*.dist-info' for d in _DISTS.values())
        python = venv_bin('"$v"', "python")
        return (
            f"v={quoted}; "
            f"if [ -x {python} ]; then "
            'echo "path=$(cd "$v" && pwd -P)"; '
            'if [ -L "$v" ]; then echo "link=$(readlink "$v")"; fi; '
            f'{python} -I -S -c "" 2>/dev/null || echo "broken=true"; '
            f'for d in {globs}; do if [ -d "$d" ]; then echo "dist=${{d##*/}}"; fi; done; '
            # devpi-server's database version, read from its source (no import: ~1 ms).
            "for m in \"$v\"/lib/python*/site-packages/devpi_server/main.py; do if [ -f \"$m\" ]; then "
            "sed -n 's/^DATABASE_VERSION *= *\"\\([^\"]*\\)\".*/database_version=\\1/p' \"$m\"; "
            "fi; done; "
            'if [ -f "$v/pyvenv.cfg" ]; then '
            "sed -n 's/^version_info *= */python=/p; s/^version *= */python=/p' \"$v/pyvenv.cfg\"; fi; "
            'else echo "missing=true"; fi'
        )

    def process(self, output):
        values = key_values(output)
        if values.get("missing") == "true":
            return None
        if "path" not in values:
            raise FactProcessError(f"VenvVersions: unexpected output: {output[:3]!r}")
        result = {name: None for name in _DISTS}
        result["python"] = values.get("python") or None
        result["path"] = values["path"]
        result["link"] = values.get("link") or None
        result["database_version"] = values.get("database_version") or None
        if values.get("broken") == "true":
            # The interpreter exists but cannot run: report no versions, so it is rebuilt.
            return result
        found: dict[str, set[str]] = {name: set() for name in _DISTS}
        for line in output:
            if not line.startswith("dist="):
                continue
            stem = line[len("dist="):].removesuffix(".dist-info")
            for name, escaped in _DISTS.items():
                if stem.lower().startswith(escaped + "-"):
                    found[name].add(stem[len(escaped) + 1:])
        for name, versions in found.items():
            # Two metadata dirs for one distribution is a damaged venv: no version,
            # so the deploy builds a clean one rather than guess which is live.
            result[name] = versions.pop() if len(versions) == 1 else None
        return result


class Health(FactBase):
    """
    The HTTP status of ``GET <url>/+api`` (devpi's API root), or ``None`` when
    nothing answers. Uses curl, which macOS ships.
    """

    def command(self, url):
        api = shlex.quote(url.rstrip("/") + "/+api")
        return (
            f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {api} 2>/dev/null); "
            'echo "status=${code:-000}"'
        )

    def process(self, output):
        values = key_values(output)
        code = values.get("status", "")
        if not code.isdigit():
            raise FactProcessError(f"Health: unexpected output: {output[:3]!r}")
        status = int(code)
        return {"status": status or None, "ok": status == 200}
