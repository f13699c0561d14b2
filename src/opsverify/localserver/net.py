"""Loopback ports: pick a free one, wait until one opens or closes."""

from __future__ import annotations

import socket
import time

from opsverify.errors import LocalServerError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``127.0.0.1:port`` now (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Return once ``host:port`` accepts connections; raise ``LocalServerError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not port_is_open(host, port):
        if time.monotonic() > deadline:
            raise LocalServerError(f"nothing listens on {host}:{port} after {timeout:g}s: see the component's log")
        time.sleep(0.05)


def wait_port_closed(host: str, port: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until ``host:port`` refuses connections; whether it did."""
    deadline = time.monotonic() + timeout
    while port_is_open(host, port, timeout=0.2):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
