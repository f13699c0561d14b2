"""Reachability of declared dependencies (QP-04) and of ssh hosts: a TCP connect or an HTTP GET, timed.

An HTTP dependency is reachable when it answers 2xx/3xx, or a status its profile accepts (a 401 where
the health URL needs authentication): a 404 or a 403 is a wrong URL or a refusal, not \"up\".
"""

from __future__ import annotations

import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from opsverify.probes.http import http_get
from opsverify.probes.outage import address, connect_timed_out, connection_failure, request_timed_out


@dataclass(frozen=True)
class Reachability:
    """Whether an address answered, how fast, and what went wrong otherwise."""

    address: str
    latency: timedelta
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage
    status_code: int | None = None  # an http(s) answer's status; it is the error when it was not accepted

    @property
    def is_reachable(self) -> bool:
        return self.error is None


def _failed(where: str, started: float, exc: OSError, timed_out: str) -> Reachability:
    cause = connection_failure(exc, timed_out)
    elapsed = timedelta(seconds=time.perf_counter() - started)
    return Reachability(where, elapsed, cause or exc.strerror or str(exc), cause)


def tcp_connect(host: str, port: int, timeout: timedelta) -> Reachability:
    """Open and close one TCP connection."""
    started = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout.total_seconds()):
            pass
    except OSError as exc:
        return _failed(address(host, port), started, exc, connect_timed_out(timeout))
    return Reachability(address(host, port), timedelta(seconds=time.perf_counter() - started))


def ssh_greeting(host: str, port: int, connect: timedelta, request: timedelta) -> Reachability:
    """Connect and read the server's ``SSH-…`` identification line (a frozen sshd accepts, never greets)."""
    started = time.perf_counter()
    timed_out = connect_timed_out(connect)
    try:
        with socket.create_connection((host, port), timeout=connect.total_seconds()) as sock:
            timed_out = request_timed_out(request)
            sock.settimeout(request.total_seconds())
            greeting = sock.recv(256)
    except OSError as exc:
        return _failed(address(host, port), started, exc, timed_out)
    elapsed = timedelta(seconds=time.perf_counter() - started)
    if not greeting.startswith(b"SSH-"):
        return Reachability(address(host, port), elapsed, f"answered {greeting[:40]!r}, not an SSH greeting")
    return Reachability(address(host, port), elapsed)


def probe_reachability(url: str, timeout: timedelta, accept: Collection[int] = ()) -> Reachability:
    """``tcp://host:port`` connects; ``http(s)://`` answers 2xx/3xx (redirects followed) or a status in ``accept``.

    The result shows the URL redacted (``redact_url``): a token in it never reaches a report.
    """
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        return tcp_connect(parts.hostname or "", parts.port or 0, timeout)
    reply = http_get(url, connect_timeout=timeout, read_timeout=timeout)
    if not reply.is_answered:
        return Reachability(reply.url, reply.latency, reply.error, reply.unreachable)
    code = reply.status_code
    if code is not None and not 200 <= code < 400 and code not in accept:
        return Reachability(reply.url, reply.latency, f"HTTP {code}", status_code=code)
    return Reachability(reply.url, reply.latency, status_code=code)
