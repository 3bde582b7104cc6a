"""Config validation: every key rejects bad values with a message naming the key."""

import pytest

from pyinfra_devpi.config import KEYS, ConfigError, build_config

HOME = "/Users/alice"
BASE = {"devpi_root_password": "env:DEVPI_PW", "devpi_outside_url": "https://pypi.example.org"}

# At least one bad value for every key the deploy reads.
BAD_VALUES = {
    "devpi_server_version": ["latest", 6.2, "6.20.3; rm -rf /", "6.x"],
    "devpi_web_version": ["", "5.1.1 ", None],
    "devpi_home": ["devpi", "~devpi", 42, "/tmp/../etc", "/tmp/a\nb", "/tmp/a\rb"],
    "devpi_host": ["pypi.example.org", "", 127],
    "devpi_port": [0, 65536, "3141", True, 31.41],
    "devpi_allow_remote_bind": ["yes", 1],
    "devpi_allow_export_import": ["true", 1],
    "devpi_outside_url": [
        "pypi.example.org", "ftp://x", 5,
        # It is the Caddy site address by default: one token, no Caddyfile syntax.
        "https://pypi.example.org\nrespond 200", "https://pypi.example.org/ #x", "https://pypi.example.org/{x}",
        "https://pypi.example.org\t",
    ],
    "devpi_label": ["net devpi", "", "../x", "-x", "net.devpi\n", "net.devpi\x00"],
    "devpi_log_dir": ["Library/Logs", None],
    "devpi_launch_agents_dir": ["LaunchAgents", "/a/../b"],
    "devpi_launch_daemons_dir": ["LaunchDaemons", "/a/../b", 1],
    "devpi_out_log": ["logs/out.log", "..", ""],
    "devpi_err_log": ["a/b", 3],
    "devpi_server_log": ["..", "a/b", "", 7],
    "devpi_log_max_bytes": [0, 4095, -1, "10MB", True, 1.5],
    "devpi_log_backups": [0, 101, "3", False],
    "devpi_status_format": ["JSON", "yaml", None, 1],
    "devpi_uninstall_purge": ["yes", 1, None],
    "devpi_caddy_adopt_site_file": ["yes", 1, None],
    "devpi_root_password": ["hunter2", "op://only-vault", "env:", "env:1BAD", "file:", "vault:x/y"],
    "devpi_index_url": ["not a url", "file:///simple"],
    # Versions below what the locked tree needs are refused before anything is planned.
    "devpi_python": ["", "python3\nrm -rf /", 3, "3.9", "3.10.4", None],
    "devpi_uv": ["", 7, "uv\n"],
    "devpi_server_options": [
        {"threadz": 4},
        {"threads": "many"},
        {"threads": True},
        {"offline-mode": "yes"},
        {"host": "0.0.0.0"},
        {"threads": 0},  # devpi accepts connections and never answers
        {"restrict-modify": "root\n"},
        # devpi_search chooses devpi-web's indexer (only once every mirror is flagged)
        {"indexer-backend": "whoosh"},
        {"indexer-backend": None},
        ["threads", 4],
    ],
    "devpi_launchd_domain": ["system", "gui/alice", "gui/501/x"],
    "devpi_launchd_scope": ["Daemon", "system", "", None, True],
    "devpi_process_type": ["Fast", "standard"],
    "devpi_throttle_interval": [0, -1, "10", True],
    "devpi_health_timeout": [0, 1.5, 10**19],
    "devpi_lock_wait": [-5, "60", 1.5],
    "devpi_search": ["yes", 1, None],
    "devpi_users": [
        ["eblume"],
        {"root": {"password": "env:PW"}},
        {"e blume": {"password": "env:PW"}},
        {"eblume": "env:PW"},
        {"eblume": {"password": "hunter2"}},
        {"eblume": {"pasword": "env:PW"}},
        {"eblume": {"email": "not-an-email"}},
        {"eblume": {"password_version": -1}},
        {"eblume": {"state": "gone"}},
        {"eblume": {"state": "absent", "email": "a@b.c"}},
    ],
    "devpi_indexes": [
        ["root/pypi"],
        {"eblume/dev": {}},  # its user is not declared
        {"root/dev": {"bases": ["root/nope"]}},  # unknown base
        {"root/dev": {"type": "private"}},
        {"rootdev": {}},
        {"root/dev/x": {}},
        {"root/+dev": {}},
        {"root/dev": {"bases": "root/pypi"}},
        {"root/dev": {"volatile": "yes"}},
        {"root/dev": {"mirror_url": "https://pypi.org/simple/"}},  # a mirror key on a stage
        {"root/mirror": {"type": "mirror"}},  # no mirror_url
        {"root/dev": {"bases": ["root/dev"]}},
        {"root/a": {"bases": ["root/b"]}, "root/b": {"bases": ["root/a"]}},
        {"root/dev": {"state": "absent", "volatile": False}},
        {"root/dev": {"acl_upload": "eblume"}},
    ],
    "devpi_caddy_site_file": [
        "sites/devpi.caddy", "",
        # devpi's own files: the block must never overwrite them
        "~/devpi/server-dir/.nodeinfo", "~/devpi/devpi-server.yml", "~/devpi/secret",
        "~/Library/LaunchAgents/net.devpi.plist", "~/Library/Logs/net.devpi.err.log",
    ],
    "devpi_caddy_site_address": ["", "a {", 'x"y', "pypi.example.org #x", "a\nb", "a b"],
    "devpi_caddy_restart": ["not a label!", {"cmd": "x"}, {"command": ""}, 5, "org.caddy\n", {"command": "caddy reload\nrm -rf /"}],
    "devpi_caddy_serve_files": ["no", None],
    "devpi_remove_orphaned_index": ["yes", 1, None],
    "devpi_caddy_read_upstreams": ["10.0.0.12:3141", [":3141"], ["0.0.0.0:3141"], ["a.lan:1 b.lan:2"], [7]],
    "devpi_caddy_max_body_size": ["200 MB", "lots", 200, "0MB"],
    "devpi_caddy_upstream_wait": [-1, 301, "10s", 2.5, True, None],
    "devpi_caddy_bin": ["", 7],
    "devpi_role": ["standalone", "Replica", None, 1],
    "devpi_primary": ["", " indri", "ftp://pypi.example.org", "https://u:p@pypi.example.org", 5, "a\nb", "indri"],
    "devpi_replica_secret_rotate": ["yes", 1, None],
    "devpi_prewarm": [
        "requests",  # a string is a file path on the controller: this one does not exist
        "/no/such/requirements.txt",
        ["requests==2.32.3"],
        ["not a name"],
        [3],
        {"requests": True},
        5,
    ],
    "devpi_prewarm_index": ["pypi", "root/", "/root/pypi", "root/pypi/+simple", 5, None],
    "devpi_backup": [
        "daily", 3, {}, {"hour": 3}, {"minute": 5}, {"hour": 24, "minute": 0}, {"hour": -1, "minute": 0},
        {"hour": 3, "minute": 60}, {"hour": "3", "minute": 0}, {"hour": True, "minute": 0},
        {"hour": 3, "minute": 0, "keep": 0}, {"hour": 3, "minute": 0, "keep": 1001},
        {"hour": 3, "minute": 0, "keep": "14"}, {"hour": 3, "minute": 0, "dir": "backups"},
        {"hour": 3, "minute": 0, "dir": "/tmp/a\nb"}, {"hour": 3, "minute": 0, "dir": "/tmp/../etc"},
        # inside the server dir, or the devpi home itself
        {"hour": 3, "minute": 0, "dir": "~/devpi/server-dir"}, {"hour": 3, "minute": 0, "dir": "~/devpi/server-dir/b"},
        {"hour": 3, "minute": 0, "dir": "~/devpi"},
        {"hour": 3, "minute": 0, "mirrored_files": "yes"}, {"hour": 3, "minute": 0, "when": "daily"},
    ],
}


def test_every_key_has_bad_values():
    assert set(BAD_VALUES) == set(KEYS)


@pytest.mark.parametrize(
    ("key", "value"),
    [(key, value) for key, values in BAD_VALUES.items() for value in values],
)
def test_bad_value_names_the_key(key, value):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, key: value}, HOME)
    assert f"`{key}`" in str(error.value)


def test_secret_literal_is_not_echoed():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_root_password": "correct horse battery"}, HOME)
    assert "correct horse battery" not in str(error.value)
    assert "op://" in str(error.value)  # says what is allowed


def test_unknown_keys_are_errors_not_defaults():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_prot": 3142, "devpi_caddy_sitefile": "/x"}, HOME)
    message = str(error.value)
    assert "devpi_prot" in message and "devpi_caddy_sitefile" in message
    assert "devpi_port" in message  # the list of known keys shows the fix


def test_keys_of_other_deploys_are_ignored():
    # A Caddy deploy's own keys share the host data: only devpi_* keys are this deploy's.
    config = build_config({**BASE, "ssh_user": "alice", "nginx_port": 80, "caddy_email": "a@b.c"}, HOME)
    assert config.port == 3141


def test_defaults_and_home_expansion():
    config = build_config(BASE, HOME)
    assert config.home == "/Users/alice/devpi"
    assert config.paths.venv == "/Users/alice/devpi/venv"
    assert config.paths.server_dir == "/Users/alice/devpi/server-dir"
    assert config.paths.config_file == "/Users/alice/devpi/devpi-server.yml"
    assert config.paths.plist_file == "/Users/alice/Library/LaunchAgents/net.devpi.plist"
    assert config.paths.out_log == "/Users/alice/Library/Logs/net.devpi.out.log"
    assert config.paths.err_log == "/Users/alice/Library/Logs/net.devpi.err.log"
    assert config.caddy_site_file == "/Users/alice/.config/caddy/sites/devpi.caddy"
    assert (config.host, config.port) == ("127.0.0.1", 3141)
    assert config.server_version == "6.20.3" and config.web_version == "5.1.1"
    assert config.site_address == "https://pypi.example.org"
    assert config.root_password.scheme == "env"


def test_remote_bind_needs_explicit_opt_in():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_host": "0.0.0.0"}, HOME)
    assert "devpi_allow_remote_bind" in str(error.value)
    config = build_config({**BASE, "devpi_host": "0.0.0.0", "devpi_allow_remote_bind": True}, HOME)
    assert config.host == "0.0.0.0"
    assert config.local_url == "http://127.0.0.1:3141"


def test_site_address_needed_without_outside_url():
    with pytest.raises(ConfigError) as error:
        build_config({"devpi_root_password": "env:X"}, HOME)
    assert "devpi_caddy_site_address" in str(error.value)


def test_same_log_file_for_both_streams_is_refused():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_out_log": "devpi.log", "devpi_err_log": "devpi.log"}, HOME)
    assert "devpi_err_log" in str(error.value)


@pytest.mark.parametrize("launchd_log", ["devpi_out_log", "devpi_err_log"])
def test_devpis_rotated_log_is_not_a_file_launchd_holds_open(launchd_log):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, launchd_log: "devpi.log", "devpi_server_log": "devpi.log"}, HOME)
    assert "devpi_server_log" in str(error.value)


def test_server_options_override_defaults():
    config = build_config({**BASE, "devpi_server_options": {"threads": 8, "argon2-time-cost": 3}}, HOME)
    options = config.server_yaml_options("whoosh")
    assert options["threads"] == 8
    assert options["argon2-time-cost"] == 3
    assert options["restrict-modify"] == "root"  # untouched default stays
    assert options["indexer-backend"] == "whoosh"  # as the run decided it (search.decide)
    assert options["serverdir"] == config.paths.server_dir


def test_indri_inventory_is_valid():
    namespace = {}
    exec(open("inventories/indri.py").read(), namespace)
    (name, data), = namespace["hosts"]
    config = build_config(data, "/Users/erichblume")
    assert config.label == "mcquack.eblume.devpi"
    assert config.home == "/Users/erichblume/devpi"
    assert config.paths.out_log == "/Users/erichblume/Library/Logs/mcquack.devpi.out.log"
    assert config.paths.err_log == "/Users/erichblume/Library/Logs/mcquack.devpi.err.log"
    assert config.paths.plist_file == "/Users/erichblume/Library/LaunchAgents/mcquack.eblume.devpi.plist"
    assert config.caddy_restart == {"label": "mcquack.eblume.caddy"}
    assert config.root_password.scheme == "op"
    assert config.local_url == "http://127.0.0.1:3141"


def test_a_mistyped_case_key_is_not_silently_ignored():
    with pytest.raises(ConfigError, match="DEVPI_HOME"):
        build_config({**BASE, "DEVPI_HOME": "/opt/devpi"}, HOME)


@pytest.mark.parametrize("home", ["~/", "~//", HOME, HOME + "/", "/"])
def test_devpi_home_is_a_directory_of_its_own(home):
    # "~/" used to become a relative "~": now it is the SSH user's home, which the
    # deploy would make 0700 and prune venvs in.
    with pytest.raises(ConfigError, match="`devpi_home`.*a directory of its own"):
        build_config({**BASE, "devpi_home": home}, HOME)
    assert build_config({**BASE, "devpi_home": "~/srv/"}, HOME).home == HOME + "/srv"


def test_backup_defaults_and_paths():
    config = build_config({**BASE, "devpi_backup": {"hour": 3, "minute": 17}}, HOME)
    assert (config.backup.hour, config.backup.minute, config.backup.keep, config.backup.mirrored_files) == (
        3, 17, 14, False)
    assert config.backup_dir == f"{HOME}/devpi/backups"
    assert config.paths.backup_label == "net.devpi.backup"
    assert config.paths.backup_plist_file == f"{HOME}/Library/LaunchAgents/net.devpi.backup.plist"
    moved = build_config({**BASE, "devpi_backup": {"hour": 0, "minute": 0, "keep": 3, "dir": "~/Backups/devpi",
                                                   "mirrored_files": True}}, HOME)
    assert moved.backup_dir == f"{HOME}/Backups/devpi" and moved.backup.mirrored_files
    # unset: no backups; a restore still looks in the default dir
    assert build_config(BASE, HOME).backup is None
    assert build_config(BASE, HOME).backup_dir == f"{HOME}/devpi/backups"


def test_backup_errors_say_the_fix():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_backup": {"hour": 3}}, HOME)
    assert "`devpi_backup` needs 'minute'" in str(error.value) and '"minute": 17' in str(error.value)
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_backup": {"hour": 3, "minute": 0, "dir": "~/devpi/server-dir/b"}}, HOME)
    assert "outside the server dir" in str(error.value)


def test_the_daemon_scope_moves_the_plists_to_the_launch_daemons_dir():
    config = build_config({**BASE, "devpi_launchd_scope": "daemon"}, "/Users/alice")
    paths = config.paths
    assert paths.plist_file == "/Library/LaunchDaemons/net.devpi.plist"
    assert paths.backup_plist_file == "/Library/LaunchDaemons/net.devpi.backup.plist"
    # The other scope's plists are what a switch retires.
    assert paths.other_scope_plists == ("/Users/alice/Library/LaunchAgents/net.devpi.plist",
                                        "/Users/alice/Library/LaunchAgents/net.devpi.backup.plist")
    # Logs, server dir and venv stay the SSH user's.
    assert paths.out_log.startswith("/Users/alice/Library/Logs/")
    assert paths.server_dir.startswith("/Users/alice/devpi/")
    agent = build_config(BASE, "/Users/alice").paths
    assert agent.plist_file == "/Users/alice/Library/LaunchAgents/net.devpi.plist"
    assert agent.other_scope_plists == ("/Library/LaunchDaemons/net.devpi.plist",
                                        "/Library/LaunchDaemons/net.devpi.backup.plist")


def test_a_bad_scope_names_the_key_and_both_choices():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_launchd_scope": "system"}, "/Users/alice")
    message = str(error.value)
    assert "devpi_launchd_scope" in message and "'agent'" in message and "'daemon'" in message


def test_a_launchd_domain_with_the_daemon_scope_is_refused():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_launchd_scope": "daemon", "devpi_launchd_domain": "gui/501"}, "/Users/alice")
    assert "devpi_launchd_domain" in str(error.value) and "devpi_launchd_scope" in str(error.value)


# --------------------------------------------------------------------------- issue 22: paths and names


@pytest.mark.parametrize("home", ["~/dv#1", "~/dv?x", "/srv/devpi%41", "~/a#b/devpi"])
def test_devpi_home_with_characters_sqlite_reads_in_a_uri_is_refused_with_the_reason(home):
    # devpi-init opens its database by URI: "~/dv#1" put the .sqlite in ~/dv.
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_home": home}, HOME)
    message = str(error.value)
    assert message.startswith("host data `devpi_home` = ")
    assert "SQLite" in message and "write the database outside it" in message
    assert "use a path without '#', '?' or '%'" in message
    # other keys may hold them (the log dir is not opened by URI)
    assert build_config({**BASE, "devpi_log_dir": "~/logs#1"}, HOME).log_dir == f"{HOME}/logs#1"


def test_a_label_longer_than_a_file_name_can_be_is_refused():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_label": "a" * 5000}, HOME)
    assert "`devpi_label`" in str(error.value) and "longer than the 255 bytes a file name can have" in str(error.value)
    # the longest file name it makes (the backup job's plist, staged) just fits
    longest = "a" * (255 - len(".backup.plist.pyinfra-new"))
    assert build_config({**BASE, "devpi_label": longest}, HOME).label == longest
    with pytest.raises(ConfigError):
        build_config({**BASE, "devpi_label": longest + "a"}, HOME)


@pytest.mark.parametrize("key", ["devpi_out_log", "devpi_err_log", "devpi_server_log"])
def test_log_names_fit_a_file_name_with_devpis_rotated_copies(key):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, key: "x" * 252}, HOME)
    assert f"`{key}`" in str(error.value) and "255 bytes" in str(error.value)
    # multi-byte characters count as bytes
    with pytest.raises(ConfigError):
        build_config({**BASE, key: "\U0001f986" * 63}, HOME)
    assert build_config({**BASE, key: "x" * 251}, HOME)


def test_a_path_component_longer_than_a_file_name_is_refused():
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_log_dir": "/srv/" + "d" * 300 + "/logs"}, HOME)
    assert "`devpi_log_dir`" in str(error.value) and "255 bytes" in str(error.value)


@pytest.mark.parametrize("key", ["devpi_out_log", "devpi_err_log", "devpi_server_log"])
def test_a_log_name_equal_to_the_backup_jobs_log_is_refused(key):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, key: "net.devpi.backup.log"}, HOME)
    assert f"`{key}`" in str(error.value) and "that is the backup job's log" in str(error.value)


@pytest.mark.parametrize(("old", "new"), [
    ("caddy_site_file", "devpi_caddy_site_file"), ("caddy_site_address", "devpi_caddy_site_address"),
    ("caddy_restart", "devpi_caddy_restart"), ("caddy_serve_files", "devpi_caddy_serve_files"),
    ("caddy_max_body_size", "devpi_caddy_max_body_size"), ("caddy_bin", "devpi_caddy_bin"),
])
def test_the_old_caddy_keys_name_their_new_names(old, new):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, old: "x"}, HOME)
    assert f"`{old}` is now `{new}`" in str(error.value)
    # another deploy's key of that name, beside this deploy's new one: passes
    default = KEYS[new].default
    assert build_config({**BASE, old: "x", new: default if default is not None else "caddy"}, HOME)
    # other deploys' caddy_* keys pass as before
    assert build_config({**BASE, "caddy_email": "a@b.c"}, HOME)


@pytest.mark.parametrize("directory", ["~/devpi/venvs/b", "~/devpi/tools", "~/devpi/server-dir", "~/devpi/venv/x",
                                       "~/devpi/secret", "~/Library/Logs/net.devpi.log"])
def test_a_backup_dir_in_or_on_the_deploys_own_is_refused_as_written(directory):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, "devpi_backup": {"hour": 3, "minute": 0, "dir": directory}}, HOME)
    assert "`devpi_backup` ['dir']" in str(error.value)
    assert "use a directory of its own" in str(error.value)


@pytest.mark.parametrize(("key", "value"), [
    ("devpi_caddy_site_file", "~/devpi/venvs/devpi.caddy"),
    ("devpi_log_dir", "~/devpi/tools/logs"),
    ("devpi_launch_agents_dir", "~/devpi/server-dir"),
    ("devpi_out_log", "devpi-server.yml"),
])
def test_paths_inside_what_the_deploy_prunes_or_on_its_files_are_refused(key, value):
    data = {**BASE, key: value}
    if key == "devpi_out_log":
        data["devpi_log_dir"] = "~/devpi"  # the stdout log would be the YAML config
    with pytest.raises(ConfigError) as error:
        build_config(data, HOME)
    assert "the deploy's" in str(error.value) or "devpi home" in str(error.value)


@pytest.mark.parametrize("value, normalised", [
    (["10.0.0.12:3141"], ("10.0.0.12:3141",)),
    (["http://replica.lan:3141/", "[::1]:3142"], ("replica.lan:3141", "[::1]:3142")),
    ([], ()),
])
def test_read_upstreams_are_dialled_as_host_port(value, normalised):
    config = build_config({**BASE_FOR_READS, "devpi_caddy_read_upstreams": value}, "/Users/alice")
    assert config.caddy_read_upstreams == normalised


BASE_FOR_READS = {"devpi_root_password": "env:PW", "devpi_outside_url": "https://pypi.example.org"}


@pytest.mark.parametrize("value, why", [
    ("10.0.0.12:3141", "a list"),
    (["10.0.0.12"], "host:port"),
    ([":3141"], "host:port"),
    (["0.0.0.0:3141"], "every interface"),
    (["https://replica.lan:3141"], "plain HTTP"),
    (["replica.lan:3141 evil.lan:80"], "host:port"),
    (["replica.lan:3141}"], "host:port"),
    (["replica.lan:3141\n"], "control characters"),
    (["replica.lan:3141/x"], "host:port"),
    (["replica.lan:70000"], "65535"),
    (["a.lan:1", "http://a.lan:1"], "listed twice"),
    (["127.0.0.1:3141"], "this host's own devpi"),
])
def test_bad_read_upstreams_are_refused_naming_the_key(value, why):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE_FOR_READS, "devpi_caddy_read_upstreams": value}, "/Users/alice")
    assert "devpi_caddy_read_upstreams" in str(error.value)
    assert why in str(error.value)
