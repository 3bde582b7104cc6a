"""
Each row of DESIGN.md's lifecycle table yields exactly its commands; a converged
host yields none. Operations run under prepared facts (see ``prepared.py``).
"""

import dataclasses
import plistlib
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from deploys import _service as service
from facts.launchd import LaunchdJob
from facts.snapshot import FactRead
from operations import caddy, devpi, launchd, retire, users_indexes
from pyinfra_devpi.config import build_config
from pyinfra_devpi.launchd_scope import JobPlace
from pyinfra_devpi.preflight import Needs, Tools, with_tools
from pyinfra_devpi.render import render_caddy_site, render_logging_config, render_plist, render_server_yaml
from pyinfra_devpi.search import NULL, WHOOSH, SearchPlan
from pyinfra_devpi.users_indexes.plan import ROOT_PYPI_INIT
from pyinfra.api.hiddenvalue import HiddenValue

from .prepared import SHELLS, Meta, PreparedHost, Upload, gnu_only_forms, in_context, run_op, shell_lines

DOMAIN = "gui/501"
TARGET = "gui/501/net.devpi"
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"

ALL_COMMANDS: list[str] = []  # every shell command yielded here, for the GNU-forms scan


# What the preflight found on the host: the operations run with these (``with_tools``).
FOUND = Tools(uv="/opt/homebrew/bin/uv", uv_source="found", bootstrap_python=None,
              caddy="/opt/homebrew/bin/caddy", caddy_source="found", python="3.12", python_note="")


ROOT_PASSWORD = "root-secret-PW"


@pytest.fixture(autouse=True)
def root_password(monkeypatch):
    """devpi_root_password's secret: the users/indexes step reads it (on a fresh host it
    logs in to create root/pypi)."""
    monkeypatch.setenv("PW", ROOT_PASSWORD)


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


def loaded_job(config, **changes) -> dict:
    """The LaunchdJob fact of a job loaded from the rendered plist, as ``print`` shows it."""
    from facts._launchctl import _EMPTY_JOB
    from pyinfra_devpi.render import program_arguments

    paths = config.paths
    job = {
        **_EMPTY_JOB,
        "domain": DOMAIN, "label": config.label, "state": "running", "running": True,
        "pid": 4242, "program": program_arguments(config)[0], "arguments": program_arguments(config),
        "path": paths.plist_file, "working_directory": paths.home, "stdout_path": paths.out_log,
        "stderr_path": paths.err_log,
        # launchd adds variables of its own to the plist's
        "environment": {"LANG": "en_US.UTF-8", "PYTHONUNBUFFERED": "1", "OSLogRateLimit": "64",
                        "XPC_SERVICE_NAME": config.label},
        # the plist's ThrottleInterval, and KeepAlive's SuccessfulExit false as a semaphore
        "minimum_runtime": config.throttle_interval, "successful_exit": False,
    }
    job.update(changes)
    return job


def converged(config) -> PreparedHost:
    return PreparedHost(
        job=loaded_job(config),
        server_dir={
            "exists": True, "is_dir": True, "mode": "drwx------", "entries": 6, "has_data": True,
            "initialised": True, "nodeinfo": {"role": "standalone", "uuid": "u"},
            "has_serverversion": True, "serverversion": "4", "has_database": True, "complete": True,
            "whoosh_index_kib": 96, "whoosh_project_index": True,
            "secret_file": {"exists": True, "mode": "-rw-------"},
        },
        venv={"devpi-server": "6.20.3", "devpi-web": "5.1.1", "python": "3.11.7", "path": "/x",
              "link": f"{config.paths.venvs_dir}/devpi-server-6.20.3-web-5.1.1-20261130-1"},
        files={
            config.paths.plist_file: render_plist(config),
            config.paths.config_file: render_server_yaml(config, WHOOSH),
            config.paths.logging_config: render_logging_config(config),
            config.caddy_site_file: render_caddy_site(config),
        },
        # devpi_backup is unset: no backup job is loaded.
        jobs={config.paths.backup_label: None},
        # devpi holds what the data declares (root/pypi as a mirror without the project list).
        users_indexes={"users": {"root": {"username": "root"}}, "passwords": {},
                       "indexes": {"root/pypi": {**ROOT_PYPI_INIT, "mirror_no_project_list": True}}},
    )


def fresh(config) -> PreparedHost:
    return PreparedHost(
        job=None,
        server_dir={
            "exists": False, "is_dir": False, "mode": None, "entries": 0, "has_data": False,
            "initialised": False, "nodeinfo": None, "has_serverversion": False, "serverversion": None,
            "has_database": False, "complete": False, "whoosh_index_kib": None, "whoosh_project_index": False,
            "secret_file": {"exists": False, "mode": None},
        },
        venv=None,
        files={},
        jobs={config.paths.backup_label: None},
    )


def place_of(config) -> JobPlace:
    return JobPlace(scope=config.launchd_scope, agent_domain=DOMAIN, uid=501, user="alice", group="staff")


# Steps whose ``run`` converge leaves out: the preflight (``preflighted`` stands in for
# it; its checks have their own tests in test_preflight) and, unless asked for, the lock
# (its guard puts an acquire before every changing operation's commands).
STOOD_IN = ("preflight",)


def converge(host, config, password_hash=None, executing=True, diff=False, place=None, locked=False):
    """The deploy's steps (``deploys._service.STEPS``, the real list, in order) under prepared
    facts, from what the preflight step would have found: ``{operation key: its commands}``.
    ``locked``: the lock step runs too (the deploy's own run), as it does on a host."""
    steps = {}
    c = preflighted(host, config, place or place_of(config), prepared_call(host, steps, executing, diff),
                    password_hash)
    for step in service.STEPS:
        if step.name in STOOD_IN or (step.name == "lock" and not locked):
            continue
        host.ran.append(step.name)
        in_context(host, step.run, c, executing=executing)
    return steps


def prepared_call(host, steps: dict, executing=True, diff=False):
    """How the steps plan an operation here: run it under the prepared facts, keep its
    commands in ``steps`` by the operation's key."""

    def call(key, op, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k != "name" and not k.startswith("_")}
        commands = run_op(op, host, executing=executing, diff=diff, **kwargs)
        ALL_COMMANDS.extend(shell_lines(commands))
        steps[key] = commands
        return Meta(bool(commands))

    return call


def preflighted(host, config, place, call, password_hash=None) -> "service.Converge":
    """What the preflight step leaves for the later ones, from the prepared facts."""
    server_dir = host.server_dir
    return service.Converge(
        config, place, call=call,
        caddy_site=render_caddy_site(config),
        live_venv=host.venv,
        needs=Needs(venv=not devpi.venv_is_current(config, host.venv), caddy_block=True, root=place.needs_sudo,
                    caddy_restart=True),
        server_dir=server_dir,
        fresh=devpi.needs_init(server_dir),
        password_hash=(lambda: password_hash) if password_hash else None,
        searching=SearchPlan(backend=WHOOSH),
        server_yaml=render_server_yaml(config, WHOOSH),
    )


def print_of(domain: str, label: str, plist: str, plist_path: str, pid: int = 4242) -> str:
    """What ``launchctl print <domain>/<label>`` shows for a job running from ``plist``, in
    the layout of the real outputs in tests/data/launchctl (the semaphores block as in
    print_submitted_login_item_spaces.txt)."""
    data = plistlib.loads(plist.encode())
    arguments = data.get("ProgramArguments") or []
    lines = [f"{domain}/{label} = {{", "\tactive count = 1", f"\tpath = {plist_path}",
             "\ttype = LaunchAgent", "\tstate = running", "",
             f"\tprogram = {data.get('Program') or arguments[0]}", "\targuments = {",
             *(f"\t\t{a}" for a in arguments), "\t}", ""]
    if data.get("WorkingDirectory"):
        lines += [f"\tworking directory = {data['WorkingDirectory']}", ""]
    for key, name in (("StandardOutPath", "stdout path"), ("StandardErrorPath", "stderr path")):
        if data.get(key):
            lines.append(f"\t{name} = {data[key]}")
    lines += ["\tenvironment = {", *(f"\t\t{k} => {v}" for k, v in (data.get("EnvironmentVariables") or {}).items()),
              f"\t\tXPC_SERVICE_NAME => {label}", "\t}", "", f"\tdomain = {domain}",
              f"\tminimum runtime = {data.get('ThrottleInterval', 10)}", "\texit timeout = 5", "\truns = 1",
              f"\tpid = {pid}", "\tlast exit code = (never exited)", ""]
    keep_alive = data.get("KeepAlive")
    if isinstance(keep_alive, dict) and "SuccessfulExit" in keep_alive:
        lines += ["\tsemaphores = {", f"\t\tsuccessful exit => {int(keep_alive['SuccessfulExit'])}", "\t}", ""]
    lines += ["\tproperties = runatload | inferred program", "}"]
    return "\n".join(lines) + "\n"


def launchctl_verbs(commands):
    """The launchctl verbs that change something, in the order they run (a remote
    command may run several: ``launchd.one_command``)."""
    verbs = []
    for command in shell_lines(commands):
        verbs += re.findall(r"launchctl (enable|bootstrap|bootout|kickstart -k|kickstart) ", command)
    return verbs


def test_converged_host_yields_nothing(config):
    host = converged(config)
    steps = converge(host, config)
    assert steps == {name: [] for name in steps}
    # Each operation says why it has nothing to do, as pyinfra's own operations do.
    assert host.noops == [
        "devpi-server 6.20.3 + devpi-web 5.1.1 are installed",
        "no upgrade across database versions (devpi_allow_export_import unset, or no new venv)",
        "/Users/alice/devpi/server-dir is new or already managed by this deploy",
        "/Users/alice/devpi/devpi-logging.json is up to date",
        "/Users/alice/devpi/devpi-server.yml is up to date",
        "devpi's secret file /Users/alice/devpi/secret exists",
        "/Users/alice/devpi/server-dir is initialised",
        "/Users/alice/.config/caddy/sites/devpi.caddy is up to date",
        "no job of this devpi under another label, domain or scope",
        "gui/501/net.devpi is loaded, enabled and running its current definition",
        "devpi was not (re)started",
        "/Users/alice/devpi/server-dir/.indices is devpi-web's search index (indexer-backend whoosh)",
        "no LaunchAgent net.devpi.backup",
        "devpi holds the declared users and indexes",
        "devpi-web's search (Whoosh) is on from devpi's start",
        "devpi-web's search index exists",
        "devpi_prewarm lists no project",
        "nothing changed: no deploy lock was taken",
    ]


def test_converge_runs_every_step_in_order_and_a_converged_host_changes_nothing(config):
    """The prepared-host tests run the deploy's own list: every step but the preflight
    (``preflighted`` stands in for it), in ``STEPS``' order; rerun on a converged host,
    none of them yields a command (the no-change rerun)."""
    host = converged(config)
    steps = converge(host, config, locked=True)
    assert host.ran == [step.name for step in service.STEPS if step.name not in STOOD_IN]
    assert host.ran[0] == "lock" and host.ran[-1] == "release"
    assert {"venv build", "init", "agent", "health", "backup job", "users and indexes", "search", "search index",
            "prewarm", "release"} <= set(steps)
    assert steps == {name: [] for name in steps}
    assert not any(m.startswith("Will ") for m in host.logged)  # nothing planned, no secret to read


def asked_reads(host) -> set:
    """What the operations asked the prepared host for, as declared reads' keys."""
    asked = set()
    for name, kwargs in host.asked:
        if name == "FileContents":
            asked.update(("file", path) for path in kwargs["paths"])
        else:
            asked.add((name, FactRead.of(object, **kwargs).arguments))
    return asked


def test_each_step_declares_exactly_what_it_reads(config):
    """The deploy prefetches the steps' ``reads`` in one round trip; a step that read
    anything else would cost a rerun a remote command each."""

    def keys(items):
        return {("file", i) if isinstance(i, str) else (i.fact.__name__, i.arguments) for i in items}

    for host in (converged(config), fresh(config)):
        asked_by_step, declared_by_step = {}, {}
        c = preflighted(host, config, place_of(config), prepared_call(host, {}), HiddenValue(PASSWORD_HASH))
        for step in service.STEPS:
            if step.name in STOOD_IN:
                continue
            host.asked.clear()
            in_context(host, step.run, c)
            asked = asked_reads(host)
            asked_by_step[step.name], declared_by_step[step.name] = asked, keys(step.reads(c))
            # Only what it declares (a fact an earlier step read is answered from the snapshot).
            assert asked <= declared_by_step[step.name], step.name
        # Nothing declared goes unread, but for the preflight (stood in for here), devpi's
        # users and indexes on a server dir this run initialises (the plan starts from what
        # devpi-init leaves; the reads are declared before the server dir is read), and
        # the backup plist's mode: ``backup.reads`` declares what loading the job reads
        # even when devpi_backup is unset and the job is only removed (one unused stat
        # in the batch, no remote command).
        unread = [launchd.plist_mode_read(config.paths.backup_plist_file),
                  *(users_indexes.reads(config) if c.fresh else [])]
        declared = set().union(*declared_by_step.values()) - keys(unread)
        assert set().union(*asked_by_step.values()) == declared


def test_converged_host_reads_each_fact_once(config):
    from facts.snapshot import prefetch

    host = converged(config)
    prefetch(host, [config.paths.plist_file, config.paths.config_file, config.paths.logging_config,
                    config.caddy_site_file, config.paths.caddy_restart_pending, *config.paths.other_scope_plists,
                    config.paths.backup_plist_file, config.paths.smoke_result, config.paths.venv_previous])
    converge(host, config)
    converge(host, config)  # the second pass (execution after change detection)
    asked = [name for name, _ in host.asked]
    # LaunchdJob: devpi's label and the backup's (here and elsewhere), and Caddy's in its
    # three domains.
    assert sorted(asked) == [
        "FileContents", "FileMode", *["LaunchdJob"] * 9, "ManagedAgents", "ServerDir", "UsersIndexes",
        "VenvVersions",
    ]


def test_fresh_host_builds_everything_in_order(config):
    host = fresh(config)
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    assert [c.dest for c in steps["venv build"] if isinstance(c, Upload)] == [
        f"{config.paths.venvs_dir}/{config.venv_name}.lock.txt"
    ]
    # the lock installed as it is, nothing resolved
    build = steps["venv build"][-1]
    assert "uv\" pip sync" in build and "--require-hashes" in build
    assert f"lock={config.paths.venvs_dir}/{config.venv_name}.lock.txt" in build.splitlines()
    # with the uv the preflight found, and the Python version uv finds or downloads
    assert {"uv=/opt/homebrew/bin/uv", "python=3.12"} <= set(build.splitlines())
    assert [c.dest for c in steps["config"] if isinstance(c, Upload)] == [config.paths.config_file + ".pyinfra-new"]
    assert "secrets.token_bytes(32)" in steps["secret"][0] and "/Users/alice/devpi/secret" in steps["secret"][0]
    assert any("devpi-init" in c for c in shell_lines(steps["init"]))
    assert launchctl_verbs(steps["agent"]) == ["enable", "bootstrap"]
    assert len(steps["health"]) == 1 and "/+api" in steps["health"][0]
    assert launchctl_verbs(steps["caddy"]) == ["kickstart -k"]
    assert "gui/501/org.caddy" in steps["caddy"][-1]


def test_devpi_bytecode_is_written_beside_the_check_and_before_the_swap(config):
    """A second interpreter writes the bytecode devpi's start needs while the check
    runs (two cores); the venv goes live only once it is done, and a build that fails
    stops it before removing the venv."""
    host = converged(config)
    host.venv = None
    script = converge(host, config)["venv build"][-1]
    warm = script.index("pkgutil.iter_modules")
    started = script.index("& warm_pid=$!")
    assert warm < started < script.index("found=$(") < script.index('wait "$warm_pid" || true') < script.index("swapped=1")
    trap = script[script.index("cleanup() {"):]
    assert trap.index('kill "$warm_pid"') < trap.index('rm -rf "$new"')


def test_version_bump_builds_new_venv_and_restarts(config):
    host = converged(config)
    host.venv = {**host.venv, "devpi-server": "6.20.2"}
    steps = converge(host, config)
    assert steps["venv build"]
    assert launchctl_verbs(steps["agent"]) == ["kickstart -k"]
    assert steps["health"]
    for untouched in ("config", "secret", "init", "caddy"):
        assert steps[untouched] == []


def test_each_venv_build_has_its_own_directory_and_marks_it_while_building(config):
    host = converged(config)
    host.venv = None
    script = converge(host, config)["venv build"][-1]
    assert f"venv_name={config.venv_name}" in script.splitlines()
    assert "new=$venvs/$venv_name-$(date +%Y%m%d%H%M%S)-$$" in script.splitlines()
    assert "building_suffix=.building" in script.splitlines() and "building=$new$building_suffix" in script
    marker = script.index('> "$building"')
    assert marker < script.index('"$uv" venv')  # marked before the directory exists
    assert 'rm -f "$building"' in script  # the trap removes the marker however it ends


def test_missing_venv_is_built(config):
    host = converged(config)
    host.venv = None
    assert converge(host, config)["venv build"]


def test_yaml_change_restarts_without_reloading_the_plist(config):
    host = converged(config)
    host.files[config.paths.config_file] = render_server_yaml(config, WHOOSH).replace("30", "5")
    steps = converge(host, config)
    assert [c.dest for c in steps["config"] if isinstance(c, Upload)] == [config.paths.config_file + ".pyinfra-new"]
    assert launchctl_verbs(steps["agent"]) == ["kickstart -k"]
    assert steps["venv build"] == [] and steps["init"] == []


def test_a_new_log_bound_restarts_devpi_without_reloading_the_plist(config):
    host = converged(config)
    bigger = dataclasses.replace(config, log_max_bytes=config.log_max_bytes * 2)
    steps = converge(host, bigger)
    assert steps["logging"] and not steps["config"] and not steps["venv build"]
    assert launchctl_verbs(steps["agent"]) == ["kickstart -k"]
    assert steps["health"]


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


# What `launchctl print` shows of launch keys the deploy sets: ThrottleInterval as
# "minimum runtime = N", KeepAlive's SuccessfulExit false as a "successful exit => 0"
# semaphore (../shared/MACOS.md). A job loaded with other values runs another definition.


def throttle_config(seconds: int):
    return with_tools(build_config(
        {"devpi_root_password": "env:PW", "devpi_outside_url": "https://pypi.example.org",
         "devpi_caddy_restart": "org.caddy", "devpi_throttle_interval": seconds},
        "/Users/alice",
    ), FOUND)


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"minimum_runtime": 5}, "minimum_runtime"),  # the plist says ThrottleInterval 1
        ({"successful_exit": None}, "successful_exit"),  # no semaphore: KeepAlive without it
        ({"successful_exit": True}, "successful_exit"),
    ],
)
def test_a_job_with_another_throttle_or_keepalive_is_reloaded(changes, what):
    config = throttle_config(1)
    host = converged(config)
    host.job = loaded_job(config, **changes)
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["bootout", "bootstrap"]
    assert any(what in m for m in host.logged)


def test_a_job_printed_from_its_own_plist_never_drifts(config):
    """The real parser on a print rendered the way launchd prints (tabs, a semaphores
    block) from the deploy's own plists: devpi's (KeepAlive SuccessfulExit false,
    ThrottleInterval) and the backup job's (neither: launchd's default 10)."""
    from pyinfra_devpi.render import render_backup_plist

    backup = with_tools(build_config(
        {"devpi_root_password": "env:PW", "devpi_outside_url": "https://pypi.example.org",
         "devpi_backup": {"hour": 3, "minute": 17, "keep": 2}}, "/Users/alice"), FOUND)
    for label, plist, path in [
        (config.label, render_plist(throttle_config(1)), config.paths.plist_file),
        (config.label, render_plist(config), config.paths.plist_file),
        (backup.paths.backup_label, render_backup_plist(backup), backup.paths.backup_plist_file),
    ]:
        job = LaunchdJob().process(print_of(DOMAIN, label, plist, path).splitlines())
        assert launchd.definition_drift(job, plist, path, None) == [], label
    devpi = LaunchdJob().process(print_of(DOMAIN, config.label, render_plist(config), "/p").splitlines())
    assert (devpi["minimum_runtime"], devpi["successful_exit"]) == (config.throttle_interval, False)
    assert launchd.definition_drift(devpi, render_plist(throttle_config(1)), "/p", None) == ["minimum_runtime"]


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
    # launchd creates the log files, not their directory: made before the load
    (load,) = steps["agent"]  # one remote command: enable, mkdir, bootstrap
    mkdir = f"mkdir -p {config.paths.log_dir}"
    assert load.index(mkdir) < load.index("launchctl bootstrap")
    assert steps["health"]


def test_disabled_job_is_enabled(config):
    host = converged(config)
    host.job = {**host.job, "disabled": True}
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["enable"]
    # System Settings' Login Items writes the same store: the run says it switches it on
    assert any("is disabled" in m and "Login Items" in m and "enabling it again" in m for m in host.logged)


def test_an_enabled_job_is_not_said_to_be_disabled(config):
    host = converged(config)
    converge(host, config)
    assert not [m for m in host.logged if "Login Items" in m]


@pytest.mark.parametrize("state", ["not running", "spawn scheduled"])
def test_loaded_but_not_running_is_kickstarted(config, state):
    host = converged(config)
    host.job = {**host.job, "state": state, "pid": None}
    steps = converge(host, config)
    assert launchctl_verbs(steps["agent"]) == ["kickstart"]
    assert steps["health"]


def test_caddy_block_change_validates_then_restarts_caddy(config):
    host = converged(config)
    host.files[config.caddy_site_file] = "# Managed by pyinfra-devpi: an old block\n"
    steps = converge(host, config)
    move = [c for c in shell_lines(steps["caddy"]) if "mv -f" in c][0]
    assert move.index("adapt --adapter caddyfile --validate") < move.index("mv -f")
    assert launchctl_verbs(steps["caddy"]) == ["kickstart -k"]
    # (and the release of the deploy lock the change took)
    assert all(steps[name] == [] for name in steps if name not in ("caddy", "release"))


def test_caddy_restart_command(config):
    host = converged(config)
    host.files[config.caddy_site_file] = None
    marker = config.paths.caddy_restart_pending
    commands = run_op(
        caddy.site, host, path=config.caddy_site_file, content="x {\n}\n",
        restart={"command": "brew services restart caddy"}, place=place_of(config), pending_marker=marker,
    )
    # the restart is marked pending before the block moves in, cleared once it succeeds
    assert commands[0] == f": > {marker}"
    assert commands[-1] == f"( brew services restart caddy ) && rm -f {marker}"


def caddy_job(domain: str, pid: int | None = 77) -> dict:
    from facts._launchctl import _EMPTY_JOB

    return {**_EMPTY_JOB, "source": "print", "domain": domain, "label": "org.caddy",
            "state": "running" if pid else "not running", "running": bool(pid), "pid": pid}


@pytest.mark.parametrize(
    ("loaded", "uid", "restart"),
    [
        # `brew services start caddy` on a Mac the SSH user is logged in to: their GUI domain
        ({"gui/501": caddy_job("gui/501")}, 501, "launchctl kickstart -k gui/501/org.caddy"),
        # a headless deploy (user/501) while Caddy runs in the console session's domain
        ({"user/501": caddy_job("user/501")}, 501, "launchctl kickstart -k user/501/org.caddy"),
        # `sudo brew services start caddy`: a LaunchDaemon, changed through sudo -n
        ({"system": caddy_job("system")}, 501, "sudo -n launchctl kickstart -k system/org.caddy"),
        ({"system": caddy_job("system")}, 0, "launchctl kickstart -k system/org.caddy"),  # root needs no sudo
        # loaded in two domains: the one where it runs
        ({"gui/501": caddy_job("gui/501", pid=None), "system": caddy_job("system")}, 501,
         "sudo -n launchctl kickstart -k system/org.caddy"),
    ],
)
def test_caddy_is_kickstarted_in_the_domain_its_label_is_loaded_in(config, loaded, uid, restart):
    host = converged(config)
    host.files[config.caddy_site_file] = "# Managed by pyinfra-devpi: an old block\n"
    host.placed = {("org.caddy", domain): job for domain, job in loaded.items()}
    place = JobPlace(scope="agent", agent_domain="gui/501" if uid else "gui/0", uid=uid, user="alice", group="staff")
    if uid == 0:
        host.placed = {("org.caddy", "system"): loaded["system"]}
    commands = run_op(
        caddy.site, host, path=config.caddy_site_file, content=render_caddy_site(config),
        restart=config.caddy_restart, place=place, pending_marker=config.paths.caddy_restart_pending,
    )
    assert shell_lines(commands)[-1] == f"( {restart} ) && rm -f {config.paths.caddy_restart_pending}"
    # Looked up in the SSH user's domain, their other one and system: each read once, batched.
    looked = [kwargs["domain"] for name, kwargs in host.asked if name == "LaunchdJob"]
    assert looked == [place.agent_domain, *[d for d in (f"gui/{uid}", f"user/{uid}") if d != place.agent_domain],
                      "system"]
    assert caddy.job_reads(config.caddy_restart, place) == [
        FactRead.of(LaunchdJob, label="org.caddy", domain=d) for d in looked]


def test_caddy_is_looked_up_only_for_a_restart_by_label(config):
    place = place_of(config)
    assert caddy.job_reads({"command": "caddy reload --config /c"}, place) == []
    assert caddy.job_reads(None, place) == []
    host = converged(config)
    host.files[config.caddy_site_file] = "# Managed by pyinfra-devpi: an old block\n"
    run_op(caddy.site, host, path=config.caddy_site_file, content=render_caddy_site(config),
           restart={"command": "caddy reload --config /c"}, place=place,
           pending_marker=config.paths.caddy_restart_pending)
    assert [name for name, _ in host.asked if name == "LaunchdJob"] == []


def test_the_run_fails_at_its_end_only_when_the_caddy_step_failed(config):
    """The Caddy step runs with _ignore_errors (before devpi's job, which must come back
    even when Caddy's restart is wrong); the check at the end fails the run then, with
    the message, and only then."""
    host = converged(config)
    message = caddy.not_picked_up_message("Caddy site block for devpi", config.local_url)
    assert "devpi_caddy_restart" in message and config.local_url in message
    failed = run_op(caddy.picked_up, host, site=Meta(True, failed=True), message=message)
    assert shell_lines(failed) == [f"echo {shlex.quote(message)} >&2; exit 1"]
    assert subprocess.run(["sh", "-c", failed[0]], capture_output=True, text=True).stderr.strip() == message
    assert run_op(caddy.picked_up, host, site=Meta(True), message=message) == []
    # --dry: the step has not run, so there is nothing to check yet
    assert run_op(caddy.picked_up, host, site=Meta(True, complete=False), message=message, executing=False) == []


def test_a_failed_caddy_restart_is_retried_by_the_next_run(config):
    """The block was moved into place, the restart failed: the marker stays, and the
    next run (block unchanged) restarts Caddy again instead of saying 'No changes'."""
    marker = config.paths.caddy_restart_pending
    host = converged(config)
    host.files[marker] = ""
    steps = converge(host, config)
    assert steps["caddy"] == [f"( launchctl kickstart -k gui/501/org.caddy ) && rm -f {marker}"]
    # (and the release of the deploy lock the change took)
    assert all(steps[name] == [] for name in steps if name not in ("caddy", "release"))


def test_initialised_server_dir_is_never_initialised_again(config):
    host = converged(config)
    host.venv = None  # even while rebuilding everything else
    assert converge(host, config)["init"] == []


def test_empty_server_dir_is_initialised(config):
    host = converged(config)
    host.server_dir = {**host.server_dir, "entries": 0, "has_data": False, "initialised": False,
                       "nodeinfo": None, "has_serverversion": False, "serverversion": None,
                       "has_database": False, "complete": False}
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    assert any("devpi-init" in c for c in shell_lines(steps["init"]))


def test_init_writes_a_transient_dir_and_renames_it_into_place_once_complete(config):
    steps = converge(fresh(config), config, password_hash=HiddenValue(PASSWORD_HASH))
    script = shell_lines(steps["init"])[-1]
    server_dir = config.paths.server_dir
    # operations/devpi_init.sh, given these paths
    assert {f"server_dir={server_dir}", f"devpi_init={config.paths.bin('devpi-init')}",
            f"config_file={config.paths.config_file}", "transient_suffix=.pyinfra-new"} <= set(script.splitlines())
    order = [
        'rm -f "$hash_file"',                          # the hash file goes before anything runs
        'new_server_dir "$server_dir" "$transient_suffix"',
        '"$devpi_init" --configfile "$config_file" --serverdir "$new" --no-root-pypi',
        'place_server_dir "$new" "$sd" "$serverversion_name" "$nodeinfo_name" "$sqlite_name"',
    ]
    positions = [script.index(part) for part in order]
    assert positions == sorted(positions), script
    # operations/server_dir_place.sh, included: the transient dir beside the server dir
    # (layout.transient), a killed run's removed first (never live), made empty
    making = script[script.index("new_server_dir() {"):]
    steps_in_making = ["sd=$1", "new=$sd$2", 'rm -rf "$new"', 'mkdir "$new"']
    positions = [making.index(part) for part in steps_in_making]
    assert positions == sorted(positions), script
    # complete, or the server dir is not touched; an empty server dir only; one rename
    placing = script[script.index("place_server_dir() {"):]
    steps_in_place = ['[ ! -s "$place_new/$place_file" ]', 'rmdir "$place_sd"', 'mv "$place_new" "$place_sd"']
    positions = [placing.index(part) for part in steps_in_place]
    assert positions == sorted(positions), script
    assert script.count('"$devpi_init" --configfile') == 1 and "--root-passwd" not in script


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exists": True, "is_dir": True, "entries": 1, "has_data": True, "initialised": True,
          "nodeinfo": {"role": "standalone"}},
         "/Users/alice/devpi/server-dir is a half-initialised devpi server dir: it holds devpi's "
         ".nodeinfo but no database (.sqlite)"),
        ({"exists": True, "is_dir": True, "entries": 2, "has_data": True, "initialised": True,
          "nodeinfo": {"role": "standalone"}, "has_serverversion": True, "serverversion": "4"},
         "is a half-initialised devpi server dir"),
        ({"exists": True, "is_dir": True, "entries": 3, "has_data": True, "initialised": True,
          "nodeinfo": {"role": "standalone"}, "has_serverversion": True, "has_database": True},
         "/Users/alice/devpi/server-dir/.serverversion is empty, so the database version of"),
        ({"exists": True, "is_dir": True, "entries": 1, "has_data": True, "has_database": True},
         "/Users/alice/devpi/server-dir holds data but no .nodeinfo"),
        ({"exists": True, "is_dir": True, "entries": 2, "has_data": True, "initialised": True,
          "nodeinfo": {"role": "standalone"}, "has_database": True},
         "is not a complete devpi server dir (it lacks .serverversion)"),
        ({"exists": True, "is_dir": True, "entries": 3, "has_data": True, "initialised": True,
          "nodeinfo": {}, "has_serverversion": True, "serverversion": "21", "has_database": True,
          "complete": True},
         "/Users/alice/devpi/server-dir/.serverversion is '21'"),
        ({"exists": True, "is_dir": False}, "exists but is not a directory"),
    ],
)
def test_server_dirs_that_are_neither_new_nor_complete_are_refused(config, changes, message):
    from deploys._service import check_server_dir
    from pyinfra_devpi.errors import DeployError

    found = {**fresh(config).server_dir, **changes}
    with pytest.raises(DeployError) as error:
        check_server_dir(config, found)
    assert message in str(error.value)
    if "half-initialised" in message:
        assert "move it aside" in str(error.value) and "nothing is deleted automatically" in str(error.value)
        assert "devpi-export" not in str(error.value)  # not the "data but no .nodeinfo" advice
    assert not devpi.needs_init(found)  # and never initialised over


def test_new_and_complete_server_dirs_pass(config):
    from deploys._service import check_server_dir

    empty = {**fresh(config).server_dir, "exists": True, "is_dir": True}
    for found in (fresh(config).server_dir, empty, converged(config).server_dir):
        check_server_dir(config, found)
    assert devpi.needs_init(fresh(config).server_dir) and devpi.needs_init(empty)
    assert not devpi.needs_init(converged(config).server_dir)


def test_secret_file_is_created_once(config):
    host = converged(config)
    host.server_dir = {**host.server_dir, "secret_file": {"exists": False, "mode": None}}
    steps = converge(host, config)
    assert len(steps["secret"]) == 1 and steps["secret"][0].endswith(" /Users/alice/devpi/secret")
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
            text = command if isinstance(command, str) else command.dest if isinstance(command, Upload) else repr(command)
            assert PASSWORD_HASH not in text
            assert "argon2id" not in text
    uploads = [c for c in steps["init"] if isinstance(c, Upload)]
    # the hash travels only as file content over SFTP, and only when executing
    assert [u.content for u in uploads] == ([PASSWORD_HASH] if executing else [""])
    init = shell_lines(steps["init"])[-1]
    assert init.index('rm -f "$hash_file"') < init.index('"$devpi_init"')


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
    assert any(m.startswith("Will run: ") and "launchctl bootout" in m and "launchctl bootstrap" in m
               for m in changed.logged)
    assert any("Will modify" in m for m in changed.logged)


def managed_agent(label, arguments=(), config=None, port=None, damaged=None) -> dict:
    """One ``ManagedAgents`` entry."""
    return {"label": label, "arguments": list(arguments), "config": config, "config_port": port, "damaged": damaged}


def managed_devpi(label, home, port) -> dict:
    """The ``ManagedAgents`` entry of a devpi job the deploy wrote for ``home``, its
    config serving ``port``."""
    config = f"{home}/devpi-server.yml"
    return managed_agent(label, [f"{home}/venv/bin/devpi-server", "--configfile", config], config, port)


def test_a_renamed_label_retires_the_old_job_before_the_new_one_loads(config):
    host = converged(config)
    host.job = None  # the new label is not loaded yet
    old_plist = f"{config.launch_agents_dir}/net.devpi.old.plist"
    other_home = f"{config.launch_agents_dir}/org.other.plist"
    host.agents = {
        old_plist: managed_agent("net.devpi.old", ["/x/bin/devpi-server", "--configfile", config.paths.config_file],
                                 config.paths.config_file, config.port),
        other_home: managed_agent("org.other", ["/y/bin/devpi-server", "--configfile", "/elsewhere.yml"],
                                  "/elsewhere.yml", config.port + 1),
        config.paths.plist_file: managed_agent(config.label),
    }
    steps = converge(host, config)
    retired = shell_lines(steps["retire"])
    assert retired[0].startswith("( out=$(launchctl bootout gui/501/net.devpi.old ")
    assert retired[1].startswith("( out=$(launchctl bootout user/501/net.devpi.old ")
    assert retired[-1] == f"rm -f {old_plist}"
    assert not any("org.other" in c for c in retired)  # another home's devpi: left alone
    assert launchctl_verbs(steps["agent"]) == ["enable", "bootstrap"]


def test_an_earlier_devpi_homes_jobs_on_this_port_are_retired_others_named_and_left_alone(config, caplog):
    """devpi_label renamed together with devpi_home: the old jobs (devpi's and its backup
    job) run with another config file, one the deploy wrote that serves this port."""
    host = converged(config)
    host.job = None
    agents_dir = config.launch_agents_dir
    old_config = "/Users/a/old devpi/devpi-server.yml"
    host.agents = {
        f"{agents_dir}/net.devpi.before.plist": managed_devpi("net.devpi.before", "/Users/a/old devpi", config.port),
        f"{agents_dir}/net.devpi.before.backup.plist": managed_agent(
            "net.devpi.before.backup", ["/Users/a/old devpi/venv/bin/python", "-I", "b.py", "--configfile", old_config],
            old_config, config.port),
        f"{agents_dir}/org.sibling.plist": managed_devpi("org.sibling", "/s", config.port + 7),
        f"{agents_dir}/org.sleeper.plist": managed_agent("org.sleeper", ["/bin/sleep", "600"]),
        f"{agents_dir}/org.truncated.plist": managed_agent(None, damaged="not a plist (ExpatError: no element found)"),
        config.paths.plist_file: managed_agent(None, damaged="not a plist (ExpatError: no element found)"),
    }
    host.files[config.paths.plist_file] = host.files[config.paths.plist_file][:200]  # truncated
    with caplog.at_level("WARNING"):
        steps = converge(host, config)
    retired = shell_lines(steps["retire"])
    assert [c for c in retired if c.startswith("rm -f ")] == [
        f"rm -f {shlex.quote(agents_dir + '/net.devpi.before.backup.plist')}",
        f"rm -f {shlex.quote(agents_dir + '/net.devpi.before.plist')}",
    ]
    assert all("org." not in c for c in retired)
    logged = "\n".join(host.logged) + caplog.text
    assert ("net.devpi.before is this devpi under an old label and an earlier devpi_home (its config "
            f"{old_config} serves port {config.port}): retiring it") in logged
    assert f"org.sibling.plist (org.sibling) was written by this deploy but runs devpi on port {config.port + 7}" in logged
    assert "org.sleeper.plist (org.sleeper) was written by this deploy but runs /bin/sleep, no devpi config" in logged
    assert "org.truncated.plist carries this deploy's marker but is damaged (not a plist" in logged
    assert f"{config.paths.plist_file} is damaged (not a plist" in logged
    # The damaged plist of this devpi is the job's own step's to write again.
    assert any(isinstance(c, Upload) and c.dest == config.paths.plist_file + ".pyinfra-new" for c in steps["agent"])


def test_the_label_loaded_in_the_other_domain_is_booted_out_there(config):
    host = converged(config)
    host.elsewhere = {**host.job, "domain": "user/501"}
    steps = converge(host, config)
    assert steps["retire"] == []
    (command,) = shell_lines(steps["agent"])
    # In the command that restarts this job: the other one may hold devpi's port.
    bootout = command.index("launchctl bootout user/501/net.devpi ")
    assert bootout < command.index("while launchctl print user/501/net.devpi") < command.index(
        "launchctl kickstart -k gui/501/net.devpi")
    assert launchctl_verbs(steps["agent"]) == ["bootout", "kickstart -k"]
    assert gnu_only_forms(command) == []
    assert "net.devpi is also loaded in user/501: booting it out there" in host.logged


def test_the_role_job_is_booted_out_after_the_new_plist_is_written(config):
    """The takeover: the Ansible role's job (same label, loaded with legacy `launchctl
    load` into user/<uid>) keeps answering until the command that bootstraps this one:
    the plist upload happens while it still runs."""
    host = fresh(config)
    host.server_dir = converged(config).server_dir
    host.elsewhere = {**loaded_job(config), "domain": "user/501"}
    steps = converge(host, config)
    assert steps["retire"] == []
    *upload, load = steps["agent"]
    assert [c.dest for c in upload if isinstance(c, Upload)] == [config.paths.plist_file + ".pyinfra-new"]
    assert launchctl_verbs([load]) == ["enable", "bootout", "bootstrap"]
    assert load.index("launchctl bootout user/501/net.devpi ") < load.index("launchctl bootstrap gui/501 ")


# A headless Mac (the SSH user is not at the console: the deploy uses user/<uid>): macOS
# answers `print gui/<uid>/...` with 125 (or 112), and legacy `list <label>` answers from
# the caller's own session, where it finds the job of user/<uid> (../shared/MACOS.md).
# The LaunchdJob fact's real command runs under /bin/sh against such a launchctl.

HEADLESS_LAUNCHCTL = r"""#!/bin/sh
case "$1" in
print)
    case "$2" in
    gui/*)
        if [ "$NO_GUI_STATUS" = 112 ]; then
            printf 'Bad request.\nCould not find domain for user gui: 501\n' >&2; exit 112
        fi
        echo 'Could not print domain: 125: Domain does not support specified action' >&2; exit 125 ;;
    esac
    f="$MAC/$(printf '%s' "$2" | tr / _).print"
    if [ -f "$f" ]; then cat "$f"; exit 0; fi
    printf 'Bad request.\nCould not find service "%s" in domain for uid: 501\n' "${2##*/}" >&2; exit 113 ;;
list)
    if [ -f "$MAC/$2.list" ]; then cat "$MAC/$2.list"; exit 0; fi
    printf 'Could not find service "%s" in domain for port\n' "$2" >&2; exit 113 ;;
print-disabled)
    printf 'disabled services = {\n}\n' ;;
*)
    echo "unexpected: $*" >&2; exit 99 ;;
esac
"""


class HeadlessMac(PreparedHost):
    """A ``PreparedHost`` whose ``LaunchdJob`` answers are the fact's own: its command run
    by /bin/sh with ``HEADLESS_LAUNCHCTL`` on PATH, its output through ``process``."""

    def __init__(self, base: PreparedHost, mac: Path, no_gui_status: int):
        super().__init__(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        self.mac, self.no_gui_status = mac, no_gui_status

    def get_fact(self, cls, **kwargs):
        if cls is not LaunchdJob:
            return super().get_fact(cls, **kwargs)
        self.asked.append((cls.__name__, kwargs))
        fact = LaunchdJob()
        result = subprocess.run(
            ["/bin/sh", "-c", fact.command(**kwargs)], capture_output=True, text=True, check=True,
            env={"PATH": f"{self.mac / 'bin'}:/usr/bin:/bin", "MAC": str(self.mac),
                 "NO_GUI_STATUS": str(self.no_gui_status)},
        )
        return fact.process(result.stdout.splitlines())


@pytest.mark.parametrize("no_gui_status", [125, 112])
def test_a_headless_rerun_leaves_the_job_of_the_user_domain_alone(config, tmp_path, no_gui_status):
    """issue 20: the job runs in user/501 from the deploy's plist; gui/501 is not there.
    Nothing is booted out and nothing changes (it used to be booted out and restarted on
    every run, found "in gui/501" by the legacy `list` fallback)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "launchctl").write_text(HEADLESS_LAUNCHCTL)
    (bin_dir / "launchctl").chmod(0o755)
    place = JobPlace(scope=config.launchd_scope, agent_domain="user/501", uid=501, user="alice", group="staff")
    plist = render_plist(config, place.run_as)
    (tmp_path / f"user_501_{config.label}.print").write_text(
        print_of("user/501", config.label, plist, config.paths.plist_file))
    # legacy `list <label>`: the caller's session, where the user/501 job lives
    args = "".join(f'\t\t"{a}";\n' for a in plistlib.loads(plist.encode())["ProgramArguments"])
    (tmp_path / f"{config.label}.list").write_text(
        f'{{\n\t"Label" = "{config.label}";\n\t"PID" = 4242;\n\t"LastExitStatus" = 0;\n'
        f'\t"ProgramArguments" = (\n{args}\t);\n}};\n')
    base = converged(config)
    base.files[config.paths.plist_file] = plist
    host = HeadlessMac(base, tmp_path, no_gui_status)

    steps = converge(host, config, place=place)

    assert steps == {name: [] for name in steps}
    assert not [m for m in host.logged if "also loaded" in m]
    asked = {kwargs["domain"] for name, kwargs in host.asked if name == "LaunchdJob"}
    assert {"user/501", "gui/501", "system"} <= asked


# --------------------------------------------------------------------------- bootout, run

# A launchctl whose bootout answers $BOOTOUT_STATUS and whose print keeps finding the job
# for $PRINTS_LEFT more calls (a job still stopping: osquery/osquery#5698), or forever.
BOOTOUT_LAUNCHCTL = r"""#!/bin/sh
printf '%s\n' "$*" >> "$STATE/calls"
case "$1" in
bootout)
    printf 'Boot-out failed: %s: %s\n' "$BOOTOUT_STATUS" "$BOOTOUT_TEXT" >&2; exit "$BOOTOUT_STATUS" ;;
print)
    left=$(cat "$STATE/left")
    if [ "$left" = forever ]; then echo "$2 = {"; exit 0; fi
    if [ "$left" -gt 0 ]; then echo $((left - 1)) > "$STATE/left"; echo "$2 = {"; exit 0; fi
    printf 'Bad request.\nCould not find service "x" in domain for uid: 501\n' >&2; exit 113 ;;
esac
exit 99
"""


def run_bootout(tmp_path, status, prints_left, text="Operation now in progress", **kwargs):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "launchctl").write_text(BOOTOUT_LAUNCHCTL)
    (bin_dir / "launchctl").chmod(0o755)
    (tmp_path / "left").write_text(f"{prints_left}\n")
    (tmp_path / "calls").write_text("")
    command = launchd.bootout_command("gui/501/net.devpi", **kwargs)
    result = subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(tmp_path), "BOOTOUT_STATUS": str(status),
             "BOOTOUT_TEXT": text},
    )
    return result, (tmp_path / "calls").read_text().splitlines()


@pytest.mark.parametrize("status", [36, 0])
def test_a_bootout_under_way_is_waited_out(tmp_path, status):
    result, calls = run_bootout(tmp_path, status, prints_left=3)
    assert result.returncode == 0, result.stderr
    # print found the job three times, then not: the command ended only then
    assert calls == ["bootout gui/501/net.devpi", *["print gui/501/net.devpi"] * 4]


def test_a_job_that_never_goes_fails_naming_the_target(tmp_path):
    result, calls = run_bootout(tmp_path, 36, prints_left="forever", wait=0.5)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "gui/501/net.devpi is still loaded 0.5 s after its bootout (bootout exited 36): "
        "launchd did not let the job go")
    assert calls.count("print gui/501/net.devpi") == 2  # 0.5 s at 0.25 s a try


@pytest.mark.parametrize(("status", "text"), [
    (3, "No such process"), (113, "Could not find specified service"),
    (112, "Could not find specified domain"), (125, "Domain does not support specified action"),
])
def test_a_bootout_of_nothing_is_done(tmp_path, status, text):
    # 3/113: not loaded; 112/125: no such domain (gui/<uid> without a console login)
    result, calls = run_bootout(tmp_path, status, prints_left=0, text=text)
    assert (result.returncode, result.stderr) == (0, "")
    assert calls == ["bootout gui/501/net.devpi"]


def test_a_failed_bootout_of_a_loaded_job_fails_with_launchctls_message(tmp_path):
    result, _ = run_bootout(tmp_path, 1, prints_left="forever", text="Operation not permitted")
    assert result.returncode == 1
    assert "Boot-out failed: 1: Operation not permitted" in result.stderr
    # ... and one whose job went anyway is done
    result, _ = run_bootout(tmp_path, 5, prints_left=0, text="Input/output error")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("where", ["one_command", "function"])
def test_the_bootout_keeps_its_status_where_the_operations_put_it(tmp_path, where):
    """In ``one_command`` (agent, retire) and in a shell function (server_dir's stop_job,
    which returns on failure): a timed-out bootout stops what follows."""
    bootout = launchd.bootout_command("gui/501/net.devpi", wait=0.25)
    if where == "one_command":
        command = launchd.one_command(bootout, "echo after")
    else:
        command = f"stop_job() {{ {bootout} || return $?; echo after; }}; stop_job; echo status=$?"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "launchctl").write_text(BOOTOUT_LAUNCHCTL)
    (bin_dir / "launchctl").chmod(0o755)
    (tmp_path / "left").write_text("forever\n")
    for shell in SHELLS:
        result = subprocess.run([shell, "-c", command], capture_output=True, text=True, timeout=60,
                                env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(tmp_path),
                                     "BOOTOUT_STATUS": "36", "BOOTOUT_TEXT": "x"})
        assert "after" not in result.stdout, shell
        if where == "function":
            assert result.stdout.strip() == "status=1", shell
        else:
            assert result.returncode == 1, shell


# --------------------------------------------------------------------------- the init script, run


def init_host(tmp_path, devpi_init: str | None = None):
    """A devpi home (with a space in its path) whose venv is this project's (real
    devpi-init) or a fake one running ``devpi_init`` as its devpi-init; the config
    file and the uploaded hash in place, as the operations before init leave them."""
    import sys
    from argon2 import PasswordHasher

    config = build_config(
        {"devpi_home": str(tmp_path / "devpi home"), "devpi_outside_url": "https://pypi.example.org",
         "devpi_log_dir": str(tmp_path / "logs")},
        str(tmp_path),
    )
    Path(config.log_dir).mkdir()
    home = Path(config.paths.home)
    home.mkdir(mode=0o700)
    venv = Path(config.paths.venv)
    if devpi_init is None:
        venv.symlink_to(Path(sys.executable).parent.parent)
    else:
        (venv / "bin").mkdir(parents=True)
        fake = venv / "bin" / "devpi-init"
        fake.write_text("#!/bin/sh\n" + devpi_init)
        fake.chmod(0o755)
    Path(config.paths.config_file).write_text(render_server_yaml(config, WHOOSH))
    Path(config.paths.logging_config).write_text(render_logging_config(config))
    Path(config.paths.root_hash_upload).write_text(PasswordHasher(memory_cost=64, time_cost=1, parallelism=1).hash("root pw"))
    return config


def run_init(config):
    import subprocess

    script = devpi.init_script(config)
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120)


def listing(path) -> list[str]:
    return sorted(p.name for p in Path(path).iterdir())


def test_init_script_replaces_a_killed_runs_transient_dir_and_an_empty_server_dir(tmp_path):
    config = init_host(tmp_path)
    hash_text = Path(config.paths.root_hash_upload).read_text()
    leftover = Path(config.paths.server_dir + ".pyinfra-new")
    leftover.mkdir()
    (leftover / ".nodeinfo").write_text("{}")  # what a killed devpi-init left
    Path(config.paths.server_dir).mkdir()

    result = run_init(config)

    assert result.returncode == 0, result.stderr
    assert listing(config.paths.server_dir) == [".nodeinfo", ".serverversion", ".sqlite"]
    assert Path(config.paths.server_dir).stat().st_mode & 0o777 == 0o700
    # no hash file, no transient
    assert listing(config.paths.home) == ["devpi-logging.json", "devpi-server.yml", "server-dir", "venv"]
    assert hash_text not in result.stdout + result.stderr
    # devpi-init ran without root/pypi
    from pyinfra_devpi.layout import SQLITE
    assert b"pypi" not in (Path(config.paths.server_dir) / SQLITE).read_bytes()


def test_init_script_leaves_the_server_dir_alone_when_devpi_init_dies(tmp_path):
    # devpi-init's own order: .serverversion, .nodeinfo, then killed before its database
    config = init_host(tmp_path, devpi_init=(
        'while [ "$1" != --serverdir ]; do shift; done; d=$2\n'
        'printf 4 > "$d/.serverversion"; echo "{}" > "$d/.nodeinfo"; kill -9 $$\n'
    ))
    result = run_init(config)
    assert result.returncode != 0
    assert not Path(config.paths.server_dir).exists()
    assert listing(config.paths.home) == ["devpi-logging.json", "devpi-server.yml", "venv"]


def test_init_script_refuses_an_incomplete_init(tmp_path):
    config = init_host(tmp_path, devpi_init=(
        'while [ "$1" != --serverdir ]; do shift; done; d=$2\n'
        'printf 4 > "$d/.serverversion"; echo "{}" > "$d/.nodeinfo"; exit 0\n'
    ))
    Path(config.paths.server_dir).mkdir()
    result = run_init(config)
    assert result.returncode != 0
    assert "devpi-init left no .sqlite in" in result.stderr
    assert listing(config.paths.server_dir) == []
    assert listing(config.paths.home) == ["devpi-logging.json", "devpi-server.yml", "server-dir", "venv"]


def test_init_script_never_replaces_a_server_dir_that_filled_up(tmp_path):
    config = init_host(tmp_path, devpi_init=(
        'while [ "$1" != --serverdir ]; do shift; done; d=$2\n'
        'for f in .serverversion .nodeinfo .sqlite; do echo x > "$d/$f"; done\n'
        f"echo mine > {shlex.quote(str(tmp_path / 'devpi home' / 'server-dir' / 'data'))}\n"
    ))
    Path(config.paths.server_dir).mkdir()
    result = run_init(config)
    assert result.returncode != 0
    assert "is no longer empty" in result.stderr
    assert listing(config.paths.server_dir) == ["data"]
    assert listing(config.paths.home) == ["devpi-logging.json", "devpi-server.yml", "server-dir", "venv"]


def test_init_script_initialises_a_symlinked_server_dir_where_it_points(tmp_path):
    config = init_host(tmp_path)
    real = tmp_path / "elsewhere" / "server"
    real.mkdir(parents=True)
    Path(config.paths.server_dir).symlink_to(real)
    result = run_init(config)
    assert result.returncode == 0, result.stderr
    assert Path(config.paths.server_dir).is_symlink()
    assert listing(real) == [".nodeinfo", ".serverversion", ".sqlite"]
    assert listing(tmp_path / "elsewhere") == ["server"]  # the transient dir was beside it


# The deploy lock (pyinfra_devpi/deploy_lock.py): taken by the first command of every
# operation that changes something, released at the end; never by a no-change run.


def locked_converge(host, config, **kwargs):
    """``converge`` as the deploy runs it: the lock step first, its release last."""
    return converge(host, config, locked=True, **kwargs)


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
    assert "expect=run-before" in acquire.splitlines()  # the serial the run read
    assert len(steps["release"]) == 1 and steps["release"][0].startswith("# release the deploy lock ")
    assert not any(is_acquire(c) for c in steps["release"])


def test_a_fresh_host_takes_the_lock_before_anything_else(config):
    host = fresh(config)
    steps = locked_converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    assert is_acquire(steps["venv build"][0])
    assert not [c for c in steps["venv build"][:1] if isinstance(c, Upload)]


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
    assert is_acquire(steps["config"][0]) and "expect=run-dead" in steps["config"][0].splitlines()


def test_the_lock_is_read_with_the_configured_wait(config):
    from operations import deploy_lock
    from facts.deploy_lock import DeployLock

    (read,) = deploy_lock.reads(config)
    assert read.fact is DeployLock
    assert read.kwargs == {"home": config.paths.home, "wait": config.lock_wait}


@pytest.mark.parametrize("dry", [True, False])
def test_init_reads_the_root_password_while_planning_only_in_a_real_run(config, monkeypatch, dry):
    from deploys import _service as deploy
    from pyinfra_devpi.secrets import SecretRef

    from .prepared import in_context

    resolved = []
    monkeypatch.setattr(SecretRef, "resolve", lambda self, key: resolved.append(key) or "root pw")
    monkeypatch.setattr("sys.argv", ["pyinfra", "inventory.py", "deploys/devpi.py", *(["--dry"] if dry else [])])
    host = fresh(config)
    provider = in_context(host, deploy.plan_init_secret, config)
    if dry:
        assert resolved == []
        assert "Will read devpi_root_password (env:PW) when applied, to initialise /Users/alice/devpi/server-dir" in host.logged
    else:
        assert resolved == ["devpi_root_password"]
    # executing: the hash is made from the secret read once per run
    assert in_context(host, provider).unmask().startswith("$argon2")
    assert len(resolved) == 1


def test_a_venv_not_built_by_the_deploy_is_rebuilt_like_an_upgrade(config):
    """The Ansible role's venv: a real directory with the pinned versions, not built
    from this project's lock. It is rebuilt and swapped in (and moved aside, kept)."""
    host = converged(config)
    host.venv = {**host.venv, "link": None}
    steps = converge(host, config)
    assert any("uv" in c and "pip sync" in c for c in shell_lines(steps["venv build"]))
    assert launchctl_verbs(steps["agent"]) == ["kickstart -k"]


# The Ansible role's devpi-web indexed with Whoosh into <server dir>/.indices; this
# deploy's indexer-backend null leaves it unused.


def test_an_orphaned_whoosh_index_is_reported_with_its_size_and_kept(config):
    host = converged(config)
    host.server_dir = {**host.server_dir, "whoosh_index_kib": 34 * 1024 + 100}
    assert run_op(devpi.orphaned_index, host, config=config, indexer_backend=NULL) == []  # a report, not a change
    assert (
        "/Users/alice/devpi/server-dir holds an orphaned Whoosh search index .indices (34 MB), unused with "
        "indexer-backend null; set devpi_remove_orphaned_index = True to remove it"
    ) in host.logged
    assert "/Users/alice/devpi/server-dir/.indices kept (devpi_remove_orphaned_index is not set)" in host.noops


def test_an_orphaned_whoosh_index_is_removed_only_when_asked(tmp_path):
    config = with_tools(build_config(
        {"devpi_outside_url": "https://pypi.example.org", "devpi_home": str(tmp_path / "my devpi"),
         "devpi_remove_orphaned_index": True, "devpi_search": False},
        "/Users/alice",
    ), FOUND)
    host = converged(config)
    host.server_dir = {**host.server_dir, "whoosh_index_kib": 3 * 1024 * 1024}
    commands = run_op(devpi.orphaned_index, host, config=config, indexer_backend=NULL)
    assert commands == [f"rm -rf {shlex.quote(config.paths.whoosh_index)}"]
    assert any("orphaned Whoosh search index .indices (3.0 GB)" in m and "removing it" in m for m in host.logged)
    # the command removes the index and nothing else of the server dir
    index = Path(config.paths.whoosh_index)
    (index / "sub").mkdir(parents=True)
    (index / "sub" / "MAIN.toc").write_text("x")
    (index.parent / ".nodeinfo").write_text("{}")
    subprocess.run(["/bin/sh", "-c", commands[0]], check=True)
    assert sorted(p.name for p in index.parent.iterdir()) == [".nodeinfo"]


def test_the_whoosh_index_in_use_is_neither_reported_nor_removed():
    config = with_tools(build_config(
        {"devpi_outside_url": "https://pypi.example.org", "devpi_remove_orphaned_index": True},
        "/Users/alice",
    ), FOUND)
    host = converged(config)
    host.server_dir = {**host.server_dir, "whoosh_index_kib": 2048}
    steps = converge(host, config)
    assert steps["index"] == []
    assert not any("orphaned" in m for m in host.logged)
    assert "/Users/alice/devpi/server-dir/.indices is devpi-web's search index (indexer-backend whoosh)" in host.noops


def test_the_secret_file_is_what_devpi_gen_secret_writes_and_never_overwritten(tmp_path):
    """devpi_server.config.new_secret: base64 of 32 random bytes; 0600; an existing
    secret (tokens signed with it) is never replaced."""
    import base64
    import os
    import sys

    secret = tmp_path / "secret"
    run = [sys.executable, "-I", "-c", devpi.GEN_SECRET, str(secret)]
    subprocess.run(run, check=True)
    assert len(base64.b64decode(secret.read_bytes(), validate=True)) == 32
    assert os.stat(secret).st_mode & 0o777 == 0o600
    before = secret.read_bytes()
    assert subprocess.run(run, capture_output=True).returncode != 0
    assert secret.read_bytes() == before


# --------------------------------------------------------------------------- the daemon scope


@pytest.fixture
def daemon_config():
    return with_tools(build_config(
        {
            "devpi_root_password": "env:PW",
            "devpi_outside_url": "https://pypi.example.org",
            "devpi_caddy_restart": "org.caddy",
            "devpi_launchd_scope": "daemon",
        },
        "/Users/alice",
    ), FOUND)


def daemon_converged(config) -> PreparedHost:
    host = converged(config)
    host.job_domain = "system"
    host.job = {**host.job, "domain": "system"}
    host.files[config.paths.plist_file] = render_plist(config, ("alice", "staff"))
    return host


def test_a_fresh_host_gets_a_root_owned_launchdaemon_through_sudo(daemon_config):
    config = daemon_config
    steps = converge(fresh(config), config, password_hash=HiddenValue(PASSWORD_HASH))
    agent = steps["agent"]
    # Uploaded as the SSH user into devpi_home, copied into place as root, root:wheel 0644.
    (upload,) = [c for c in agent if isinstance(c, Upload)]
    assert upload.dest == "/Users/alice/devpi/net.devpi.plist.pyinfra-new"
    assert "<key>UserName</key>\n\t<string>alice</string>" in upload.content
    assert "<key>GroupName</key>\n\t<string>staff</string>" in upload.content
    assert "LimitLoadToSessionType" not in upload.content
    lines = shell_lines(agent)
    new = "/Library/LaunchDaemons/net.devpi.plist.pyinfra-new"
    assert lines[0] == (
        f"{{ sudo -n mkdir -p /Library/LaunchDaemons && sudo -n cp {upload.dest} {new} && "
        f"sudo -n chown 0:0 {new} && sudo -n chmod 644 {new} && "
        f"sudo -n mv -f {new} /Library/LaunchDaemons/net.devpi.plist; }} || "
        f"{{ rc=$?; sudo -n rm -f {new}; rm -f {upload.dest}; exit $rc; }}; rm -f {upload.dest}"
    )
    # One remote command: enable, the log dir, the log files, bootstrap.
    enable, mkdir, touch, bootstrap = lines[1].split(" && ", 3)
    assert enable == "{ sudo -n launchctl enable system/net.devpi; }"
    assert mkdir == "{ mkdir -p /Users/alice/Library/Logs; }"
    # The logs are the SSH user's before launchd (root) opens them.
    assert touch == "{ touch /Users/alice/Library/Logs/net.devpi.out.log /Users/alice/Library/Logs/net.devpi.err.log; }"
    assert "out=$(sudo -n launchctl bootstrap system /Library/LaunchDaemons/net.devpi.plist 2>&1)" in bootstrap
    # print needs no root
    assert "if launchctl print system/net.devpi" in bootstrap
    # Caddy's job stays the SSH user's.
    assert "gui/501/org.caddy" in steps["caddy"][-1]
    for command in lines:
        assert gnu_only_forms(command) == []


def test_a_converged_launchdaemon_yields_nothing(daemon_config):
    host = daemon_converged(daemon_config)
    steps = converge(host, daemon_config)
    assert steps == {name: [] for name in steps}
    assert "system/net.devpi is loaded, enabled and running its current definition" in host.noops


def test_a_launchdaemon_plist_not_owned_by_root_is_given_back_to_root(daemon_config):
    host = daemon_converged(daemon_config)
    host.modes[daemon_config.paths.plist_file] = {"mode": "-rw-rw-r--", "physical": daemon_config.paths.plist_file,
                                                  "owner": 501}
    lines = shell_lines(converge(host, daemon_config)["agent"])
    assert lines == ["sudo -n chown 0:0 /Library/LaunchDaemons/net.devpi.plist",
                     "sudo -n chmod 644 /Library/LaunchDaemons/net.devpi.plist"]


def test_a_restart_of_a_launchdaemon_goes_through_sudo(daemon_config):
    host = daemon_converged(daemon_config)
    host.venv = {**host.venv, "devpi-server": "6.20.2"}
    steps = converge(host, daemon_config)
    assert shell_lines(steps["agent"]) == ["sudo -n launchctl kickstart -k system/net.devpi"]
    # the health gate's rollback restarts the same way (wait_healthy.sh: sudo -n launchctl kickstart -k "$target")
    health = steps["health"][0].splitlines()
    assert "sudo=1" in health and "target=system/net.devpi" in health


def test_root_needs_no_sudo_for_a_launchdaemon(daemon_config):
    place = JobPlace(scope="daemon", agent_domain="gui/0", uid=0, user="root", group="wheel")
    lines = shell_lines(converge(fresh(daemon_config), daemon_config, password_hash=HiddenValue(PASSWORD_HASH),
                                 place=place)["agent"])
    assert not any("sudo" in line for line in lines)
    assert lines[0].startswith("{ mkdir -p /Library/LaunchDaemons && cp ")
    assert "out=$(launchctl bootstrap system " in lines[-1]


def test_switching_to_the_daemon_retires_the_launchagent_first(daemon_config):
    config = daemon_config
    host = fresh(config)
    host.job_domain = "system"
    host.elsewhere = loaded_job(config)  # the LaunchAgent in gui/501
    agent_plist = "/Users/alice/Library/LaunchAgents/net.devpi.plist"
    host.files[agent_plist] = "<plist/>"
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    retired = shell_lines(steps["retire"])
    assert retired == [f"rm -f {agent_plist}"]  # the SSH user's own: no sudo
    # the LaunchAgent is booted out by the command that loads the LaunchDaemon
    load = shell_lines(steps["agent"])[-1]
    verbs = launchctl_verbs([load])
    assert verbs[0] == "enable" and verbs[-1] == "bootstrap" and set(verbs[1:-1]) == {"bootout"}
    assert "$(launchctl bootout gui/501/net.devpi " in load  # the SSH user's own job: no sudo
    assert "while launchctl print gui/501/net.devpi" in load


def test_a_launchdaemon_renamed_with_its_home_is_retired_through_sudo(daemon_config):
    """devpi_label and devpi_home renamed together in the daemon scope: the old
    LaunchDaemon (its config, one the deploy wrote, serves this port) would hold the port."""
    config = daemon_config
    host = daemon_converged(config)
    host.job = None  # the new label is not loaded yet
    daemons = config.paths.launch_daemons_dir
    host.agents = {
        f"{daemons}/net.devpi.before.plist": managed_devpi("net.devpi.before", "/Users/alice/old devpi", config.port),
        f"{daemons}/org.other.plist": managed_devpi("org.other", "/o", config.port + 1),
        config.paths.plist_file: managed_agent(config.label),
    }
    steps = converge(host, config)
    retired = shell_lines(steps["retire"])
    assert retired[0].startswith("( out=$(sudo -n launchctl bootout system/net.devpi.before ")
    assert retired[-1] == f"sudo -n rm -f {daemons}/net.devpi.before.plist"
    assert not any("org.other" in c for c in retired)  # another devpi's daemon: left alone
    assert "net.devpi.before is this devpi under an old label and an earlier devpi_home" in "\n".join(host.logged)


def test_switching_back_to_the_agent_retires_the_launchdaemon_through_sudo(config):
    host = fresh(config)
    host.system = {**loaded_job(config), "domain": "system"}
    host.files["/Library/LaunchDaemons/net.devpi.plist"] = "<plist/>"
    steps = converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
    retired = shell_lines(steps["retire"])
    assert retired == ["sudo -n rm -f /Library/LaunchDaemons/net.devpi.plist"]
    load = shell_lines(steps["agent"])[-1]
    assert "sudo -n launchctl bootout system/net.devpi " in load
    # waiting needs no root: anyone may print the system domain
    assert "while launchctl print system/net.devpi" in load
    assert launchctl_verbs([load]) == ["enable", "bootout", "bootstrap"]
    assert load.count("sudo") == 1  # only the system domain's bootout; the agent is the user's


def test_the_daemon_scope_reads_only_what_the_modules_declare(daemon_config):
    """The same guarantee for a LaunchDaemon: everything in the one batch, nothing read
    through sudo."""
    from operations import caddy as caddy_op
    from facts.snapshot import FactRead

    config = daemon_config
    place = place_of(config)
    declared = set()
    for item in [
        *devpi.reads(config),
        *retire.reads((config.label, config.paths.backup_label), place, config.launch_agents_dir,
                      config.paths.other_scope_plists, config.paths.launch_daemons_dir),
        *launchd.reads(config.label, place.domain, config.paths.plist_file),
        # the last smoke check's record and venv.previous: is the live venv one a gate passed?
        config.paths.smoke_result, config.paths.venv_previous,
        *caddy_op.reads(config.caddy_site_file, config.paths.caddy_restart_pending, config.caddy_restart, place),
        # devpi_backup unset: the backup job's removal reads its job and plist (not its mode).
        launchd.job_read(config.paths.backup_label, place.domain), config.paths.backup_plist_file,
        *users_indexes.reads(config),
    ]:
        declared.add(("file", item) if isinstance(item, str) else (item.fact.__name__, item.arguments))
    fresh_host = fresh(config)
    fresh_host.job_domain = "system"
    for host in (daemon_converged(config), fresh_host):
        converge(host, config, password_hash=HiddenValue(PASSWORD_HASH))
        asked = asked_reads(host)
        # devpi is asked for its users and indexes unless this run initialises it.
        unread = {("UsersIndexes", r.arguments) for r in users_indexes.reads(config)} if host is fresh_host else set()
        assert asked == declared - unread
    assert ("LaunchdJob", FactRead.of(object, label="net.devpi", domain="system").arguments) in declared


def test_the_lock_is_released_last_after_every_operation_planned_before_it(config):
    planned = []

    def call(key, op, **kwargs):
        planned.append((key, kwargs))
        return key

    c = service.Converge(config, place_of(config), call=call)
    for key in ("bootstrap", "venv", "agent", "backup job", "prewarm"):
        c.op(key, object)
    assert service.STEPS[-1].name == "release"
    service.STEPS[-1].run(c)
    assert planned[-1][0] == "release"
    assert planned[-1][1]["after"] == ["bootstrap", "venv", "agent", "backup job", "prewarm"]


def test_the_prefetch_is_every_steps_reads_and_the_lock_comes_first(config):
    # The lock's fact first in the one batch: it waits while another run holds the lock.
    c = preflighted(converged(config), config, place_of(config), None)
    reads = [r for step in service.STEPS for r in step.reads(c)]
    assert reads[0] == service.deploy_lock.lock_read(config)
    assert [step.name for step in service.STEPS][:2] == ["lock", "preflight"]


# -- the upgrade across database versions (devpi_allow_export_import): one restart, and
# no change reported when the new devpi keeps the database version


def opted_bump(config):
    opted = dataclasses.replace(config, allow_export_import=True)
    host = converged(opted)
    host.venv = {**host.venv, "devpi-server": "6.20.2"}
    return opted, host


def test_an_opted_in_bump_that_keeps_the_database_version_reports_no_upgrade_and_restarts_once(config):
    opted, host = opted_bump(config)
    steps = converge(host, opted)  # executing: the build left no venv waiting (no pending file)
    assert steps["venv build"] and steps["upgrade"] == []
    assert (f"devpi-server {opted.server_version} keeps the database version of {opted.paths.server_dir}: "
            "nothing to move over") in host.noops
    assert launchctl_verbs(steps["agent"]) == ["kickstart -k"]  # the build swapped the venv in
    assert steps["health"]


def test_an_upgrade_that_ran_started_devpi_itself_so_the_job_is_not_restarted_again(config):
    opted, host = opted_bump(config)
    host.paths[opted.paths.upgrade_pending] = {"kind": "file", "kib": 4}  # the build left its venv waiting
    steps = converge(host, opted)
    wait, upgrade = steps["upgrade"]
    assert wait.startswith("# wait while a scheduled backup runs")  # backup.wait_for_backup first
    assert upgrade.function.shown_as.startswith("# the server dir's data to the new venv's database version")
    assert launchctl_verbs(steps["agent"]) == []  # upgrade.sh stopped and started devpi: no kickstart -k after
    assert steps["health"]  # the gate (and its smoke check) on the new server dir


def test_the_plan_says_the_upgrade_may_run(config):
    opted, host = opted_bump(config)
    steps = converge(host, opted, executing=False)  # --dry: only the build knows the new database version
    assert steps["upgrade"]
    assert not any("keeps the database version" in m for m in host.noops)
