"""
Can this backup be restored? The stdlib-only program a restore runs on the host with
the live venv's Python (``python -I -c <this file> ...``), twice: while pyinfra plans
(the ``BackupCheck`` fact: sizes only, so a refusal changes nothing at all) and as the
restore's first step (every file's sha256 too, just before ``devpi-import`` reads them).

A backup is trusted by who can write it, not by its name: whoever can write it can
make ``devpi-import`` read any file the SSH user can (a symlink to ``~/devpi/secret``,
a ``dataindex.json`` entry ``../../secret``) and devpi then serves it as a release file.
So, walking the tree without following a symlink (``lstat``), every problem named by
its path:

* the backup itself is a symlink, or not a directory;
* the backup dir (the backup's parent, as the host resolves it) is not owned by the SSH
  user or is writable by group or others; a dir above it is not owned by root or the
  user, or is writable by group or others without the sticky bit (there, someone else
  could put another tree in the backup's place after the check);
* an entry in the backup is not owned by the user, is writable by group or others, is
  not a regular file or a directory (a symlink, device, FIFO, socket), or is a file
  with more than one hard link (another name of a file elsewhere);
* at the backup's top, anything but the manifest, the export dir and the backup
  program's marker (a file the restore does not read);
* a manifest entry that is not a plain relative path (absolute, ``..``, ``.``, an empty
  part) or is listed twice; a listed file missing; a file in the export not listed; a
  size (and, with ``--hashes``, a sha256) that differs from the manifest's;
* a ``relpath`` in ``dataindex.json`` (the files ``devpi-import`` opens) that is not a
  listed file.

Prints one JSON line: ``path`` (the backup's physical path), ``problems`` (the first
``SHOWN`` of them), ``problem_count``, ``files``, ``size``. With ``--verify`` it
prints a sentence instead and exits 1 when there is a problem.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import stat
import sys

SHOWN = 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file or directory"


def owner_problem(path: str, st: os.stat_result, uid: int, allowed: tuple[int, ...], sticky_ok: bool) -> str | None:
    if st.st_uid not in allowed:
        who = "root or uid %d" % uid if len(allowed) > 1 else "uid %d (the SSH user)" % uid
        return "%s: owned by uid %d, not by %s" % (path, st.st_uid, who)
    if st.st_mode & 0o022 and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        return "%s: writable by %s (mode %o)" % (
            path, "group and others" if st.st_mode & 0o022 == 0o022 else
            "group" if st.st_mode & 0o020 else "others", stat.S_IMODE(st.st_mode))
    return None


def printable(text: str) -> str:
    """A message with each control character (a file name's terminal escape) as ``\\xNN``."""
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256 else "\\u%04x" % ord(c)
                   for c in text)


def plain_relpath(path: object) -> bool:
    if not isinstance(path, str) or not path or "\x00" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def relpaths(value: object):
    """Every ``relpath`` string (or not) anywhere in devpi-export's ``dataindex.json``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "relpath":
                yield item
            else:
                yield from relpaths(item)
    elif isinstance(value, list):
        for item in value:
            yield from relpaths(item)


def walk(top: str, uid: int, problems: list[str], files: dict[str, os.stat_result], base: str) -> None:
    """Every entry under ``top`` (not following symlinks); regular files under ``base``
    go into ``files`` by their path relative to it."""
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as error:
        problems.append("%s: cannot be read (%s)" % (top, error.strerror))
        return
    for entry in entries:
        path = entry.path
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as error:
            problems.append("%s: cannot be read (%s)" % (path, error.strerror))
            continue
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            problems.append("%s: is a symlink (to %s)" % (path, target))
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            problems.append("%s: is %s" % (path, kind(st.st_mode)))
            continue
        problem = owner_problem(path, st, uid, (uid,), False)
        if problem:
            problems.append(problem)
        if stat.S_ISDIR(st.st_mode):
            walk(path, uid, problems, files, base)
        elif st.st_nlink > 1:
            problems.append("%s: has %d hard links (another name of a file elsewhere): copy the backup "
                            "(cp -R) to make it plain files" % (path, st.st_nlink))
        elif base and (path + "/").startswith(base + "/"):
            files[os.path.relpath(path, base)] = st


def sha256_of(path: str, st: os.stat_result) -> str | None:
    """The file's sha256, read through a descriptor that is the walked file (no symlink
    followed, the same inode), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        now = os.fstat(fh.fileno())
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            return None
        digest = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()


def check(backup: str, uid: int, manifest_name: str, export_name: str, dataindex_name: str, marker_name: str,
          hashes: bool) -> dict:
    problems: list[str] = []
    result = {"path": backup, "problems": problems, "files": 0, "size": 0}
    try:
        st = os.lstat(backup)
    except OSError as error:
        problems.append("%s: %s" % (backup, error.strerror))
        return result
    if stat.S_ISLNK(st.st_mode):
        problems.append("%s: is a symlink (to %s), not the backup itself: restore from a directory "
                        "of your own" % (backup, os.readlink(backup)))
        return result
    if not stat.S_ISDIR(st.st_mode):
        problems.append("%s: is not a directory" % backup)
        return result
    real = os.path.realpath(backup)
    result["path"] = real
    parent = os.path.dirname(real)
    problem = owner_problem(parent, os.stat(parent), uid, (uid,), False)
    if problem:
        problems.append(problem + " (the backup dir)")
    above = os.path.dirname(parent)
    while True:
        problem = owner_problem(above, os.stat(above), uid, (0, uid), True)
        if problem:
            problems.append(problem + " (a dir above the backup)")
        if above == os.path.dirname(above):
            break
        above = os.path.dirname(above)
    problem = owner_problem(real, st, uid, (uid,), False)
    if problem:
        problems.append(problem)

    export = os.path.join(real, export_name)
    manifest_path = os.path.join(real, manifest_name)
    files: dict[str, os.stat_result] = {}
    walk(real, uid, problems, files, export)
    for name in sorted(os.listdir(real)):
        path = os.path.join(real, name)
        if name not in (manifest_name, export_name, marker_name):
            problems.append("%s: is not part of a backup (only %s, %s/ and %s are)"
                            % (path, manifest_name, export_name, marker_name))
        elif os.path.isdir(path) != (name == export_name) and not os.path.islink(path):
            problems.append("%s: is %s" % (path, "not a directory" if name == export_name else "a directory"))
    if problems:
        return result  # nothing below is read from a backup that cannot be trusted

    try:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
        entries = manifest["files"]
        if not isinstance(entries, list):
            raise TypeError("files is not a list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append("%s: not a backup manifest (%s)" % (manifest_path, error))
        return result
    listed: dict[str, dict] = {}
    for entry in entries:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not plain_relpath(path):
            problems.append("%s: lists %r, not a relative path inside %s/" % (manifest_path, path, export_name))
        elif path in listed:
            problems.append("%s: lists %s twice" % (manifest_path, path))
        elif not (isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)
                  and SHA256.match(entry["sha256"])):
            problems.append("%s: the entry of %s has no size and sha256" % (manifest_path, path))
        else:
            listed[path] = entry
    for path in sorted(set(listed) - set(files)):
        problems.append("%s: listed in the manifest, missing" % os.path.join(export, path))
    for path in sorted(set(files) - set(listed)):
        problems.append("%s: not listed in the manifest" % os.path.join(export, path))
    for path in sorted(set(listed) & set(files)):
        entry, st = listed[path], files[path]
        full = os.path.join(export, path)
        if st.st_size != entry["size"]:
            problems.append("%s: %d bytes, the manifest says %d" % (full, st.st_size, entry["size"]))
        elif hashes and sha256_of(full, st) != entry["sha256"]:
            problems.append("%s: its sha256 differs from the manifest's" % full)
    result["files"] = len(files)
    result["size"] = sum(st.st_size for st in files.values())
    if dataindex_name not in listed or dataindex_name not in files:
        problems.append("%s: missing: not a devpi-export dump" % os.path.join(export, dataindex_name))
        return result
    if problems:
        return result
    try:
        with open(os.path.join(export, dataindex_name), encoding="utf-8") as fh:
            dataindex = json.load(fh)
    except (OSError, ValueError) as error:
        problems.append("%s: not devpi-export's JSON (%s)" % (os.path.join(export, dataindex_name), error))
        return result
    for relpath in relpaths(dataindex):
        if not (plain_relpath(relpath) and relpath in listed and relpath != dataindex_name):
            problems.append("%s: names the file %r, which is not a file the manifest lists"
                            % (os.path.join(export, dataindex_name), relpath))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a backup before a restore reads it.")
    parser.add_argument("backup")
    parser.add_argument("--uid", type=int, required=True, help="the SSH user's uid: the owner of the backup")
    parser.add_argument("--names", nargs=4, required=True, metavar=("MANIFEST", "EXPORT_DIR", "DATAINDEX", "MARKER"))
    parser.add_argument("--hashes", action="store_true", help="also compare every file's sha256")
    parser.add_argument("--verify", action="store_true", help="a sentence and the exit status, not JSON")
    args = parser.parse_args(argv)
    try:
        result = check(args.backup, args.uid, *args.names, hashes=args.hashes)
    except OSError as error:
        result = {"path": args.backup, "problems": ["%s: %s" % (error.filename, error.strerror)],
                  "files": 0, "size": 0}
    problems = [printable(p) for p in result["problems"]]
    result["path"] = printable(result["path"])
    result["problem_count"] = len(problems)
    result["problems"] = problems[:SHOWN]
    if not args.verify:
        print(json.dumps(result, sort_keys=True))
        return 0
    if problems:
        sys.stderr.write("refusing to restore %s: %d problem(s); nothing was changed:\n  %s\n"
                         % (result["path"], len(problems), "\n  ".join(problems[:SHOWN])))
        return 1
    print("%d files, %d bytes: all match the manifest, all of them the SSH user's own plain files"
          % (result["files"], result["size"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
