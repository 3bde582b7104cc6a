"""
HTTP to a port on the host's loopback, from the controller, through pyinfra's
connection to the host.

devpi listens on the host's loopback only. Talking to it from the controller keeps
every secret (root's password for a login, users' password hashes) off the host:
nothing is written there, and no process there gets it in argv or its environment.
Over SSH the request travels in a ``direct-tcpip`` channel of the connection pyinfra
already has (as ``ssh -L`` would; the host's sshd must allow TCP forwarding, macOS's
default); with ``@local`` it is a plain loopback connection.
"""

from __future__ import annotations

import http.client
import json
import socket

from .errors import DeployError


class _ChannelHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket-like object opened by ``open_socket``."""

    def __init__(self, open_socket, host_header: str, timeout: float):
        super().__init__(host_header, timeout=timeout)
        self._open_socket = open_socket

    def connect(self):
        self.sock = self._open_socket()


def _opener(host, address: str, port: int, timeout: float):
    """A function opening a socket-like stream to ``address:port`` as seen from the host."""
    from pyinfra.connectors.local import LocalConnector
    from pyinfra.connectors.ssh import SSHConnector

    connector = host.connector
    if isinstance(connector, LocalConnector):
        return lambda: socket.create_connection((address, port), timeout=timeout)
    if isinstance(connector, SSHConnector):

        def open_channel():
            transport = connector.client.get_transport()
            try:
                channel = transport.open_channel(
                    "direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout
                )
            except Exception as error:  # paramiko's ChannelException, SSHException, ...
                raise OSError(
                    f"could not reach {address}:{port} on {host.name} through SSH ({error}); "
                    "the host's sshd must allow TCP forwarding (AllowTcpForwarding yes or local)",
                ) from None
            channel.settimeout(timeout)
            return channel

        return open_channel
    raise DeployError(
        f"{host.name}: devpi's API is reached through an SSH or @local connection, "
        f"not {type(connector).__name__}",
    )


def json_requester(host, address: str, port: int, timeout: float = 120):
    """``request(method, path, body=None, auth=None) -> (status, answer dict)`` for
    devpi's JSON API on ``address:port`` of ``host``; never raises on HTTP errors."""
    host_header = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return requester(_opener(host, address, port, timeout), host_header, timeout)


def requester(open_socket, host_header: str, timeout: float):
    """The JSON ``request`` function over streams that ``open_socket()`` opens."""

    def request(method: str, path: str, body=None, auth: str | None = None) -> tuple[int, dict]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if auth:
            headers["X-Devpi-Auth"] = auth
        connection = _ChannelHTTPConnection(open_socket, host_header, timeout)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        finally:
            connection.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        return status, answer if isinstance(answer, dict) else {}

    return request
