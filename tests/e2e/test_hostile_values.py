"""
Hostile values in the keys that end up in host commands and messages (paths, file
names, the uv path), on the failure paths that print them and on a real converge:
nothing in them runs on the host, every message shows them as they are.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .stack import start_stack

pytestmark = pytest.mark.e2e

# Shell syntax of every kind, quotes, a non-ASCII name, no slash (it is a file name
# too): each "touch" would leave a "pwned-*" file wherever it ran.
HOSTILE = "d $(touch pwned-a) `touch pwned-b` \"q' ; touch pwned-c; \U0001f986 %s"
# devpi_home refuses '%' (and '#', '?': SQLite reads them in the database's URI), so the
# home gets the value without it.
HOSTILE_HOME = HOSTILE.replace("%", "pct")


def pwned_files(base: Path) -> list[str]:
    return sorted(str(p) for p in base.rglob("pwned-*"))


@pytest.fixture(scope="module")
def hostile(sshd, launchd, upstream, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    # The SSH session's home and working directories are all under the base temp dir.
    pwned = tmp_path_factory.getbasetemp()
    value = HOSTILE
    home = root / "home"
    with start_stack(
        sshd, launchd, upstream, root, "hostile", deploy=False, caddy=False,
        devpi_home=home / HOSTILE_HOME,
        devpi_log_dir=home / f"logs {value}",
        devpi_err_log=f"err {value}.log",
        devpi_throttle_interval=1,
        devpi_indexes={"root/pypi": {"mirror_url": upstream.url}},
    ) as stack:
        yield stack, value, pwned
    assert pwned_files(pwned) == [], "a hostile value ran on the host"


def test_uv_missing_names_the_path_as_it_is(hostile):
    stack, value, pwned = hostile
    uv = f"/nonexistent/{value}"
    result = stack.deploy(check=False, devpi_uv=uv)
    assert result.returncode != 0
    # The preflight refuses it before any change, naming it as it is.
    assert f"uv: devpi_uv is {uv}, which is not an executable file on the host" in result.output, result.describe()
    assert pwned_files(pwned) == []


def test_health_timeout_prints_the_error_log_path_as_it_is(hostile):
    stack, value, pwned = hostile
    # Something that accepts connections and never answers holds devpi's port:
    # devpi cannot bind, the health wait gives up and prints the error log's tail.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(64)
        port = squatter.getsockname()[1]
        result = stack.deploy(check=False, devpi_port=port, devpi_health_timeout=2)
    assert result.returncode != 0
    err_log = f"{stack.home}/logs {value}/err {value}.log"
    assert f"Last lines of {err_log}:" in result.output, result.describe()
    assert pwned_files(pwned) == []


def test_a_converge_with_these_paths_works(hostile):
    stack, value, pwned = hostile
    stack.deploy()
    stack.wait_healthy()
    assert (stack.home / HOSTILE_HOME / "server-dir" / ".nodeinfo").is_file()
    assert (stack.home / f"logs {value}" / f"err {value}.log").exists()
    assert stack.login("root", stack.password) == 200
    assert pwned_files(pwned) == []


@pytest.mark.parametrize("name", ["dv#1", "dv?1", "dv%41"])
def test_a_devpi_home_that_sqlite_would_read_as_a_uri_is_refused_and_nothing_is_left(hostile, name):
    # devpi-init opened its database by URI: "~/dv#1" wrote the .sqlite to "~/dv".
    stack, value, pwned = hostile
    home = stack.home / name
    result = stack.deploy(check=False, devpi_home=home)
    assert result.returncode != 0
    assert f"host data `devpi_home` = '{home}' is invalid" in result.output, result.describe()
    assert "SQLite" in result.output and "write the database outside it" in result.output
    assert not home.exists() and not (stack.home / "dv").exists()
