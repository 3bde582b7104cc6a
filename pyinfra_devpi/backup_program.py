"""
The backup program the ``<label>.backup`` LaunchAgent runs on the host (stdlib only;
the deploy uploads this file verbatim and the live venv's Python runs it).

One run:

1. takes its own lock (``--backup-lock``, a dir made with ``mkdir``) and checks the
   deploy lock (``--deploy-lock``, read only): while a deploy holds it (a restore, a
   database upgrade, any changing run) the backup waits, up to ``--lock-wait`` seconds,
   then skips; a restore and an upgrade wait for the backup's lock in turn
   (``pyinfra_devpi/backup.py``, ``wait_for_backup``). A wait or a skip is recorded in
   the status file;
2. checks the backup dir: owned by the user the program runs as and not writable by
   group or others, else it refuses, naming the path, before anything is written or
   removed (another user who can write the dir could plant or swap backups);
3. removes what a killed run left there (a temporary dir whose process is gone, owned
   by this user and holding only regular files and dirs); never anything else;
4. runs ``devpi-export`` (the live venv's; ``--include-mirrored-files`` when asked) into
   ``.<name>-<pid>.pyinfra-new/export`` in the backup dir, with devpi running: its
   export reads one snapshot (see docs/operating.md, "Backups and restore");
5. writes ``manifest.json`` beside the export (every file's path, size and sha256, the
   devpi-server version and database version, the time), then its marker (the
   backup's name and the manifest's sha256: this program completed it), flushed;
6. renames the temporary dir to ``devpi-backup-<UTC stamp>`` (atomic: a backup dir with
   that name is complete);
7. prunes the oldest backup beyond ``--keep``, at most one per new backup, and only one
   it can vouch for (``vouch``: its marker and manifest, exactly the files the manifest
   lists, every entry a regular file or dir owned by this user and not writable by
   group or others). A backup it cannot vouch for is reported, never removed.

``--list`` changes nothing: it prints what the backup dir holds as one ``list=<json>``
line (the ``Backups`` fact runs this file's text for it, so the status and the plan
count the backups as this program sees them: each backup's own entries, every run;
what a backup run's full check of every file found is in the status file's
``unverified``).

A failure at any step removes its temporary dir, leaves every earlier backup as it was,
prunes nothing, records the time, exit code and the last lines of its log in the status
file and exits non-zero. A success records the time, name, size and duration there.
"""

from __future__ import annotations

import argparse
import calendar
import collections
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time

# The names (pyinfra_devpi/layout.py) arrive as arguments: this file runs on the host
# alone, without the package.
PREFIX = MANIFEST = EXPORT_DIR = TRANSIENT_SUFFIX = MARKER = ""
TEMP_RE = GOOD_RE = re.compile("")


def set_names(prefix: str, manifest: str, export_dir: str, transient_suffix: str, marker: str) -> None:
    global PREFIX, MANIFEST, EXPORT_DIR, TRANSIENT_SUFFIX, MARKER, TEMP_RE, GOOD_RE
    PREFIX, MANIFEST, EXPORT_DIR, TRANSIENT_SUFFIX, MARKER = prefix, manifest, export_dir, transient_suffix, marker
    TEMP_RE = re.compile(r"^\." + re.escape(PREFIX) + r"(\d{8}T\d{6}Z)-(\d+)" + re.escape(TRANSIENT_SUFFIX) + "$")
    GOOD_RE = re.compile("^" + re.escape(PREFIX) + r"\d{8}T\d{6}Z(-\d+)?$")

LOG_TAIL = 20
EX_IOERR = 74
EX_TEMPFAIL = 75  # skipped: a deploy held its lock for --lock-wait seconds
EX_NOPERM = 77  # refused: the backup dir is not safe to write or prune
# How often a waiting backup looks at the locks again.
LOCK_POLL = 1.0
# A lock dir without an owner for this long was left by a process that died making it.
OWNERLESS_STALE = 60


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


# --------------------------------------------------------------------------- trust


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file or dir"


def untrusted(path: str, st: os.stat_result, uid: int) -> str | None:
    """Why ``path`` (its ``lstat``) cannot be trusted, or None: it must be a regular file
    or dir, owned by ``uid`` and not writable by group or others."""
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return f"{path} is {_kind(st.st_mode)}"
    if st.st_uid != uid:
        return f"{path} is owned by uid {st.st_uid}, not by uid {uid} (the user the backups run as)"
    if st.st_mode & 0o022:
        who = " and ".join(w for bit, w in ((0o020, "group"), (0o002, "others")) if st.st_mode & bit)
        return f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def dir_problem(dest: str, uid: int) -> str | None:
    """Why the backup dir cannot hold trusted backups, or None."""
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"{dest}: {error.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{dest} is not a directory"
    return untrusted(dest, st, uid)


def tree(root: str, uid: int) -> tuple[list[str], str | None]:
    """Every file under ``root`` (relative paths, sorted), or the first entry that cannot
    be trusted (``untrusted``), symlinks never followed."""
    files, pending = [], [root]
    while pending:
        directory = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            return files, f"{directory}: {error.strerror}"
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as error:
                return files, f"{entry.path}: {error.strerror}"
            problem = untrusted(entry.path, st, uid)
            if problem:
                return files, problem
            if stat.S_ISDIR(st.st_mode):
                pending.append(entry.path)
            else:
                files.append(os.path.relpath(entry.path, root))
    return sorted(files), None


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def top(path: str, uid: int) -> tuple[list[str], str | None]:
    """The backup's own entries (marker, manifest, export dir), each trusted, or why not."""
    files = []
    for name in sorted(os.listdir(path)):
        entry = os.path.join(path, name)
        st = os.lstat(entry)
        problem = untrusted(entry, st, uid)
        if problem:
            return files, problem
        if name not in (MARKER, MANIFEST, EXPORT_DIR) or stat.S_ISDIR(st.st_mode) != (name == EXPORT_DIR):
            return files, f"{path} holds {name}, which is not part of a backup"
        if name != EXPORT_DIR:
            files.append(name)
    return files, None


def vouch(path: str, uid: int, deep: bool = True) -> tuple[dict | None, str | None]:
    """``(manifest, None)`` for a backup this program completed and nobody else could
    have changed; else ``(None, why not)``. Checked: the backup and every entry in it
    (``untrusted``), its marker (this backup's name and the manifest's sha256), and
    that the export holds exactly the files the manifest lists, with their sizes.
    ``deep=False`` (the status's and the plan's look, every run) checks the backup's own
    entries only, not every file of the export (the prune does, before it removes one)."""
    name = os.path.basename(path)
    try:
        st = os.lstat(path)
    except OSError as error:
        return None, f"{path}: {error.strerror}"
    problem = untrusted(path, st, uid)
    if problem:
        return None, problem
    try:
        files, problem = tree(path, uid) if deep else top(path, uid)
    except OSError as error:
        return None, f"{path}: {error.strerror}"
    if problem:
        return None, problem
    if MARKER not in files:
        return None, f"{path} has no {MARKER}: not completed by this backup program"
    marker = _load_json(os.path.join(path, MARKER))
    if marker is None or marker.get("name") != name:
        return None, f"{path}/{MARKER} does not name this backup"
    if MANIFEST not in files or marker.get("manifest_sha256") != sha256_of(os.path.join(path, MANIFEST)):
        return None, f"{path}/{MANIFEST} is not the manifest this backup program wrote"
    manifest = _load_json(os.path.join(path, MANIFEST))
    listed = manifest.get("files") if manifest else None
    if not isinstance(listed, list) or manifest.get("name") != name:
        return None, f"{path}/{MANIFEST} is not a manifest of this backup"
    if not deep:
        return manifest, None
    prefix = EXPORT_DIR + os.sep
    present = {f[len(prefix):] for f in files if f.startswith(prefix)}
    others = sorted(set(files) - {MARKER, MANIFEST} - {prefix + f for f in present})
    if others:
        return None, f"{path} holds {others[0]}, which is not part of a backup"
    sizes = {}
    for entry in listed:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return None, f"{path}/{MANIFEST} has an entry that is not a file"
        sizes[entry["path"]] = entry.get("size")
    if set(sizes) != present:
        extra, missing = sorted(present - set(sizes)), sorted(set(sizes) - present)
        what = f"{EXPORT_DIR}/{extra[0]} is not in the manifest" if extra else f"{EXPORT_DIR}/{missing[0]} is missing"
        return None, f"{path}: {what}"
    for relative, size in sizes.items():
        if os.lstat(os.path.join(path, EXPORT_DIR, relative)).st_size != size:
            return None, f"{path}/{EXPORT_DIR}/{relative} differs in size from the manifest"
    return manifest, None


def created_epoch(manifest: dict) -> int | None:
    if isinstance(manifest.get("epoch"), int):
        return manifest["epoch"]
    try:
        return calendar.timegm(time.strptime(str(manifest.get("created")), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def survey(dest: str, uid: int, deep: bool = True) -> dict:
    """What the backup dir holds: ``problem`` (the dir cannot be trusted), ``backups``
    (vouched for, oldest first: name, created, epoch, size, files) and ``unverified``
    (name and why, for every other ``devpi-backup-*`` entry); ``deep``: see ``vouch``."""
    found = {"dir": dest, "exists": os.path.isdir(dest), "problem": dir_problem(dest, uid), "backups": [],
             "unverified": []}
    try:
        names = sorted(n for n in os.listdir(dest) if GOOD_RE.match(n))
    except OSError:
        names = []
    for name in names:
        if found["problem"]:
            found["unverified"].append({"name": name, "reason": f"in {found['problem']}"})
            continue
        manifest, why = vouch(os.path.join(dest, name), uid, deep)
        if manifest is None:
            found["unverified"].append({"name": name, "reason": why})
        else:
            found["backups"].append({"name": name, "created": manifest.get("created"),
                                     "epoch": created_epoch(manifest), "size": manifest.get("size"),
                                     "files": manifest.get("file_count")})
    return found


def remove_leftovers(dest: str, uid: int) -> list[dict]:
    """Temporary dirs of runs that are gone (killed, or the machine stopped), when
    nothing in them can be another user's; those are reported instead."""
    reported = []
    for name in sorted(os.listdir(dest)):
        match = TEMP_RE.match(name)
        if not match or int(match.group(2)) == os.getpid() or pid_alive(int(match.group(2))):
            continue
        path = os.path.join(dest, name)
        problem = untrusted(path, os.lstat(path), uid) or tree(path, uid)[1]
        if problem:
            log(f"not removing {name}, left by a backup that did not finish: {problem}")
            reported.append({"name": name, "reason": problem})
            continue
        log(f"removing {name}, left by a backup that did not finish")
        shutil.rmtree(path, ignore_errors=True)
    return reported


# --------------------------------------------------------------------------- locks


def _started(pid: int, env: dict | None = None) -> str:
    """The process's start time as ``ps -o lstart=`` shows it ('' when it is gone): the
    field the deploy lock's owner file records (deploy_lock_process.sh, ``dl_started``)."""
    try:
        return subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True,
                              env=env, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def owner_of(lock: str) -> dict[str, str]:
    try:
        with open(os.path.join(lock, "owner"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def lock_holder(lock: str) -> dict | None:
    """The owner of the lock dir ``lock`` while its process lives, else None (no lock, or
    a stale one: the rule of deploy_lock_owner.sh's ``dl_stale``). An owner on another
    host, or one that cannot be checked, holds it."""
    try:
        st = os.stat(lock)
    except OSError:
        return None
    owner = owner_of(lock)
    if not owner:
        return None if time.time() - st.st_mtime > OWNERLESS_STALE else {"run": "?", "pid": "?"}
    if owner.get("host") != os.uname().nodename or not owner.get("pid", "").isdigit():
        return owner
    pid = int(owner["pid"])
    if not pid_alive(pid):
        return None
    # the pid may now be another process's: the same start time (in either locale) or stale
    started = owner.get("started", "")
    if started in (_started(pid), _started(pid, {**os.environ, "LC_ALL": "C"})):
        return owner
    return None


def take_lock(lock: str) -> dict | None:
    """Take this program's own lock; None when taken, else the live owner holding it."""
    me = (f"run=backup-{os.getpid()}\npid={os.getpid()}\nstarted={_started(os.getpid())}\n"
          f"host={os.uname().nodename}\nsince={time.strftime('%Y-%m-%d %H:%M:%S %Z')}\nby=the backup job\n")
    for _ in range(3):
        try:
            os.mkdir(lock, 0o700)
        except FileExistsError:
            holder = lock_holder(lock)
            if holder is not None:
                return holder
            # stale: moved aside first (one rename wins), then removed
            aside = f"{lock}.stale-{os.getpid()}"
            try:
                os.rename(lock, aside)
            except OSError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
            continue
        with open(os.path.join(lock, "owner"), "w", encoding="utf-8") as fh:
            fh.write(me)
        return None
    return lock_holder(lock) or {"run": "?", "pid": "?"}


def release_lock(lock: str) -> None:
    if owner_of(lock).get("pid") == str(os.getpid()):
        shutil.rmtree(lock, ignore_errors=True)


def describe(owner: dict) -> str:
    return (f"run {owner.get('run', '?')} by {owner.get('by', '?')}, since {owner.get('since', '?')}, "
            f"process {owner.get('pid', '?')} on {owner.get('host', '?')}")


def wait_for_locks(args) -> tuple[float, str | None, str | None]:
    """Hold the backup lock with no deploy holding its lock: ``(seconds waited, what
    was waited for, None)``, or ``(seconds, what, why skipped)`` after ``--lock-wait``."""
    start = time.time()
    waited_for = None
    while True:
        other = take_lock(args.backup_lock)
        if other is not None:
            # another backup (a manual kickstart, a second config): this one is not needed
            return time.time() - start, waited_for, f"another backup holds {args.backup_lock} ({describe(other)})"
        deploy = lock_holder(args.deploy_lock)
        if deploy is None:
            return time.time() - start, waited_for, None
        release_lock(args.backup_lock)
        if waited_for is None:
            waited_for = f"a deploy holds {args.deploy_lock} ({describe(deploy)})"
            log(f"waiting up to {args.lock_wait}s: {waited_for}")
        if time.time() - start >= args.lock_wait:
            return time.time() - start, waited_for, f"{waited_for} for longer than {args.lock_wait}s"
        time.sleep(LOCK_POLL)


# --------------------------------------------------------------------------- the backup


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


def write_json(path: str, data: dict, indent: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


class Refused(Exception):
    """The backup dir cannot be trusted: nothing was written or removed."""


def prune(dest: str, new: str, keep: int, uid: int) -> tuple[list[str], list[dict]]:
    """Remove the oldest backup beyond ``keep`` (at most one: this run added one), and
    only one this program can vouch for, checked again just before; ``(pruned, the
    entries it could not vouch for)``."""
    found = survey(dest, uid)
    if found["problem"]:
        raise Refused(found["problem"])
    others = [b["name"] for b in found["backups"] if b["name"] != new]
    excess = len(others) + 1 - keep
    pruned = []
    for name in [n for n in others if n < new][:max(0, min(excess, 1))]:
        manifest, why = vouch(os.path.join(dest, name), uid)
        if manifest is None:
            found["unverified"].append({"name": name, "reason": why})
            continue
        shutil.rmtree(os.path.join(dest, name))
        pruned.append(name)
    return pruned, found["unverified"]


def backup(args) -> int:
    # What the program writes is the user's alone (an export holds password hashes),
    # and never group/other-writable, which would make it a backup nobody can vouch for.
    os.umask(0o077)
    tail: collections.deque = collections.deque(maxlen=LOG_TAIL)
    uid = os.getuid()
    dest = os.path.realpath(args.dest)
    waited, waited_for, skipped = wait_for_locks(args)
    # named and dated by when the export starts, after any wait
    started = time.time()
    status = read_status(args.status)
    if skipped:
        log(f"SKIPPED: {skipped}")
        status["last_skipped"] = {"time": iso(time.time()), "epoch": int(time.time()), "reason": skipped,
                                  "waited_seconds": round(waited, 1)}
        write_status(args.status, status)
        return EX_TEMPFAIL
    try:
        return backup_locked(args, status, dest, uid, started, tail, waited, waited_for)
    finally:
        release_lock(args.backup_lock)


def backup_locked(args, status, dest, uid, started, tail, waited, waited_for) -> int:
    temp = None
    code = 0
    try:
        os.makedirs(dest, mode=0o700, exist_ok=True)
        problem = dir_problem(dest, uid)
        if problem:
            raise Refused(problem)
        leftovers = remove_leftovers(dest, uid)
        name = PREFIX + stamp(started)
        if os.path.lexists(os.path.join(dest, name)):  # two runs in one second
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
            "epoch": int(started),
            "devpi_server": args.server_version,
            "serverversion": first_line(args.serverversion_file),
            "include_mirrored_files": bool(args.include_mirrored_files),
            "files": files,
            "file_count": len(files),
            "size": size,
        }
        manifest_path = os.path.join(temp, MANIFEST)
        write_json(manifest_path, manifest, 1)
        write_json(os.path.join(temp, MARKER), {"name": name, "manifest_sha256": sha256_of(manifest_path),
                                                "made_by": "pyinfra-devpi backup program"}, 1)
        fsync_dir(temp)
        os.rename(temp, os.path.join(dest, name))
        temp = None
        fsync_dir(dest)
        log(f"wrote {name}: {len(files)} files, {size} bytes")
    except BaseException as error:  # noqa: BLE001 - every failure is recorded
        if isinstance(error, Refused):
            code = EX_NOPERM
            tail.append(f"devpi-backup: refused: {error}: nothing was backed up or removed; make the backup dir "
                        "the user's own and writable by nobody else (chmod go-w), or choose another")
        elif code == 0:
            code = EX_IOERR if isinstance(error, OSError) else 1
            tail.append(f"devpi-backup: {type(error).__name__}: {error}")
        log(f"FAILED ({code}): {tail[-1] if isinstance(error, Refused) else error}")
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        status["last_failure"] = {
            "time": iso(time.time()), "epoch": int(time.time()), "exit_code": code, "log_tail": list(tail),
            **({"refused": str(error)} if isinstance(error, Refused) else {}),
        }
        write_status(args.status, status)
        return code

    # The backup is written: a prune that fails is reported, the backup still counts.
    prune_failed = None
    try:
        pruned, unverified = prune(dest, name, args.keep, uid)
    except (OSError, Refused) as error:
        pruned, unverified, prune_failed = [], [], f"{type(error).__name__}: {error}"
        log(f"pruned nothing: {prune_failed}")
    if pruned:
        log(f"pruned {len(pruned)} old backup(s): {', '.join(pruned)}")
    for entry in [*leftovers, *unverified]:
        log(f"kept {entry['name']}, which this program cannot vouch for: {entry['reason']}")
    finished = time.time()
    status["last_success"] = {
        "time": iso(finished), "epoch": int(finished), "name": name, "dir": dest, "size": size, "files": len(files),
        "seconds": round(finished - started, 2), "pruned": pruned,
        **({"prune_failed": prune_failed} if prune_failed else {}),
        **({"waited_seconds": round(waited, 1), "waited_for": waited_for} if waited_for else {}),
    }
    status["unverified"] = [*leftovers, *unverified]
    write_status(args.status, status)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Back up a devpi server dir with devpi-export.")
    parser.add_argument("--list", action="store_true", help="print what --dest holds as list=<json>; change nothing")
    parser.add_argument("--export", help="devpi-export of the live venv")
    parser.add_argument("--configfile")
    parser.add_argument("--serverdir")
    parser.add_argument("--dest", required=True, help="the backup dir")
    parser.add_argument("--keep", type=int)
    parser.add_argument("--status", help="the status file the Backups fact reads")
    parser.add_argument("--server-version", default=None)
    parser.add_argument("--include-mirrored-files", action="store_true")
    parser.add_argument("--serverversion-file")
    parser.add_argument("--deploy-lock", help="the deploy lock's dir: no backup while a deploy holds it")
    parser.add_argument("--backup-lock", help="this program's lock dir, which a restore and an upgrade wait for")
    parser.add_argument("--lock-wait", type=int, default=3600, help="seconds to wait for a deploy before skipping")
    parser.add_argument("--names", nargs=5, required=True,
                        metavar=("PREFIX", "MANIFEST", "EXPORT_DIR", "SUFFIX", "MARKER"))
    args = parser.parse_args(argv)
    set_names(*args.names)
    if args.list:
        found = survey(os.path.realpath(args.dest), os.getuid(), deep=False)
        print("list=" + json.dumps({**found, "now": int(time.time())}, sort_keys=True))
        return 0
    missing = [f"--{n.replace('_', '-')}" for n in ("export", "configfile", "serverdir", "keep", "status",
                                                     "serverversion_file", "deploy_lock", "backup_lock")
               if getattr(args, n) is None]
    if missing:
        parser.error("the backup needs " + ", ".join(missing))
    if args.keep < 1:
        parser.error("--keep must be at least 1")
    return backup(args)


if __name__ == "__main__":
    sys.exit(main())
