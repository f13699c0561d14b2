"""One outage, one root cause: the first connection-level failure of each endpoint, per run and worker.

A component that refused a connection or timed out is not probed again in the same run: every
probe asks the register first and, when the component's endpoint (``host:port``) is down, reports
that first failure at once instead of waiting out another timeout. Only connection-level failures
count (refused, timed out, no route, a name that does not resolve, a TLS handshake that timed
out); an HTTP 500 or a refused password is an answer, so later probes of that endpoint still run.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from opsverify.durations import format_duration

REFUSED = "connection refused"
UNROUTABLE = "no route to host"
UNRESOLVED = "host name not resolved"
UNROUTABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})
DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "paramiko": 22, "tcp": 0}


def connect_timed_out(limit: timedelta | None) -> str:
    """The phrase for a connection not established in time, naming the timeout."""
    return f"no connection within the {format_duration(limit) + ' ' if limit else ''}connect timeout"


def request_timed_out(limit: timedelta | None) -> str:
    """The phrase for a connected server that did not answer in time, naming the timeout."""
    return f"no answer within the {format_duration(limit) + ' ' if limit else ''}request timeout"


def address(host: str, port: int) -> str:
    """``host:port`` (``[::1]:port`` for an IPv6 literal): the key of a component in the register."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def endpoint(url: str) -> str:
    """``host:port`` of a URL, with its scheme's default port when it names none."""
    parts = urlsplit(url)
    return address((parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme, 0))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or during (urllib3's ``reason`` too), each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        todo += [current.__cause__, current.__context__, reason if isinstance(reason, BaseException) else None]


def connection_failure(exc: BaseException, timed_out: str) -> str | None:
    """What kind of connection-level failure ``exc`` is (``timed_out`` for a timeout), or None when it is none.

    Decided on the operating system's own errors in the exception's chain, as every client library
    keeps them there: a refused connection, a timeout (also of a TLS handshake), an unreachable
    network or host, a name that does not resolve.
    """
    for current in _chain(exc):
        if isinstance(current, ConnectionRefusedError):
            return REFUSED
        if isinstance(current, TimeoutError):
            return timed_out
        if isinstance(current, socket.gaierror):
            return UNRESOLVED
        if isinstance(current, OSError) and current.errno in UNROUTABLE_ERRNOS:
            return UNROUTABLE
    return None


@dataclass(frozen=True)
class Outage:
    """The first connection-level failure of one endpoint: when, on probing which component, and why."""

    component: str
    endpoint: str
    at: datetime
    cause: str

    def note(self) -> str:
        """The sentence every later probe of the endpoint reports instead of probing it again."""
        when = f"{self.at:%H:%M:%S}"
        return f"skipped probing: {self.component} at {self.endpoint} did not answer at {when} ({self.cause})"


class Probed(Protocol):
    """A probe's fact: ``unreachable`` is the connection-level cause when the component never answered."""

    @property
    def unreachable(self) -> str | None: ...


F = TypeVar("F", bound=Probed)


class OutageRegister:
    """The first connection-level failure of each endpoint, for one run and worker (one per pytest session)."""

    def __init__(self, clock: Callable[[], datetime] = datetime.now) -> None:
        self._first: dict[str, Outage] = {}
        self._clock = clock

    def outage(self, endpoint: str) -> Outage | None:
        """The endpoint's first failure, or None while it has not failed."""
        return self._first.get(endpoint)

    def record(self, endpoint: str, component: str, cause: str) -> Outage:
        """Note a connection-level failure; the first one of the endpoint stays the one reported."""
        return self._first.setdefault(endpoint, Outage(component, endpoint, self._clock(), cause))

    def probe(self, endpoint: str, component: str, run: Callable[[], F], down: Callable[[str], F]) -> F:
        """``run()``, unless the endpoint is down already: then ``down(note)``, naming the first failure."""
        known = self.outage(endpoint)
        if known is not None:
            return down(known.note())
        fact = run()
        if fact.unreachable is not None:
            self.record(endpoint, component, fact.unreachable)
        return fact

    def __len__(self) -> int:
        return len(self._first)
