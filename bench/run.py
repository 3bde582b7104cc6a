"""Benchmarks of the deployed stack (issue 5). Not a test: nothing here passes or fails.

    uv run python -m bench                 # everything (~25 min on 2 cores)
    uv run python -m bench --quick         # fewer repetitions, 30 s idle (~8 min)
    uv run python -m bench --only rerun restart

Builds the stack from the end-to-end harness (tests/e2e/harness/ + stack.py): a private
sshd on 127.0.0.1, the launchctl double running devpi and Caddy, the real pyinfra CLI
running ``deploys/devpi.py``, and the harness's static upstream index serving a fixed set
of ~25 real wheels (bench/wheels.txt, downloaded once into bench/.cache/wheels). Prints a
table per section, writes every sample to ``bench/results/<UTC time>.json`` and the
tables to ``bench/results/latest.md``. Everything it starts listens on 127.0.0.1 only and
is stopped by PID at the end.

Sections:
  rerun    no-change rerun: wall time, remote commands (facts / operations)
  first    first converge on an empty home (warm uv cache): wall time to healthy, by step
  restart  kickstart -k -> /+api 200, devpi's peak RSS; deployed vs devpi's argon2 costs
  install  uv / pip installs through Caddy -> devpi vs straight from the static upstream,
           with and without Caddy serving /+f/ from disk; concurrent cold clients with
           and without devpi_prewarm
  memory   devpi RSS after an install workload and after idling, idle CPU; deployed
           defaults vs devpi's argon2 defaults
  backup   the backup job (launchctl kickstart) and the restore deploy, for a few small
           uploads and for ~BACKUP_LARGE_MB of generated wheels: wall time, and devpi's
           availability meanwhile (/+api polled every 20 ms: failures, slowest answer,
           longest gap)
  dbupgrade  an upgrade across database versions (devpi_allow_export_import) of a server
           dir with a user, an index and 10 uploads: wall time, the upgrade step, and
           how long /+api did not answer (polled every 50 ms)
  takeover the run that takes over the Ansible role's install: devpi's downtime (the
           longest run of failed /+api polls, every 100 ms)
  upgrade  devpi's downtime during a version bump, and during a rolled-back bad upgrade
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e import devpi_client as dc  # noqa: E402
from tests.e2e import harness as h  # noqa: E402
from tests.e2e import stack as st  # noqa: E402

BENCH = REPO / "bench"
CACHE = BENCH / ".cache"
WHEELS_DIR = CACHE / "wheels"
RESULTS = BENCH / "results"
WHEELS_TXT = BENCH / "wheels.txt"
TOP_LEVEL = ["requests", "rich", "httpx", "flask", "python-dateutil", "attrs", "packaging"]
CLIENTS = 8
DEVPI_ARGON2 = {"argon2-memory-cost": 524288, "argon2-time-cost": 16, "argon2-parallelism": 8}
# devpi-web's Whoosh is the deploy's default now (devpi_search); the rest of devpi's defaults:
DEVPI_DEFAULTS = dict(DEVPI_ARGON2)
SECTIONS = ("rerun", "first", "restart", "install", "memory", "namelist", "backup", "dbupgrade", "takeover", "upgrade")
POLL_INTERVAL = 0.1  # seconds between /+api polls while measuring downtime


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- the wheels


def pinned() -> list[str]:
    return [line.split(";")[0].strip() for line in WHEELS_TXT.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def ensure_wheels(tools: h.ToolPaths) -> list[Path]:
    """Download bench/wheels.txt's binary wheels for this machine once (pip download)."""
    wanted = pinned()
    have = sorted(WHEELS_DIR.glob("*.whl")) if WHEELS_DIR.is_dir() else []
    names = {h.normalize_name(w.name.split("-")[0]) for w in have}
    if {h.normalize_name(r.split("==")[0]) for r in wanted} <= names:
        return have
    log(f"downloading {len(wanted)} wheels into {WHEELS_DIR} (once)")
    WHEELS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        python = dc.make_venv(tools.uv, tools.python3, Path(tmp) / "venv", seed=True)
        subprocess.run(
            [str(python), "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
             "--dest", str(WHEELS_DIR), *wanted],
            check=True, env={**{k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    return sorted(WHEELS_DIR.glob("*.whl"))


# --------------------------------------------------------------------------- the environment


@dataclasses.dataclass
class Env:
    root: Path
    tools: h.ToolPaths
    session_env: dict
    sshd: h.SshServer
    launchd: h.LaunchdDouble
    upstream: h.Upstream
    static: h.CaddyJob | None = None
    stacks: list = dataclasses.field(default_factory=list)
    counter: int = 0

    def stack(self, name: str, deploy: bool = True, **host_data) -> st.DeployedStack:
        self.counter += 1
        stack = st.start_stack(self.sshd, self.launchd, self.upstream, self.root / f"stack-{self.counter}-{name}",
                               f"bench{self.counter}", deploy=deploy, **host_data)
        self.stacks.append(stack)
        return stack

    @property
    def floor_url(self) -> str:
        """The fastest local index we have: the upstream's files served by Caddy's file_server."""
        return f"{self.static.url}/simple/"

    def close(self) -> None:
        for stack in self.stacks:
            stack.stop()
        if self.static is not None:
            self.launchd.bootout(self.static.label)
        self.sshd.stop()
        self.upstream.stop()
        result = h.launchd_shutdown(self.session_env)
        if result is not None and result.returncode != 0:
            log(f"launchctl _double-shutdown exited {result.returncode}: {result.stderr}")


def start_env(root: Path, wheels: list[Path], tools: h.ToolPaths) -> Env:
    state = root / "launchd"
    state.mkdir(parents=True)
    home = root / "target-home"
    home.mkdir()
    session_env = h.build_session_env(tools, launchd_state=state, home=home)
    sshd = h.start_sshd(root / "sshd", tools, session_env)
    try:
        upstream = h.start_upstream(root / "upstream", python=tools.python3)
    except BaseException:
        sshd.stop()
        raise
    upstream.add_wheels(wheels)
    env = Env(root, tools, session_env, sshd, h.LaunchdDouble(state_dir=state, sshd=sshd), upstream)
    try:
        port = h.free_port()
        site = root / "static" / "site.caddy"
        site.parent.mkdir()
        site.write_text(f"http://{h.LOOPBACK}:{port} {{\n\troot * {upstream.root}\n\tfile_server\n}}\n")
        env.static = h.start_caddy_job(env.launchd, caddyfile=root / "static" / "Caddyfile", port=port,
                                       site_file=site, work_dir=root / "static", label="bench.static")
    except BaseException:
        env.close()
        raise
    return env


# --------------------------------------------------------------------------- pyinfra, timed


def run_deploy(stack: st.DeployedStack, *args: str, **overrides) -> h.PyinfraResult:
    """The deploy through the real pyinfra CLI (``stack.deploy``): every output line is
    timestamped as it arrives (``result.lines``), so a run can be split into its phases."""
    run = stack.deploy(*args, check=False, **overrides)
    if run.returncode != 0:
        raise h.HarnessError(f"pyinfra failed ({run.returncode}):\n" + "\n".join(run.output.splitlines()[-60:]))
    return run


def phases(run: h.PyinfraResult) -> list[tuple[str, float]]:
    """Durations between pyinfra's ``--> ...`` progress lines (plus process start/exit)."""
    marks = [(0.0, "process start (python, imports)")]
    for t, line in run.lines:
        if line.startswith("--> "):
            marks.append((t, line[4:].strip().rstrip(".:")))
    marks.append((run.duration, "end"))
    return [(label, marks[i + 1][0] - t) for i, (t, label) in enumerate(marks[:-1])]


def split_commands(output: str) -> dict[str, int]:
    """Remote commands of a --debug run, split into fact gathering and operations."""
    facts = ops = 0
    pending_fact = False
    for line in output.splitlines():
        if "[pyinfra.api.facts] Getting fact:" in line:
            pending_fact = True
        elif h.DEBUG_COMMAND_RE.match(line):
            if pending_fact:
                facts += 1
                pending_fact = False
            else:
                ops += 1
    return {"facts": facts, "operations": ops, "total": facts + ops}


def remote_seconds(run: h.PyinfraResult) -> float:
    """Time between each remote command's start and its exit status (``--debug``)."""
    total, started = 0.0, None
    for t, line in run.lines:
        if h.DEBUG_COMMAND_RE.match(line):
            started = t
        elif started is not None and "Command exit status:" in line:
            total, started = total + t - started, None
    return total


# --------------------------------------------------------------------------- sections


def bench_rerun(env: Env, reps: int) -> dict:
    stack = env.stack("rerun")
    run_deploy(stack)  # warm-up
    samples, commands, remote_times = [], [], []
    for _ in range(reps):
        run = run_deploy(stack, "--debug")
        samples.append(run.duration)
        commands.append(split_commands(run.output))
        checked = h.count_remote_commands(run.output)
        assert checked == commands[-1]["total"], (checked, commands[-1])
        remote_times.append(remote_seconds(run))
    pyinfra_floor = []
    for _ in range(reps):
        t = time.monotonic()
        subprocess.run([str(h.PYINFRA_BIN), "--version"], capture_output=True, check=True)
        pyinfra_floor.append(time.monotonic() - t)
    # The LaunchdJob fact calls launchctl twice (print, print-disabled). Here that is the
    # test double, a Python script; on a Mac it is a native binary.
    double = []
    for _ in range(reps):
        t = time.monotonic()
        env.launchd.run("print", env.launchd.target(stack.label), local=True)
        double.append(time.monotonic() - t)
    prewarm_names = [h.normalize_name(r.split("==")[0]) for r in pinned()]
    index = stack.api.new_mirror(env.upstream.url, prefix="rerun")
    run_deploy(stack, devpi_prewarm=prewarm_names, devpi_prewarm_index=index)
    with_list = []
    for _ in range(reps):
        run = run_deploy(stack, "--debug", devpi_prewarm=prewarm_names, devpi_prewarm_index=index)
        with_list.append((run.duration, split_commands(run.output)))
    stack.stop()
    return {
        "wall_s": samples,
        "commands": commands,
        "pyinfra_version_s": pyinfra_floor,
        "launchctl_double_call_s": double,
        "remote_s": remote_times,
        "with_prewarm_list": {"wall_s": [d for d, _ in with_list], "commands": [c for _, c in with_list]},
    }


def bench_first(env: Env, reps: int) -> dict:
    # The uv cache is warm after the first build (the rerun section's stack, or this warm-up).
    warm = env.stack("first-warmup")
    warm.stop()
    runs = []
    for i in range(reps):
        stack = env.stack(f"first{i}", deploy=False)
        run = run_deploy(stack)
        stack.wait_healthy()
        runs.append({"wall_s": run.duration, "phases": phases(run)})
        stack.stop()
    return {"runs": runs}


def to_healthy(run: dict) -> float:
    """Seconds from the run's start to the end of its health wait (devpi answers)."""
    at = 0.0
    for label, seconds in run["phases"]:
        at += seconds
        if label.endswith("Wait for devpi to answer"):
            return at
    return run["wall_s"]


def restart_once(stack: st.DeployedStack, busy: bool) -> dict:
    old = stack.wait_healthy()
    burner = None
    if busy:  # one core kept busy, as on a build host
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        t0 = time.monotonic()
        stack.launchd.run("kickstart", "-k", stack.launchd.target(stack.label), local=True)
        h.wait_gone(old, 60, interval=0.005)
        t_dead = time.monotonic()
        h.wait_until(lambda: stack.api_ok(timeout=2), 120 - (t_dead - t0), 0.01, "devpi healthy after kickstart -k")
        t_ok = time.monotonic()
    finally:
        if burner is not None:
            h.stop_process(burner)
    pid = stack.wait_healthy()
    memory = h.proc_memory(pid)
    # One login (what `devpi login`, an upload with a password, or the deploy's
    # users/indexes step does): devpi verifies the password's argon2 hash, whose cost
    # is the hash's own (argon2-cffi's defaults, as devpi makes them), not the YAML's.
    dc.DevpiApi(stack.devpi_url, stack.password).auth()
    login = h.proc_memory(pid)
    return {"to_healthy_s": t_ok - t0, "stop_s": t_dead - t0, "peak_rss_kb": memory["peak_rss_kb"],
            "rss_kb": memory["rss_kb"], "peak_after_login_kb": login["peak_rss_kb"]}


# What a started devpi-server does before its main() runs: the interpreter starts and
# imports devpi-server, its plugins (devpi-web) and what main() imports next.
DEVPI_IMPORTS = (
    "import devpi_server.main\n"
    "from importlib.metadata import entry_points\n"
    "for ep in entry_points(group='devpi_server'): ep.load()\n"
    "import pyramid.config, pyramid.router, strictyaml, devpi_server.filestore_fs, devpi_server.middleware\n"
)


def imports_once(stack: st.DeployedStack) -> float:
    """Wall time of a fresh interpreter of the live venv loading devpi's modules (the
    bytecode is warm, as the deploy leaves it): the part of a restart that happens
    before devpi's own start-up (config, database, plugins, bind)."""
    python = stack.devpi_home / "venv/bin/python"
    t0 = time.monotonic()
    # os._exit: not the interpreter's teardown of ~950 modules (0.1-0.2 s), which a
    # start does not pay
    subprocess.run([str(python), "-W", "ignore", "-c", DEVPI_IMPORTS + "import os; os._exit(0)\n"], check=True,
                   capture_output=True)
    return time.monotonic() - t0


PRELOADED_START = (
    DEVPI_IMPORTS
    + "import sys\n"
    "sys.stdin.readline()\n"  # loaded: now the port is free
    "sys.argv = ['devpi-server', *sys.argv[1:]]\n"
    "sys.exit(devpi_server.main.main())\n"
)


def preloaded_start_once(stack: st.DeployedStack) -> float:
    """For the design question of an overlapping restart (not what the deploy does): a
    devpi-server whose interpreter loaded devpi's modules beforehand (as one started
    while the old devpi still held the port would have), from "the port is free" to
    ``/+api`` 200. devpi's job is booted out meanwhile: one devpi per server dir."""
    python = stack.devpi_home / "venv/bin/python"
    port = h.free_port()
    proc = subprocess.Popen(
        [str(python), "-W", "ignore", "-c", PRELOADED_START, "--configfile", str(stack.devpi_home / "devpi-server.yml"),
         "--port", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        time.sleep(5)  # the imports (about 1 s) are done
        t0 = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        h.wait_until(lambda: h.http_ok(f"http://{h.LOOPBACK}:{port}/+api", timeout=2), 60, 0.01,
                     "the preloaded devpi to answer")
        return time.monotonic() - t0
    finally:
        h.stop_process(proc)


def bench_restart(env: Env, reps: int) -> dict:
    stack = env.stack("restart")
    out = {}
    for label, options in (("deployed", {}), ("devpi_argon2_defaults", DEVPI_ARGON2)):
        stack.deploy(devpi_server_options=options)
        for busy in (False, True):
            key = f"{label}{'_busy' if busy else ''}"
            log(f"restart: {key}")
            out[key] = [restart_once(stack, busy) for _ in range(reps)]
    stack.deploy(devpi_server_options={})  # the deployed argon2 costs again
    out["imports_s"] = [imports_once(stack) for _ in range(reps)]
    stack.stop_devpi()
    out["preloaded_start_s"] = [preloaded_start_once(stack) for _ in range(reps)]
    stack.stop()
    return out


# -- installs


@dataclasses.dataclass
class Install:
    client: str
    seconds: float
    ok: bool
    error: str = ""


def one_install(env: Env, client: str, venv_python: Path, index_url: str) -> Install:
    t = time.monotonic()
    proc = dc.install(client, env.tools.uv, venv_python, index_url, TOP_LEVEL)
    seconds = time.monotonic() - t
    error = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return Install(client, seconds, proc.returncode == 0, error)


def venvs(env: Env, client: str, n: int, where: Path) -> list[Path]:
    return [dc.make_venv(env.tools.uv, env.tools.python3, where / f"{client}-{i}", seed=client == "pip")
            for i in range(n)]


def batch(env: Env, client: str, url_for: Callable[[int], str], n: int) -> dict:
    """n installs at once (n=1: one); wall time = the slowest one (all start together)."""
    where = Path(tempfile.mkdtemp(prefix=f"bench-{client}-", dir=env.root))
    pythons = venvs(env, client, n, where)
    # Write back what earlier steps left dirty (venvs just made, the last batch's files,
    # devpi's database) now, so that it is not charged to whichever batch runs next.
    os.sync()
    t = time.monotonic()
    results = h.simultaneous(n, lambda i: one_install(env, client, pythons[i], url_for(i)))
    wall = time.monotonic() - t
    shutil.rmtree(where, ignore_errors=True)
    results = [r if isinstance(r, Install) else Install(client, 0, False, repr(r)) for r in results]
    return {"wall_s": wall, "failed": sum(not r.ok for r in results), "errors": [r.error for r in results if not r.ok]}


def fresh_prewarmed(env: Env, stack: st.DeployedStack) -> str:
    """A fresh mirror index, warmed by the deploy (devpi_prewarm = every wheel's project)."""
    index = stack.api.new_mirror(env.upstream.url, prefix="bench")
    names = [h.normalize_name(r.split("==")[0]) for r in pinned()]
    stack.deploy(devpi_prewarm=names, devpi_prewarm_index=index)
    return index


SCENARIOS = ("cold", "warm", "warm_x8", "cold_x8", "cold_x8_prewarmed")
# Single-client installs are measured in turns: one install from each source in a row
# (the floor among them), the order rotated from turn to turn, and a ratio is only ever
# taken within one turn. This machine's speed drifts by 2-4x within a minute (shared
# host; the same floor install took 0.25 s and 1.3 s), far more than the difference
# being measured, so a ratio of two installs minutes apart measures the drift.
TURNS = {"uv": 5, "pip": 3}


def in_turns(turns: int, sources: dict[str, Callable[[], dict]]) -> dict[str, list[dict]]:
    """Run each source's measurement once per turn, rotating the order each turn."""
    names = list(sources)
    out: dict[str, list[dict]] = {name: [] for name in names}
    for turn in range(turns):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(sources[name]())
    return out


def install_round(env: Env, stacks: dict[str, st.DeployedStack], client: str, prewarm: bool = True,
                  turns: int | None = None) -> dict:
    """One round of every scenario. Single clients in turns (see TURNS); the 8-client
    batches interleaved (floor, then each stack). Batches against a stack also record
    the CPU time devpi spent on them and its RSS / peak RSS (VmHWM) after them."""
    turns = turns or TURNS[client]
    pids = {mode: stack.pid() for mode, stack in stacks.items()}

    def on(mode: str, index: str, n: int, scenario: str) -> dict:
        stack = stacks[mode]
        cpu = h.cpu_seconds(pids[mode])
        result = batch(env, client, lambda i: f"{stack.caddy_url}/{index}/+simple/", n)
        result["devpi_cpu_s"] = h.cpu_seconds(pids[mode]) - cpu
        result["devpi_memory_kb"] = h.proc_memory(pids[mode])
        result["scenario"], result["finished"] = scenario, time.time()
        return result

    def floor(url: str, n: int = 1) -> Callable[[], dict]:
        return lambda: batch(env, client, lambda i: url, n)

    warm_index: dict[str, str] = {}

    def cold(mode: str) -> Callable[[], dict]:
        def run() -> dict:
            index = stacks[mode].api.new_mirror(env.upstream.url, prefix="bench")
            warm_index.setdefault(mode, index)  # the first cold install warms it
            return on(mode, index, 1, "cold")
        return run

    cold_turns = in_turns(turns, {"floor": floor(env.floor_url), **{mode: cold(mode) for mode in stacks}})
    warm_turns = in_turns(turns, {
        "floor": floor(env.floor_url), "http_server": floor(env.upstream.url),
        **{mode: (lambda mode=mode: on(mode, warm_index[mode], 1, "warm")) for mode in stacks},
    })
    out: dict[str, dict] = {
        "floor": {"cold_turns": cold_turns.pop("floor"), "warm_turns": warm_turns.pop("floor"),
                  "http_server_turns": warm_turns.pop("http_server")},
        **{mode: {"cold": cold_turns[mode], "warm": warm_turns[mode]} for mode in stacks},
    }
    out["floor"]["x8"] = batch(env, client, lambda i: env.floor_url, CLIENTS)
    for mode in stacks:
        out[mode]["warm_x8"] = on(mode, warm_index[mode], CLIENTS, "warm_x8")
    for mode, stack in stacks.items():
        out[mode]["cold_x8"] = on(mode, stack.api.new_mirror(env.upstream.url, prefix="bench"), CLIENTS, "cold_x8")
    if prewarm:
        for mode, stack in stacks.items():
            index = fresh_prewarmed(env, stack)
            out[mode]["cold_x8_prewarmed"] = on(mode, index, CLIENTS, "cold_x8_prewarmed")
    for mode, stack in stacks.items():
        if stack.pid() != pids[mode]:
            raise h.HarnessError(f"devpi of the {mode} stack restarted during the round")
    return out


def bench_install(env: Env, reps: int) -> dict:
    # Two deployed stacks side by side: Caddy serving /+f/ from disk (the default) and a
    # plain reverse proxy (devpi_caddy_serve_files=False).
    stacks = {"offload": env.stack("offload"), "plain_proxy": env.stack("plain", devpi_caddy_serve_files=False)}
    for stack in stacks.values():
        stack.wait_caddy()
    out: dict[str, Any] = {"wheels": len(env.upstream.wheels), "rounds": {"uv": [], "pip": []}}
    for rep in range(reps):
        for client in ("uv", "pip"):
            log(f"install: round {rep + 1}/{reps}, {client}")
            out["rounds"][client].append(install_round(env, stacks, client))
    for mode, stack in stacks.items():
        out[f"devpi_memory_after_kb_{mode}"] = h.proc_memory(stack.pid())
        stack.stop()
    return out


def workload(env: Env, stack: st.DeployedStack) -> list[dict]:
    """One round of the install scenarios (uv then pip) against one stack: devpi's
    memory after each batch, in the order they ran."""
    batches = []
    for client in ("uv", "pip"):
        result = install_round(env, {"stack": stack}, client, prewarm=False, turns=1)["stack"]
        for value in result.values():
            for one in (value if isinstance(value, list) else [value]):
                batches.append({"client": client, "scenario": one["scenario"], "finished": one["finished"],
                                **one["devpi_memory_kb"]})
    return sorted(batches, key=lambda b: b["finished"])


def peak_setter(started: dict, batches: list[dict]) -> dict | None:
    """The batch during which devpi's peak RSS (VmHWM, which never decreases) reached
    its final value, with the peak before it; None when start-up set the peak (or the
    OS keeps no peak)."""
    if not batches or batches[-1]["peak_rss_kb"] is None:
        return None
    final, before = batches[-1]["peak_rss_kb"], started["peak_rss_kb"]
    for batch_ in batches:
        if batch_["peak_rss_kb"] == final and final > before:
            return {**batch_, "peak_before_kb": before}
        before = batch_["peak_rss_kb"]
    return None


def bench_memory(env: Env, idle: float) -> dict:
    out = {}
    for label, options in (("deployed", {}), ("devpi_defaults", DEVPI_DEFAULTS)):
        stack = env.stack(f"memory-{label}", devpi_server_options=options)
        pid = stack.wait_healthy()
        started = h.proc_memory(pid)
        log(f"memory: {label}: install workload")
        batches = workload(env, stack)
        assert stack.pid() == pid, "devpi restarted during the workload"
        after = h.proc_memory(pid)
        log(f"memory: {label}: idle {idle:.0f} s")
        cpu0, t0 = h.cpu_seconds(pid), time.monotonic()
        time.sleep(idle)
        cpu1, t1 = h.cpu_seconds(pid), time.monotonic()
        idle_mem = h.proc_memory(pid)
        out[label] = {
            "options": options, "after_start": started, "after_workload": after, "after_idle": idle_mem,
            "idle_s": t1 - t0, "idle_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
            "workload_batches": batches, "peak_set_by": peak_setter(started, batches),
        }
        stack.stop()
    return out


# --------------------------------------------------------------------------- PyPI-sized name list

PYPI_NAMES = 700_000  # about what PyPI's /simple/ lists
NAMELIST_TITLES = (
    ("whoosh", "as deployed: Whoosh search"),
    ("null", "`devpi_search = False`"),
    ("project_list_on", "`mirror_no_project_list: False` (search stays off)"),
)


def pypi_sized_upstream(env: Env, names: int = PYPI_NAMES) -> h.Upstream:
    """A second hermetic upstream whose ``/simple/`` root lists ``names`` generated
    project names besides its real ones: what a mirror of PyPI loads when it loads the
    name list."""
    upstream = h.start_upstream(env.root / "upstream-pypi-sized", python=env.tools.python3)
    index = upstream.root / "simple" / "index.html"
    real = index.read_text()
    fake = "".join(f'    <a href="gen-{i:06d}/">gen-{i:06d}</a><br/>\n' for i in range(names))
    index.write_text(real.replace("  </body>", fake + "  </body>"))
    return upstream


# What bench_namelist deploys: (label, host data). ``whoosh`` is the default (devpi_search
# True, root/pypi flagged from devpi's first start); ``null`` turns search off;
# ``project_list_on`` unflags the mirror (the deploy then keeps search off: null backend).
NAMELIST_CASES = (
    ("whoosh", {}),
    ("null", {"devpi_search": False}),
    ("project_list_on", {"mirror_no_project_list": False}),
)


def bench_namelist(env: Env, settle: float) -> dict:
    """devpi's memory and CPU after a first converge whose mirror's upstream lists a
    PyPI-sized name list, then idle for ``settle`` seconds, then after a restart and
    the same idle time: devpi-web's Whoosh search (the default) against the null
    backend, and with ``mirror_no_project_list`` off (the cost the deploy avoids)."""
    upstream = pypi_sized_upstream(env)
    out: dict[str, Any] = {"names": PYPI_NAMES}
    try:
        for label, data in NAMELIST_CASES:
            spec = {"mirror_url": upstream.url}
            data = dict(data)
            if "mirror_no_project_list" in data:
                spec["mirror_no_project_list"] = data.pop("mirror_no_project_list")
            before = len(upstream.requests())
            t = time.monotonic()
            stack = env.stack(f"namelist-{label}", devpi_indexes={"root/pypi": spec}, **data)
            converge_s = time.monotonic() - t
            pid = stack.wait_healthy()
            at_converge, cpu0, t0 = h.proc_memory(pid), h.cpu_seconds(pid), time.monotonic()
            time.sleep(settle)  # devpi-web loads and indexes the list in the background
            cpu1, t1 = h.cpu_seconds(pid), time.monotonic()
            settled = h.proc_memory(pid)
            backend = next((line.split(":", 1)[1].strip().strip('"')
                            for line in (stack.devpi_home / "devpi-server.yml").read_text().splitlines()
                            if line.strip().startswith("indexer-backend:")), None)
            # a restart: Whoosh indexes the projects devpi knows at every start
            env.launchd.kickstart(stack.label)
            pid = stack.wait_healthy()
            at_restart, rcpu0, r0 = h.proc_memory(pid), h.cpu_seconds(pid), time.monotonic()
            time.sleep(settle)
            rcpu1, r1 = h.cpu_seconds(pid), time.monotonic()
            fetched = [r for r in upstream.requests()[before:] if r.startswith("GET /simple/ ")]
            out[label] = {
                "backend": backend, "converge_s": converge_s, "after_converge": at_converge,
                "after_settle": settled, "settle_s": settle, "settle_cpu_s": cpu1 - cpu0,
                "settle_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
                "after_restart": at_restart, "after_restart_settle": h.proc_memory(pid),
                "restart_cpu_s": rcpu1 - rcpu0, "restart_cpu_percent": 100 * (rcpu1 - rcpu0) / (r1 - r0),
                "name_list_fetches": len(fetched),
            }
            log(f"namelist: {label}: {out[label]}")
            stack.stop()
    finally:
        upstream.stop()
    return out


# -- an upgrade across database versions


DB_LOCK = REPO / "locks" / "devpi-6.20.3-5.1.1.txt"
DB_NEW_SERVER = "6.20.99"


def db_upgrade_wheels(tools: h.ToolPaths) -> list[Path]:
    """The locked tree's wheels (fetched once into bench/.cache) and devpi-server 6.20.99
    with database version 5 (tests/e2e/test_db_upgrade.py builds the same)."""
    cache = CACHE / "dbupgrade-wheels"
    wheels = sorted(cache.glob("*.whl")) if cache.is_dir() else []
    if not wheels:
        wheels = h.wheels_of_lock(DB_LOCK, cache, tools.uv, tools.python3)
    (server,) = [w for w in wheels if w.name.startswith("devpi_server-")]
    new = h.rebuild_wheel(server, CACHE / "dbupgrade-rebuilt", DB_NEW_SERVER, {
        "devpi_server/main.py": ('DATABASE_VERSION = "4"', 'DATABASE_VERSION = "5"'),
        "devpi_server/__init__.py": ('__version__ = "6.20.3"', f'__version__ = "{DB_NEW_SERVER}"'),
    })
    return [*wheels, new]


def unavailable(samples: list[tuple[float, bool]]) -> tuple[float, float]:
    """(longest window, total time) in which /+api did not answer 200."""
    longest = total = 0.0
    start = None
    for t, ok in samples:
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            longest, total, start = max(longest, t - start), total + t - start, None
    if start is not None:
        longest, total = max(longest, samples[-1][0] - start), total + samples[-1][0] - start
    return longest, total


def bench_dbupgrade(env: Env, reps: int, uploads: int = 10) -> dict:
    import threading

    env.upstream.add_wheels(db_upgrade_wheels(env.tools))
    runs = []
    for rep in range(reps):
        stack = env.stack("dbupgrade", caddy=False)
        dc.ensure_user(stack.devpi_url, stack.root_auth, "alice", "alice-pw")
        dc.ensure_index(stack.devpi_url, stack.root_auth, "alice/dev", bases=["root/pypi"], acl_upload=["alice"])
        for i in range(uploads):
            wheel = h.build_wheel(env.root / f"dbupgrade-{rep}", f"bench-upload-{i}", "1.0")
            done = dc.uv_publish(env.tools.uv, wheel.path, f"{stack.devpi_url}/alice/dev/", "alice", "alice-pw")
            if done.returncode != 0:
                raise h.HarnessError(done.stdout + done.stderr)
        samples: list[tuple[float, bool]] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                samples.append((time.monotonic(), stack.api_ok(timeout=1)))
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        log(f"dbupgrade: run {rep + 1}")
        run = run_deploy(stack, "--data", "devpi_allow_export_import=true", devpi_server_version=DB_NEW_SERVER,
                         devpi_index_url=env.upstream.url)
        stack.wait_healthy()
        time.sleep(0.5)
        stop.set()
        poller.join()
        longest, total = unavailable(samples)
        said = re.search(r"in (\d+)s of downtime", run.output)
        steps = dict(phases(run))
        runs.append({
            "wall_s": run.duration,
            "upgrade_step_s": steps.get("Starting operation: devpi | Move the server dir to the new database version"),
            "venv_step_s": steps.get("Starting operation: devpi | Install devpi venv"),
            "longest_unavailable_s": longest, "unavailable_s": total,
            "script_downtime_s": int(said.group(1)) if said else None,
        })
        stack.stop()
    return {"uploads": uploads, "runs": runs}


# --------------------------------------------------------------------------- downtime


# A client's patience for one answer through Caddy (pip's default --timeout is 15 s).
CLIENT_TIMEOUT = 15


class Downtime:
    """``GET /+api`` every :data:`POLL_INTERVAL` in a thread while a run changes the
    host: the longest run of failed polls (seconds from the first failed poll of a run to
    the next poll that succeeded) is how long devpi did not answer."""

    def __init__(self, url: str, timeout: float = 1):
        self.url = url
        self.timeout = timeout
        self.samples: list[tuple[float, bool]] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                ok = h.http_ok(self.url + "/+api", timeout=self.timeout)
            except Exception:  # noqa: BLE001 - a connection cut mid-answer (devpi stopping) is a failed poll
                ok = False
            if ok:
                self.slowest = max(self.slowest, time.monotonic() - t)
            self.samples.append((t, ok))
            self._stop.wait(max(0.0, POLL_INTERVAL - (time.monotonic() - t)))

    def __enter__(self) -> Downtime:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self, since: float) -> dict:
        """The figures; ``window``: the longest outage's start and end, in seconds after
        ``since`` (a ``time.monotonic()`` value: the run's start)."""
        longest, failed, start, window = 0.0, 0, None, None
        for t, ok in self.samples:
            if not ok:
                failed += 1
                start = t if start is None else start
            elif start is not None:
                if t - start > longest:
                    longest, window = t - start, (start - since, t - since)
                start = None
        if start is not None:  # still down at the end
            end = self.samples[-1][0] + POLL_INTERVAL
            if end - start > longest:
                longest, window = end - start, (start - since, end - since)
        return {"longest_s": longest, "failed_polls": failed, "polls": len(self.samples), "window": window,
                "slowest_answer_s": self.slowest}


def measured_run(stack: st.DeployedStack, **overrides) -> dict:
    """One deploy run with devpi's downtime measured; the run may fail (a rollback).
    Polled on devpi's port and, when the stack has Caddy, through Caddy (what clients
    use: ``caddy``, the same figures; Caddy holds requests while devpi's port is closed)."""
    with contextlib.ExitStack() as polls:
        down = polls.enter_context(Downtime(stack.devpi_url))
        # Through Caddy a request may be held (devpi_caddy_upstream_wait): a slow answer,
        # not a failed one, as long as it comes within a client's timeout.
        proxied = polls.enter_context(Downtime(stack.caddy_url, timeout=CLIENT_TIMEOUT)) if stack.caddy else None
        since = time.monotonic()
        run = stack.deploy(check=False, **overrides)
        # a failing poll at the very end is downtime too: poll on until devpi answers
        h.wait_until(lambda: stack.api_ok(timeout=1), 120, 0.05, "devpi to answer after the run")
        if proxied is not None:
            h.wait_until(lambda: stack.api_ok(stack.caddy_url, timeout=1), 120, 0.05, "Caddy to answer after the run")
        time.sleep(2 * POLL_INTERVAL)
    # The operations running while devpi did not answer (pyinfra's progress lines).
    result = {**down.result(since), "wall_s": run.duration, "returncode": run.returncode, "phases": phases(run)}
    if proxied is not None:
        result["caddy"] = proxied.result(since)
    if result["window"]:
        begin, end = result["window"]
        at, during = 0.0, []
        for label, seconds in result["phases"]:
            if at < end and at + seconds > begin:
                during.append(label)
            at += seconds
        result["during"] = during
    return result


def bench_takeover(env: Env, reps: int) -> dict:
    """A fresh Ansible-made install each time (tests/e2e/harness/ansible.py), then the
    deploy's takeover run."""
    runs = []
    for i in range(reps):
        stack = env.stack(f"takeover{i}", deploy=False)
        # The role's Caddy block: a plain proxy (no hold), which the run replaces.
        h.write_proxy_block(stack.site_file, stack.caddy_url, stack.devpi_port)
        env.launchd.kickstart(stack.caddy_label)
        logs = stack.home / "Library/Logs"
        role = h.install_ansible_devpi(
            env.launchd, env.tools, home=stack.devpi_home, label=stack.label, port=stack.devpi_port,
            launch_agents_dir=stack.home / "Library/LaunchAgents", out_log=logs / "role.out.log",
            err_log=logs / "role.err.log", outside_url=f"http://{h.LOOPBACK}:8141", root_password=stack.password,
            python=stack.data["devpi_python"],
        )
        upload = h.build_wheel(stack.root / "dist", "takeover-pkg", "1.0")
        h.populate(role, root_password=stack.password, mirror_url=env.upstream.url, user="alice",
                   user_password="alice-Pa55", index="dev", upload=upload.path, uv=env.tools.uv,
                   mirrored=("hermetic-alpha", "hermetic_alpha-1.0-py3-none-any.whl"))
        stack.wait_caddy()
        try:
            result = measured_run(stack, devpi_out_log="role.out.log", devpi_err_log="role.err.log")
            if result["returncode"] != 0:
                raise h.HarnessError(f"takeover run failed: {result}")
            # The reference, on the machine as loaded as it is now: one plain restart.
            result["restart_to_healthy_s"] = restart_once(stack, busy=False)["to_healthy_s"]
            log(f"takeover: {result}")
            runs.append(result)
        finally:
            env.launchd.run("bootout", f"user/{env.sshd.uid}/{stack.label}", check=False)
            stack.stop()
    return {"runs": runs}


OLD_PAIR = ("6.20.2", "5.1.0")
DEVPI_PAIR = ("6.20.3", "5.1.1")  # uv resolves these pins (no lock file); the deploy's default pair is locked


def bench_upgrade(env: Env, reps: int) -> dict:
    """devpi's downtime while the deploy changes its version (the pinned pair and the
    previous release, back and forth: a new venv built beside the live one, swapped in,
    ``kickstart -k``, the health wait), and while it rolls back a release that installs
    but cannot start (the previous venv back, ``kickstart -k``, healthy again)."""
    stack = env.stack("upgrade")
    old = {"devpi_server_version": OLD_PAIR[0], "devpi_web_version": OLD_PAIR[1]}
    run_deploy(stack, **old)  # warm uv's cache for the old pair
    bumps = []
    for i in range(reps):
        for direction, overrides in (("up", {}), ("down", old)):
            result = measured_run(stack, **overrides)
            if result["returncode"] != 0:
                raise h.HarnessError(f"version change failed: {result}")
            result["direction"] = direction
            result["restart_to_healthy_s"] = restart_once(stack, busy=False)["to_healthy_s"]
            log(f"upgrade: {result}")
            bumps.append(result)
    if "devpi-server" not in {w.name for w in env.upstream.wheels.values()}:
        h.add_unstartable_devpi(env.upstream, "built by bench/")
    timeout = 10
    rollbacks = []
    for i in range(reps):
        result = measured_run(stack, devpi_server_version="6.20.99", devpi_web_version="5.1.99",
                              devpi_index_url=env.upstream.url, devpi_health_timeout=timeout)
        if result["returncode"] == 0:
            raise h.HarnessError("the bad upgrade did not fail")
        result["health_timeout_s"] = timeout
        log(f"rollback: {result}")
        rollbacks.append(result)
    stack.stop()
    return {"bumps": bumps, "rollbacks": rollbacks}


# --------------------------------------------------------------------------- report


# --------------------------------------------------------------------------- backup

BACKUP_LARGE_MB = 200
BACKUP_WHEEL_MB = 10


def poll_summary(poll: h.Poller) -> dict:
    """What a backup or restore cost devpi's availability (``h.Poller``: ``GET /+api``
    every 20 ms): failed polls, the slowest answer, the longest outage (from the first
    failed poll to the end of the next answered one)."""
    samples = [(sent, back, status) for (sent, status), (_, back) in zip(poll.answers, poll.spans)]
    gap, start = 0.0, None
    for sent, back, status in samples:
        if status != 200 and start is None:
            start = sent
        elif status == 200 and start is not None:
            gap, start = max(gap, back - start), None
    return {"polls": len(samples), "failed": len(poll.failed()),
            "slowest_s": max((back - sent for sent, back, _ in samples), default=None), "longest_down_s": gap}


def upload_data(env: Env, stack: st.DeployedStack, total_mb: int, work: Path) -> int:
    """Random-content wheels (incompressible) uploaded as root to root/bench; bytes uploaded."""
    dc.ensure_index(stack.devpi_url, stack.root_auth, "root/bench", bases=[])
    size = 0
    count = max(1, total_mb // BACKUP_WHEEL_MB) if total_mb >= BACKUP_WHEEL_MB else 6
    per = BACKUP_WHEEL_MB * 2**20 if total_mb >= BACKUP_WHEEL_MB else 4096
    for i in range(count):
        wheel = h.build_wheel(work, f"bench-blob-{total_mb}-{i}", "1.0",
                              modules={"blob": "import base64\nB = %r\n" % base64.b85encode(os.urandom(per)).decode()})
        published = dc.uv_publish(env.tools.uv, wheel.path, f"{stack.devpi_url}/root/bench/", "root", stack.password)
        if published.returncode != 0:
            raise h.HarnessError(published.stderr)
        size += wheel.path.stat().st_size
        wheel.path.unlink()
    return size


def backup_once(stack: st.DeployedStack) -> dict:
    status_file = stack.devpi_home / "backup.status.json"
    before = status_file.read_text() if status_file.exists() else ""
    label = stack.label + ".backup"
    with h.Poller(stack.devpi_url) as poll:
        t0 = time.monotonic()
        stack.launchd.run("kickstart", stack.launchd.target(label), local=True)
        h.wait_until(lambda: status_file.exists() and status_file.read_text() != before
                     and stack.launchd.pid(label) is None, 1800, 0.05, "the backup to finish")
        wall = time.monotonic() - t0
    status = json.loads(status_file.read_text())
    if "last_failure" in status and status["last_failure"]["epoch"] >= status.get("last_success", {}).get("epoch", 0):
        raise h.HarnessError(f"backup failed: {status['last_failure']}")
    return {"wall_s": wall, "program_s": status["last_success"]["seconds"], "size": status["last_success"]["size"],
            "files": status["last_success"]["files"], "name": status["last_success"]["name"], **poll_summary(poll)}


def restore_once(stack: st.DeployedStack, name: str) -> dict:
    with h.Poller(stack.devpi_url) as poll:
        t0 = time.monotonic()
        run = stack.pyinfra("deploys/devpi_restore.py", "--data", f"devpi_restore_from={name}", check=False)
        wall = time.monotonic() - t0
    if run.returncode != 0:
        raise h.HarnessError("restore failed:\n" + "\n".join(run.output.splitlines()[-40:]))
    return {"wall_s": wall, **poll_summary(poll)}


def bench_backup(env: Env, reps: int) -> dict:
    results = {}
    for case, mb in (("small", 0), ("large", BACKUP_LARGE_MB)):
        stack = env.stack(f"backup-{case}", devpi_backup={"hour": 3, "minute": 17, "keep": 2})
        stack.wait_healthy()
        work = env.root / f"wheels-{case}"
        work.mkdir()
        uploaded = upload_data(env, stack, mb, work)
        backups = [backup_once(stack) for _ in range(1 if case == "large" else reps)]
        restore = restore_once(stack, backups[-1]["name"])
        results[case] = {"uploaded_bytes": uploaded, "backups": backups, "restore": restore}
        stack.stop()
    return results


def machine(tools: h.ToolPaths) -> dict:
    cpu = platform.processor() or ""
    try:
        cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    mem = None
    try:
        mem = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1)) // 1024
    except (OSError, AttributeError):
        pass

    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    return {
        "os": f"{platform.system()} {platform.release()}", "cpu": cpu, "cores": os.cpu_count(), "mem_mib": mem,
        "python": platform.python_version(), "uv": version([str(tools.uv), "--version"]),
        "caddy": version([str(h.CADDY_BIN), "version"]),
        "pyinfra": version([str(h.PYINFRA_BIN), "--version"]),
        "devpi-server": version([str(h.VENV_BIN / "devpi-server"), "--version"]),
    }


def fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratios_in_turns(rounds: list[dict], source: str, key: str, floor_key: str) -> list[float]:
    """Per turn, a source's install time over the floor install of the same turn
    (successful installs only)."""
    out = []
    for r in rounds:
        batches = r["floor"][key] if source == "floor" else r[source].get(key, [])
        for b, floor in zip(batches, r["floor"][floor_key]):
            if not b["failed"] and not floor["failed"]:
                out.append(b["wall_s"] / floor["wall_s"])
    return out


def ratio_cell(ratios: list[float]) -> str:
    if not ratios:
        return "–"
    if len(ratios) < 4:
        return f"{median(ratios):.2f}×"
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"{median(ratios):.2f}× ({q1:.2f}–{q3:.2f})"


def report(results: dict) -> str:
    out = []
    m = results["machine"]
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_mib']} MiB, {m['os']}; Python {m['python']}, "
               f"{m['uv']}, {m['pyinfra']}, devpi-server {m['devpi-server']}, Caddy {(m['caddy'] or '').split()[0]}; "
               f"{results['started']}")
    if "rerun" in results:
        r = results["rerun"]
        c = r["commands"][0]
        cw = r["with_prewarm_list"]["commands"][0]
        out.append("\n### No-change rerun (over loopback SSH)\n")
        out.append(table(["", "median", "min", "max", "remote commands (facts + operations)"], [
            ["rerun", fmt(median(r["wall_s"])), fmt(min(r["wall_s"])), fmt(max(r["wall_s"])),
             f"{c['total']} ({c['facts']} + {c['operations']})"],
            ["rerun with a 25-project `devpi_prewarm` list", fmt(median(r["with_prewarm_list"]["wall_s"])),
             fmt(min(r["with_prewarm_list"]["wall_s"])), fmt(max(r["with_prewarm_list"]["wall_s"])),
             f"{cw['total']} ({cw['facts']} + {cw['operations']})"],
            ["`pyinfra --version` (interpreter + import floor)", fmt(median(r["pyinfra_version_s"])),
             fmt(min(r["pyinfra_version_s"])), fmt(max(r["pyinfra_version_s"])), "–"],
        ]))
        if r.get("remote_s"):
            out.append(
                f"\nOf a rerun, {fmt(median(r['remote_s']))} is spent in its remote commands; the facts call "
                f"launchctl twice, and one call of the launchctl test double (a Python script; launchctl on "
                f"a Mac is a native binary) takes {fmt(median(r['launchctl_double_call_s']))}.\n")
    if "first" in results:
        runs = results["first"]["runs"]
        labels = [label for label, _ in runs[0]["phases"]]
        rows = []
        for i, label in enumerate(labels):
            values = [run["phases"][i][1] for run in runs if len(run["phases"]) > i and run["phases"][i][0] == label]
            if median(values) and median(values) >= 0.05:
                rows.append([re.sub(r"^Starting operation: ([^|]*\| )?", "", label), fmt(median(values))])
        rows.append(["**to healthy** (the end of the health wait)", fmt(median([to_healthy(run) for run in runs]))])
        rows.append(["**total** (the whole run)", fmt(median([run["wall_s"] for run in runs]))])
        out.append(f"\n### First converge on an empty home, warm uv cache (median of {len(runs)}; steps ≥ 0.05 s)\n")
        out.append(table(["step", "time"], rows))
    if "first" in results:
        out.append("\nWhere it goes (medians): " + ", ".join(
            f"{name} {fmt(value)}" for name, value in first_breakdown(results["first"]["runs"]).items()) + ".\n")
    if "takeover" in results or "upgrade" in results:
        rows = []
        for title, samples in downtime_rows(results):
            restarts = [s["restart_to_healthy_s"] for s in samples if s.get("restart_to_healthy_s")]
            rows.append([title, fmt(median([s["longest_s"] for s in samples]), digits=1),
                         fmt(max(s["longest_s"] for s in samples), digits=1),
                         str(max(s["failed_polls"] for s in samples)), through_caddy(samples),
                         fmt(median([s["wall_s"] for s in samples]), digits=1),
                         fmt(median(restarts), digits=1) if restarts else "–", str(len(samples))])
        out.append(f"\n### Downtime: longest run of failed `/+api` polls (every {POLL_INTERVAL * 1000:.0f} ms)\n")
        out.append(table(["run", "median", "max", "failed polls (max)",
                          "through Caddy: failed polls (max), longest outage; slowest answer", "run wall time",
                          "a plain `kickstart -k` to healthy, right after", "runs"], rows))
    if "restart" in results:
        rows = []
        for key, samples in results["restart"].items():
            if key in ("imports_s", "preloaded_start_s"):
                continue
            peaks = [s["peak_rss_kb"] for s in samples if s["peak_rss_kb"] is not None]
            logins = [s["peak_after_login_kb"] for s in samples if s.get("peak_after_login_kb") is not None]
            rows.append([key.replace("_", " "), fmt(median([s["to_healthy_s"] for s in samples])),
                         fmt(max(s["to_healthy_s"] for s in samples)),
                         fmt(median(peaks) / 1024 if peaks else None, " MB", 0),
                         fmt(median([s["rss_kb"] for s in samples]) / 1024, " MB", 0),
                         fmt(median(logins) / 1024 if logins else None, " MB", 0)])
        out.append("\n### Restart to healthy (`kickstart -k` → `/+api` 200)\n")
        out.append(table(["argon2 costs", "median", "max", "peak RSS", "RSS when healthy",
                          "peak after one login"], rows))
        imports = results["restart"].get("imports_s")
        if imports:
            out.append(
                f"\nOf a restart, {fmt(median(imports))} (median of {len(imports)}) is a new interpreter loading "
                "devpi's modules, before devpi-server's own start-up (config, database, plugins, bind) begins.\n"
            )
        preloaded = results["restart"].get("preloaded_start_s")
        if preloaded:
            out.append(
                f"A devpi-server whose modules were loaded beforehand answers {fmt(median(preloaded))} after it is "
                "let go (median; the floor of a restart that loads the new devpi while the old one still holds "
                "the port, which the deploy does not do: see docs/benchmarks.md).\n"
            )
    if "install" in results:
        i = results["install"]
        rows = []
        turns_total = {}
        for client in ("uv", "pip"):
            rounds = i["rounds"][client]
            floor_turns = [t for r in rounds for t in r["floor"]["warm_turns"]]
            f1 = [t["wall_s"] for t in floor_turns]
            f8 = [r["floor"]["x8"]["wall_s"] for r in rounds]
            hs = [t["wall_s"] for r in rounds for t in r["floor"]["http_server_turns"]]
            turns_total[client] = len(f1)
            fails = sum(t["failed"] for r in rounds
                        for t in [*r["floor"]["warm_turns"], *r["floor"]["cold_turns"], r["floor"]["x8"]])
            rows.append([client, "(a) static index (Caddy file_server): 1 client / 8 at once",
                         f"{fmt(median(f1))} / {fmt(median(f8))}", "1.00×", "", "", str(fails)])
            rows.append([client, "(a0) the same files from python's http.server (devpi's upstream here)",
                         fmt(median(hs)), ratio_cell(ratios_in_turns(rounds, "floor", "http_server_turns", "warm_turns")),
                         "", "", str(sum(t["failed"] for r in rounds for t in r["floor"]["http_server_turns"]))])
            for key, label in (("cold", "(b) cold"), ("warm", "(c) warm"), ("warm_x8", "(d) warm, 8 at once"),
                               ("cold_x8", "(e) cold, 8 at once"),
                               ("cold_x8_prewarmed", "(e') cold, 8 at once, after devpi_prewarm")):
                cells, failed, cpu = [], [], []
                for mode in ("offload", "plain_proxy"):
                    batches = [b for r in rounds if key in r[mode]
                               for b in (r[mode][key] if isinstance(r[mode][key], list) else [r[mode][key]])]
                    if key in ("cold", "warm"):
                        ratios = ratios_in_turns(rounds, mode, key, f"{key}_turns")
                    else:
                        ratios = [r[mode][key]["wall_s"] / r["floor"]["x8"]["wall_s"]
                                  for r in rounds if key in r[mode] and not r[mode][key]["failed"]]
                    cells.append(ratio_cell(ratios))
                    clients = CLIENTS if key not in ("cold", "warm") else 1
                    failed.append(f"{sum(b['failed'] for b in batches)}/{len(batches) * clients}")
                    values = [b["devpi_cpu_s"] for b in batches if b.get("devpi_cpu_s") is not None]
                    cpu.append(fmt(median(values)) if values else "–")
                rows.append([client, label, "", cells[0], cells[1], " / ".join(cpu), " / ".join(failed)])
        out.append(f"\n### Installs through Caddy → devpi ({i['wheels']} wheels, fresh venvs, no client cache)\n")
        out.append(
            f"One client: the median of {turns_total['uv']} (uv) / {turns_total['pip']} (pip) ratios, each "
            "to the floor install of the same turn (one install from each source in a row, the order rotated "
            "every turn), with the 25th-75th percentile; 8 at once: the median over "
            f"{len(i['rounds']['uv'])} rounds of the ratio to that round's 8-client floor. Successful batches "
            "only; failures counted apart.\n")
        out.append(table(["client", "scenario", "floor time", "Caddy serves /+f/", "plain proxy",
                          "devpi CPU per batch (offload / plain)", "failed installs (offload / plain)"], rows))
    if "memory" in results:
        rows, peaks = [], []
        for label, mres in results["memory"].items():
            rows.append([label.replace("_", " "), fmt(mres["after_start"]["rss_kb"] / 1024, " MB", 0),
                         fmt(mres["after_workload"]["rss_kb"] / 1024, " MB", 0),
                         fmt(mres["after_idle"]["rss_kb"] / 1024, " MB", 0),
                         fmt((mres["after_idle"]["peak_rss_kb"] or 0) / 1024, " MB", 0),
                         f"{mres['idle_cpu_percent']:.2f} % over {mres['idle_s']:.0f} s"])
            setter = mres.get("peak_set_by")
            by_scenario: dict[str, int] = {}
            before = mres["after_start"]["peak_rss_kb"] or 0
            for one in mres.get("workload_batches", []):
                grew = (one["peak_rss_kb"] or 0) - before
                before = one["peak_rss_kb"] or before
                key = f"{one['client']} {one['scenario']}"
                by_scenario[key] = by_scenario.get(key, 0) + max(grew, 0)
            growth = ", ".join(f"{k} +{v / 1024:.0f} MB" for k, v in by_scenario.items() if v >= 1024)
            peaks.append([label.replace("_", " "),
                          fmt((mres["after_start"]["peak_rss_kb"] or 0) / 1024, " MB", 0),
                          (f"{setter['client']} {setter['scenario']}"
                           if setter and setter["peak_rss_kb"] - setter["peak_before_kb"] >= 1024
                           else "the converge (the workload added < 1 MB)"),
                          growth or "–"])
        out.append("\n### devpi memory and idle CPU\n")
        out.append(table(["config", "RSS after start", "after install workload", "after idle", "peak", "idle CPU"], rows))
        out.append("\nWhere the peak came from (VmHWM after each batch of the workload):\n")
        out.append(table(["config", "peak after the converge (start + logins)", "final peak set by",
                          "peak growth by scenario (≥ 1 MB)"],
                         peaks))
    if "dbupgrade" in results:
        d = results["dbupgrade"]
        runs = d["runs"]

        def row(label: str, key: str) -> list[str]:
            values = [r[key] for r in runs if r.get(key) is not None]
            return [label, fmt(median(values)), fmt(min(values) if values else None),
                    fmt(max(values) if values else None)]

        out.append(f"\n### Upgrade across database versions (a user, an index, {d['uploads']} uploads)\n")
        out.append(table(["", "median", "min", "max"], [
            row("whole run (venv build from the loopback upstream, upgrade, restart, health)", "wall_s"),
            row("the venv build", "venv_step_s"),
            row("the upgrade step (stop, export, import, check on a spare port, swap, start)", "upgrade_step_s"),
            row("devpi down, as the upgrade reports it (whole seconds)", "script_downtime_s"),
            row("longest window without a 200 from /+api", "longest_unavailable_s"),
            row("all windows without a 200 (the upgrade, then the run's kickstart -k)", "unavailable_s"),
        ]))
    if "namelist" in results:
        n = results["namelist"]
        mb = lambda kb: fmt(kb / 1024 if kb is not None else None, " MB", 0)  # noqa: E731
        out.append(f"\n### First converge against an upstream listing {n['names']:,} project names\n")
        rows = []
        for label, title in NAMELIST_TITLES:
            if label in n and "settle_cpu_s" in n[label]:
                r = n[label]
                rows.append([title, str(r.get("backend")), mb(r["after_converge"]["rss_kb"]),
                             mb(r["after_settle"]["rss_kb"]), f"{r['settle_cpu_s']:.1f} s",
                             mb(r["after_restart_settle"]["rss_kb"]), f"{r['restart_cpu_s']:.1f} s",
                             mb(r["after_restart_settle"]["peak_rss_kb"]), str(r["name_list_fetches"])])
        settle = next(r["settle_s"] for r in n.values() if isinstance(r, dict))
        out.append(table(["", "indexer", "RSS after converge", f"RSS {settle:.0f} s later", "CPU in those s",
                          f"RSS {settle:.0f} s after a restart", "CPU in those s", "peak since the restart",
                          "name-list fetches"],
                         rows))
    if "backup" in results:
        out.extend(backup_report(results))
    return "\n".join(out) + "\n"


def backup_report(results: dict) -> list[str]:
    out = ["\n### Backups and restore\n"]
    rows = []
    for case, r in results["backup"].items():
        mib = r["uploaded_bytes"] / 2**20
        for b in r["backups"][:1]:
            rows.append([f"backup ({case}: {b['files']} files, {b['size'] / 2**20:.1f} MiB)", fmt(b["wall_s"]),
                         fmt(b["program_s"]), f"{b['failed']} / {b['polls']}", fmt(b["slowest_s"]),
                         fmt(b["longest_down_s"])])
        x = r["restore"]
        rows.append([f"restore ({case}, {mib:.1f} MiB uploaded)", fmt(x["wall_s"]), "–", f"{x['failed']} / {x['polls']}",
                     fmt(x["slowest_s"]), fmt(x["longest_down_s"])])
    out.append(table(["", "wall", "backup program", "/+api failures / polls", "slowest /+api", "longest down"], rows))
    return out


# The first converge's steps (pyinfra's "--> Starting operation" lines), by what they are.
FIRST_STEPS = {
    "venv build": ("Install devpi venv",),
    "devpi-init": ("Initialise devpi server dir",),
    "first start (bootstrap, then /+api 200)": ("LaunchAgent ", "Wait for devpi to answer"),
    "users/indexes (root/pypi)": ("devpi users and indexes",),
    "prewarm": ("Warm the mirror",),
}


def first_breakdown(runs: list[dict]) -> dict[str, float]:
    """Median seconds per kind of step; the rest (interpreter start, connecting, the
    facts, the small operations, pyinfra's own bookkeeping) is "pyinfra and the rest"."""
    per_run = []
    for run in runs:
        kinds = dict.fromkeys([*FIRST_STEPS, "pyinfra and the rest"], 0.0)
        for label, seconds in run["phases"]:
            kind = next((k for k, names in FIRST_STEPS.items() if any(n in label for n in names)),
                        "pyinfra and the rest")
            kinds[kind] += seconds
        per_run.append(kinds)
    return {k: median([r[k] for r in per_run]) for k in per_run[0]} if per_run else {}


def through_caddy(samples: list[dict]) -> str:
    """The same run's polls through Caddy (which holds requests while devpi's port is
    closed): the most failed polls of a run, and the longest outage."""
    caddy = [s["caddy"] for s in samples if s.get("caddy")]
    if not caddy:
        return "–"
    return (f"{max(c['failed_polls'] for c in caddy)}, {fmt(max(c['longest_s'] for c in caddy), digits=1)}; "
            f"slowest answer {fmt(max(c.get('slowest_answer_s', 0) for c in caddy), digits=1)}")


def downtime_rows(results: dict) -> list[tuple[str, list[dict]]]:
    rows = []
    if "takeover" in results:
        rows.append(("takeover of the Ansible role's install", results["takeover"]["runs"]))
    if "upgrade" in results:
        u = results["upgrade"]
        rows.append((f"version change ({OLD_PAIR[0]} ↔ {DEVPI_PAIR[0]})", u["bumps"]))
        if u.get("rollbacks"):
            timeout = u["rollbacks"][0]["health_timeout_s"]
            rows.append((f"bad upgrade rolled back (devpi_health_timeout = {timeout})", u["rollbacks"]))
    return rows


def headline(results: dict) -> list[tuple[str, str, str]]:
    """The figures the issue sets targets for, as (measure, value, target) rows."""
    rows: list[tuple[str, str, str]] = []
    mb = lambda kb: fmt(kb / 1024 if kb is not None else None, " MB", 0)  # noqa: E731
    if "rerun" in results:
        r = results["rerun"]
        c = r["commands"][0]
        rows.append(("no-change rerun: median wall time (remote commands: facts + operations)",
                     f"{fmt(median(r['wall_s']))} ({c['facts']} + {c['operations']})", "≤ 8 commands, well under 2 s"))
        rows.append(("… `pyinfra --version` alone / time in remote commands",
                     f"{fmt(median(r['pyinfra_version_s']))} / {fmt(median(r.get('remote_s') or [0]))}", ""))
    if "first" in results:
        runs = results["first"]["runs"]
        rows.append(("first converge to healthy (empty home, warm uv cache)",
                     fmt(median([run["wall_s"] for run in runs])), "≤ 8 s"))
    for title, samples in downtime_rows(results):
        target = next((t for start, t in (("takeover", "≤ 1 s"), ("version", "≤ 1 s"), ("bad upgrade", "≤ 3 s"))
                       if title.startswith(start)), "")
        rows.append((f"downtime, {title}: median (max); through Caddy: failed polls (max), longest outage; slowest answer",
                     f"{fmt(median([s['longest_s'] for s in samples]), digits=1)} "
                     f"({fmt(max(s['longest_s'] for s in samples), digits=1)}); {through_caddy(samples)}", target))
    if "restart" in results:
        res = results["restart"]

        def restart(key: str) -> str:
            samples = res[key]
            return fmt(median([s["to_healthy_s"] for s in samples]))
        peak = median([s["peak_rss_kb"] for s in res["deployed"]])
        rows.append(("restart to healthy, deployed argon2 costs: idle / one core busy; peak RSS",
                     f"{restart('deployed')} / {restart('deployed_busy')}; {mb(peak)}", "≤ 1.5 s, ≤ 120 MB"))
        if res.get("imports_s"):
            rows.append(("… of which a new interpreter loading devpi's modules", fmt(median(res["imports_s"])), ""))
        rows.append(("… with devpi's argon2 defaults: idle / busy; peak RSS",
                     f"{restart('devpi_argon2_defaults')} / {restart('devpi_argon2_defaults_busy')}; "
                     f"{mb(median([s['peak_rss_kb'] for s in res['devpi_argon2_defaults']]))}", ""))
        logins = [s.get("peak_after_login_kb") for s in res["deployed"] if s.get("peak_after_login_kb")]
        if logins:
            rows.append(("… devpi's peak RSS after one login (argon2 password check)", mb(median(logins)), ""))
    if "install" in results:
        rounds = results["install"]["rounds"]
        for client, target in (("uv", "≤ 1.2×"), ("pip", "≤ 1.2×")):
            warm = [ratio_cell(ratios_in_turns(rounds[client], mode, "warm", "warm_turns"))
                    for mode in ("offload", "plain_proxy")]
            rows.append((f"{client}, warm, 1 client (× static floor): Caddy serves `/+f/` / plain proxy",
                         " / ".join(warm), target))
            x8 = []
            for mode in ("offload", "plain_proxy"):
                ratios = [r[mode]["warm_x8"]["wall_s"] / r["floor"]["x8"]["wall_s"]
                          for r in rounds[client] if not r[mode]["warm_x8"]["failed"]]
                x8.append(ratio_cell(ratios))
            cpu = [fmt(median([r[mode]["warm_x8"]["devpi_cpu_s"] for r in rounds[client]]))
                   for mode in ("offload", "plain_proxy")]
            rows.append((f"{client}, warm, 8 clients at once: offload / plain proxy (devpi CPU per batch)",
                         f"{' / '.join(x8)} ({' / '.join(cpu)})", ""))
        for key, label, target in (("cold_x8", "cold mirror, 8 clients at once", ""),
                                   ("cold_x8_prewarmed", "… after `devpi_prewarm`", "none fail")):
            cells = []
            for client in ("uv", "pip"):
                for mode in ("offload", "plain_proxy"):
                    batches = [r[mode][key] for r in rounds[client] if key in r[mode]]
                    cells.append(f"{sum(b['failed'] for b in batches)}/{len(batches) * CLIENTS}")
            rows.append((f"{label}: failed installs, uv offload / plain, pip offload / plain", ", ".join(cells),
                         target))
    if "memory" in results:
        m = results["memory"]
        for label in ("deployed", "devpi_defaults"):
            if label in m:
                x = m[label]
                rows.append((f"devpi RSS after workload / after {x['idle_s']:.0f} s idle / peak; idle CPU ({label.replace('_', ' ')})",
                             f"{mb(x['after_workload']['rss_kb'])} / {mb(x['after_idle']['rss_kb'])} / "
                             f"{mb(x['after_idle']['peak_rss_kb'])}; {x['idle_cpu_percent']:.2f} %", ""))
    if "namelist" in results:
        n = results["namelist"]
        for label, title, target in (("deployed", "as deployed", "≤ 120 MB from the first start on"),
                                     ("whoosh", "as deployed (Whoosh search)", "≤ 120 MB, as with null"),
                                     ("null", "devpi_search False (null)", ""),
                                     ("project_list_on", "with mirror_no_project_list off", "")):
            if label in n:
                r = n[label]
                rows.append((f"first converge, upstream lists {n['names']:,} names, {title}: devpi RSS after "
                             f"{r['settle_s']:.0f} s / peak (name-list fetches)",
                             f"{mb(r['after_settle']['rss_kb'])} / {mb(r['after_settle']['peak_rss_kb'])} "
                             f"({r['name_list_fetches']})", target))
    return rows


def compare(paths: list[Path]) -> str:
    """The headline figures of several runs side by side (for docs/benchmarks.md)."""
    runs = [json.loads(path.read_text()) for path in paths]
    heads = [dict((m, v) for m, v, _ in headline(r)) for r in runs]
    targets = {m: t for r in runs for m, _, t in headline(r)}
    measures = list(dict.fromkeys(m for r in runs for m, _, _ in headline(r)))
    headers = ["measure", *[f"run {i + 1} ({r['started'][:16]})" for i, r in enumerate(runs)], "target"]
    return table(headers, [[m, *[h.get(m, "–") for h in heads], targets[m]] for m in measures])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 30 s idle")
    parser.add_argument("--reps", type=int, help="repetitions per measurement (default 7 reruns, 3 otherwise)")
    parser.add_argument("--idle", type=float, help="idle seconds for the memory section (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (under bench/.cache/runs)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="JSON",
                        help="only print the headline figures of earlier runs side by side")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(args.compare))
        return 0
    reps = args.reps or (2 if args.quick else 3)
    rerun_reps = max(5, args.reps or (5 if args.quick else 7))
    idle = args.idle if args.idle is not None else (30 if args.quick else 300)

    tools = h.find_tools()
    wheels = ensure_wheels(tools)
    started = dt.datetime.now(dt.timezone.utc)
    results: dict[str, Any] = {"started": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(tools),
                               "loadavg_before": os.getloadavg(),
                               "args": vars(args), "wheels": [w.name for w in wheels]}
    (CACHE / "runs").mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE / "runs"))
    env = start_env(root, wheels, tools)
    runs: dict[str, Callable[[], dict]] = {
        "rerun": lambda: bench_rerun(env, rerun_reps),
        "first": lambda: bench_first(env, reps),
        "restart": lambda: bench_restart(env, reps),
        "install": lambda: bench_install(env, reps),
        "memory": lambda: bench_memory(env, idle),
        "namelist": lambda: bench_namelist(env, 30 if args.quick else 60),
        "backup": lambda: bench_backup(env, reps),
        "dbupgrade": lambda: bench_dbupgrade(env, reps),
        "takeover": lambda: bench_takeover(env, reps),
        "upgrade": lambda: bench_upgrade(env, reps),
    }
    try:
        for section in SECTIONS:
            if section not in args.only:
                continue
            log(f"section {section}")
            t = time.monotonic()
            results[section] = runs[section]()
            log(f"section {section} took {time.monotonic() - t:.0f} s")
            results.setdefault("loadavg_after", {})[section] = os.getloadavg()
    finally:
        env.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    text = report(results)
    (RESULTS / "latest.md").write_text(text)
    print(text)
    log(f"wrote {path} and {RESULTS / 'latest.md'}")
    return 0
