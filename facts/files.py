"""
The current contents of several small text files, read in one round trip; a file's
mode and physical location (``FileMode``); which paths exist (``PathsFound``); and
where configured paths land once the host resolves them (``RealPaths``).

The deploy owns a handful of small files (the plist, the YAML config, the Caddy site
block). Reading them all with one command keeps a no-change rerun to a few remote
commands, and having the content (not just a checksum) lets ``--diff`` show the
change without another round trip. Contents travel base64-encoded so that any byte,
trailing newlines included, survives pyinfra's line splitting (and a byte that is not
UTF-8 reaches ``process``, not pyinfra's reader, which would stop with a traceback).

A file the deploy reads may be damaged (truncated, a byte that is not UTF-8): a fact's
``process`` never raises on such content; it returns ``Damaged``, text that says what is
wrong (``reason``) and equals no content, so the file's owner replaces it.
"""

from __future__ import annotations

import base64
import binascii
import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values
from pyinfra_devpi import shell_script


class Damaged(str):
    """A file's content that is not what its writer leaves: the text as far as it reads
    (bytes that are not UTF-8 shown as U+FFFD), and ``reason``, what is wrong with it.
    It equals no text, not even its own, so ``current != content`` holds for every
    content the deploy renders: the file is replaced."""

    reason: str

    def __new__(cls, text: str, reason: str) -> "Damaged":
        damaged = super().__new__(cls, text)
        damaged.reason = reason
        return damaged

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = str.__hash__

    def __repr__(self) -> str:
        return f"Damaged({self.reason!r})"

    def __reduce__(self):
        return (Damaged, (str(self), self.reason))


def text_block(path_expr: str, tag: str, missing: str | None = None) -> str:
    """Shell: print the file as ``@<tag>`` / its bytes base64-encoded / ``@end`` (or the
    ``missing`` line), so any byte survives the trip; ``decode_text`` reads the lines."""
    otherwise = f"else echo {missing}; " if missing else ""
    return f'if [ -f {path_expr} ]; then echo "@{tag}"; base64 < {path_expr}; echo "@end"; {otherwise}fi'


def decode_text(chunks: list[str]) -> str:
    """A ``text_block``'s lines as the file's text, or ``Damaged`` when it is not UTF-8."""
    try:
        raw = base64.b64decode("".join(line.strip() for line in chunks), validate=True)
    except (binascii.Error, ValueError) as error:
        return Damaged("", f"its content did not arrive intact ({error})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Damaged(raw.decode("utf-8", "replace"),
                       f"not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start})")


class FileContents(FactBase):
    """
    Returns ``{path: content}`` for each path, the content ``None`` when the file is
    missing and ``Damaged`` when it is not UTF-8 text. Only for the deploy's own small
    text files: never point it at a secret.
    """

    def command(self, paths):
        if isinstance(paths, str):
            paths = paths.split(",")
        quoted = " ".join(shlex.quote(p) for p in paths)
        # `base64 < file` works with both macOS's and GNU's base64.
        return (
            f"for f in {quoted}; do "
            'if [ -f "$f" ]; then echo "@file $f"; base64 < "$f"; echo "@end"; '
            'else echo "@missing $f"; fi; done'
        )

    def process(self, output):
        files: dict[str, str | None] = {}
        current = None
        chunks: list[str] = []
        for line in output:
            if line.startswith("@file "):
                current, chunks = line[len("@file ") :], []
            elif line == "@end":
                if current is None:
                    raise FactProcessError("FileContents: @end without @file")
                files[current] = decode_text(chunks)
                current = None
            elif line.startswith("@missing "):
                files[line[len("@missing ") :]] = None
            elif current is not None:
                chunks.append(line.strip())
            elif line.strip():
                raise FactProcessError(f"FileContents: unexpected line {line!r}")
        if current is not None:
            raise FactProcessError(f"FileContents: unterminated block for {current}")
        return files


class FileMode(FactBase):
    """
    Returns ``{"mode": <ls -l mode string>, "physical": <path with its directory's
    symlinks resolved>, "owner": <numeric owner>}`` for a file the deploy owns (following a symlink at ``path``,
    as a program opening it does), or ``None`` when it is missing.

    + path: the file

    launchd refuses a plist that is group- or world-writable (a LaunchDaemon's also when
    root does not own it), and reports the path it
    loaded a job from; the physical path lets a caller accept either spelling.
    """

    def command(self, path: str) -> str:
        f = shlex.quote(path)
        # `ls -lLd` and `cd -P` + `pwd -P` behave alike on macOS and GNU; `stat` does not.
        return (
            f"if [ -e {f} ]; then "
            f'echo "mode=$(ls -lLd {f} 2>/dev/null | cut -c1-10)"; '
            f"echo \"owner=$(ls -lnLd {f} 2>/dev/null | awk '{{print $3}}')\"; "
            f'd=$(cd -P "$(dirname {f})" 2>/dev/null && pwd -P) && '
            f'echo "physical=$d/$(basename {f})"; '
            "else echo missing; fi"
        )

    def process(self, output):
        if [line.strip() for line in output if line.strip()] == ["missing"]:
            return None
        values = key_values(output)
        mode = values.get("mode", "")
        if len(mode) != 10:
            raise FactProcessError(f"FileMode: unexpected output {output[:3]!r}")
        owner = values.get("owner", "")
        return {"mode": mode, "physical": values.get("physical") or None,
                "owner": int(owner) if owner.isdigit() else None}


class PathsFound(FactBase):
    """
    Returns ``{path: {"kind": "link" | "dir" | "file", "kib": disk used}}`` for each
    path that exists (a symlink is reported as a link, not followed; ``du -sk`` of
    it is the link's own), ``None`` for one that does not.

    + paths: the paths (a tuple)
    """

    def command(self, paths):
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (
            f"for f in {quoted}; do "
            'if [ -L "$f" ]; then k=link; elif [ -d "$f" ]; then k=dir; elif [ -e "$f" ]; then k=file; '
            'else echo "@missing $f"; continue; fi; '
            'echo "@found $k $(du -sk "$f" 2>/dev/null | cut -f1) $f"; done'
        )

    def process(self, output):
        found: dict[str, dict | None] = {}
        for line in output:
            if line.startswith("@missing "):
                found[line[len("@missing "):]] = None
            elif line.startswith("@found "):
                kind, kib, path = line[len("@found "):].split(" ", 2)
                found[path] = {"kind": kind, "kib": int(kib) if kib.isdigit() else None}
            elif line.strip():
                raise FactProcessError(f"PathsFound: unexpected line {line!r}")
        return found


class RealPaths(FactBase):
    """
    Returns ``{"home": {"real": ..., "folds": bool}, "paths": {path: {"real": ...,
    "folds": bool}}}``: where the SSH session's ``$HOME`` and each path land on the host,
    every symlink followed (at the path and at each directory on the way; what does not
    exist yet is kept as written), and whether the file system there finds a name in
    another case (``folds``: APFS's default). The model compares paths by these
    (``pyinfra_devpi/real_paths.py``).

    + paths: the paths (a tuple)
    """

    def command(self, paths=()):
        return shell_script.render(__file__, "real_paths", paths=tuple(paths))  # facts/real_paths.sh

    def process(self, output):
        found: dict = {"home": None, "paths": {}}
        asked = None
        for line in output:
            if asked is not None:
                kind, folds, path = asked
                value = {"real": line, "folds": folds == "1"}
                if kind == "home":
                    found["home"] = value
                else:
                    found["paths"][path] = value
                asked = None
            elif line.startswith(("@home ", "@path ")):
                kind, folds, path = line[1:].split(" ", 2)
                asked = (kind, folds, path)
            elif line.strip():
                raise FactProcessError(f"RealPaths: unexpected line {line!r}")
        if asked is not None or found["home"] is None:
            raise FactProcessError(f"RealPaths: unexpected output {output[:3]!r}")
        return found
