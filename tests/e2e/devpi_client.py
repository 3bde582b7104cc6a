"""Small clients the end-to-end tests use to talk to a deployed devpi like its users do."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path


def request(method: str, url: str, body=None, auth: tuple[str, str] | None = None, timeout=30):
    """JSON request to devpi; returns (status, parsed JSON or raw bytes)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def login(base_url: str, user: str, password: str) -> int:
    """devpi's REST login (what ``devpi login`` does): the HTTP status of POST /+login."""
    status, _ = request("POST", f"{base_url}/+login", {"user": user, "password": password})
    return status


def ensure_user(base_url: str, root_auth, user: str, password: str) -> None:
    status, body = request("PUT", f"{base_url}/{user}", {"password": password, "email": f"{user}@e2e"}, root_auth)
    assert status in (201, 409), (status, body)


def ensure_index(base_url: str, auth, name: str, **config) -> None:
    status, body = request("PUT", f"{base_url}/{name}", config, auth)
    assert status in (200, 201, 409), (status, body)


def sha256(path: Path | bytes) -> str:
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest()


def simple_links(base_url: str, index: str, project: str) -> dict[str, str]:
    """filename → absolute URL from the index's simple page."""
    with urllib.request.urlopen(f"{base_url}/{index}/+simple/{project}/", timeout=60) as response:
        page = response.read().decode()
    links = {}
    for href in re.findall(r'href="([^"]+)"', page):
        url = urllib.request.urljoin(f"{base_url}/{index}/+simple/{project}/", href.split("#")[0])
        links[url.rsplit("/", 1)[-1]] = url
    return links


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def uv_publish(uv: str, wheel: Path, index_url: str, user: str, password: str) -> subprocess.CompletedProcess:
    """Upload with uv (the legacy upload API devpi speaks), like a user publishing."""
    return subprocess.run(
        [uv, "publish", "--publish-url", index_url, "--username", user, "--password", password, str(wheel)],
        capture_output=True, text=True, env={**os.environ, "UV_NO_CONFIG": "1"}, timeout=120,
    )
