"""
Each row of DESIGN.md's lifecycle table yields exactly its commands; a converged
host yields none. Operations run under prepared facts (see ``prepared.py``).
"""

import pytest

from operations import caddy, devpi, launchd
from pyinfra_devpi.config import build_config
from pyinfra_devpi.preflight import Tools, with_tools
from pyinfra_devpi.render import render_caddy_site, render_plist, render_server_yaml
from pyinfra.api.hiddenvalue import HiddenValue

from .prepared import Meta, PreparedHost, Upload, gnu_only_forms, run_op, shell_lines

DOMAIN = "gui/501"
TARGET = "gui/501/net.devpi"
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"

ALL_COMMANDS: list[str] = []  # every shell command yielded here, for the GNU-forms scan


# What the preflight found on the host: the operations run with these (``with_tools``).
FOUND = Tools(uv="/opt/homebrew/bin/uv", uv_source="found", bootstrap_python=None,
              caddy="/opt/homebrew/bin/caddy", caddy_source="found", python="3.12", python_note="")


@pytest.fixture
def config():
    return with_tools(build_config(
        {
            "devpi_root_password": "env:PW",
            "devpi_outside_url": "https://pypi.example.org",
            "devpi_caddy_restart": "org.caddy",
        },
        "/Users/alice",
    ), FOUND)


def converged(config) -> PreparedHost:
    return PreparedHost(
        job={"loaded": True, "state": "running", "pid": 4242, "disabled": False, "last_exit_code": None},
        server_dir={
            "exists": True, "is_dir": True, "mode": "drwx------", "entries": 6, "has_data": True,
            "initialised": True, "nodeinfo": {"role": "standalone", "uuid": "u"},
            "serverversion": "4", "secret_file": {"exists": True, "mode": "-rw-------"},
        },
        venv={"devpi-server": "6.20.3", "devpi-web": "5.1.1", "python": "3.11.7", "path": "/x"},
        files={
            config.paths.plist_file: render_plist(config),
            config.paths.config_file: render_server_yaml(config),
            config.caddy_site_file: render_caddy_site(config),
        },
    )


def fresh(config) -> PreparedHost:
    return PreparedHost(
        job=None,
        server_dir={
            "exists": False, "is_dir": False, "mode": None, "entries": 0, "has_data": False,
            "initialised": False, "nodeinfo": None, "serverversion": None,
            "secret_file": {"exists": False, "mode": None},
        },
        venv=None,
        files={},
    )


def converge(host, config, password_hash=None, executing=True, diff=False):
    """The deploy's operations in the deploy's order, chained the way it chains them."""
    steps = {}

    def run(name, op, **kwargs):
        commands = run_op(op, host, executing=executing, diff=diff, **kwargs)
        ALL_COMMANDS.extend(shell_lines(commands))
        steps[name] = commands
        return Meta(bool(commands))

    venv_op = run("venv", devpi.venv, config=config, lock="pinned==1.0 --hash=sha256:00\n")
    config_op = run("config", devpi.server_config, config=config, content=render_server_yaml(config))
    run("secret", devpi.secret, config=config)
    run("init", devpi.init, config=config, password_hash=password_hash)
    agent_op = run(
        "agent", launchd.agent, label=config.label, plist=render_plist(config),
        plist_path=config.paths.plist_file, domain=DOMAIN, restart_after=[venv_op, config_op],
        directories=[config.paths.log_dir],
    )
    run("health", devpi.wait_healthy, config=config, after=[agent_op])
    run(
        "caddy", caddy.site, path=config.caddy_site_file, content=render_caddy_site(config),
        restart=config.caddy_restart, domain=DOMAIN, pending_marker=config.paths.caddy_restart_pending,
        caddy_bin=None,
    )
    return steps


def launchctl_verbs(commands):
    verbs = []
    for command in shell_lines(commands):
        for verb in ("enable", "bootstrap", "bootout", "kickstart -k", "kickstart"):
            if f"launchctl {verb} " in command:
                verbs.append(verb)
                break
    return verbs


def test_converged_host_yields_nothing(config):
    host = converged(config)
    steps = converge(host, config)
    assert steps == {name: [] for name in steps}
    # Each operation says why it has nothing to do, as pyinfra's own operations do.
    assert host.noops == [
        "devpi-server 6.20.3 + devpi-web 5.1.1 are installed",
        "/Users/alice/devpi/devpi-server.yml is up to date",
        "devpi's secret file /Users/alice/devpi/secret exists",
        "/Users/alice/devpi/server-dir is initialised",
        "gui/501/net.devpi is loaded, enabled and running its current definition",
        "devpi was not (re)started",
        "/Users/alice/.config/caddy/sites/devpi.caddy is up to date",
    ]


def test_the_operation_modules_declare_exactly_what_their_operations_read(config):
    """The deploy prefetches the modules' ``reads`` lists in one round trip; an
    operation that read anything else would cost a rerun a remote command each."""
    from operations import caddy as caddy_op
    from pyinfra_devpi.snapshot import FactRead

    declared = set()
    for item in [
        *devpi.reads(config),
        *launchd.reads(config.label, DOMAIN, config.paths.plist_file),
        *caddy_op.reads(config.caddy_site_file, config.paths.caddy_restart_pending),
    ]:
        declared.add(("file", item) if isinstance(item, str) else (item.fact.__name__, item.arguments))
    for host in (converged(config), fresh(config)):
        converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
        asked = set()
        for name, kwargs in host.asked:
            if name == "FileContents":
                asked.update(("file", path) for path in kwargs["paths"])
            else:
                asked.add((name, FactRead.of(object, **kwargs).arguments))
        assert asked == declared


def test_converged_host_reads_each_fact_once(config):
    from pyinfra_devpi.snapshot import prefetch

    host = converged(config)
    prefetch(host, [config.paths.plist_file, config.paths.config_file, config.caddy_site_file,
                    config.paths.caddy_restart_pending])
    converge(host, config)
    converge(host, config)  # the second pass (execution after change detection)
    asked = [name for name, _ in host.asked]
    assert sorted(asked) == ["FileContents", "LaunchdJob", "ServerDir", "VenvVersions"]


def test_fresh_host_builds_everything_in_order(config):
    host = fresh(config)
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    assert [c.dest for c in steps["venv"] if isinstance(c, Upload)] == [
        f"{config.paths.venvs_dir}/{config.venv_name}.lock.txt"
    ]
    assert "uv\" pip install" in steps["venv"][-1] and "--require-hashes" in steps["venv"][-1]
    # with the uv the preflight found, and the Python version uv finds or downloads
    assert "uv=/opt/homebrew/bin/uv;" in steps["venv"][-1] and "--python 3.12 " in steps["venv"][-1]
    assert [c.dest for c in steps["config"] if isinstance(c, Upload)] == [config.paths.config_file + ".pyinfra-new"]
    assert "devpi-gen-secret" in steps["secret"][0]
    assert any("devpi-init" in c for c in shell_lines(steps["init"]))
    assert launchctl_verbs(steps["agent"]) == ["enable", "bootstrap"]
    assert len(steps["health"]) == 1 and "/+api" in steps["health"][0]
    assert launchctl_verbs(steps["caddy"]) == ["kickstart -k"]
    assert "gui/501/org.caddy" in steps["caddy"][-1]


def test_version_bump_builds_new_venv_and_restarts(config):
    host = converged(config)
    host.venv = {**host.venv, "devpi-server": "6.20.2"}
    steps = converge(host, config)
    assert steps["venv"]
    assert launchctl_verbs(steps["agent"]) == ["kickstart -k"]
    assert steps["health"]
    for untouched in ("config", "secret", "init", "caddy"):
        assert steps[untouched] == []


def test_missing_venv_is_built(config):
    host = converged(config)
    host.venv = None
    assert converge(host, config)["venv"]


def test_yaml_change_restarts_without_reloading_the_plist(config):
    host = converged(config)
    host.files[config.paths.config_file] = render_server_yaml(config).replace("30", "5")
    steps = converge(host, config)
    assert [c.dest for c in steps["config"] if isinstance(c, Upload)] == [config.paths.config_file + ".pyinfra-new"]
    assert launchctl_verbs(steps["agent"]) == ["kickstart -k"]
    assert steps["venv"] == [] and steps["init"] == []


def test_plist_change_boots_out_and_bootstraps(config):
    host = converged(config)
    host.files[config.paths.plist_file] = render_plist(config).replace("Standard", "Background")
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["bootout", "bootstrap"]
    assert [c.dest for c in steps["agent"] if isinstance(c, Upload)] == [config.paths.plist_file + ".pyinfra-new"]
    assert steps["health"]


def test_not_loaded_job_is_enabled_and_bootstrapped(config):
    host = converged(config)
    host.job = None
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["enable", "bootstrap"]
    # launchd creates the log files, not their directory: made before the load
    mkdir = f"mkdir -p {config.paths.log_dir}"
    assert steps["agent"].index(mkdir) < [i for i, c in enumerate(steps["agent"]) if "bootstrap" in c][0]
    assert steps["health"]


def test_disabled_job_is_enabled(config):
    host = converged(config)
    host.job = {**host.job, "disabled": True}
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["enable"]


@pytest.mark.parametrize("state", ["not running", "spawn scheduled"])
def test_loaded_but_not_running_is_kickstarted(config, state):
    host = converged(config)
    host.job = {**host.job, "state": state, "pid": None}
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["kickstart"]
    assert steps["health"]


def test_caddy_block_change_validates_then_restarts_caddy(config):
    host = converged(config)
    host.files[config.caddy_site_file] = "# old block\n"
    steps = converge(host, config)
    move = [c for c in shell_lines(steps["caddy"]) if "mv -f" in c][0]
    assert move.index("adapt --adapter caddyfile --validate") < move.index("mv -f")
    assert launchctl_verbs(steps["caddy"]) == ["kickstart -k"]
    assert all(steps[name] == [] for name in steps if name != "caddy")


def test_caddy_restart_command(config):
    host = converged(config)
    host.files[config.caddy_site_file] = None
    marker = config.paths.caddy_restart_pending
    commands = run_op(
        caddy.site, host, path=config.caddy_site_file, content="x {\n}\n",
        restart={"command": "brew services restart caddy"}, domain=DOMAIN, pending_marker=marker,
    )
    assert commands[-2:] == [f": > {marker}", f"( brew services restart caddy ) && rm -f {marker}"]


def test_a_failed_caddy_restart_is_retried_by_the_next_run(config):
    """The block was moved into place, the restart failed: the marker stays, and the
    next run (block unchanged) restarts Caddy again instead of saying 'No changes'."""
    marker = config.paths.caddy_restart_pending
    host = converged(config)
    host.files[marker] = ""
    steps = converge(host, config)
    assert steps["caddy"] == [f"( launchctl kickstart -k gui/501/org.caddy ) && rm -f {marker}"]
    assert all(steps[name] == [] for name in steps if name != "caddy")


def test_initialised_server_dir_is_never_initialised_again(config):
    host = converged(config)
    host.venv = None  # even while rebuilding everything else
    assert converge(host, config)["init"] == []


def test_empty_server_dir_is_initialised(config):
    host = converged(config)
    host.server_dir = {**host.server_dir, "entries": 0, "has_data": False, "initialised": False,
                       "nodeinfo": None, "serverversion": None}
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    assert any("devpi-init" in c for c in shell_lines(steps["init"]))


def test_secret_file_is_created_once(config):
    host = converged(config)
    host.server_dir = {**host.server_dir, "secret_file": {"exists": False, "mode": None}}
    steps = converge(host, config)
    assert len(steps["secret"]) == 1 and "--secretfile" in steps["secret"][0]
    assert converge(converged(config), config)["secret"] == []


def test_nothing_to_wait_for_without_a_start(config):
    assert run_op(devpi.wait_healthy, converged(config), config=config, after=[Meta(False)]) == []


@pytest.mark.parametrize("executing", [True, False])
def test_password_and_hash_never_in_printed_commands(config, executing):
    host = fresh(config)
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH), executing=executing)
    for commands in steps.values():
        for command in commands:
            # an upload prints as FileUploadCommand(<BytesIO>, dest): only dest is shown
            text = command if isinstance(command, str) else command.dest
            assert PASSWORD_HASH not in text
            assert "argon2id" not in text
    uploads = [c for c in steps["init"] if isinstance(c, Upload)]
    # the hash travels only as file content over SFTP, and only when executing
    assert [u.content for u in uploads] == ([PASSWORD_HASH] if executing else [""])
    init = shell_lines(steps["init"])[-1]
    assert init.index('rm -f "$f"') < init.index("devpi-init")


def test_no_gnu_only_forms_in_any_command(config):
    # Run every scenario again so the scan sees every command variant.
    for host in (fresh(config), converged(config)):
        converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    ALL_COMMANDS.append(launchd.bootout_command(TARGET))
    ALL_COMMANDS.append(launchd.bootstrap_command(DOMAIN, TARGET, "/x.plist"))
    assert ALL_COMMANDS
    offenders = {c: gnu_only_forms(c) for c in ALL_COMMANDS if gnu_only_forms(c)}
    assert offenders == {}


@pytest.mark.parametrize(
    ("command", "form"),
    [("stat -c %a /x", "stat -c"), ("sed -i 's/a/b/' f", "sed -i without a suffix"),
     ("readlink -f x", "readlink -f"), ("timeout 5 curl x", "timeout"),
     ("date +%s%N", "date +%N"), ("mkdir --parents x", "a long option of a coreutils tool")],
)
def test_gnu_scan_catches_gnu_forms(command, form):
    assert form in gnu_only_forms(command)


def test_diff_mode_shows_each_planned_command_masked(config):
    fresh_host = fresh(config)
    converge(fresh_host, config, password_hash=HiddenValue(PASSWORD_HASH), executing=False, diff=True)
    logged = "\n".join(fresh_host.logged)
    assert f"launchctl bootstrap {DOMAIN}" in logged
    assert "Will run: upload " + config.paths.config_file + ".pyinfra-new" in logged
    assert "devpi-init" in logged and "line script" in logged
    assert PASSWORD_HASH not in logged
    changed = converged(config)
    changed.files[config.paths.plist_file] = "old"
    converge(changed, config, executing=False, diff=True)
    assert any(m.startswith("Will run: launchctl bootout") for m in changed.logged)
    assert any("Will modify" in m for m in changed.logged)
