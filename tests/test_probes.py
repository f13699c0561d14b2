"""Probes and evidence on their own: facts from real sockets and real exposition text."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from opsverify.probes.http import HttpReply, http_get
from opsverify.probes.metrics import parse_exposition
from opsverify.probes.network import Reachability, probe_reachability, tcp_connect
from opsverify.probes.outage import OutageRegister
from opsverify.reporting.evidence import Collector, absorb, read_evidence, write_evidence

EXPOSITION = """\
# HELP error_rate Share of failed requests
# TYPE error_rate gauge
error_rate{route="/solve"} 0.01
error_rate{route="/plan"} 0.04
# TYPE quantum_jobs counter
quantum_jobs_total 12
# TYPE quantum_solve_duration histogram
quantum_solve_duration_bucket{le="1.0"} 3
quantum_solve_duration_bucket{le="+Inf"} 4
quantum_solve_duration_sum 2.5
quantum_solve_duration_count 4
"""


def reply(text: str) -> HttpReply:
    return HttpReply("http://x/metrics", 200, timedelta(milliseconds=3), text)


def test_exposition_gives_families_samples_and_largest_value() -> None:
    snapshot = parse_exposition(reply(EXPOSITION))
    assert snapshot.error is None
    assert snapshot.has("quantum_solve_duration")
    assert snapshot.has("quantum_jobs_total")
    assert snapshot.has("quantum_jobs")
    assert not snapshot.has("memory_usage")
    assert snapshot.value("error_rate") == 0.04


def test_garbage_exposition_is_an_error_fact() -> None:
    snapshot = parse_exposition(reply("error_rate{ 1 2 3\n"))
    assert snapshot.error is not None
    assert snapshot.error.startswith("exposition text does not parse")


def test_closed_port_is_refused_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = tcp_connect("127.0.0.1", port, timedelta(seconds=2))
    assert not result.is_reachable
    assert result.error == result.unreachable == "connection refused"
    assert result.latency < timedelta(seconds=1)


def test_listening_port_is_reachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        result = probe_reachability(f"tcp://127.0.0.1:{sock.getsockname()[1]}", timedelta(seconds=2))
    assert result.is_reachable


@pytest.fixture
def trickling_port() -> Iterator[int]:
    """A server that sends its headers at once, then one byte of the body every 0.2 s (a hung backend)."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(timeout=5)


def test_trickling_body_ends_at_connect_plus_request_timeout(trickling_port: int) -> None:
    url = f"http://127.0.0.1:{trickling_port}/"
    reply = http_get(url, connect_timeout=timedelta(seconds=0.5), read_timeout=timedelta(seconds=1))
    assert reply.error == reply.unreachable == "no answer within the 1s request timeout"
    assert reply.latency < timedelta(seconds=1.5 + 1)


def test_the_first_connection_failure_of_an_endpoint_is_the_one_reported() -> None:
    register = OutageRegister(clock=lambda: datetime(2025, 8, 2, 10, 2, 3))

    def fact(error: str | None, unreachable: str | None = None) -> Callable[[], Reachability]:
        return lambda: Reachability("127.0.0.1:8080", timedelta(0), error, unreachable)

    def skipped_fact(note: str) -> Reachability:
        return fact(note)()

    assert register.probe("127.0.0.1:8080", "api", fact("HTTP 500"), skipped_fact).error == "HTTP 500"
    assert register.outage("127.0.0.1:8080") is None  # an answer, however bad, is no outage
    refused = register.probe("127.0.0.1:8080", "api", fact("connection refused", "connection refused"), skipped_fact)
    assert refused.error == "connection refused"
    register.record("127.0.0.1:8080", "metrics", "no route to host")  # not the first: ignored
    later = register.probe("127.0.0.1:8080", "metrics", fact(None), skipped_fact)
    assert later.error == "skipped probing: api at 127.0.0.1:8080 did not answer at 10:02:03 (connection refused)"


def test_evidence_splits_measurements_from_thresholds_and_validates(tmp_path: Path) -> None:
    collector = Collector("sandbox", "sandbox")
    ok = collector.record("checks/a.py::test_ok[api]")
    absorb(ok, [("runbook", "PF-01"), ("markers", "daily health"), ("component", "api"),
                ("evidence.latency", "12ms"), ("evidence.latency_budget", "500ms"), ("metric.latency_seconds", 0.012)])
    bad = collector.record("checks/a.py::test_bad")
    bad.outcome, bad.message = "failed", "api health took 2s (budget 500ms): http://x/health"
    path = write_evidence(tmp_path, collector.document(1))
    doc = read_evidence(path)
    assert [c.nodeid for c in doc.ordered()] == ["checks/a.py::test_bad", "checks/a.py::test_ok[api]"]
    first = doc.checks[0]
    assert (first.measured, first.thresholds, first.metrics) == ({"latency": "12ms"}, {"latency_budget": "500ms"},
                                                                 {"latency_seconds": 0.012})
    assert (first.markers, first.component, doc.run.totals) == (["daily", "health"], "api", {"passed": 1, "failed": 1})
