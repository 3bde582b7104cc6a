"""devpi replication on loopback: lag, memory, and reads spread by the front's Caddy.

    uv run python -m bench.replication             # ~6 min on 2 cores
    uv run python -m bench.replication --runs 3 --install-reps 2

A real devpi-server primary (``--role primary``) and replica (``devpi-init --role replica
--primary-url``, the same secret file), both from the dev venv's devpi-server, on
127.0.0.1; the front is the dev venv's Caddy running the block ``render_caddy_site``
renders for the primary, with and without ``devpi_caddy_read_upstreams`` naming the
replica. Not a test: nothing here passes or fails.

Sections:
  lag      one upload (uv publish) to a private index on the primary, until the replica
           lists it on its simple page and then serves the file (200): median of --runs;
           how often the replica's first GET of the new file answered 500
  memory   peak (VmHWM) and settled (VmRSS after --settle s idle) RSS of primary and
           replica, with the deploy's argon2 costs and with devpi's defaults; the time
           from the replica's start to its first sync
  install  8 concurrent warm ``uv pip install`` (bench/wheels.txt's set, uploaded to the
           private index) through the front: primary alone against primary + replica,
           in turns, with Caddy serving /+f/ from the primary's disk (the deploy's
           default) and with devpi answering /+f/

Writes every sample to ``bench/results/replication-<UTC time>.json`` and the tables to
``bench/results/replication-latest.md``. Everything it starts listens on 127.0.0.1 and is
stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

from bench.run import (CACHE, CLIENTS, DEVPI_ARGON2, RESULTS, TOP_LEVEL, batch, ensure_wheels, fmt, log,
                       machine, median, table)
from pyinfra_devpi.config import DEFAULT_SERVER_OPTIONS, build_config
from pyinfra_devpi.render import render_caddy_site
from tests.e2e import devpi_client as dc
from tests.e2e import harness as h
from tests.e2e.harness.processes import proc_memory, spawn, stop_process

BIN = h.VENV_BIN
ROOT_PASSWORD = "bench-root"
USER, PASSWORD, INDEX = "bench", "bench-pw", "bench/dev"
DEPLOY_ARGON2 = {name: value for name, value in DEFAULT_SERVER_OPTIONS.items() if name.startswith("argon2")}
PROBE_INTERVAL = 0.002  # seconds between the replica's simple-page probes while timing the lag


@dataclasses.dataclass
class Node:
    name: str
    server_dir: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serial(self) -> int:
        status, headers, _ = h.http("GET", self.url + "/+api", timeout=10)
        serial = {name.lower(): value for name, value in headers.items()}.get("x-devpi-serial", "-1")
        return int(serial) if status == 200 else -1


def init_node(node: Node, primary: Node | None) -> None:
    argv = [str(BIN / "devpi-init"), "--serverdir", str(node.server_dir), "--no-root-pypi"]
    if primary is None:
        argv += ["--root-passwd", ROOT_PASSWORD]
    else:
        argv += ["--role", "replica", "--primary-url", primary.url]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300)


def start_node(node: Node, secret: Path, argon2: dict, primary: Node | None, logs: Path) -> None:
    argv = [str(BIN / "devpi-server"), "--serverdir", str(node.server_dir), "--host", "127.0.0.1",
            "--port", str(node.port), "--secretfile", str(secret), "--request-timeout", "30"]
    argv += [f"--{name}={value}" for name, value in argon2.items()]
    if primary is None:
        argv += ["--role", "primary"]
    else:
        argv += ["--role", "replica", "--primary-url", primary.url]
    node.proc = spawn(argv, logs / f"{node.name}.log")
    h.wait_until(lambda: h.http_ok(node.url + "/+api"), timeout=180, what=f"{node.name} answers /+api")


def stop_node(node: Node) -> None:
    stop_process(node.proc, timeout=30)
    node.proc = None


class Pair:
    """A primary and its replica, made fresh in ``root``."""

    def __init__(self, root: Path, argon2: dict):
        self.root, self.argon2 = root, argon2
        self.home = root / "home"
        self.secret = root / "secret"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.primary = Node("primary", self.home / "server-dir", h.free_port())
        self.replica = Node("replica", root / "replica-dir", h.free_port())
        self.replica_started = self.first_sync = None

    def start(self) -> None:
        # devpi-gen-secret writes it 0600; both nodes read the same file.
        subprocess.run([str(BIN / "devpi-gen-secret"), "--secretfile", str(self.secret)], check=True,
                       capture_output=True, timeout=60)
        init_node(self.primary, None)
        start_node(self.primary, self.secret, self.argon2, None, self.logs)
        dc.ensure_user(self.primary.url, ("root", ROOT_PASSWORD), USER, PASSWORD)
        dc.ensure_index(self.primary.url, (USER, PASSWORD), INDEX, bases=[], volatile=True)
        init_node(self.replica, self.primary)
        self.replica_started = time.monotonic()
        start_node(self.replica, self.secret, self.argon2, self.primary, self.logs)
        self.wait_in_sync(timeout=300)
        self.first_sync = time.monotonic() - self.replica_started

    def wait_in_sync(self, timeout: float = 120) -> None:
        target = self.primary.serial()
        h.wait_until(lambda: self.replica.serial() >= target, timeout=timeout, interval=0.01,
                     what=f"the replica reaches serial {target}")

    def memory(self) -> dict:
        return {node.name: proc_memory(node.proc.pid) for node in (self.primary, self.replica)}

    def stop(self) -> None:
        for node in (self.replica, self.primary):
            stop_node(node)


def upload(pair: Pair, wheel: Path) -> None:
    proc = dc.uv_publish(h.find_tools().uv, wheel, f"{pair.primary.url}/{INDEX}/", USER, PASSWORD)
    if proc.returncode != 0:
        raise RuntimeError(f"upload of {wheel.name} failed: {proc.stderr.strip()[-300:]}")


def lag_once(pair: Pair, work: Path, n: int) -> dict:
    """One new release uploaded to the primary: when the replica lists it, and when it
    serves the file."""
    wheel = h.build_wheel(work, "lagprobe", f"1.0.{n}").path
    upload(pair, wheel)
    uploaded = time.monotonic()
    page = f"{pair.replica.url}/{INDEX}/+simple/lagprobe/"
    link = None
    while link is None:
        _, hrefs = dc.simple_page(pair.replica.url, INDEX, "lagprobe")
        link = next((urljoin(page, href).split("#")[0] for href in hrefs if wheel.name in href), None)
        if link is None:
            time.sleep(PROBE_INTERVAL)
    listed = time.monotonic() - uploaded
    first_status = None
    while True:
        status, _, _ = h.http("GET", link, timeout=30)
        first_status = first_status or status
        if status == 200:
            break
        time.sleep(PROBE_INTERVAL)
    return {"listed_s": listed, "served_s": time.monotonic() - uploaded, "first_file_status": first_status}


def bench_lag(root: Path, runs: int) -> dict:
    pair = Pair(root / "lag", DEPLOY_ARGON2)
    try:
        pair.start()
        samples = [lag_once(pair, root / "lag" / "wheels", n) for n in range(runs)]
    finally:
        pair.stop()
    return {"samples": samples}


def bench_memory(root: Path, settle: float) -> dict:
    results = {}
    for case, argon2 in (("deploy", DEPLOY_ARGON2), ("devpi_defaults", DEVPI_ARGON2)):
        pair = Pair(root / f"memory-{case}", argon2)
        try:
            t = time.monotonic()
            pair.start()
            started = pair.memory()
            lag = lag_once(pair, root / f"memory-{case}" / "wheels", 0)
            after_sync = pair.memory()
            time.sleep(settle)
            settled = pair.memory()
        finally:
            pair.stop()
        results[case] = {"argon2": argon2, "start_to_sync_s": time.monotonic() - t, "first_sync_s": pair.first_sync,
                         "lag": lag, "started": started, "after_sync": after_sync, "settled": settled}
        log(f"memory {case}: {json.dumps(settled)}")
    return results


class Front:
    """The dev venv's Caddy running the primary's rendered block (a front)."""

    def __init__(self, root: Path, pair: Pair, replicas: bool, serve_files: bool):
        self.port = h.free_port()
        config = build_config({
            "devpi_root_password": "env:UNUSED",
            "devpi_outside_url": f"http://127.0.0.1:{self.port}",
            "devpi_home": str(pair.home),
            "devpi_port": pair.primary.port,
            "devpi_server_options": {"role": "primary"},
            "devpi_caddy_serve_files": serve_files,
            "devpi_caddy_read_upstreams": [f"127.0.0.1:{pair.replica.port}"] if replicas else [],
        }, str(root))
        self.dir = Path(tempfile.mkdtemp(prefix="front-", dir=root))
        caddyfile = self.dir / "Caddyfile"
        caddyfile.write_text("{\n\tadmin off\n\tpersist_config off\n}\n" + render_caddy_site(config))
        env = {**os.environ, "HOME": str(self.dir), "XDG_DATA_HOME": str(self.dir / "data"),
               "XDG_CONFIG_HOME": str(self.dir / "config")}
        log_file = (self.dir / "caddy.log").open("wb")
        self.proc = subprocess.Popen([str(h.CADDY_BIN), "run", "--adapter", "caddyfile", "--config", str(caddyfile)],
                                     stdout=log_file, stderr=subprocess.STDOUT, env=env)
        log_file.close()
        h.wait_for_port(self.port, timeout=30)

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{INDEX}/+simple/"

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def bench_install(root: Path, wheels: list[Path], reps: int) -> dict:
    tools = h.find_tools()
    pair = Pair(root / "install", DEPLOY_ARGON2)
    env = _BatchEnv(tools=tools, root=root / "install")
    results: dict[str, list[dict]] = {}
    try:
        pair.start()
        for wheel in wheels:
            upload(pair, wheel)
        pair.wait_in_sync()
        replica_files = pair.replica.server_dir / "+files"
        h.wait_until(lambda: sum(1 for _ in replica_files.rglob("*.whl")) >= len(wheels), timeout=300,
                     what="the replica holds every uploaded file")
        for serve_files in (True, False):
            for turn in range(reps + 1):  # turn 0 warms both (not counted)
                order = ("primary", "primary+replica") if turn % 2 == 0 else ("primary+replica", "primary")
                for variant in order:
                    front = Front(root, pair, replicas=variant == "primary+replica", serve_files=serve_files)
                    before = replica_requests(pair)
                    try:
                        sample = batch(env, "uv", lambda i: front.index_url, CLIENTS)
                    finally:
                        front.stop()
                    sample["replica_requests"] = replica_requests(pair) - before
                    sample["memory"] = pair.memory()
                    if turn:
                        key = f"{variant} {'caddy /+f/' if serve_files else 'devpi /+f/'}"
                        results.setdefault(key, []).append(sample)
                        log(f"install {key}: {fmt(sample['wall_s'])} failed {sample['failed']}")
    finally:
        pair.stop()
    return results


# devpi logs a line per request; the front's health checks (/+api) are not reads.
REQUEST_LINE = re.compile(rb"\[req\d+\] (?:GET|HEAD) /(?!\+api)")


def replica_requests(pair: Pair) -> int:
    """Reads the replica has answered so far."""
    return len(REQUEST_LINE.findall((pair.logs / "replica.log").read_bytes()))


@dataclasses.dataclass
class _BatchEnv:
    """What bench.run.batch reads of its Env."""
    tools: h.ToolPaths
    root: Path


def mib(kb: int | None) -> str:
    return "–" if kb is None else f"{kb / 1024:.0f} MiB"


def report(results: dict) -> str:
    lines = [f"Replication on loopback, {results['machine']['cores']} cores, "
             f"{results['machine']['devpi-server']}, {results['started']}", ""]
    lag = results.get("lag")
    if lag:
        samples = lag["samples"]
        listed = [s["listed_s"] * 1000 for s in samples]
        served = [s["served_s"] * 1000 for s in samples]
        first_500 = sum(s["first_file_status"] == 500 for s in samples)
        lines += ["#### Replication lag for one upload (primary → replica)", "", table(
            ["", f"median of {len(samples)}", "min", "max"],
            [["listed on the replica's simple page", f"{median(listed):.0f} ms", f"{min(listed):.0f} ms",
              f"{max(listed):.0f} ms"],
             ["file served by the replica (200)", f"{median(served):.0f} ms", f"{min(served):.0f} ms",
              f"{max(served):.0f} ms"]]),
            "", f"The replica's first GET of the new file answered 500 in {first_500} of {len(samples)} runs.", ""]
    memory = results.get("memory")
    if memory:
        rows = []
        for case, m in memory.items():
            costs = m["argon2"]
            label = (f"{'deploy' if case == 'deploy' else 'devpi defaults'} "
                     f"({costs['argon2-memory-cost'] // 1024} MiB, t={costs['argon2-time-cost']}, "
                     f"p={costs['argon2-parallelism']})")
            for node in ("primary", "replica"):
                rows.append([label, node, mib(m["settled"][node]["peak_rss_kb"]), mib(m["settled"][node]["rss_kb"])])
            rows.append([label, "replica start → first sync", fmt(m["first_sync_s"]), ""])
        lines += ["#### Memory of primary and replica (RSS)", "", table(
            ["argon2 costs", "node", "peak (VmHWM)", f"settled ({results['settle_s']:.0f} s idle)"], rows), ""]
    install = results.get("install")
    if install:
        rows = [[key, fmt(median([s["wall_s"] for s in samples])),
                 ", ".join(fmt(s["wall_s"]) for s in samples), str(sum(s["failed"] for s in samples)),
                 str(round(median([s["replica_requests"] for s in samples])))]
                for key, samples in install.items()]
        lines += [f"#### {CLIENTS} concurrent warm installs through the front ({len(TOP_LEVEL)} top-level "
                  "projects, fresh venvs, no client cache)", "",
                  table(["backends, who answers /+f/", "median wall", "runs", "failed", "reads the replica answered"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="lag runs (default 7)")
    parser.add_argument("--install-reps", type=int, default=3, help="install batches per variant (default 3)")
    parser.add_argument("--settle", type=float, default=30, help="idle seconds before the settled RSS (default 30)")
    parser.add_argument("--only", nargs="+", choices=("lag", "memory", "install"), default=("lag", "memory", "install"))
    args = parser.parse_args(argv)
    tools = h.find_tools()
    wheels = ensure_wheels(tools) if "install" in args.only else []
    (CACHE / "runs").mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="replication-", dir=CACHE / "runs"))
    results: dict = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "machine": machine(tools), "settle_s": args.settle, "load_before": os.getloadavg()}
    try:
        if "lag" in args.only:
            results["lag"] = bench_lag(root, args.runs)
        if "memory" in args.only:
            results["memory"] = bench_memory(root, args.settle)
        if "install" in args.only:
            results["install"] = bench_install(root, wheels, args.install_reps)
    finally:
        results["load_after"] = os.getloadavg()
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"replication-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    text = report(results)
    (RESULTS / "replication-latest.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
