"""
devpi on the host: its venv, its config file, its secret, its one-time init, and
the wait for it to answer after a (re)start.

All commands are POSIX sh for macOS's BSD userland as much as for Linux.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host, state
from pyinfra.api import FileUploadCommand

from facts.devpi import ServerDir, VenvVersions
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.snapshot import read_fact

from .announce import operation
from .textfile import write_text
from .triggers import any_changed

q = shlex.quote


def venv_is_current(config: DevpiConfig, installed: dict | None) -> bool:
    return bool(
        installed
        and installed.get("devpi-server") == config.server_version
        and installed.get("devpi-web") == config.web_version,
    )


def build_venv_script(config: DevpiConfig, requirements: str) -> str:
    """Build a new venv beside the live one, prove it, then swap the live link.

    The live venv is never modified: the new one gets a fresh directory under
    ``venvs/``, is checked to import and to report the pinned version (and the
    database version the server dir holds), and only then does ``<home>/venv``
    (a symlink) move to it with one rename. The previous venv is kept for a
    rollback; older ones are removed. A failed build removes its own directory.
    """
    index = f" --index-url {q(config.index_url)}" if config.index_url else ""
    check = (
        "import sys, devpi_server, devpi_web.main; "
        "from devpi_server.main import DATABASE_VERSION as v; print(v)"
    )
    replace = "import os, sys; os.replace(sys.argv[1], sys.argv[2])"
    lines = [
        f"# build devpi-server {config.server_version} + devpi-web {config.web_version} in a new "
        f"venv under {config.venvs_dir}, then point {config.venv} at it",
        "set -e",
        f"home={q(config.home)}; venvs={q(config.venvs_dir)}; live={q(config.venv)}",
        f"uv={q(config.uv)}",
        'command -v "$uv" >/dev/null 2>&1 || { echo "uv not found on the target as '
        f"{config.uv}"
        ': install uv or set devpi_uv to its path" >&2; exit 127; }',
        '(umask 077; mkdir -p "$home")',
        'mkdir -p "$venvs"',
        f'new="$venvs/{config.venv_name}-$(date +%Y%m%d%H%M%S)"',
        "trap 'rc=$?; if [ $rc -ne 0 ]; then rm -rf \"$new\"; fi' EXIT",
        # uv reads project files from the working directory: build from a neutral one.
        'cd "$venvs"',
        f'"$uv" venv --quiet --python {q(config.python)} "$new"',
        f'"$uv" pip install --quiet --python "$new/bin/python"{index} {requirements}',
        f'db=$("$new/bin/python" -I -c {q(check)})',
        'version=$("$new/bin/devpi-server" --version 2>/dev/null)',
        f'if [ "$version" != {q(config.server_version)} ]; then '
        f'echo "the new venv reports devpi-server $version, expected {config.server_version}" >&2; '
        "exit 1; fi",
        f"sv={q(config.server_dir + '/.serverversion')}",
        'if [ -f "$sv" ] && [ "$(head -n 1 "$sv")" != "$db" ]; then '
        f'echo "devpi-server {config.server_version} uses database version $db but '
        f"{config.server_dir} holds version $(head -n 1 \"$sv\"); export with the old "
        'version (devpi-export) and import into a new server dir (devpi-import)" >&2; '
        "exit 1; fi",
        'prev=$(cd "$live" 2>/dev/null && pwd -P || true)',
        # A venv made by hand (a real directory) is moved aside, not deleted.
        'if [ -d "$live" ] && [ ! -L "$live" ]; then '
        'prev="$venvs/pre-existing-$(date +%Y%m%d%H%M%S)"; mv "$live" "$prev"; fi',
        'rm -f "$live.pyinfra-new"',
        'ln -s "$new" "$live.pyinfra-new"',
        f'"$new/bin/python" -I -c {q(replace)} "$live.pyinfra-new" "$live"',
        f'for d in "$venvs"/{config.venv_name.split("-", 1)[0]}-*; do '
        '[ -d "$d" ] || continue; '
        'case "$d" in "$new"|"$prev") ;; *) rm -rf "$d" ;; esac; done',
    ]
    return "\n".join(lines)


@operation
def venv(config: DevpiConfig, lock: str | None = None):
    """
    Install the pinned devpi-server and devpi-web into a new venv and make it live.

    + config: the validated deploy config
    + lock: the full requirements lock for the pinned pair (``locks/``), or None to
      let uv resolve the pins
    """
    installed = read_fact(host, VenvVersions, venv=config.venv)
    if venv_is_current(config, installed):
        return

    if lock is not None:
        lock_path = f"{config.venvs_dir}/{config.venv_name}.lock.txt"
        yield f"mkdir -p {q(config.venvs_dir)}"
        yield FileUploadCommand(BytesIO(lock.encode("utf-8")), lock_path)
        requirements = f"--require-hashes -r {q(lock_path)}"
    else:
        requirements = " ".join(
            q(p)
            for p in (
                f"devpi-server=={config.server_version}",
                f"devpi-web=={config.web_version}",
                # pyramid imports pkg_resources, which setuptools 82 removed.
                "setuptools<=81",
            )
        )
    yield build_venv_script(config, requirements)


@operation
def server_config(config: DevpiConfig, content: str):
    """Write devpi-server's YAML config file (mode 0600: it names the secret file)."""
    yield from write_text(config.config_file, content, mode="600")


@operation
def secret(config: DevpiConfig):
    """Create devpi's secret file once, with devpi's own generator.

    The secret signs login tokens: a persistent one keeps logins valid across
    restarts. It is never rewritten, so existing tokens stay valid.
    """
    server_dir = read_fact(host, ServerDir, path=config.server_dir, secret_file=config.secret_file)
    if server_dir["secret_file"]["exists"]:
        return
    # devpi refuses a secret file whose directory is group/world writable.
    yield (
        f"(umask 077; mkdir -p {q(config.home)}) && chmod 700 {q(config.home)} && "
        f"{q(config.venv + '/bin/devpi-gen-secret')} --configfile {q(config.config_file)} "
        f"--secretfile {q(config.secret_file)} >/dev/null && chmod 600 {q(config.secret_file)}"
    )


def needs_init(server_dir: dict) -> bool:
    """Only a missing or empty dir without devpi's ``.nodeinfo`` marker is initialised."""
    return not server_dir["initialised"] and not server_dir["has_data"]


@operation
def init(config: DevpiConfig, password_hash=None):
    """
    Initialise an empty server dir with ``devpi-init``, once.

    + password_hash: a ``HiddenValue`` with the root password's argon2 hash (made on
      the controller). It reaches the host through SFTP into a 0600 file in the
      0700 devpi home, is read into devpi-init's environment and the file removed
      before devpi-init starts: never in argv, output or a leftover file.
    """
    server_dir = read_fact(host, ServerDir, path=config.server_dir, secret_file=config.secret_file)
    if not needs_init(server_dir):
        return
    if password_hash is None:
        raise ValueError("init needs the root password hash")

    hash_file = f"{config.home}/.root-passwd-hash.pyinfra"
    yield f"(umask 077; mkdir -p {q(config.home)}) && chmod 700 {q(config.home)}"
    # Before execution (--dry, change detection) there is nothing to upload.
    content = password_hash.unmask() if state.is_executing else ""
    yield FileUploadCommand(BytesIO(content.encode("utf-8")), hash_file)
    yield (
        f"f={q(hash_file)}; chmod 600 \"$f\"; "
        'DEVPISERVER_ROOT_PASSWD_HASH=$(cat "$f"); rm -f "$f"; '
        "export DEVPISERVER_ROOT_PASSWD_HASH; "
        f"(umask 077; mkdir -p {q(config.server_dir)}) && chmod 700 {q(config.server_dir)} && "
        f"{q(config.venv + '/bin/devpi-init')} --configfile {q(config.config_file)}"
    )


def wait_healthy_script(url: str, timeout: int, err_log: str) -> str:
    api = q(url.rstrip("/") + "/+api")
    return (
        f"end=$(($(date +%s) + {timeout})); code=000; "
        "while :; do "
        f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {api} 2>/dev/null) || true; "
        'if [ "$code" = 200 ]; then exit 0; fi; '
        'if [ "$(date +%s)" -ge "$end" ]; then '
        f'echo "devpi did not answer 200 on {url}/+api within {timeout}s '
        f'(last status: $code). Last lines of {err_log}:" >&2; '
        f"tail -n 40 {q(err_log)} >&2 2>/dev/null; exit 1; fi; "
        "sleep 0.3; done"
    )


@operation
def wait_healthy(config: DevpiConfig, after=()):
    """After a (re)start, wait (bounded) for ``GET /+api`` to answer 200.

    + after: the operations that may have (re)started devpi; nothing to wait for
      when none of them changed anything
    """
    if not any_changed(after):
        return
    yield wait_healthy_script(config.local_url, config.health_timeout, config.err_log_path)
