"""
Write one small text file the deploy owns, only when its content differs.

Not an operation itself: the operations that own a file (the plist, the YAML
config, the Caddy site block) yield from ``write_text``. The new content goes to a
temporary file beside the target and is moved into place, so launchd, devpi and
Caddy never read a half-written file. A damaged file (``facts.files.Damaged``: not UTF-8,
say) is the deploy's too: the run says what is wrong with it and replaces it.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand
from pyinfra.api.util import format_text
from pyinfra.operations.util.files import generate_color_diff

from facts.files import Damaged
from facts.snapshot import file_content
from pyinfra_devpi.layout import transient


def text_differs(path: str, content: str) -> bool:
    return file_content(host, path) != content


# ``write_text``'s ``current`` when the file holds what the run found on the host.
AS_FOUND = object()


def _say_damage(path: str, current: str | None) -> None:
    if isinstance(current, Damaged):
        host.log(f"{path} is damaged ({current.reason}): replacing it", logger.warning)


def _show_diff(path: str, current: str | None, content: str) -> None:
    if state.config.DIFF:
        verb = "create" if current is None else "modify"
        host.log(f"Will {verb} {format_text(path, bold=True)}", logger.info)
        old_lines = [] if current is None else current.splitlines(keepends=True)
        for line in generate_color_diff(old_lines, content.splitlines(keepends=True)):
            logger.info("  %s", line)
        logger.info("")


def write_root_text(path: str, content: str, staged: str, as_root: str, mode: str = "644"):
    """Yield the commands that make ``path`` (in a root-owned dir, e.g. a LaunchDaemon's
    plist) hold ``content``, owned by root (uid and gid 0: root:wheel on macOS) with
    ``mode``; none when it already does. The content is uploaded to ``staged`` (a path
    of the SSH user's), copied as root to ``<path>.pyinfra-new``, given its owner and mode
    there and renamed into place, so launchd never reads a half-written or
    wrongly-owned file. ``as_root``: the prefix of each root command (``"sudo -n "``,
    or empty for root)."""
    current = file_content(host, path)
    if current == content:
        return
    _say_damage(path, current)
    _show_diff(path, current, content)
    directory = path.rsplit("/", 1)[0] or "/"
    new, path_q, staged_q = shlex.quote(transient(path)), shlex.quote(path), shlex.quote(staged)
    yield FileUploadCommand(BytesIO(content.encode("utf-8")), staged)
    make_dir = f"{as_root}mkdir -p {shlex.quote(directory)} && " if current is None else ""
    yield (
        f"{{ {make_dir}{as_root}cp {staged_q} {new} && {as_root}chown 0:0 {new} && "
        f"{as_root}chmod {mode} {new} && {as_root}mv -f {new} {path_q}; }}"
        f" || {{ rc=$?; {as_root}rm -f {new}; rm -f {staged_q}; exit $rc; }}; rm -f {staged_q}"
    )


def write_text(path: str, content: str, mode: str = "644", before_move: str | None = None, current=AS_FOUND):
    """Yield the commands that make ``path`` hold ``content`` (none when it already does).

    ``before_move`` is a shell command run on the new file (``{new}`` is replaced
    with its quoted path) before it replaces the old one; if it fails, the old file
    stays and the run stops. ``current``: what the file holds by then, when an earlier
    operation of this run writes it (default: as the run found it).
    """
    if current is AS_FOUND:
        current = file_content(host, path)
    if current == content:
        return

    _say_damage(path, current)
    _show_diff(path, current, content)

    directory = path.rsplit("/", 1)[0] or "/"
    new = transient(path)
    if current is None:
        yield f"mkdir -p {shlex.quote(directory)}"
    yield FileUploadCommand(BytesIO(content.encode("utf-8")), new)
    check = ""
    if before_move:
        check = before_move.replace("{new}", shlex.quote(new)) + " && "
    yield (
        f"{{ {check}chmod {mode} {shlex.quote(new)} && mv -f {shlex.quote(new)} {shlex.quote(path)}; }}"
        f" || {{ rc=$?; rm -f {shlex.quote(new)}; exit $rc; }}"
    )


def replace_damaged(path: str, reason: str, content: str, mode: str = "644"):
    """Yield the commands that replace ``path``, a file of the deploy's that a fact found
    damaged (``reason``), with ``content``."""
    yield from write_text(path, content, mode=mode, current=Damaged("", reason))


def create_private(path: str) -> str:
    """Shell: ``path`` made anew, empty and 0600 from its first byte (``umask 077``; never
    over a file left there: ``set -C`` refuses one that reappears after the ``rm -f``)."""
    return f"rm -f {shlex.quote(path)} && (umask 077 && set -C && : > {shlex.quote(path)})"


def upload_private(content: bytes, path: str):
    """Yield the commands that put ``content`` (a secret) at ``path`` without it ever being
    readable by group or others: ``create_private``, then the SFTP upload into that file,
    which keeps an existing file's mode (a file SFTP creates gets the server's default,
    0644 until a chmod). The first command: fold it into one before it if you like."""
    yield create_private(path)
    yield FileUploadCommand(BytesIO(content), path)
