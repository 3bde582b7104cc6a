"""The uninstall's operations under prepared facts: what each yields, and nothing on a
host it already cleaned."""

from __future__ import annotations

import pytest

from operations import uninstall
from pyinfra_devpi import real_paths
from pyinfra_devpi.config import build_config
from pyinfra_devpi.launchd_scope import JobPlace
from pyinfra_devpi.render import render_caddy_removed, render_caddy_site
from deploys._uninstall import describe_leftovers

from .prepared import Meta, PreparedHost, Upload, gnu_only_forms, run_op, shell_lines

DOMAIN = "gui/501"
PLACE = JobPlace(scope="agent", agent_domain=DOMAIN, uid=501, user="alice", group="staff")


def job_op(host, config, place=PLACE):
    paths = config.paths
    return run_op(uninstall.job, host, label=config.label, place=place,
                  plists=(paths.agent_plist_file, paths.daemon_plist_file), daemon_plists=(paths.daemon_plist_file,))


@pytest.fixture
def config():
    return build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_caddy_restart": "net.caddy"},
                        "/Users/alice")


def installed(config) -> PreparedHost:
    return PreparedHost(
        job={"loaded": True, "state": "running", "pid": 42},
        files={config.paths.plist_file: "<plist/>", config.caddy_site_file: render_caddy_site(config)},
        paths={path: {"kind": "dir", "kib": 2048} for _, path in config.paths.removable(config.log_backups)},
    )


def gone(config) -> PreparedHost:
    return PreparedHost(job=None, files={config.caddy_site_file: render_caddy_removed(config)})


def run_all(host, config, purge=False):
    steps = {
        "job": job_op(host, config),
        "caddy": run_op(uninstall.caddy_block, host, config=config, place=PLACE,
                        removed=render_caddy_removed(config)),
    }
    if purge:
        steps["purge"] = run_op(uninstall.purge, host, config=config)
        steps["home"] = run_op(uninstall.home, host, config=config, after=[Meta(bool(steps["purge"]))])
    return steps


def test_an_installed_devpi_is_booted_out_and_its_block_emptied(config):
    steps = run_all(installed(config), config)
    job = shell_lines(steps["job"])
    assert job[0].startswith("( out=$(launchctl bootout gui/501/net.devpi") and "while launchctl print" in job[0]
    assert job[-1] == f"rm -f {config.paths.plist_file}"
    caddy = steps["caddy"]
    # marked, the empty file moved in, Caddy restarted, the mark cleared
    assert ": > /Users/alice/devpi/caddy-restart.pending" in caddy[0]
    (upload,) = [c for c in caddy if isinstance(c, Upload)]
    assert "devpi was uninstalled" in upload.content and "reverse_proxy" not in upload.content
    assert caddy[-1] == "( launchctl kickstart -k gui/501/net.caddy ) && rm -f /Users/alice/devpi/caddy-restart.pending"
    for command in job + shell_lines(caddy):
        assert gnu_only_forms(command) == []


@pytest.mark.parametrize(("where", "restart"), [
    ("gui/501", "launchctl kickstart -k gui/501/net.caddy"),
    ("user/501", "launchctl kickstart -k user/501/net.caddy"),
    ("system", "sudo -n launchctl kickstart -k system/net.caddy"),  # `sudo brew services start caddy`
])
def test_caddy_is_restarted_where_its_job_is_loaded(config, where, restart):
    host = installed(config)
    host.placed = {("net.caddy", where): {"loaded": True, "state": "running", "pid": 9, "domain": where}}
    caddy = run_all(host, config)["caddy"]
    assert caddy[-1] == f"( {restart} ) && rm -f /Users/alice/devpi/caddy-restart.pending"


def test_the_uninstall_reads_caddys_label_in_every_domain_it_may_be_loaded_in(config):
    reads = [r for r in uninstall.reads(config, PLACE) if getattr(r, "kwargs", None)]
    looked = [dict(r.kwargs)["domain"] for r in reads if dict(r.kwargs).get("label") == "net.caddy"]
    assert looked == list(PLACE.lookup_order)


def test_the_job_loaded_in_the_other_domain_is_booted_out_there_too(config):
    host = gone(config)
    host.elsewhere = {"loaded": True, "state": "running", "pid": 7}
    (command,) = shell_lines(job_op(host, config))
    assert command.startswith("( out=$(launchctl bootout user/501/net.devpi")


def test_an_uninstalled_host_yields_nothing(config):
    host = gone(config)
    steps = run_all(host, config, purge=True)
    assert steps == {"job": [], "caddy": [], "purge": [], "home": []}
    assert len(host.noops) == 4


def test_a_block_the_deploy_did_not_write_is_left_alone(config):
    host = gone(config)
    host.files[config.caddy_site_file] = "pypi.example.org {\n\trespond hello\n}\n"
    assert run_op(uninstall.caddy_block, host, config=config, place=PLACE, removed=render_caddy_removed(config)) == []


def test_a_failed_caddy_restart_is_retried(config):
    host = gone(config)
    host.files[config.paths.caddy_restart_pending] = ""
    (command,) = run_op(uninstall.caddy_block, host, config=config, place=PLACE, removed=render_caddy_removed(config))
    assert command.startswith("( launchctl kickstart -k gui/501/net.caddy )")


def test_the_purge_removes_exactly_the_named_paths(config):
    steps = run_all(installed(config), config, purge=True)
    *named, rotated = steps["purge"]
    removed = [c.removeprefix("rm -rf ") for c in named]
    assert removed == [path for _, path in config.paths.removable(config.log_backups)]
    assert rotated.startswith(f"log={config.paths.server_log}; for f in ")
    assert config.paths.server_dir in removed and config.paths.home not in removed
    assert config.caddy_site_file not in removed and config.paths.plist_file not in removed
    (home,) = steps["home"]
    assert "rmdir" in home and ".pyinfra-deploy.serial" in home


def test_without_the_purge_nothing_of_devpis_data_is_touched(config):
    steps = run_all(installed(config), config)
    text = "\n".join(shell_lines(steps["job"]) + shell_lines(steps["caddy"]))
    for _, path in config.paths.removable(config.log_backups):
        if path != config.paths.caddy_restart_pending:
            assert path not in text


def test_the_report_names_what_is_kept_or_removed(config):
    found = {config.paths.server_dir: {"kind": "dir", "kib": 4096}, config.paths.err_log: {"kind": "file", "kib": 3}}
    kept = describe_leftovers(config, found)
    assert kept[0].startswith("kept (a deploy brings devpi back on them")
    assert "  server dir (devpi's data: uploads, users, indexes, the mirror's cache): " \
        "/Users/alice/devpi/server-dir (dir, 4.0 MiB)" in kept
    assert "  stderr log: /Users/alice/Library/Logs/net.devpi.err.log (file, 3 KiB)" in kept
    purge = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_uninstall_purge": True}, "/Users/alice")
    plan = real_paths.purge_plan(purge, found, None, [])
    assert describe_leftovers(purge, found, plan)[0] == "devpi_uninstall_purge is set: removes:"


# --------------------------------------------------------------------------- the purge, as the host resolves paths

PURGE = {"devpi_outside_url": "https://pypi.example.org", "devpi_uninstall_purge": True}


def purge_op(host, config, kept=()):
    return run_op(uninstall.purge, host, config=config, kept=kept)


def test_a_purge_of_a_devpi_home_that_is_a_link_to_the_users_home_is_refused_before_any_change():
    from pyinfra_devpi.errors import DeployError

    config = build_config({**PURGE, "devpi_home": "/Users/alice/dv"}, "/Users/alice")
    host = installed(config)
    # ~/dv -> ~: its tools, venvs, bin are the user's own
    host.real = {config.paths.home: "/Users/alice",
                 **{p: p.replace("/Users/alice/dv", "/Users/alice") for _, p in config.paths.removable(4)}}
    with pytest.raises(DeployError) as error:
        purge_op(host, config)
    message = str(error.value)
    assert "the purge is refused, nothing was changed" in message
    assert "`devpi_home` = /Users/alice/dv (on the host: /Users/alice) is the SSH user's home" in message
    assert "use a directory of its own, such as '~/devpi'" in message
    # a home holding the user's home (e.g. /Users) too
    host.real = {config.paths.home: "/Users"}
    with pytest.raises(DeployError):
        purge_op(host, config)


def test_the_purge_follows_no_link_out_of_devpi_home(config):
    config = build_config(PURGE, "/Users/alice")
    host = installed(config)
    # ~/devpi/bin is a link to the user's ~/bin: the backup program's path leads out of devpi_home
    host.real = {config.paths.bin_dir: "/Users/alice/bin", config.paths.backup_program: "/Users/alice/bin/devpi-backup.py"}
    removed = [c.removeprefix("rm -rf ") for c in shell_lines(purge_op(host, config)) if c.startswith("rm -rf ")]
    assert config.paths.backup_program not in removed
    assert config.paths.server_dir in removed and config.paths.tools_dir in removed
    remove, keep = uninstall_plan(host, config)
    ((what, path, why),) = keep
    assert path == config.paths.backup_program
    assert "leads out of devpi_home (to /Users/alice/bin): the purge follows no link out of it" in why


def uninstall_plan(host, config, kept=()):
    from .prepared import in_context

    return in_context(host, uninstall.purge_plan, config, kept)


def test_what_the_purge_says_it_keeps_it_keeps():
    # Backups in ~/devpi/tools (a host deployed before the preflight refused that): the
    # tools dir holds them, so the purge keeps it, and says so in the same list.
    config = build_config({**PURGE, "devpi_backup": {"hour": 3, "minute": 0, "dir": "/Volumes/b"}}, "/Users/alice")
    host = installed(config)
    host.real = {"/Volumes/b": f"{config.paths.tools_dir}/backups"}
    kept = (("backups", config.backup_dir),)
    removed = [c.removeprefix("rm -rf ") for c in shell_lines(purge_op(host, config, kept)) if c.startswith("rm -rf ")]
    assert config.paths.tools_dir not in removed and config.paths.venvs_dir in removed
    plan = uninstall_plan(host, config, kept)
    lines = describe_leftovers(config, host.paths, plan)
    assert f"  tools (uv the deploy bootstrapped): {config.paths.tools_dir} (kept: it holds the backups " \
        f"(/Volumes/b), which the uninstall keeps)" in lines
    assert not any(config.paths.tools_dir in line for line in lines[:lines.index("and keeps:")])
    # the deploy passes what its steps keep to both
    from deploys import _uninstall as deploy

    assert deploy.kept_by_steps(config) == (("backups", "/Volumes/b"),)


def test_the_backup_job_goes_and_its_backups_stay_even_with_the_purge():
    from operations import launchd
    from deploys import _uninstall as deploy

    data = {"devpi_outside_url": "https://pypi.example.org", "devpi_backup": {"hour": 3, "minute": 0},
            "devpi_uninstall_purge": True}
    config = build_config(data, "/Users/alice")
    paths = config.paths
    host = PreparedHost(jobs={paths.backup_label: {"loaded": True, "state": "not running"}},
                        files={paths.backup_plist_file: "<plist/>"})
    (step,) = [s for s in deploy.STEPS if s.name == "the backup job"]
    commands = shell_lines(run_op(launchd.absent, host, label=paths.backup_label, domain=DOMAIN,
                                  plist_path=paths.backup_plist_file))
    assert any(f"bootout gui/501/{paths.backup_label}" in c for c in commands)
    assert commands[-1] == f"rm -f {paths.backup_plist_file}"
    assert step.kept(config) == [("backups", config.backup_dir)]
    assert all(not path.startswith(config.backup_dir) for _, path in paths.removable(config.log_backups))
    assert paths.backup_program in dict((p, w) for w, p in paths.removable(config.log_backups))


def test_a_launchdaemon_is_booted_out_and_removed_through_sudo(config):
    host = gone(config)
    host.job_domain = "system"
    host.job = {"loaded": True, "state": "running", "pid": 42}
    host.files[config.paths.daemon_plist_file] = "<plist/>"
    job = shell_lines(job_op(host, config))
    assert job[0].startswith("( out=$(sudo -n launchctl bootout system/net.devpi ")
    assert "while launchctl print system/net.devpi" in job[0]
    assert job[-1] == "sudo -n rm -f /Library/LaunchDaemons/net.devpi.plist"
    # As root, no sudo.
    root = JobPlace(scope="daemon", agent_domain="gui/0", uid=0, user="root", group="wheel")
    assert not any("sudo" in c for c in shell_lines(job_op(host, config, place=root)))


def test_a_site_file_that_lands_on_the_deploys_config_is_left_alone_by_the_uninstall():
    # ~/sites -> ~/devpi: the "site file" is devpi-server.yml (which carries the marker too)
    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_caddy_restart": "net.caddy",
                           "devpi_caddy_site_file": "/Users/alice/sites/devpi-server.yml"}, "/Users/alice")
    host = installed(config)
    host.files[config.caddy_site_file] = "# Managed by pyinfra-devpi: changes made here are replaced\n"
    host.real = {config.caddy_site_file: config.paths.config_file}
    caddy = run_op(uninstall.caddy_block, host, config=config, place=PLACE, removed=render_caddy_removed(config))
    assert caddy == []
    assert host.noops == [f"no Caddy site block for devpi at {config.caddy_site_file}"]
    # as written (no link on the way), the same file is the deploy's block: replaced
    host = installed(config)
    host.files[config.caddy_site_file] = "# Managed by pyinfra-devpi: changes made here are replaced\n"
    assert any(isinstance(c, Upload) for c in run_op(uninstall.caddy_block, host, config=config, place=PLACE,
                                                     removed=render_caddy_removed(config)))
