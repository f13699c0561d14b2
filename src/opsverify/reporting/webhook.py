"""The run's outcome as a JSON POST to a webhook (after a failure, or always), with a timeout and retries.

The body (``schema_version`` 1.0): ``run_id``, ``profile``, ``role``, ``started``, ``finished``, ``success``,
``totals`` (checks by outcome), ``failures`` (failed and broken checks: ``nodeid``, ``outcome``, ``runbook``,
``message``, ``component``, ``severity``) and ``reports`` (file name → path in the run folder). A refused
connection, no answer, HTTP 429 or 5xx is tried again 1 s, 2 s, 4 s … (at most 8 s) later; any other refusal is
final. The bearer token goes in the ``Authorization`` header only, never in a message; a message shows the URL as
``shown_url`` does (a token in its path masked).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opsverify.durations import format_duration
from opsverify.profile.reporting import Webhook
from opsverify.redact import MASK, redact_text, redact_url
from opsverify.reporting.evidence import OUTCOMES, EvidenceDoc

PAYLOAD_VERSION = "1.0"
REPORTS = ("summary.html", "summary.md", "report.html", "evidence.json", "junit.xml", "metrics.prom")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 8.0


def payload(doc: EvidenceDoc, run_dir: Path, later: dict[str, str] | None = None) -> dict[str, Any]:
    """The webhook's JSON body for this run: the reports listed are those the run folder holds now, and ``later``
    (name → path: a report still to be written as the session ends, such as pytest-html's)."""
    run = doc.run
    totals = {outcome: sum(1 for c in doc.checks if c.outcome == outcome) for outcome in OUTCOMES}
    failures = [
        {"nodeid": c.nodeid, "outcome": c.outcome, "runbook": c.runbook, "message": redact_text(c.message),
         "component": c.component, "severity": c.severity}
        for c in doc.ordered() if c.outcome in ("failed", "broken")
    ]
    return {
        "schema_version": PAYLOAD_VERSION, "run_id": run.id, "profile": run.profile, "role": run.role,
        "started": run.started.isoformat(), "finished": run.finished.isoformat(), "success": not failures,
        "totals": totals, "failures": failures,
        "reports": {**{name: str(run_dir / name) for name in REPORTS if (run_dir / name).exists()}, **(later or {})},
    }


def shown_url(url: str) -> str:
    """The webhook's URL as a message shows it: redacted, and every path segment after the first masked (a chat
    webhook carries its token in the path: ``https://hooks.example.com/services/***``)."""
    parts = urlsplit(redact_url(url))
    segments = parts.path.strip("/").split("/")
    path = parts.path if len(segments) < 2 else f"/{segments[0]}/{MASK}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class DeliveryError(Exception):
    """The webhook did not take the POST: ``reason`` and ``fix`` as one sentence's parts, never a secret."""

    def __init__(self, reason: str, fix: str, attempts: int) -> None:
        super().__init__(f"{reason} after {attempts} attempt{'s' if attempts != 1 else ''}; {fix}")
        self.reason, self.fix, self.attempts = reason, fix, attempts


def backoff(retry: int) -> float:
    """Seconds before the ``retry``-th further attempt: 1, 2, 4, 8, 8 …"""
    return min(2.0 ** (retry - 1), MAX_BACKOFF)


def post(hook: Webhook, body: dict[str, Any], sleep: Callable[[float], None] = time.sleep) -> int:
    """POST ``body`` as JSON; returns the HTTP status it was taken with, or raises ``DeliveryError``. At most
    ``retries + 1`` attempts of at most ``timeout`` each, plus the backoff between them."""
    import requests

    headers = {"User-Agent": "opsverify"}
    token = hook.secret()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    verify: str | bool = str(hook.ca_file) if hook.ca_file else True
    timeout = hook.timeout.total_seconds()
    attempts = hook.retries + 1
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            sleep(backoff(attempt - 1))
        try:
            response = requests.post(hook.url, json=body, headers=headers, timeout=timeout, verify=verify,
                                     allow_redirects=False)
        except requests.RequestException as exc:
            reason, fix, again = explain(exc, timeout, "reporting.webhook", "token")
        else:
            if response.status_code < 300:
                return response.status_code
            reason, fix = status_reason(response.status_code, "reporting.webhook", "token")
            again = response.status_code in RETRY_STATUS
        if not again or attempt == attempts:
            raise DeliveryError(reason, fix, attempt)  # fixed texts: no URL, header or token in them
    raise AssertionError("unreachable")  # pragma: no cover


def explain(exc: Exception, timeout: float, field: str, credential: str) -> tuple[str, str, bool]:
    """(reason, fix, worth another attempt) for a request that raised ``exc``; no URL, header or secret in it."""
    import requests

    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        reason, fix = status_reason(exc.response.status_code, field, credential)
        return reason, fix, exc.response.status_code in RETRY_STATUS
    if isinstance(exc, requests.exceptions.SSLError):
        return ("TLS verification failed", f"set {field}.ca_file to the CA that signed the server's certificate",
                False)
    if isinstance(exc, requests.Timeout):
        shown = format_duration(timedelta(seconds=timeout))
        return f"no answer within {shown}", f"check that {field}.url is reachable or raise {field}.timeout", True
    if isinstance(exc, requests.ConnectionError):
        refused = "refused" in str(exc).lower()
        reason = "connection refused" if refused else "could not connect"
        return reason, f"start it or correct {field}.url", True
    if isinstance(exc, OSError) and exc.strerror:  # a declared file (CA, password, token) that went away
        return f"{exc.strerror} ({exc.filename})", f"correct {field}", False
    return f"request failed ({type(exc).__name__})", f"correct {field}", False


def status_reason(status: int, field: str, credential: str) -> tuple[str, str]:
    """(reason, fix) for an HTTP error status."""
    if status in (401, 403):
        return f"HTTP {status} (credentials refused)", f"check {field}.{credential}"
    if status == 404:
        return "HTTP 404", f"correct {field}.url (no such path)"
    return f"HTTP {status}", f"check the receiver's log for {field}.url"
