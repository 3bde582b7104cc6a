"""
Facts for ``deploys/status.py``: what devpi answers on its loopback port, how much disk
a directory uses, and the last lines of a log file.

Each is one shell command for macOS's BSD userland and Linux alike, always exits 0, and
reports in ``key=value`` lines or marked blocks that ``process`` parses.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, split_blocks


class DevpiAnswers(FactBase):
    """
    What devpi answers on ``url`` (its loopback address, asked on the host):
    ``api_status`` (``GET /+api``'s HTTP status, ``None`` when nothing answers),
    ``uuid`` (its ``X-DEVPI-UUID``: the server dir it serves), ``status`` (devpi's
    ``GET /+status`` JSON ``result``: serial, event serial, versions, ...; ``None`` when
    it gave none) and ``now`` (the host's clock, for the ages of devpi's timestamps).

    + url: devpi's local URL, e.g. ``http://127.0.0.1:3141``
    """

    def command(self, url):
        base = url.rstrip("/")
        accept = "-H 'Accept: application/json'"
        return "\n".join(
            [
                f"hdr=$(curl -s -D - -o /dev/null --max-time 5 {accept} {shlex.quote(base + '/+api')} 2>/dev/null "
                "| tr -d '\\r')",
                "printf '%s\\n' \"$hdr\" | sed -n 's/^HTTP\\/[0-9.]* \\([0-9]*\\).*/api_status=\\1/p' | tail -n 1",
                "printf '%s\\n' \"$hdr\" | sed -n 's/^[Xx]-[Dd][Ee][Vv][Pp][Ii]-[Uu][Uu][Ii][Dd]: *\\(.*\\)/uuid=\\1/p'"
                " | tail -n 1",
                "echo '@status'",
                f"curl -s --max-time 5 {accept} {shlex.quote(base + '/+status')} 2>/dev/null",
                "echo; echo '@end'",
                'echo "now=$(date +%s)"',
                "true",
            ]
        )

    def process(self, output):
        plain, blocks = split_blocks(output, ("status",), "DevpiAnswers")
        values = key_values(plain)
        if "now" not in values:
            raise FactProcessError(f"DevpiAnswers: unexpected output: {output[:3]!r}")
        code = values.get("api_status", "")
        status = None
        text = "\n".join(blocks.get("status", [])).strip()
        if text:
            try:
                document = json.loads(text)
            except ValueError:
                document = None
            if isinstance(document, dict) and isinstance(document.get("result"), dict):
                status = document["result"]
        return {
            "api_status": int(code) if code.isdigit() and int(code) else None,
            "uuid": values.get("uuid") or None,
            "status": status,
            "now": int(values["now"]) if values["now"].isdigit() else None,
        }


class DiskUsage(FactBase):
    """
    Disk used by ``path`` and everything under it, in KiB (``du -sk``: the same on
    macOS and Linux), or ``None`` when it does not exist.

    + path: a file or directory
    """

    def command(self, path):
        p = shlex.quote(path)
        return f"if [ -e {p} ]; then echo \"kib=$(du -sk {p} 2>/dev/null | cut -f1)\"; else echo missing; fi"

    def process(self, output):
        if [line.strip() for line in output if line.strip()] == ["missing"]:
            return None
        kib = key_values(output).get("kib", "").strip()
        if not kib.isdigit():
            raise FactProcessError(f"DiskUsage: unexpected output: {output[:3]!r}")
        return {"kib": int(kib)}


class LogTail(FactBase):
    """
    The last ``lines`` lines of a log file (``None`` when it does not exist), with its
    size in bytes. They travel base64-encoded: a byte that is not UTF-8 (a log is
    anyone's to write) shows as U+FFFD instead of stopping the status's batch.

    + path: the log file
    + lines: how many lines
    """

    def command(self, path, lines=20):
        p = shlex.quote(path)
        return (
            f"if [ -f {p} ]; then echo \"size=$(wc -c < {p} | tr -d ' ')\"; echo '@tail'; "
            f"tail -n {int(lines)} {p} | base64; echo '@end'; else echo missing; fi"
        )

    def process(self, output):
        if [line.strip() for line in output if line.strip()] == ["missing"]:
            return None
        plain, blocks = split_blocks(output, ("tail",), "LogTail")
        size = key_values(plain).get("size", "")
        if not size.isdigit():
            raise FactProcessError(f"LogTail: unexpected output: {output[:3]!r}")
        try:
            raw = base64.b64decode("".join(line.strip() for line in blocks.get("tail", [])))
        except (binascii.Error, ValueError):
            raw = b"(the log's last lines did not arrive intact)"
        return {"size": int(size), "lines": raw.decode("utf-8", "replace").splitlines()}
