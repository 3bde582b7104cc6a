"""
Paths compared as the host resolves them.

A configured path is text until the host says where it lands: a symlinked directory on
the way, or a case-insensitive file system (APFS's default: ``~/devpi/SERVER-DIR`` is the
server dir), makes two different spellings one file. The ``RealPaths`` fact
(``facts/files.py``) reads, in the plan's one round trip, each path's real path and
whether its file system folds case; ``problems`` refuses a configured path that lands on
one of the deploy's own files or dirs, on the SSH user's home, or inside a dir the deploy
prunes or purges, naming the key and the fix. Without the fact's answer (the config's own
check, before the host is read) the paths are compared as written.

``purge_plan`` is the uninstall's one list of what a purge removes and what it keeps (and
why): the message and the action are both made from it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import layout

if TYPE_CHECKING:
    from .config import DevpiConfig


@dataclass(frozen=True)
class Real:
    """Where a path lands on the host, and whether its file system folds case."""

    path: str
    folds: bool = False


def real(found: dict | None, path: str) -> Real:
    """``path`` as the ``RealPaths`` answer ``found`` resolved it (as written when it was
    not read)."""
    entry = ((found or {}).get("paths") or {}).get(path)
    if not entry:
        return Real(posixpath.normpath(path))
    return Real(posixpath.normpath(entry["real"]), bool(entry.get("folds")))


def _pair(a: Real, b: Real) -> tuple[str, str]:
    # Either side on a file system that folds case: compared folded (two spellings that
    # differ only in case are one file there).
    if a.folds or b.folds:
        return a.path.casefold(), b.path.casefold()
    return a.path, b.path


def same(a: Real, b: Real) -> bool:
    x, y = _pair(a, b)
    return x == y


def within(a: Real, b: Real) -> bool:
    """``a`` is ``b`` or inside it."""
    x, y = _pair(a, b)
    return x == y or x.startswith(y.rstrip("/") + "/")


@dataclass(frozen=True)
class Configured:
    """A path the operator chose (through ``key``), with how to fix it; ``role``: what it
    is among the deploy's own paths (``owned``), so it is not compared with itself."""

    key: str
    path: str
    fix: str
    role: str


def configured(config: DevpiConfig) -> list[Configured]:
    """Every path the operator's keys place, devpi_home first."""
    paths = config.paths
    logs = f"use a file name of its own in a log directory, such as {layout.DEFAULT_LOG_DIR!r}"
    plists = ("`devpi_launch_daemons_dir`" if paths.daemon else "`devpi_launch_agents_dir`")
    out = [
        Configured("`devpi_home`", paths.home, f"use a directory of its own, such as {layout.DEFAULT_HOME!r}",
                   HOME),
        Configured("`devpi_caddy_site_file`", paths.caddy_site_file,
                   f"use a path in Caddy's config, such as {layout.DEFAULT_CADDY_SITE_FILE!r}", SITE),
        Configured("`devpi_log_dir` / `devpi_out_log`", paths.out_log, logs, OUT_LOG),
        Configured("`devpi_log_dir` / `devpi_err_log`", paths.err_log, logs, ERR_LOG),
        Configured("`devpi_log_dir` / `devpi_server_log`", paths.server_log, logs, SERVER_LOG),
        Configured(f"{plists} / `devpi_label`", paths.plist_file, "use launchd's own directory (the default)", PLIST),
    ]
    if config.backup is not None:
        out += [
            Configured("`devpi_backup` ['dir']", config.backup_dir,
                       f"use a directory of its own outside the deploy's, such as {paths.default_backup_dir!r} "
                       "(or, better, one on another disk)", BACKUPS),
            Configured("`devpi_log_dir` / `devpi_label` (the backup job's log)", paths.backup_log, logs, BACKUP_LOG),
            Configured(f"{plists} / `devpi_label` (the backup job's plist)", paths.backup_plist_file,
                       "use launchd's own directory (the default)", BACKUP_PLIST),
        ]
    return out


# What each configured path is among the deploy's own (``owned``): the names
# ``Layout.removable`` gives the logs, and the others'.
HOME, SITE, PLIST, BACKUP_PLIST, BACKUPS = ("devpi_home", "Caddy site block", "plist", "backup job's plist",
                                            "backups")
OUT_LOG, ERR_LOG, SERVER_LOG, BACKUP_LOG = "stdout log", "stderr log", "devpi's log", "backup job's log"


def owned(config: DevpiConfig) -> list[tuple[str, str]]:
    """The deploy's own files and dirs, by what they are."""
    paths = config.paths
    out = [
        (HOME, paths.home),
        *paths.removable(config.log_backups),
        ("backup program's directory", paths.bin_dir),
        (PLIST, paths.plist_file),
        (BACKUP_PLIST, paths.backup_plist_file),
        (SITE, paths.caddy_site_file),
        ("deploy lock", paths.deploy_lock.lock),
        ("record of the last deploy", paths.deploy_lock.serial),
    ]
    if config.backup is not None:
        out.append((BACKUPS, config.backup_dir))
    return out


def pruned(config: DevpiConfig) -> list[tuple[str, str]]:
    """The dirs whose content the deploy removes: a venv build prunes the old ones, the uv
    bootstrap replaces the tools, an upgrade or a restore swaps the server dir, a purge
    removes them all."""
    return config.paths.pruned()


def to_read(config: DevpiConfig) -> tuple[str, ...]:
    """Every path ``problems`` compares (for the ``RealPaths`` read)."""
    everything = [c.path for c in configured(config)] + [p for _, p in owned(config)] + [p for _, p in pruned(config)]
    return tuple(dict.fromkeys(everything))


def _shown(path: str, where: Real) -> str:
    return path if where.path == path else f"{path} (on the host: {where.path})"


def problems(config: DevpiConfig, found: dict | None, user_home: str | None = None) -> list[str]:
    """Every configured path that lands where it must not, one problem per key.

    ``found``: the ``RealPaths`` answer (None: compare as written); ``user_home``: the
    SSH user's home when ``found`` has none."""
    home_entry = (found or {}).get("home")
    if home_entry:
        user = Real(posixpath.normpath(home_entry["real"]), bool(home_entry.get("folds")))
    elif user_home:
        user = Real(posixpath.normpath(user_home))
    else:
        user = None
    out = []
    devpi_home = real(found, config.paths.home)
    for c in configured(config):
        where = real(found, c.path)
        why = None
        if c.key == "`devpi_home`":
            if user is not None and within(user, where):
                why = ("is the SSH user's home" if same(user, where) else "holds the SSH user's home") + \
                      ": the deploy makes devpi_home 0700 and its purge removes what it names in it"
            elif where.path == "/":
                why = "is the root directory"
        else:
            clash = next((what for what, path in owned(config) if what != c.role and same(where, real(found, path))),
                         None)
            inside = next((what for what, path in pruned(config) if within(where, real(found, path))), None)
            if clash:
                why = f"is the deploy's own {clash}"
            elif inside:
                why = f"is inside the deploy's {inside}, whose content the deploy prunes or removes"
            elif c.path in (config.paths.caddy_site_file, config.backup_dir) and user is not None and same(where, user):
                why = "is the SSH user's home"
            elif c.path == config.paths.caddy_site_file and within(where, devpi_home):
                why = "is inside devpi_home"
        if why:
            out.append(f"paths: {c.key} = {_shown(c.path, where)} {why}; {c.fix}")
            if c.role == HOME:
                break  # every other path compared with that home would only repeat it
    return out


def purge_read_paths(config: DevpiConfig, kept: list[tuple[str, str]]) -> tuple[str, ...]:
    """What ``purge_plan`` resolves: devpi_home, each removable path and its directory,
    and what the uninstall keeps."""
    removable = [path for _, path in config.paths.removable(config.log_backups)]
    return tuple(dict.fromkeys([config.paths.home, *removable, *(posixpath.dirname(p) for p in removable),
                                *(path for _, path in kept)]))


def home_problem(config: DevpiConfig, found: dict | None) -> str | None:
    """Why a purge must not run at all: devpi_home lands on (or above) the SSH user's home."""
    home = [p for p in problems(config, found) if p.startswith("paths: `devpi_home`")]
    return home[0] if home else None


def purge_plan(config: DevpiConfig, present: dict, found: dict | None,
               kept: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """What a purge removes (``(what, path)``) and what it keeps (``(what, path, why)``),
    in the order it removes: of the deploy's paths that exist (``present``: ``PathsFound``),
    each in devpi_home whose directory is devpi_home itself as the host resolves it (no link
    out of it is followed) and that holds nothing the uninstall keeps (``kept``: e.g. the
    backups)."""
    paths = config.paths
    home = real(found, paths.home)
    remove, keep = [], []
    for what, path in paths.removable(config.log_backups):
        if not present.get(path):
            continue
        where = real(found, path)
        parent = posixpath.dirname(path)
        holds = next(((k_what, k_path) for k_what, k_path in kept if within(real(found, k_path), where)), None)
        if path.startswith(paths.home + "/") and not within(real(found, parent), home):
            keep.append((what, path, f"its directory {parent} leads out of devpi_home (to {real(found, parent).path}): "
                                     "the purge follows no link out of it"))
        elif holds:
            keep.append((what, path, f"it holds the {holds[0]} ({holds[1]}), which the uninstall keeps"))
        else:
            remove.append((what, path))
    return remove, keep
