"""
Facts of the first-contact probe (``deploys/probe.py``) that no deploy fact already is,
and the pure parsers of the raw outputs it captures.

* ``RenameSwap``: in a temporary dir made inside ``devpi_home`` (or, before the first
  converge, its nearest existing parent: the file system it will be on), run the
  restore's own swap snippet (``operations/restore.py`` ``SWAP``, handed in as
  ``swap``) on two dirs, then call ``renamex_np(RENAME_SWAP)`` directly; the temporary
  dir is removed whatever happens. macOS has ``renamex_np`` (APFS swaps), Linux does not.
* ``SessionProcesses``: what the deploy lock's shell functions
  (``pyinfra_devpi/deploy_lock.py``) see of this SSH session's processes: the anchor
  (the nearest ``sshd`` ancestor, found by ``ps -o comm=``) and ``ps -o lstart=`` of it,
  of the shell, and of the job's pid as ``launchctl print`` shows it.

Both exit 0 and print ``key=value`` lines (``@<tag>`` … ``@end`` for the swap's
output, which may span lines).
"""

from __future__ import annotations

import re

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, split_blocks
from facts.host_tools import _VERSION
from pyinfra_devpi import shell_script
from pyinfra_devpi.layout import MACOS_PYTHON_SHIM

# renamex_np itself, as the restore's swap calls it (RENAME_SWAP = 2): "absent" where
# libc has no such function (Linux), "ok", or the errno it failed with (not APFS).
RENAMEX = r"""
import ctypes, os, sys
a, b = sys.argv[1:3]
libc = ctypes.CDLL(None, use_errno=True)
if not hasattr(libc, "renamex_np"):
    print("absent")
    sys.exit(0)
rc = libc.renamex_np(a.encode(), b.encode(), 2)
e = ctypes.get_errno()
print("ok" if rc == 0 else "failed errno=%d (%s)" % (e, os.strerror(e)))
"""

# The temporary dir's name: hidden, and named for what made it.
TEMP_PREFIX = ".pyinfra-devpi-probe."


class RenameSwap(FactBase):
    """
    Returns ``parent`` (where the temporary dir was made), ``python`` and its
    ``python_version`` (the first candidate that runs), ``swap_exit`` and ``swap_output``
    (the restore's snippet), ``swapped`` (the dirs really traded places), ``renamex_np``
    (``"absent"``, ``"ok"`` or ``"failed errno=…"``) and ``skipped`` (why nothing ran).

    + home: ``devpi_home`` (its nearest existing parent when it does not exist yet)
    + swap: the restore's swap snippet (``SWAP``: new, live, keep)
    + pythons: interpreter candidates (devpi's venv python first), as ``HostTools`` takes them
    """

    def command(self, home, swap, pythons=()):
        return shell_script.render(  # facts/rename_swap.sh
            __file__, "rename_swap", home=home, swap=swap, pythons=pythons, version_code=_VERSION,
            renamex_code=RENAMEX, temp_prefix=TEMP_PREFIX, macos_python_shim=MACOS_PYTHON_SHIM,
        )

    def process(self, output):
        plain, blocks = split_blocks(output, ("swap",), "RenameSwap")
        values = key_values(plain)
        if "parent" not in values or "python" not in values:
            raise FactProcessError(f"RenameSwap: unexpected output: {output[:3]!r}")
        skipped = values.get("skipped") or None
        if skipped is None and ("swap_exit" not in values or "renamex_np" not in values):
            raise FactProcessError(f"RenameSwap: no swap result in {output[:6]!r}")
        status = values.get("swap_exit", "")
        return {
            "parent": values["parent"],
            "python": values["python"] or None,
            "python_version": values.get("python_version") or None,
            "skipped": skipped,
            "swap_exit": int(status) if status.isdigit() else None,
            "swap_output": "\n".join(blocks.get("swap", [])).strip() or None,
            # The snippet moves new into live's place and live's old content to keep.
            "swapped": values.get("live_holds") == "new" and values.get("keep_holds") == "live",
            "renamex_np": values.get("renamex_np") or None,
        }


class SessionProcesses(FactBase):
    """
    Returns ``anchor`` (the pid the deploy lock records: the nearest ``sshd`` ancestor),
    ``anchor_comm`` (what ``ps -o comm=`` says of it), ``anchor_started`` /
    ``self_started`` (``ps -o lstart=`` of it / of this shell), ``job_pid`` (the
    top-level ``pid`` of ``launchctl print <target>``) and ``job_started``.

    + target: ``<domain>/<label>`` of devpi's job
    """

    def command(self, target):
        return shell_script.render(__file__, "session_processes", target=target)  # facts/session_processes.sh

    def process(self, output):
        values = key_values(output)
        if "anchor" not in values or "self_started" not in values:
            raise FactProcessError(f"SessionProcesses: unexpected output: {output[:3]!r}")

        def pid(key):
            value = values.get(key, "").strip()
            return int(value) if value.isdigit() else None

        return {
            "anchor": pid("anchor"),
            "anchor_comm": values.get("anchor_comm") or None,
            "anchor_started": values.get("anchor_started") or None,
            "self_started": values.get("self_started") or None,
            "job_pid": pid("job_pid"),
            "job_started": values.get("job_started") or None,
        }


# ---------------------------------------------------------------- raw outputs


def console_owner(lines: list[str]) -> int | None:
    """The numeric owner in ``ls -ln /dev/console`` (its third field), as
    ``LaunchdSession``'s ``awk '{print $3}'`` takes it; ``None`` when not numeric."""
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[0][:1] in "-bcdlps":
            return int(fields[2]) if fields[2].isdigit() else None
    return None


def parse_sw_vers(lines: list[str]) -> dict[str, str]:
    """``sw_vers``' ``ProductName:`` / ``ProductVersion:`` / ``BuildVersion:`` lines."""
    values = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("ProductName", "ProductVersion", "ProductVersionExtra", "BuildVersion"):
            values[key.strip()] = value.strip()
    return values


_DISABLED_RE = re.compile(r'^\s*"(?P<label>[^"]+)"\s*=>\s*(?P<value>\S+)\s*$')


def disabled_labels(lines: list[str]) -> dict[str, bool]:
    """``launchctl print-disabled <domain>``: ``{label: disabled}`` (``true`` /
    ``disabled`` on, ``false`` / ``enabled`` off)."""
    found = {}
    for line in lines:
        match = _DISABLED_RE.match(line)
        if match:
            found[match.group("label")] = match.group("value") in ("true", "disabled")
    return found


# Names of values that could be secrets, wherever a capture shows ``NAME => value``
# (launchctl's environment blocks) or ``NAME=value``: their values are not written.
SECRET_NAME_RE = re.compile(r"(?i)(pass(word|wd|phrase)?|secret|token|api[_-]?key|credential|private[_-]?key|auth)")
_ASSIGNMENT_RE = re.compile(r"^(?P<lead>\s*)(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*=>\s*|=)(?P<value>.*)$")
REDACTED = "<not kept by the probe>"


def scrub(lines: list[str]) -> list[str]:
    """The lines with the value of every secret-looking ``NAME => value`` / ``NAME=value``
    replaced (the probe reads no secret; this keeps one a job's environment might hold
    out of a capture that is committed)."""
    out = []
    for line in lines:
        match = _ASSIGNMENT_RE.match(line)
        if match and SECRET_NAME_RE.search(match.group("name")) and match.group("value").strip():
            line = f"{match.group('lead')}{match.group('name')}{match.group('sep')}{REDACTED}"
        out.append(line)
    return out
