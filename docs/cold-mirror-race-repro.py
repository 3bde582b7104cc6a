#!/usr/bin/env python3
"""Stand-alone reproducer: simultaneous first requests on a cold devpi mirror.

Needs only devpi-server on PATH (or DEVPI_BIN_DIR) and Python 3.9+; no network: the
upstream is a static PEP 503 index served from a temp dir on 127.0.0.1.

    python docs/cold-mirror-race-repro.py [--clients 8] [--rounds 5] [--threads N]
                                          [--no-project-list]

For each round it creates a fresh mirror index of that upstream and sends CLIENTS
simultaneous ``GET /root/<mirror>/+simple/example-pkg/``. Every answer should be 200
listing the project's one file. It prints what came back and exits 1 if any answer
was wrong. Everything it starts is stopped (by PID) and its temp dir removed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PASSWORD = "repro"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} before port {port} opened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} not open after {timeout}s")


def request(method: str, url: str, data=None, headers=None):
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with OPENER.open(req, timeout=120) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def make_upstream(root: Path) -> None:
    """A PEP 503 index with one project and one file (the file's bytes do not matter here)."""
    (root / "files").mkdir(parents=True)
    (root / "files" / "example_pkg-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    (root / "simple" / "example-pkg").mkdir(parents=True)
    (root / "simple" / "index.html").write_text('<a href="example-pkg/">example-pkg</a>\n')
    (root / "simple" / "example-pkg" / "index.html").write_text(
        '<a href="../../files/example_pkg-1.0-py3-none-any.whl">example_pkg-1.0-py3-none-any.whl</a>\n'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="devpi-server --threads")
    parser.add_argument("--no-project-list", action="store_true", help="mirror_no_project_list=True")
    args = parser.parse_args()

    bin_dir = os.environ.get("DEVPI_BIN_DIR") or str(Path(shutil.which("devpi-server") or "devpi-server").parent)
    tmp = Path(tempfile.mkdtemp(prefix="devpi-race-"))
    procs: list[subprocess.Popen] = []
    try:
        make_upstream(tmp / "upstream")
        up_port, devpi_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(tmp / "upstream"), str(up_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_port(up_port, procs[-1])
        server_dir = tmp / "server"
        subprocess.run([f"{bin_dir}/devpi-init", "--serverdir", str(server_dir), "--root-passwd", PASSWORD],
                       check=True, capture_output=True)
        command = [f"{bin_dir}/devpi-server", "--serverdir", str(server_dir), "--host", "127.0.0.1",
                   "--port", str(devpi_port)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        log = open(tmp / "devpi.log", "w")
        procs.append(subprocess.Popen(command, stdout=log, stderr=log))
        wait_port(devpi_port, procs[-1])
        base = f"http://127.0.0.1:{devpi_port}"
        status, body = request("POST", f"{base}/+login", {"user": "root", "password": PASSWORD},
                               {"Accept": "application/json"})
        token = json.loads(body)["result"]["password"]
        auth = {"Accept": "application/json",
                "X-Devpi-Auth": base64.b64encode(f"root:{token}".encode()).decode()}

        outcomes: collections.Counter = collections.Counter()
        for round_ in range(args.rounds):
            index = f"root/cold{round_}"
            config = {"type": "mirror", "mirror_url": f"http://127.0.0.1:{up_port}/simple/"}
            if args.no_project_list:
                config["mirror_no_project_list"] = True
            status, body = request("PUT", f"{base}/{index}", config, auth)
            assert status in (200, 201), (status, body)
            barrier = threading.Barrier(args.clients)
            answers: list = [None] * args.clients

            def client(i: int) -> None:
                barrier.wait()
                code, page = request("GET", f"{base}/{index}/+simple/example-pkg/", headers={"Accept": "text/html"})
                answers[i] = (code, page.count("example_pkg-1.0-py3-none-any.whl") // 2)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            print(f"round {round_}: " + " ".join(f"{code}/{files}" for code, files in answers))
            for code, files in answers:
                outcomes["ok" if (code, files) == (200, 1) else f"{code} with {files} files"] += 1
        wrong = sum(n for k, n in outcomes.items() if k != "ok")
        print(f"\n{wrong} of {args.clients * args.rounds} answers wrong: {dict(outcomes)}")
        return 1 if wrong else 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
