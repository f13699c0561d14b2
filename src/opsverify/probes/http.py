"""HTTP probes: the health endpoint (PF-01, QP-01) and reachability of URLs (QP-04)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.probes.outage import connect_timed_out, connection_failure, request_timed_out
from opsverify.profile.model import HttpService
from opsverify.redact import redact_in, redact_url, redact_urls

if TYPE_CHECKING:
    import requests


HEADERS = {"User-Agent": "opsverify", "Accept": "application/json, text/plain", "Accept-Encoding": "identity"}


@dataclass(frozen=True)
class HttpReply:
    """What one GET returned: status, latency and body, or why there was no answer."""

    url: str
    status_code: int | None
    latency: timedelta
    text: str = ""
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def is_answered(self) -> bool:
        return self.error is None and self.status_code is not None

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        import json

        try:
            return json.loads(self.text)
        except ValueError:
            return None


@dataclass(frozen=True)
class HealthReply:
    """The health endpoint's answer and the status string its JSON body reports."""

    reply: HttpReply
    body_status: str | None
    version: str | None

    @property
    def unreachable(self) -> str | None:
        return self.reply.unreachable


class _Overdue(Exception):
    """The body was still arriving when the request's deadline passed."""


def _describe(exc: Exception, connect: timedelta, read: timedelta) -> tuple[str, str | None]:
    """One phrase for a failed GET, and the same phrase again when it is a connection-level failure."""
    import requests

    timed_out = connect_timed_out(connect) if isinstance(exc, requests.exceptions.ConnectTimeout) else None
    cause = connection_failure(exc, timed_out or request_timed_out(read))
    if cause is not None:
        return cause, cause
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS handshake failed ({_root_cause(exc)})", None
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"connection failed ({_root_cause(exc)})", None
    return f"{type(exc).__name__}: {exc}", None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
    return text.strip().rstrip(")") or type(exc).__name__


def _read_body(response: requests.Response, deadline: float) -> str:
    """The whole body, one socket read at a time, unless it is still arriving at ``deadline`` (a trickle)."""
    read = getattr(response.raw, "read1", None) or response.raw.read  # read1: urllib3 2.1 and later
    chunks = []
    while chunk := read(64 * 1024):
        chunks.append(chunk)
        if time.perf_counter() > deadline:
            raise _Overdue
    return b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")


def http_get(
    url: str,
    *,
    connect_timeout: timedelta,
    read_timeout: timedelta,
    verify: bool | str = True,
    session: requests.Session | None = None,
) -> HttpReply:
    """GET ``url`` once, timing it; never raises for network trouble.

    The reply shows ``url`` redacted (its password and query values masked), in its error too.

    No retries (requests' default adapter makes none), and the whole exchange, body included, ends
    by ``connect_timeout + read_timeout``.
    """
    import requests
    import urllib3

    getter = session or requests
    started = time.perf_counter()
    deadline = started + connect_timeout.total_seconds() + read_timeout.total_seconds()
    try:
        with getter.get(
            url,
            timeout=(connect_timeout.total_seconds(), read_timeout.total_seconds()),
            verify=verify,
            headers=HEADERS,
            stream=True,
        ) as response:
            text = _read_body(response, deadline)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        error, cause = _describe(exc, connect_timeout, read_timeout)
    except _Overdue:
        error = cause = request_timed_out(read_timeout)
    else:
        return HttpReply(redact_url(url), response.status_code, timedelta(seconds=time.perf_counter() - started), text)
    return HttpReply(redact_url(url), None, timedelta(seconds=time.perf_counter() - started),
                     error=redact_urls(redact_in(error, url)), unreachable=cause)


def tls_verify(service: HttpService) -> bool | str:
    """What ``requests`` should verify the server certificate against."""
    return str(service.ca_file) if service.ca_file else True


def probe_health(service: HttpService, connect_timeout: timedelta, read_timeout: timedelta) -> HealthReply:
    """GET the service's health endpoint and read ``status``/``version`` from a JSON body."""
    reply = http_get(
        service.url + service.health_path,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        verify=tls_verify(service),
    )
    body = reply.json() if reply.is_answered else None
    status = version = None
    if isinstance(body, dict):
        status = str(body["status"]) if "status" in body else None
        version = str(body["version"]) if "version" in body else None
    elif reply.is_answered and reply.text.strip():
        status = reply.text.strip().splitlines()[0][:40]
    return HealthReply(reply, status, version)
