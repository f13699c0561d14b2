"""HTTP probes: the health endpoint (PF-01, QP-01) and reachability of URLs (QP-04)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.profile.model import HttpService

if TYPE_CHECKING:
    import requests


@dataclass(frozen=True)
class HttpReply:
    """What one GET returned: status, latency and body, or why there was no answer."""

    url: str
    status_code: int | None
    latency: timedelta
    text: str = ""
    error: str | None = None

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


def _describe(exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS handshake failed ({_root_cause(exc)})"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer before the request timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"connection failed ({_root_cause(exc)})"
    return f"{type(exc).__name__}: {exc}"


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
    return text.strip().rstrip(")") or type(exc).__name__


def http_get(
    url: str,
    *,
    connect_timeout: timedelta,
    read_timeout: timedelta,
    verify: bool | str = True,
    session: requests.Session | None = None,
) -> HttpReply:
    """GET ``url`` once (no redirects followed past 5), timing it; never raises for network trouble."""
    import requests

    getter = session or requests
    started = time.perf_counter()
    try:
        response = getter.get(
            url,
            timeout=(connect_timeout.total_seconds(), read_timeout.total_seconds()),
            verify=verify,
            headers={"User-Agent": "opsverify", "Accept": "application/json, text/plain"},
        )
    except requests.RequestException as exc:
        return HttpReply(url, None, timedelta(seconds=time.perf_counter() - started), error=_describe(exc))
    latency = timedelta(seconds=time.perf_counter() - started)
    return HttpReply(url, response.status_code, latency, response.text)


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
