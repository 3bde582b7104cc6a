"""How the end-to-end tests and bench/ talk to a deployed devpi, like its users do.

* devpi's REST API: :func:`request`, :func:`login`, :func:`state`, :func:`ensure_user`,
  :func:`ensure_index`, and :class:`DevpiApi` (root logged in once, mirror indexes).
* simple pages and files: :func:`simple_page`, :func:`simple_links`, :func:`download`.
* package clients: :func:`client_env`, :func:`make_venv`, :func:`install` (uv / pip with
  no cache, no config and no inherited index settings), :func:`uv_publish`.

Every request goes through ``harness.http`` (no proxy, HTTP errors are answers).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urljoin

from .harness import HarnessError, http

_counter = itertools.count(1)


# --------------------------------------------------------------------------- REST API


def request(
    method: str, url: str, body: Any = None, auth: tuple[str, str] | None = None, *,
    headers: dict | None = None, timeout: float = 60,
) -> tuple[int, Any]:
    """JSON request to devpi (``auth``: user and password, sent as Basic auth);
    returns (status, parsed JSON or raw bytes)."""
    sent = {"Accept": "application/json", **(headers or {})}
    if auth:
        sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    status, _, raw = http(method, url, data=body, headers=sent, timeout=timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def login(base_url: str, user: str, password: str) -> int:
    """devpi's REST login (what ``devpi login`` does): the HTTP status of POST /+login."""
    return request("POST", f"{base_url}/+login", {"user": user, "password": password})[0]


def state(base_url: str) -> dict:
    """Every user with its indexes, as ``GET /`` lists them."""
    status, answer = request("GET", base_url + "/")
    assert status == 200, answer
    return answer["result"]


def ensure_user(base_url: str, root_auth: tuple[str, str], user: str, password: str) -> None:
    status, body = request("PUT", f"{base_url}/{user}", {"password": password, "email": f"{user}@e2e"}, root_auth)
    assert status in (201, 409), (status, body)


def ensure_index(base_url: str, auth: tuple[str, str], name: str, **config: Any) -> None:
    status, body = request("PUT", f"{base_url}/{name}", config, auth)
    assert status in (200, 201, 409), (status, body)


@dataclasses.dataclass
class DevpiApi:
    """devpi's JSON API as ``user`` (root), logged in once: each devpi login costs an
    argon2 verification (~0.1 s of CPU and 64 MiB of memory, see bench/)."""

    url: str
    password: str
    user: str = "root"
    _auth: dict | None = None

    def auth(self) -> dict:
        """The ``X-Devpi-Auth`` header of a login (the first call logs in)."""
        if self._auth is None:
            status, answer = request("POST", f"{self.url}/+login", {"user": self.user, "password": self.password})
            if status != 200:
                raise HarnessError(f"devpi login as {self.user} -> {status}: {str(answer)[:300]}")
            token = answer["result"]["password"]
            self._auth = {"X-Devpi-Auth": base64.b64encode(f"{self.user}:{token}".encode()).decode()}
        return self._auth

    def put_mirror(self, index: str, mirror_url: str, **options: Any) -> str:
        """Create ``<user>/<index>`` as a mirror of ``mirror_url``; returns ``<user>/<index>``."""
        config = {"type": "mirror", "mirror_url": mirror_url, **options}
        status, answer = request("PUT", f"{self.url}/{self.user}/{index}", config, headers=self.auth())
        if status not in (200, 201):
            raise HarnessError(f"PUT {self.user}/{index} -> {status}: {str(answer)[:300]}")
        return f"{self.user}/{index}"

    def new_mirror(self, mirror_url: str, prefix: str = "cold", **options: Any) -> str:
        """A fresh (cold) mirror index with a unique name."""
        return self.put_mirror(f"{prefix}-{os.getpid()}-{next(_counter)}-{int(time.time() * 1000) % 10**8}",
                               mirror_url, **options)


# --------------------------------------------------------------------------- simple pages and files


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def simple_page(base: str, index: str, project: str, *, timeout: float = 60) -> tuple[int, list[str]]:
    """``GET <base>/<index>/+simple/<project>/``: (status, the page's links as written)."""
    status, _, body = http("GET", f"{base}/{index}/+simple/{project}/", headers={"Accept": "text/html"},
                           timeout=timeout)
    if status != 200:
        return status, []
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    return status, parser.hrefs


def simple_links(base: str, index: str, project: str) -> dict[str, str]:
    """filename -> absolute URL (no ``#sha256=`` fragment) from the project's simple page."""
    page = f"{base}/{index}/+simple/{project}/"
    status, hrefs = simple_page(base, index, project)
    if status != 200:
        raise HarnessError(f"GET {page} -> {status}")
    urls = (urljoin(page, href).split("#")[0] for href in hrefs)
    return {url.rsplit("/", 1)[-1]: url for url in urls}


def download(url: str) -> bytes:
    status, _, body = http("GET", url)
    if status != 200:
        raise HarnessError(f"GET {url} -> {status}")
    return body


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- package clients


def client_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The controller's environment minus every uv/pip setting (index URLs, find-links,
    caches, config files), so a client sees only the index it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV"))}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull})
    env.update(extra or {})
    return env


def make_venv(uv: Path, python: Path, path: Path, *, seed: bool = False) -> Path:
    """A fresh venv (``seed``: with pip in it, for pip clients); returns its python."""
    if path.exists():
        shutil.rmtree(path)
    argv = [str(uv), "venv", "--no-config", "--quiet", "--python", str(python)]
    if seed:
        argv.append("--seed")
    # --seed installs pip from uv's own bundled wheels / cache: never from our indexes
    subprocess.run([*argv, str(path)], check=True, capture_output=True, env=client_env(), timeout=300)
    return path / "bin" / "python"


def install(client: str, uv: Path, venv_python: Path, index_url: str, requirements: Iterable[str],
            *, quiet: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """``uv pip install`` or ``pip install`` with caches off, from ``index_url`` only
    (``quiet=False``: uv lists what it installed on stderr)."""
    reqs = list(requirements)
    flags = ["--quiet"] if quiet else []
    if client == "uv":
        argv = [str(uv), "pip", "install", "--no-config", "--no-cache", *flags,
                "--python", str(venv_python), "--index-url", index_url, *reqs]
    elif client == "pip":
        argv = [str(venv_python), "-m", "pip", "install", "--no-cache-dir", *flags, "--isolated",
                "--index-url", index_url, *reqs]
    else:
        raise ValueError(client)
    return subprocess.run(argv, capture_output=True, text=True, env=client_env(), timeout=timeout)


def uv_publish(uv: Path | str, wheel: Path, index_url: str, user: str, password: str) -> subprocess.CompletedProcess:
    """Upload with uv (the legacy upload API devpi speaks), like a user publishing."""
    return subprocess.run(
        [str(uv), "publish", "--publish-url", index_url, "--username", user, "--password", password, str(wheel)],
        capture_output=True, text=True, env={**os.environ, "UV_NO_CONFIG": "1"}, timeout=120,
    )
