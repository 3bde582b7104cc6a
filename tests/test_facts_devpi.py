"""The devpi facts' commands, run for real under POSIX shells, parsed by ``process``."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.devpi import Health, ServerDir, VenvVersions
from facts.files import FileContents

from .prepared import SHELLS, gnu_only_forms

SHELLS = [s for s in ("/bin/sh", shutil.which("dash"), shutil.which("bash")) if s]
VENV_BIN = Path(sys.executable).parent


def run_fact(fact_cls, shell="/bin/sh", **kwargs):
    command = fact_cls().command(**kwargs)
    result = subprocess.run([shell, "-c", str(command)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr  # pyinfra treats non-zero as failure
    return fact_cls().process(result.stdout.splitlines())


@pytest.fixture(scope="module")
def initialised_dir(tmp_path_factory):
    """A server dir made by the real devpi-init (the same code the deploy runs)."""
    server_dir = tmp_path_factory.mktemp("devpi") / "server dir"
    subprocess.run(
        [VENV_BIN / "devpi-init", "--serverdir", str(server_dir), "--no-root-pypi"],
        check=True, capture_output=True,
        env={**os.environ, "DEVPISERVER_ARGON2_MEMORY_COST": "8", "DEVPISERVER_ARGON2_TIME_COST": "1"},
    )
    return server_dir


@pytest.mark.parametrize("shell", SHELLS)
def test_server_dir_missing(tmp_path, shell):
    fact = run_fact(ServerDir, shell, path=str(tmp_path / "nope"))
    assert (fact["exists"], fact["initialised"], fact["has_data"]) == (False, False, False)
    assert (fact["has_serverversion"], fact["has_database"], fact["complete"]) == (False, False, False)


@pytest.mark.parametrize("shell", SHELLS)
def test_server_dir_initialised_by_devpi(initialised_dir, shell):
    fact = run_fact(ServerDir, shell, path=str(initialised_dir))
    assert fact["initialised"] is True
    assert fact["serverversion"] == "4"
    assert fact["nodeinfo"]["role"] == "standalone"
    assert len(fact["nodeinfo"]["uuid"]) == 32
    assert fact["has_data"] is True and fact["is_dir"] is True
    assert (fact["has_serverversion"], fact["has_database"], fact["complete"]) == (True, True, True)


# What devpi-init leaves when it stops part way: it writes .serverversion, then
# .nodeinfo, then its database (.sqlite).
NODEINFO_JSON = '{"role": "standalone", "uuid": "0123456789abcdef0123456789abcdef"}'


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("files", [(".nodeinfo",), (".serverversion", ".nodeinfo")])
def test_server_dir_half_initialised(tmp_path, shell, files):
    for name in files:
        (tmp_path / name).write_text(NODEINFO_JSON if name == ".nodeinfo" else "4")
    fact = run_fact(ServerDir, shell, path=str(tmp_path))
    assert (fact["initialised"], fact["has_data"]) == (True, True)
    assert (fact["has_database"], fact["complete"]) == (False, False)
    assert fact["has_serverversion"] is (".serverversion" in files)


def test_server_dir_with_an_empty_database_file_has_no_database(initialised_dir, tmp_path):
    for name in (".serverversion", ".nodeinfo"):
        (tmp_path / name).write_bytes((initialised_dir / name).read_bytes())
    (tmp_path / ".sqlite").write_bytes(b"")
    fact = run_fact(ServerDir, path=str(tmp_path))
    assert (fact["initialised"], fact["has_database"], fact["complete"]) == (True, False, False)
    (tmp_path / ".sqlite").write_bytes((initialised_dir / ".sqlite").read_bytes())
    assert run_fact(ServerDir, path=str(tmp_path))["complete"] is True


@pytest.mark.parametrize("content", ["", "\n"])
def test_server_dir_with_an_empty_serverversion(initialised_dir, tmp_path, content):
    for name in (".nodeinfo", ".sqlite"):
        (tmp_path / name).write_bytes((initialised_dir / name).read_bytes())
    (tmp_path / ".serverversion").write_text(content)
    fact = run_fact(ServerDir, path=str(tmp_path))
    assert (fact["has_serverversion"], fact["serverversion"]) == (True, None)
    assert (fact["initialised"], fact["has_database"], fact["complete"]) == (True, True, False)


def test_server_dir_empty_and_with_stray_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    fact = run_fact(ServerDir, path=str(empty))
    assert (fact["initialised"], fact["has_data"], fact["entries"]) == (False, False, 0)
    (empty / ".sqlite").write_text("x")
    fact = run_fact(ServerDir, path=str(empty))
    assert (fact["initialised"], fact["has_data"]) == (False, True)
    assert (fact["has_database"], fact["complete"]) == (True, False)


def test_server_dir_reports_secret_file_without_its_content(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("TOP-SECRET-CONTENT")
    secret.chmod(0o600)
    command = ServerDir().command(path=str(tmp_path / "sd"), secret_file=str(secret))
    out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True).stdout
    assert "TOP-SECRET-CONTENT" not in out
    fact = ServerDir().process(out.splitlines())
    assert fact["exists"] is False
    assert fact["secret_file"] == {"exists": True, "mode": "-rw-------"}
    assert run_fact(ServerDir, path=str(tmp_path), secret_file=str(tmp_path / "none"))[
        "secret_file"
    ] == {"exists": False, "mode": None}


@pytest.mark.parametrize("shell", SHELLS)
def test_a_server_dir_not_managed_yet_reports_owners_and_modes(tmp_path, shell):
    # no secret file yet (brought over): its entries are walked; a managed one is not
    sd = tmp_path / "sd"
    (sd / "+files").mkdir(parents=True)
    (sd / ".sqlite").write_bytes(b"x")
    (sd / "+files" / "a b.whl").write_bytes(b"y")
    (sd / "+files" / "a b.whl").chmod(0o664)
    (sd / "link").symlink_to("+files")  # a symlink's own mode is not a problem
    fact = run_fact(ServerDir, shell=shell, path=str(sd), secret_file=str(tmp_path / "secret"))
    assert fact["writable_by_others"] == {"count": 1, "first": str(sd / "+files" / "a b.whl")}
    assert fact["foreign_owned"] == {"count": 0, "first": None}
    (tmp_path / "secret").write_text("s")
    managed = run_fact(ServerDir, shell=shell, path=str(sd), secret_file=str(tmp_path / "secret"))
    assert "writable_by_others" not in managed and "foreign_owned" not in managed


@pytest.mark.parametrize("shell", SHELLS)
def test_server_dir_reports_the_whoosh_index_and_its_size(initialised_dir, tmp_path, shell):
    assert run_fact(ServerDir, shell, path=str(initialised_dir))["whoosh_index_kib"] is None
    assert run_fact(ServerDir, shell, path=str(tmp_path / "nope"))["whoosh_index_kib"] is None
    server_dir = tmp_path / "server dir"
    shutil.copytree(initialised_dir, server_dir)
    (server_dir / ".indices").mkdir()
    (server_dir / ".indices" / "_project_1.seg").write_bytes(os.urandom(300 * 1024))
    fact = run_fact(ServerDir, shell, path=str(server_dir))
    assert 300 <= fact["whoosh_index_kib"] < 400
    # segments without the table of contents: devpi-web's project index is not created yet
    assert fact["whoosh_project_index"] is False
    (server_dir / ".indices" / "_project_0.toc").write_bytes(b"toc")
    assert run_fact(ServerDir, shell, path=str(server_dir))["whoosh_project_index"] is True
    assert run_fact(ServerDir, shell, path=str(tmp_path / "nope"))["whoosh_project_index"] is False


def test_server_dir_garbage_raises():
    with pytest.raises(FactProcessError):
        ServerDir().process(["something else"])


def test_venv_versions_of_a_real_venv():
    venv = VENV_BIN.parent
    fact = run_fact(VenvVersions, venv=str(venv))
    assert fact["devpi-server"] == "6.20.3"
    assert fact["devpi-web"] == "5.1.1"
    assert fact["path"] == str(venv.resolve())


def test_venv_versions_through_a_symlink_and_missing(tmp_path):
    link = tmp_path / "venv"
    link.symlink_to(VENV_BIN.parent)
    assert run_fact(VenvVersions, venv=str(link))["path"] == str(VENV_BIN.parent.resolve())
    assert run_fact(VenvVersions, venv=str(tmp_path / "none")) is None


def test_venv_without_devpi(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True)
    fact = run_fact(VenvVersions, venv=str(tmp_path / "v"))
    assert fact["devpi-server"] is None and fact["devpi-web"] is None
    assert fact["python"] == "%d.%d.%d" % sys.version_info[:3]


def fake_venv(root: Path, python: str, dist_infos: list[str]) -> Path:
    """A venv-shaped directory: an interpreter script and metadata dirs, nothing else."""
    (root / "bin").mkdir(parents=True)
    interpreter = root / "bin" / "python"
    interpreter.write_text(f"#!/bin/sh\n{python}\n")
    interpreter.chmod(0o755)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\nversion_info = 3.12.4\n")
    for name in dist_infos:
        (root / "lib" / "python3.12" / "site-packages" / name).mkdir(parents=True)
    return root


@pytest.mark.parametrize("shell", SHELLS)
def test_venv_versions_from_metadata_dirs(tmp_path, shell):
    venv = fake_venv(tmp_path / "v", "exit 0", [
        "devpi_server-6.21.0.dist-info", "devpi_web-5.2.0.dist-info", "devpi_common-4.1.1.dist-info",
        "devpi_server_plugin-1.0.dist-info",
    ])
    fact = run_fact(VenvVersions, shell=shell, venv=str(venv))
    assert fact == {"devpi-server": "6.21.0", "devpi-web": "5.2.0", "python": "3.12.4",
                    "path": str(venv.resolve()), "link": None, "database_version": None}
    # devpi-server's database version, read from its source as devpi writes it
    main = venv / "lib/python3.12/site-packages/devpi_server/main.py"
    main.parent.mkdir()
    main.write_text('import sys\n\nDATABASE_VERSION = "5"\n\n\ndef check():\n    pass\n')
    assert run_fact(VenvVersions, shell=shell, venv=str(venv))["database_version"] == "5"
    # the live venv as the deploy makes it: a link into venvs/, reported as written
    live = tmp_path / "live"
    live.symlink_to(venv)
    assert run_fact(VenvVersions, shell=shell, venv=str(live))["link"] == str(venv)


def test_venv_whose_interpreter_cannot_run_reports_no_versions(tmp_path):
    # e.g. the interpreter's shared library went away: the deploy must rebuild it.
    venv = fake_venv(tmp_path / "v", "exit 127", ["devpi_server-6.20.3.dist-info", "devpi_web-5.1.1.dist-info"])
    fact = run_fact(VenvVersions, venv=str(venv))
    assert fact["devpi-server"] is None and fact["devpi-web"] is None
    assert fact["path"] == str(venv.resolve())


def test_venv_with_two_versions_of_one_dist_reports_none(tmp_path):
    venv = fake_venv(tmp_path / "v", "exit 0", [
        "devpi_server-6.20.3.dist-info", "devpi_server-6.21.0.dist-info", "devpi_web-5.1.1.dist-info",
    ])
    fact = run_fact(VenvVersions, venv=str(venv))
    assert fact["devpi-server"] is None and fact["devpi-web"] == "5.1.1"


def test_venv_versions_garbage_raises():
    with pytest.raises(FactProcessError):
        VenvVersions().process(["something else"])


def test_health_of_nothing_listening():
    assert run_fact(Health, url="http://127.0.0.1:9") == {"status": None, "ok": False}


def test_file_contents_round_trip_exact_bytes(tmp_path):
    a = tmp_path / "a b.plist"
    a.write_text("<x>&amp;</x>\n\n  trailing spaces  \n\n")
    b = tmp_path / "empty"
    b.write_text("")
    fact = run_fact(FileContents, paths=[str(a), str(b), str(tmp_path / "missing")])
    assert fact == {str(a): a.read_text(), str(b): "", str(tmp_path / "missing"): None}



def run_fact_bytes(fact_cls, shell="/bin/sh", **kwargs):
    """The fact's real command, its output decoded as pyinfra's reader does (strict
    UTF-8: a byte that is not would end in a traceback there)."""
    command = fact_cls().command(**kwargs)
    result = subprocess.run([shell, "-c", str(command)], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert gnu_only_forms(str(command)) == []
    return fact_cls().process(result.stdout.decode("utf-8").splitlines())


@pytest.mark.parametrize("shell", SHELLS)
def test_managed_agents_lists_only_the_deploys_plists_with_their_configs_port(tmp_path, shell):
    from facts.managed_agents import ManagedAgents
    from pyinfra_devpi.config import build_config
    from pyinfra_devpi.render import render_plist, render_server_yaml

    home = tmp_path / "home & <x>"
    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_label": "net.devpi.old",
                           "devpi_port": 4242}, str(home))
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "net.devpi.old.plist").write_text(render_plist(config))
    Path(config.paths.config_file).parent.mkdir(parents=True)
    Path(config.paths.config_file).write_text(render_server_yaml(config, "null"))
    (agents / "com.other.plist").write_text(
        '<?xml version="1.0"?><plist version="1.0"><dict><key>Label</key><string>com.other</string></dict></plist>'
    )
    (agents / "notes.txt").write_text("Managed by pyinfra-devpi\n")
    found = run_fact_bytes(ManagedAgents, shell, directory=str(agents))
    assert found == {
        str(agents / "net.devpi.old.plist"): {
            "label": "net.devpi.old",
            "arguments": [f"{home}/devpi/venv/bin/devpi-server", "--configfile", f"{home}/devpi/devpi-server.yml"],
            "config": f"{home}/devpi/devpi-server.yml", "config_port": 4242, "damaged": None,
        },
    }
    # A config the deploy did not write (no marker) serves no port of the deploy's.
    Path(config.paths.config_file).write_text("devpi-server:\n  port: 4242\n")
    assert run_fact_bytes(ManagedAgents, shell, directory=str(agents))[str(agents / "net.devpi.old.plist")][
        "config_port"] is None
    assert run_fact_bytes(ManagedAgents, shell, directory=str(tmp_path / "none")) == {}


@pytest.mark.parametrize("damage", ["truncated", "not utf-8"])
def test_managed_agents_reports_a_damaged_plist_without_raising(tmp_path, damage):
    from facts.managed_agents import ManagedAgents
    from pyinfra_devpi.config import build_config
    from pyinfra_devpi.render import render_plist

    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/a")
    text = render_plist(config).encode()
    plist = tmp_path / "net.devpi.plist"
    plist.write_bytes(text[: len(text) // 2] if damage == "truncated" else text.replace(b"<key>Label", b"<key>\xffLabel"))
    (agent,) = run_fact_bytes(ManagedAgents, directory=str(tmp_path)).values()
    assert agent["label"] is None and agent["arguments"] == []
    assert agent["damaged"].startswith("not a plist" if damage == "truncated" else "not UTF-8 text (byte 0xff")


def test_file_contents_reports_a_file_that_is_not_utf8_as_damaged(tmp_path):
    from facts.files import Damaged

    block = tmp_path / "devpi.caddy"
    block.write_bytes(b"# Managed by pyinfra-devpi\nexample.org {\n\xe9\n}\n")
    (content,) = run_fact_bytes(FileContents, paths=[str(block)]).values()
    assert isinstance(content, Damaged)
    assert content.reason == "not UTF-8 text (byte 0xe9 at offset 41)"
    # It equals no content, so the operation that owns the file writes it again.
    assert content != str(content) and content != "" and not (content == content[:])
    assert "example.org {" in content


@pytest.mark.parametrize(("nodeinfo", "serverversion", "damaged"), [
    (b'{"uuid": "\xff', b"4\n", {".nodeinfo": "not UTF-8 text (byte 0xff at offset 10)"}),
    (b'{"uuid": ', b"4\n", {".nodeinfo": "not JSON (Expecting value: line 1 column 10 (char 9))"}),
    (b'["uuid"]', b"4\n", {".nodeinfo": "not a JSON object"}),
    (b'{"uuid": "u"}', b"4\xe9\n", {".serverversion": "not a database version ('4?', non-ASCII bytes as '?')"}),
    (b'{"uuid": "u"}', b"four\n", {".serverversion": "not a database version ('four', non-ASCII bytes as '?')"}),
])
def test_server_dir_reports_devpis_damaged_files_without_raising(tmp_path, nodeinfo, serverversion, damaged):
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    (server_dir / ".nodeinfo").write_bytes(nodeinfo)
    (server_dir / ".serverversion").write_bytes(serverversion)
    (server_dir / ".sqlite").write_bytes(b"db")
    fact = run_fact_bytes(ServerDir, path=str(server_dir))
    assert fact["damaged"] == damaged
    assert fact["initialised"] is True  # still devpi's: never initialised over


@pytest.mark.parametrize("name", [".nodeinfo", ".serverversion"])
def test_a_server_dir_with_damaged_devpi_files_is_refused_naming_the_file_and_the_way_out(name):
    from deploys._service import check_server_dir
    from pyinfra_devpi.config import build_config
    from pyinfra_devpi.errors import DeployError

    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/a")
    found = {"exists": True, "is_dir": True, "has_data": True, "initialised": True, "has_database": True,
             "has_serverversion": True, "serverversion": "4", "damaged": {name: "not JSON (x)"}}
    with pytest.raises(DeployError) as refused:
        check_server_dir(config, found)
    message = str(refused.value)
    assert message.startswith(f"{config.paths.server_dir}/{name} is damaged: not JSON (x). ")
    assert "never replaces them, and nothing was changed" in message
    assert f"mv {config.paths.server_dir} {config.paths.server_dir}.broken" in message


def test_users_indexes_reports_a_damaged_state_file_without_raising(tmp_path):
    import http.server
    import json
    import threading

    from facts.users_indexes import UsersIndexes

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"result": {"root": {"username": "root", "indexes": {}}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        state = tmp_path / "users.pyinfra.json"
        for content, damaged in [
            (b'{"users": {"root": {"password": "env:P\xff"}}}', "not UTF-8 text (byte 0xff at offset 38)"),
            (b'{"users": ', "not JSON (Expecting value: line 1 column 11 (char 10))"),
            (b'{"users": ["root"]}', "not the deploy's record of password references"),
            (b'{"users": {"root": {"password": "env:P", "version": 1}}}', None),
        ]:
            state.write_bytes(content)
            fact = run_fact_bytes(UsersIndexes, url=url, state_file=str(state))
            assert fact["state_damaged"] == damaged
            assert fact["passwords"] == ({} if damaged else {"root": {"password": "env:P", "version": 1}})
            assert "root" in fact["users"]
        state.unlink()
        assert run_fact_bytes(UsersIndexes, url=url, state_file=str(state))["passwords"] == {}
    finally:
        server.shutdown()
