"""
The backup program the ``<label>.backup`` LaunchAgent runs on the host (stdlib only;
the deploy uploads this file verbatim and the live venv's Python runs it).

One run:

1. removes what a killed run left in the backup dir (a temporary dir whose process is
   gone); never anything else;
2. runs ``devpi-export`` (the live venv's; ``--include-mirrored-files`` when asked) into
   ``.<name>-<pid>.pyinfra-new/export`` in the backup dir, with devpi running: its
   export reads one snapshot (see docs/operating.md, "Backups and restore");
3. writes ``manifest.json`` beside the export (every file's path, size and sha256, the
   devpi-server version and database version, the time), flushed to disk;
4. renames the temporary dir to ``devpi-backup-<UTC stamp>`` (atomic: a backup dir with
   that name is complete);
5. prunes the oldest good backups (a ``devpi-backup-*`` dir with a manifest) beyond
   ``--keep``.

A failure at any step removes its temporary dir, leaves every earlier backup as it was,
prunes nothing, records the time, exit code and the last lines of its log in the status
file and exits non-zero. A success records the time, name, size and duration there.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

# The names (pyinfra_devpi/layout.py) arrive as arguments: this file runs on the host
# alone, without the package.
PREFIX = MANIFEST = EXPORT_DIR = TRANSIENT_SUFFIX = ""
TEMP_RE = GOOD_RE = re.compile("")


def set_names(prefix: str, manifest: str, export_dir: str, transient_suffix: str) -> None:
    global PREFIX, MANIFEST, EXPORT_DIR, TRANSIENT_SUFFIX, TEMP_RE, GOOD_RE
    PREFIX, MANIFEST, EXPORT_DIR, TRANSIENT_SUFFIX = prefix, manifest, export_dir, transient_suffix
    TEMP_RE = re.compile(r"^\." + re.escape(PREFIX) + r"(\d{8}T\d{6}Z)-(\d+)" + re.escape(TRANSIENT_SUFFIX) + "$")
    GOOD_RE = re.compile("^" + re.escape(PREFIX) + r"\d{8}T\d{6}Z(-\d+)?$")

LOG_TAIL = 20
EX_IOERR = 74


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} devpi-backup: {message}", flush=True)


def stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_status(path: str, status: dict) -> None:
    """Atomically (a temporary file beside it, renamed)."""
    new = path + TRANSIENT_SUFFIX
    with open(new, "w", encoding="utf-8") as fh:
        json.dump(status, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(new, path)


def good_backups(dest: str) -> list[str]:
    """The complete backups in ``dest``, oldest first (names sort by time)."""
    try:
        names = os.listdir(dest)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if GOOD_RE.match(n) and os.path.isfile(os.path.join(dest, n, MANIFEST)))


def remove_leftovers(dest: str) -> None:
    """Temporary dirs of runs that are gone (killed, or the machine stopped)."""
    for name in os.listdir(dest):
        match = TEMP_RE.match(name)
        if match and int(match.group(2)) != os.getpid() and not pid_alive(int(match.group(2))):
            log(f"removing {name}, left by a backup that did not finish")
            shutil.rmtree(os.path.join(dest, name), ignore_errors=True)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(export_dir: str) -> list[dict]:
    files = []
    for directory, dirnames, filenames in os.walk(export_dir):
        dirnames.sort()
        for filename in sorted(filenames):
            path = os.path.join(directory, filename)
            files.append({
                "path": os.path.relpath(path, export_dir),
                "size": os.path.getsize(path),
                "sha256": sha256_of(path),
            })
    return files


def first_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().strip() or None
    except OSError:
        return None


def run_export(argv: list[str], tail: collections.deque) -> int:
    """Run devpi-export, its output to ours (launchd's log) and into ``tail``."""
    log("running " + " ".join(argv))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            print(line, flush=True)
    return proc.returncode


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def backup(args) -> int:
    started = time.time()
    tail: collections.deque = collections.deque(maxlen=LOG_TAIL)
    status = read_status(args.status)
    dest = args.dest
    temp = None
    code = 0
    try:
        os.makedirs(dest, mode=0o700, exist_ok=True)
        remove_leftovers(dest)
        name = PREFIX + stamp(started)
        if os.path.exists(os.path.join(dest, name)):  # two runs in one second
            name = f"{name}-{os.getpid()}"
        temp = os.path.join(dest, f".{PREFIX}{stamp(started)}-{os.getpid()}{TRANSIENT_SUFFIX}")
        os.mkdir(temp, 0o700)
        export_dir = os.path.join(temp, EXPORT_DIR)
        argv = [args.export, "--configfile", args.configfile, "--serverdir", args.serverdir]
        if args.include_mirrored_files:
            argv.append("--include-mirrored-files")
        code = run_export([*argv, export_dir], tail)
        if code != 0:
            raise RuntimeError(f"devpi-export exited with {code}")
        files = manifest_of(export_dir)
        size = sum(f["size"] for f in files)
        manifest = {
            "name": name,
            "created": iso(started),
            "devpi_server": args.server_version,
            "serverversion": first_line(args.serverversion_file),
            "include_mirrored_files": bool(args.include_mirrored_files),
            "files": files,
            "file_count": len(files),
            "size": size,
        }
        with open(os.path.join(temp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(temp)
        os.rename(temp, os.path.join(dest, name))
        temp = None
        fsync_dir(dest)
        log(f"wrote {name}: {len(files)} files, {size} bytes")
    except BaseException as error:  # noqa: BLE001 - every failure is recorded
        if code == 0:
            code = EX_IOERR if isinstance(error, OSError) else 1
            tail.append(f"devpi-backup: {type(error).__name__}: {error}")
        log(f"FAILED ({code}): {error}")
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        status["last_failure"] = {
            "time": iso(time.time()), "epoch": int(time.time()), "exit_code": code, "log_tail": list(tail),
        }
        write_status(args.status, status)
        return code

    pruned = []
    for old in good_backups(dest)[:-args.keep]:
        shutil.rmtree(os.path.join(dest, old), ignore_errors=True)
        pruned.append(old)
    if pruned:
        log(f"pruned {len(pruned)} old backup(s): {', '.join(pruned)}")
    finished = time.time()
    status["last_success"] = {
        "time": iso(finished), "epoch": int(finished), "name": name, "size": size, "files": len(files),
        "seconds": round(finished - started, 2),
    }
    write_status(args.status, status)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Back up a devpi server dir with devpi-export.")
    parser.add_argument("--export", required=True, help="devpi-export of the live venv")
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--serverdir", required=True)
    parser.add_argument("--dest", required=True, help="the backup dir")
    parser.add_argument("--keep", type=int, required=True)
    parser.add_argument("--status", required=True, help="the status file the Backups fact reads")
    parser.add_argument("--server-version", default=None)
    parser.add_argument("--include-mirrored-files", action="store_true")
    parser.add_argument("--serverversion-file", required=True)
    parser.add_argument("--names", nargs=4, required=True, metavar=("PREFIX", "MANIFEST", "EXPORT_DIR", "SUFFIX"))
    args = parser.parse_args(argv)
    set_names(*args.names)
    return backup(args)


if __name__ == "__main__":
    sys.exit(main())
