"""
Each row of DESIGN.md's lifecycle table yields exactly its commands; a converged
host yields none. Operations run under prepared facts (see ``prepared.py``).
"""

import pytest

from operations import caddy, devpi, launchd
from pyinfra_devpi.config import build_config
from pyinfra_devpi.render import render_caddy_site, render_plist, render_server_yaml
from pyinfra.api.hiddenvalue import HiddenValue

from .prepared import Meta, PreparedHost, Upload, gnu_only_forms, run_op, shell_lines

DOMAIN = "gui/501"
TARGET = "gui/501/net.devpi"
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"

ALL_COMMANDS: list[str] = []  # every shell command yielded here, for the GNU-forms scan


@pytest.fixture
def config():
    return build_config(
        {
            "devpi_root_password": "env:PW",
            "devpi_outside_url": "https://pypi.example.org",
            "devpi_caddy_restart": "org.caddy",
        },
        "/Users/alice",
    )


def loaded_job(config, **changes) -> dict:
    """The LaunchdJob fact of a job loaded from the rendered plist, as ``print`` shows it."""
    from facts._launchctl import _EMPTY_JOB
    from pyinfra_devpi.render import program_arguments

    paths = config.paths
    job = {
        **_EMPTY_JOB,
        "source": "print", "domain": DOMAIN, "label": config.label, "state": "running", "running": True,
        "pid": 4242, "program": program_arguments(config)[0], "arguments": program_arguments(config),
        "path": paths.plist_file, "working_directory": paths.home, "stdout_path": paths.out_log,
        "stderr_path": paths.err_log,
        # launchd adds variables of its own to the plist's
        "environment": {"LANG": "en_US.UTF-8", "PYTHONUNBUFFERED": "1", "OSLogRateLimit": "64",
                        "XPC_SERVICE_NAME": config.label},
    }
    job.update(changes)
    return job


def converged(config) -> PreparedHost:
    return PreparedHost(
        job=loaded_job(config),
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
    )
    run("health", devpi.wait_healthy, config=config, after=[agent_op])
    run(
        "caddy", caddy.site, path=config.caddy_site_file, content=render_caddy_site(config),
        restart=config.caddy_restart, domain=DOMAIN, caddy_bin=None,
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
        *caddy_op.reads(config.caddy_site_file),
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
    prefetch(host, [config.paths.plist_file, config.paths.config_file, config.caddy_site_file])
    converge(host, config)
    converge(host, config)  # the second pass (execution after change detection)
    asked = [name for name, _ in host.asked]
    assert sorted(asked) == ["FileContents", "FileMode", "LaunchdJob", "ServerDir", "VenvVersions"]


def test_fresh_host_builds_everything_in_order(config):
    host = fresh(config)
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    assert [c.dest for c in steps["venv"] if isinstance(c, Upload)] == [
        f"{config.paths.venvs_dir}/{config.venv_name}.lock.txt"
    ]
    assert "uv\" pip install" in steps["venv"][-1] and "--require-hashes" in steps["venv"][-1]
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


def test_each_venv_build_has_its_own_directory_and_marks_it_while_building(config):
    host = converged(config)
    host.venv = None
    script = converge(host, config)["venv"][-1]
    assert f'new="$venvs"/{config.venv_name}-"$(date +%Y%m%d%H%M%S)-$$"' in script
    assert 'building="$new".building' in script
    marker = script.index('> "$building"')
    assert marker < script.index('"$uv" venv')  # marked before the directory exists
    assert 'rm -f "$building"' in script  # the trap removes the marker however it ends


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


# The plist on disk and the job launchd loaded drift apart (a run stopped between
# writing the plist and reloading; a hand-made chmod): the job itself is compared.


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stdout_path", "/Users/alice/Library/Logs/old.out.log"),
        ("stderr_path", "/Users/alice/Library/Logs/old.err.log"),
        ("arguments", ["/Users/alice/devpi/venv/bin/devpi-server", "--configfile", "/old/devpi-server.yml"]),
        ("program", "/old/venv/bin/devpi-server"),
        ("working_directory", "/"),
        ("environment", {"LANG": "C", "PYTHONUNBUFFERED": "1", "XPC_SERVICE_NAME": "net.devpi"}),
        ("environment", {"XPC_SERVICE_NAME": "net.devpi"}),
        ("path", "/tmp/net.devpi.plist"),
    ],
)
def test_loaded_job_running_an_old_definition_is_reloaded(config, field, value):
    host = converged(config)  # the plist on disk is the rendered one
    host.job = loaded_job(config, **{field: value})
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["bootout", "bootstrap"]
    assert not [c for c in steps["agent"] if isinstance(c, Upload)]  # the file is right
    assert steps["health"]
    assert any(field.replace("_", " ") in m or field in m for m in host.logged)


def test_launchd_additions_to_the_environment_are_no_drift(config):
    host = converged(config)  # launchd's OSLogRateLimit and XPC_SERVICE_NAME are there
    assert converge(host, config)["agent"] == []


def test_a_job_loaded_through_a_symlinked_directory_is_no_drift(config):
    host = converged(config)
    physical = "/Volumes/dotfiles/LaunchAgents/net.devpi.plist"
    host.modes[config.paths.plist_file] = {"mode": "-rw-r--r--", "physical": physical}
    host.job = loaded_job(config, path=physical)
    assert converge(host, config)["agent"] == []


def test_legacy_list_output_compares_only_what_it_reports(config):
    host = converged(config)
    host.job = loaded_job(config, source="list", path=None, environment={}, working_directory=None)
    assert converge(host, config)["agent"] == []
    host = converged(config)  # a new run (facts are read once per run)
    host.job = loaded_job(config, source="list", path=None, environment={}, arguments=["/old/devpi-server"])
    assert launchctl_verbs(converge(host, config)["agent"]) == ["bootout", "bootstrap"]


def test_disabled_job_with_an_old_definition_is_enabled_and_reloaded(config):
    host = converged(config)
    host.job = loaded_job(config, disabled=True, stdout_path="/old.log")
    assert launchctl_verbs(converge(host, config)["agent"]) == ["enable", "bootout", "bootstrap"]


def test_writable_plist_of_a_loaded_job_gets_its_mode_back_without_a_restart(config):
    host = converged(config)
    host.modes[config.paths.plist_file] = {"mode": "-rw-rw-rw-", "physical": config.paths.plist_file}
    steps = converge(host, config)
    assert steps["agent"] == [f"chmod 644 {config.paths.plist_file}"]  # no restart


@pytest.mark.parametrize("mode", ["-rw-rw-rw-", "-rw-rw-r--", "-rw-------", "-rwxr-xr-x"])
def test_refused_plist_gets_its_mode_back_before_the_bootstrap(config, mode):
    host = converged(config)
    host.job = None  # launchd refused it (122), or it was booted out
    host.modes[config.paths.plist_file] = {"mode": mode, "physical": config.paths.plist_file}
    steps = converge(host, config)
    assert steps["agent"][0] == f"chmod 644 {config.paths.plist_file}"
    assert launchctl_verbs(steps["agent"]) == ["enable", "bootstrap"]
    assert steps["health"]


def test_a_rewritten_plist_gets_its_mode_from_the_write(config):
    host = converged(config)
    host.files[config.paths.plist_file] = "old"
    host.modes[config.paths.plist_file] = {"mode": "-rw-rw-rw-", "physical": config.paths.plist_file}
    steps = converge(host, config)
    shell = shell_lines(steps["agent"])
    assert not any(c.startswith("chmod 644 ") for c in shell)
    assert any("chmod 644 " in c and "mv -f" in c for c in shell)


def test_not_loaded_job_is_enabled_and_bootstrapped(config):
    host = converged(config)
    host.job = None
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["enable", "bootstrap"]
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
    commands = run_op(
        caddy.site, host, path=config.caddy_site_file, content="x {\n}\n",
        restart={"command": "brew services restart caddy"}, domain=DOMAIN,
    )
    assert commands[-1] == "brew services restart caddy"


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
    from pyinfra_devpi import deploy_lock

    lock_paths = config.paths.deploy_lock
    ALL_COMMANDS.append(deploy_lock.acquire_script(lock_paths, "t", "", 5, 1, "me"))
    ALL_COMMANDS.append(deploy_lock.release_script(lock_paths, "t"))
    ALL_COMMANDS.append(deploy_lock.state_script(lock_paths, 5))
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


# The deploy lock (pyinfra_devpi/deploy_lock.py): taken by the first command of every
# operation that changes something, released at the end; never by a no-change run.


def locked_converge(host, config, **kwargs):
    """``converge`` as the deploy runs it: the lock's ``begin`` first, ``release`` last."""
    from operations import deploy_lock

    from .prepared import in_context

    in_context(host, deploy_lock.begin, config)
    steps = converge(host, config, **kwargs)
    metas = [Meta(bool(commands)) for commands in steps.values()]
    steps["release"] = run_op(deploy_lock.release, host, config=config, after=metas)
    return steps


def is_acquire(command) -> bool:
    return isinstance(command, str) and command.startswith("# take the deploy lock ")


def test_a_no_change_run_takes_no_lock(config):
    host = converged(config)
    steps = locked_converge(host, config)
    assert steps == {name: [] for name in steps}
    assert "nothing changed: no deploy lock was taken" in host.noops


def test_every_changing_operation_takes_the_lock_first_and_the_run_releases_it(config):
    host = converged(config)
    host.files[config.paths.config_file] = "old yaml\n"
    host.lock = {"state": "free", "serial": "run-before", "owner": None}
    steps = locked_converge(host, config)
    changed = [name for name, commands in steps.items() if commands]
    assert changed == ["config", "agent", "health", "release"]
    for name in ("config", "agent", "health"):
        assert is_acquire(steps[name][0])  # before the operation's first command
        assert sum(is_acquire(c) for c in steps[name]) == 1
    acquire = steps["config"][0]
    assert f"lock={config.paths.deploy_lock.lock}" in acquire
    assert "expect=run-before;" in acquire  # the serial the run read
    assert len(steps["release"]) == 1 and steps["release"][0].startswith("# release the deploy lock ")
    assert not any(is_acquire(c) for c in steps["release"])


def test_a_fresh_host_takes_the_lock_before_anything_else(config):
    host = fresh(config)
    steps = locked_converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    assert is_acquire(steps["venv"][0])
    assert not [c for c in steps["venv"][:1] if isinstance(c, Upload)]


def test_a_lock_held_by_another_run_refuses_the_run(config):
    from operations import deploy_lock
    from pyinfra_devpi.errors import DeployError

    from .prepared import in_context

    host = converged(config)
    host.lock = {"state": "held", "serial": "run-x", "owner": {
        "run": "run-x", "pid": "812", "started": "Mon Nov 30 09:00:00 2026", "host": "indri",
        "since": "2026-11-30 09:00:01 CET", "by": "erich@laptop (pyinfra pid 4)"}}
    with pytest.raises(DeployError) as error:
        in_context(host, deploy_lock.begin, config)
    message = str(error.value)
    lock = config.paths.deploy_lock.lock
    assert f"{lock} is held by another deploy (run run-x by erich@laptop (pyinfra pid 4)" in message
    assert "its process 812 on indri" in message and "within 300s" in message
    assert f"rm -r {lock}" in message


def test_a_stale_lock_is_reported_and_taken_over_by_the_first_change(config):
    host = converged(config)
    host.files[config.paths.config_file] = "old yaml\n"
    host.lock = {"state": "stale", "serial": "run-dead", "owner": {"run": "run-dead", "pid": "9", "host": "indri"}}
    steps = locked_converge(host, config)
    assert any("no longer running" in m and "run-dead" in m for m in host.logged)
    assert is_acquire(steps["config"][0]) and "expect=run-dead;" in steps["config"][0]


def test_the_lock_is_read_with_the_configured_wait(config):
    from operations import deploy_lock
    from facts.deploy_lock import DeployLock

    (read,) = deploy_lock.reads(config)
    assert read.fact is DeployLock
    assert read.kwargs == {"home": config.paths.home, "wait": config.lock_wait}
