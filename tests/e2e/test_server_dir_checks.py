"""Server dirs the deploy did not make: refused before any change when devpi must not
touch them, checked (owners, modes, devpi-fsck) before it adopts one brought over."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from pyinfra_devpi.search import WHOOSH, backend_in

from . import devpi_client as devpi
from .stack import start_stack

pytestmark = pytest.mark.e2e


def tree(path: Path) -> dict[str, tuple]:
    """Every entry under ``path``: a file's sha256 and mode, a directory's mode."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(root) / name
            st = full.lstat()
            digest = hashlib.sha256(full.read_bytes()).hexdigest() if full.is_file() else None
            out[str(full.relative_to(path))] = (digest, st.st_mode, st.st_uid)
    return out


def test_foreign_server_dirs_are_refused_before_any_change(sshd, launchd, upstream, tmp_path):
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "refusals", caddy=False, deploy=False) as stack:
        stack.server_dir.mkdir(parents=True)
        # data but no .nodeinfo: not devpi's, or not initialised
        (stack.server_dir / "notes.txt").write_text("someone's data\n")
        before = tree(stack.home)
        result = stack.deploy(check=False)
        assert result.returncode != 0
        assert f"{stack.server_dir} holds data but no .nodeinfo (devpi's initialised marker)" in result.output
        assert tree(stack.home) == before
        assert stack.pid() is None

        # a database version devpi-server 6.20.3 cannot open, no opt-in
        (stack.server_dir / "notes.txt").unlink()
        (stack.server_dir / ".serverversion").write_text("3")
        (stack.server_dir / ".nodeinfo").write_text('{"uuid": "0123456789abcdef", "role": "primary"}')
        (stack.server_dir / ".sqlite").write_bytes(b"SQLite format 3\0" + bytes(100))
        before = tree(stack.home)
        result = stack.deploy(check=False)
        assert result.returncode != 0
        assert "is '3' but devpi-server 6.20.3 uses database version '4': refusing to start it" in result.output
        assert "rerun with `--data devpi_allow_export_import=true`" in result.output
        assert tree(stack.home) == before
        assert stack.pid() is None


def test_a_server_dir_brought_over_is_checked_before_it_is_adopted(sshd, launchd, upstream, tools, tmp_path,
                                                                   shared_host):
    # The machine the data comes from (the deployed host other modules share: it is
    # stopped here, and reset by the next module that gets it): a user, an index, an upload.
    source = shared_host.get()
    devpi.ensure_user(source.devpi_url, source.root_auth, "mover", "mover-pw")
    devpi.ensure_index(source.devpi_url, source.root_auth, "mover/dev", bases=["root/pypi"],
                       acl_upload=["mover"])
    wheel = upstream.add_project("brought-over", "1.0", [])
    published = devpi.uv_publish(tools.uv, wheel.path, f"{source.devpi_url}/mover/dev/", "mover", "mover-pw")
    assert published.returncode == 0, published.stdout + published.stderr
    users_indexes = source.state()
    source.stop_devpi()
    (stored,) = [p for p in source.server_dir.rglob("*.whl") if p.name == wheel.filename]

    with start_stack(sshd, launchd, upstream, tmp_path / "target", "target", caddy=False, deploy=False) as target:
        def bring_over() -> None:  # what `rsync -a old:server-dir/ ~/devpi/server-dir/` leaves
            shutil.rmtree(target.server_dir, ignore_errors=True)
            shutil.copytree(source.server_dir, target.server_dir, symlinks=True)

        # A group-writable entry: refused while planning, with the chmod that fixes it.
        bring_over()
        (target.server_dir / ".sqlite").chmod(0o664)
        before = tree(target.home)
        result = target.deploy(check=False)
        assert result.returncode != 0
        assert "are group- or world-writable: nothing was changed. Fix: chmod -R go-w" in result.output
        assert tree(target.home) == before

        # An entry of another user: refused, with the chown.
        (target.server_dir / ".sqlite").chmod(0o600)
        os.chown(target.server_dir / ".sqlite", 1, 1)
        result = target.deploy(check=False)
        assert result.returncode != 0
        assert "belong to another user than the SSH user" in result.output and "chown -R" in result.output
        os.chown(target.server_dir / ".sqlite", os.getuid(), os.getgid())

        # A release file damaged on the way: devpi-fsck (the deployed venv's) fails the run
        # before devpi starts; the server dir is as it was.
        copied = target.server_dir / stored.relative_to(source.server_dir)
        copied.write_bytes(copied.read_bytes()[:-1] + b"X")
        before = tree(target.server_dir)
        result = target.deploy(check=False)
        assert result.returncode != 0
        assert "devpi-fsck found problems in" in result.output, result.describe()
        assert tree(target.server_dir) == before
        assert target.pid() is None

        # A good copy: checked, adopted, served; users, indexes and files as they were.
        bring_over()
        result = target.deploy()
        assert "Check the server dir brought over (devpi-fsck)" in result.output
        target.wait_healthy()
        assert target.state() == users_indexes
        assert target.login("mover", "mover-pw") == 200
        links = devpi.simple_links(target.devpi_url, "mover/dev", "brought-over")
        assert devpi.sha256(devpi.download(links[wheel.filename])) == wheel.sha256
        # devpi did not answer while the run planned: search was decided after the health
        # gate, in the same run (docs/operating.md, "Search"); the next run changes nothing.
        assert backend_in((target.devpi_home / "devpi-server.yml").read_text()) == WHOOSH, result.describe()
        again = target.deploy()
        assert again.grand_total()[0] == 0, again.describe()
