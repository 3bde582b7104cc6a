"""Day one on indri: the deploy takes over the devpi the Ansible role installed (issue 11).

The harness builds the role's install (``harness/ansible.py``): a venv made in place and
not from the lock, a server dir from ``devpi-init`` with devpi-web's Whoosh index, the
job under the deploy's label running ``devpi-server`` with flags (no config, no secret
file), loaded with legacy ``launchctl load`` over SSH by the user who owns the console,
as on indri (an Aqua agent: it lands in ``gui/<uid>``, the deploy's own domain; MACOS.md,
launchctl(1)), users, an index and an upload made by hand. Then: ``--dry --diff`` (no
secret read, nothing changed), the takeover, a rerun that changes nothing (two remote
commands, the same devpi), and the removal of the orphaned Whoosh index on request.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from pyinfra_devpi.search import WHOOSH, backend_in

from . import devpi_client as devpi
from .harness import Poller, build_wheel, install_ansible_devpi, populate, remote_commands, write_proxy_block
from .harness.ansible import ROLE_DRIFT
from .stack import start_stack

pytestmark = pytest.mark.e2e

ROOT_REF = "op://vault/devpi/root password"
ALICE_REF = "op://vault/devpi/alice password"
ALICE_PASSWORD = "alice's Pa55"
# The role wrote its logs under names of its own (indri: mcquack.devpi.*.log).
OUT_LOG, ERR_LOG = "e2e.role.out.log", "e2e.role.err.log"
MIRRORED = ("hermetic-alpha", "hermetic_alpha-1.0-py3-none-any.whl")


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def tree_kib(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) // 1024


def test_the_ansible_install_is_taken_over_with_its_data_intact(sshd, launchd, upstream, tools, tmp_path):
    uid = sshd.uid
    with start_stack(
        sshd, launchd, upstream, tmp_path / "stack", "takeover", deploy=False, secrets={ALICE_REF: ALICE_PASSWORD},
        devpi_root_password=ROOT_REF, devpi_out_log=OUT_LOG, devpi_err_log=ERR_LOG,
        devpi_users={"alice": {"password": ALICE_REF}}, devpi_indexes={"alice/dev": {"bases": ["root/pypi"]}},
    ) as stack:
        # As on indri: the SSH user owns the console, so `launchctl load` reaches gui/<uid>.
        assert launchd.domain == f"gui/{uid}", launchd.domain
        legacy_target = f"gui/{uid}/{stack.label}"
        try:
            # ---- the host as the role left it
            write_proxy_block(stack.site_file, stack.caddy_url, stack.devpi_port)
            launchd.kickstart(stack.caddy_label)
            logs = stack.home / "Library/Logs"
            role = install_ansible_devpi(
                launchd, tools, home=stack.devpi_home, label=stack.label, port=stack.devpi_port,
                launch_agents_dir=stack.home / "Library/LaunchAgents", out_log=logs / OUT_LOG,
                err_log=logs / ERR_LOG, outside_url=stack.caddy_url, root_password=stack.password,
                python=stack.data["devpi_python"],
            )
            upload = build_wheel(tmp_path / "dist", "takeover-pkg", "1.0")
            populate(role, root_password=stack.password, mirror_url=upstream.url, user="alice",
                     user_password=ALICE_PASSWORD, index="dev", upload=upload.path, uv=tools.uv, mirrored=MIRRORED)
            stack.wait_caddy()
            # the role's job, in gui/<uid>, from the role's plist; not in user/<uid>
            role_printed = launchd.run("print", legacy_target, check=False)
            assert role_printed.returncode == 0, role_printed.stderr
            assert f"\tpath = {role.plist}\n" in role_printed.stdout
            assert "devpi-server.yml" not in role_printed.stdout
            assert launchd.run("print", f"user/{uid}/{stack.label}", check=False).returncode == 113
            role_pid = launchd.pid(stack.label)
            indices = role.server_dir / ".indices"
            assert indices.is_dir()
            files = role.server_dir / "+files"
            before = {
                "files": digests(files),
                "nodeinfo": (role.server_dir / ".nodeinfo").read_bytes(),
                "state": stack.state(),
                "links": devpi.simple_links(stack.devpi_url, "alice/dev", "takeover-pkg"),
                "err_log": role.err_log.read_bytes(),
                "out_log": role.out_log.read_bytes(),
                "plist": role.plist.read_bytes(),
            }
            assert upload.filename in {Path(f).name for f in before["files"]}
            assert MIRRORED[1] in {Path(f).name for f in before["files"]}
            assert before["err_log"]  # the role's devpi logged its start

            # ---- review: reads no secret, changes nothing, shows every step
            dry = stack.deploy("--dry", "--diff")
            assert stack.op.calls() == []
            out = dry.output
            assert f"Will read devpi_root_password ({ROOT_REF}) when applied" in out, dry.describe()
            assert "Will run: # build devpi-server 6.20.3 + devpi-web 5.1.1 in a new venv" in out
            assert "is also loaded in" not in out  # one job, in the deploy's own domain
            assert re.search(rf"Will run: .*launchctl bootout '?{re.escape(legacy_target)}", out), out
            assert re.search(r"Will run: .*launchctl bootstrap", out), out
            assert "Will set index root/pypi's mirror_no_project_list to True" in out
            # search comes back on the role's index once root/pypi has the flag: not orphaned
            assert "orphaned" not in out
            assert (stack.devpi_home / "venv").is_dir() and not (stack.devpi_home / "venv").is_symlink()
            assert role.plist.read_bytes() == before["plist"]
            assert not (stack.devpi_home / "devpi-server.yml").exists()
            assert not (stack.devpi_home / "secret").exists()
            assert launchd.pid(stack.label) == role_pid  # the role's devpi, untouched

            # ---- the takeover, with devpi polled directly and through Caddy
            with Poller(stack.devpi_url) as direct, Poller(stack.caddy_url) as proxied:
                result = stack.deploy()
                pid = stack.wait_healthy()
                stack.wait_caddy()
            # devpi's port was closed during the switch, but Caddy (its new block in place
            # first) held those requests: none came back 502. (Caddy's own restart, a
            # kickstart -k of its job, refuses connections for a moment: status 0.)
            assert direct.failed()
            assert 502 not in {status for _, status in proxied.failed()}, proxied.failed()
            assert pid != role_pid  # the role's job was replaced by the deploy's
            assert launchd.run("print", f"user/{uid}/{stack.label}", check=False).returncode == 113
            printed = stack.printed()
            assert str(stack.devpi_home / "devpi-server.yml") in printed  # the deploy's definition
            # the data, as it was: every file, devpi's identity, users, indexes, uploads
            after = digests(files)
            assert {f: after.get(f) for f in before["files"]} == before["files"]
            assert (role.server_dir / ".nodeinfo").read_bytes() == before["nodeinfo"]
            expected = before["state"]
            expected["root"]["indexes"]["pypi"]["mirror_no_project_list"] = True  # the deploy's one change
            assert stack.state() == expected
            assert devpi.simple_links(stack.devpi_url, "alice/dev", "takeover-pkg") == before["links"]
            (url,) = before["links"].values()
            assert devpi.sha256(devpi.download(url)) == upload.sha256
            assert stack.login("alice", ALICE_PASSWORD) == 200
            assert stack.login("root", stack.password) == 200
            # the logs go on where the role's left off
            assert role.err_log.read_bytes().startswith(before["err_log"])
            assert role.out_log.read_bytes().startswith(before["out_log"])
            assert len(role.err_log.read_bytes()) > len(before["err_log"])
            # the role's venv rebuilt from the lock; the old one kept aside
            venv_target = Path(stack.venv_target())
            assert venv_target.parent == stack.devpi_home / "venvs"
            (kept,) = (stack.devpi_home / "venvs").glob("pre-existing-*")
            assert (kept / "bin" / "devpi-server").exists()
            assert list(kept.glob(f"lib/python*/site-packages/{ROLE_DRIFT.replace('==', '-')}.dist-info"))
            assert not list(venv_target.glob(f"lib/python*/site-packages/{ROLE_DRIFT.replace('==', '-')}.dist-info"))
            # devpi-web's search is back (flag first, then Whoosh): the role's index is in use
            assert "orphaned" not in result.output
            assert backend_in((stack.devpi_home / "devpi-server.yml").read_text()) == WHOOSH

            # ---- a rerun changes nothing
            again = stack.deploy("--debug")
            assert again.grand_total()[0] == 0, again.describe()
            assert len(remote_commands(again.output)) == 2, remote_commands(again.output)
            assert stack.pid() == pid

            # ---- search off: the index is orphaned, reported with its size, kept
            off = stack.deploy(devpi_search=False)
            size = re.search(r"holds an orphaned Whoosh search index \.indices \((\d+) (KB|MB)\), unused with "
                             r"indexer-backend null; set devpi_remove_orphaned_index = True to remove it", off.output)
            assert size, off.describe()
            assert int(size.group(1)) > 0
            pid = stack.wait_healthy()
            # (compared from here: the devpi running Whoosh wrote to it until it restarted)
            kept_index = digests(indices)
            assert kept_index
            again = stack.deploy(devpi_search=False)
            assert again.grand_total()[0] == 0, again.describe()
            assert "orphaned Whoosh search index .indices" in again.output
            assert stack.pid() == pid
            assert digests(indices) == kept_index

            # ---- removed when the operator asks, and nothing else touched
            removed = stack.deploy(devpi_search=False, devpi_remove_orphaned_index=True)
            assert "removing it (devpi_remove_orphaned_index)" in removed.output, removed.describe()
            assert not indices.exists()
            assert stack.pid() == pid and stack.api_ok()
            assert {f: digests(files).get(f) for f in before["files"]} == before["files"]
            assert (role.server_dir / ".nodeinfo").read_bytes() == before["nodeinfo"]
            final = stack.deploy(devpi_search=False, devpi_remove_orphaned_index=True)
            assert final.grand_total()[0] == 0
            assert "orphaned" not in final.output
        finally:
            launchd.run("bootout", legacy_target, check=False)
