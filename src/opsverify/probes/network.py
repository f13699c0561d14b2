"""Reachability of declared dependencies (QP-04): a TCP connect or an HTTP GET, timed."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from opsverify.probes.http import http_get


@dataclass(frozen=True)
class Reachability:
    """Whether an address answered, how fast, and what went wrong otherwise."""

    address: str
    latency: timedelta
    error: str | None = None

    @property
    def is_reachable(self) -> bool:
        return self.error is None


def tcp_connect(host: str, port: int, timeout: timedelta) -> Reachability:
    """Open and close one TCP connection."""
    started = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout.total_seconds()):
            pass
    except TimeoutError:
        return Reachability(f"{host}:{port}", timeout, "connection timed out")
    except OSError as exc:
        elapsed = timedelta(seconds=time.perf_counter() - started)
        return Reachability(f"{host}:{port}", elapsed, exc.strerror or str(exc))
    return Reachability(f"{host}:{port}", timedelta(seconds=time.perf_counter() - started))


def probe_reachability(url: str, timeout: timedelta) -> Reachability:
    """``tcp://host:port`` connects; ``http(s)://`` must answer below HTTP 500."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        return tcp_connect(parts.hostname or "", parts.port or 0, timeout)
    reply = http_get(url, connect_timeout=timeout, read_timeout=timeout)
    if not reply.is_answered:
        return Reachability(url, reply.latency, reply.error)
    if reply.status_code is not None and reply.status_code >= 500:
        return Reachability(url, reply.latency, f"HTTP {reply.status_code}")
    return Reachability(url, reply.latency)
