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

# The keys devpi-server writes into ``.nodeinfo`` that are useful to an operator.
NODEINFO_KEYS = ("role", "uuid", "nodeinfo_version", "primary-url")


def _key_values(output: list[str]) -> dict[str, str]:
    values = {}
    for line in output:
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


class ServerDir(FactBase):
    """
    The state of a devpi server dir: whether it exists and holds data, devpi's
    ``.nodeinfo`` (its own "initialised" marker) and ``.serverversion`` (the DB version).

    Returns a dict: ``exists``, ``is_dir``, ``mode`` (``ls -ld`` mode string), ``entries`` (names in
    the dir, hidden ones included), ``has_data``, ``initialised``, ``nodeinfo``
    (role, uuid, ...), ``serverversion``; with ``secret_file``: ``secret_file``
    (``exists``/``mode``, never the content).
    """

    def command(self, path, secret_file=None):
        quoted = shlex.quote(path)
        parts = [
            f"d={quoted}",
            'if [ ! -e "$d" ]; then echo "exists=false"',
            'else echo "exists=true"',
            'if [ -d "$d" ]; then echo "is_dir=true"; else echo "is_dir=false"; fi',
            'echo "mode=$(ls -ld "$d" | cut -c1-10)"',
            'if [ -d "$d" ]; then echo "entries=$(ls -A "$d" | wc -l | tr -d " ")"; fi',
            'if [ -f "$d/.serverversion" ]; then echo "serverversion=$(head -n 1 "$d/.serverversion")"; fi',
            'if [ -f "$d/.nodeinfo" ]; then echo "@nodeinfo"; cat "$d/.nodeinfo"; echo; echo "@end"; fi',
            "fi",
        ]
        if secret_file:
            parts += [
                f"s={shlex.quote(secret_file)}",
                'if [ -f "$s" ]; then echo "secret_mode=$(ls -ld "$s" | cut -c1-10)";'
                ' else echo "secret_mode="; fi',
            ]
        parts.append("true")
        return "\n".join(parts)

    def process(self, output):
        nodeinfo_lines: list[str] = []
        plain: list[str] = []
        in_nodeinfo = False
        for line in output:
            if line == "@nodeinfo":
                in_nodeinfo = True
            elif line == "@end":
                in_nodeinfo = False
            elif in_nodeinfo:
                nodeinfo_lines.append(line)
            else:
                plain.append(line)
        if in_nodeinfo:
            raise FactProcessError("ServerDir: unterminated .nodeinfo block")

        values = _key_values(plain)
        if "exists" not in values:
            raise FactProcessError(f"ServerDir: unexpected output: {output[:3]!r}")

        secret = None
        if "secret_mode" in values:
            mode = values["secret_mode"]
            secret = {"exists": bool(mode), "mode": mode or None}

        if values["exists"] != "true":
            result = {
                "exists": False, "is_dir": False, "mode": None, "entries": 0, "has_data": False,
                "initialised": False, "nodeinfo": None, "serverversion": None,
            }
            if secret is not None:
                result["secret_file"] = secret
            return result

        nodeinfo = None
        if nodeinfo_lines:
            text = "\n".join(nodeinfo_lines).strip()
            try:
                data = json.loads(text) if text else {}
            except ValueError:
                data = None
            # A .nodeinfo devpi cannot read is still devpi's marker: report it as
            # initialised (so nothing re-initialises it) with unknown details.
            nodeinfo = (
                {k: data.get(k) for k in NODEINFO_KEYS if k in data}
                if isinstance(data, dict)
                else {"unreadable": True}
            )

        entries = int(values.get("entries") or 0)
        result = {
            "exists": True,
            "is_dir": values.get("is_dir") == "true",
            "mode": values.get("mode"),
            "entries": entries,
            "has_data": entries > 0,
            "initialised": nodeinfo is not None,
            "nodeinfo": nodeinfo,
            "serverversion": values.get("serverversion") or None,
        }
        if secret is not None:
            result["secret_file"] = secret
        return result


# Run by the venv's own interpreter, isolated from the user's environment.
_VERSIONS_SCRIPT = (
    "import importlib.metadata as m, json, sys\n"
    "out = {}\n"
    "for name in ('devpi-server', 'devpi-web'):\n"
    "    try:\n"
    "        out[name] = m.version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        out[name] = None\n"
    "out['python'] = '%d.%d.%d' % sys.version_info[:3]\n"
    "print(json.dumps(out, sort_keys=True))\n"
)


class VenvVersions(FactBase):
    """
    The devpi-server and devpi-web versions installed in a venv, read with the
    venv's own Python. Returns ``None`` when there is no usable venv, else a dict:
    ``devpi-server``, ``devpi-web`` (each a version or ``None``), ``python``, and
    ``path`` (the venv's real directory, the live link resolved).
    """

    def command(self, venv):
        quoted = shlex.quote(venv)
        script = shlex.quote(_VERSIONS_SCRIPT)
        return (
            f"v={quoted}; "
            'if [ -x "$v/bin/python" ]; then '
            'echo "path=$(cd "$v" && pwd -P)"; '
            f'"$v/bin/python" -I -c {script} 2>/dev/null || echo "broken=true"; '
            'else echo "missing=true"; fi'
        )

    def process(self, output):
        values = _key_values([line for line in output if not line.startswith("{")])
        if values.get("missing") == "true":
            return None
        if values.get("broken") == "true":
            # The interpreter exists but cannot run: treat it as no venv to rebuild.
            return {"devpi-server": None, "devpi-web": None, "python": None, "path": values.get("path")}
        for line in output:
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError as e:
                    raise FactProcessError(f"VenvVersions: bad JSON {line!r}: {e}") from None
                data["path"] = values.get("path")
                return data
        raise FactProcessError(f"VenvVersions: unexpected output: {output[:3]!r}")


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
        values = _key_values(output)
        code = values.get("status", "")
        if not code.isdigit():
            raise FactProcessError(f"Health: unexpected output: {output[:3]!r}")
        status = int(code)
        return {"status": status or None, "ok": status == 200}
