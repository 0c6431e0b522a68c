"""Ports and URLs: binding, checking that a port is free, picking a free one, and the URL a client should use."""

from __future__ import annotations

import ipaddress
import socket

from comptrust_core import ConfigError

__all__ = ["bind_socket", "check_port_free", "free_port", "url_for"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening); a :class:`ConfigError` if the port is taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc}") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); the port is in use: pick another with --port"
        ) from exc
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`ConfigError` if ``host:port`` cannot be bound now."""
    bind_socket(host, port).close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that was free a moment ago (the OS's pick)."""
    with bind_socket(host, 0) as sock:
        port: int = sock.getsockname()[1]
        return port


def url_for(host: str, port: int) -> str:
    """The base URL for a server bound to ``host``: a wildcard address becomes loopback, IPv6 gets brackets."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}"
