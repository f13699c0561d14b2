"""A small real HTTP service: ``/health`` as JSON and ``/metrics`` through prometheus_client.

Run it as ``python -m opsverify.sandbox.app --name quantum-planner --port 8443 [--certfile F --keyfile F]``.
Fault options make a real but faulty server for the self-tests: ``--health-status 500``,
``--health-body-status degraded``, ``--delay 1.5``, ``--omit-metric NAME`` (repeatable),
``--stale 3600`` and ``--error-rate 0.25``. SIGTERM ends it cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from opsverify.errors import LocalServerError, SandboxError
from opsverify.localserver.net import LOOPBACK, wait_for_port
from opsverify.localserver.process import pid_alive, stop_process

__all__ = ["app_command", "main", "start_app", "stop_process"]

VERSIONS = {"photonic-foundry": "1.4.2", "quantum-planner": "2.3.1"}
PREFIXES = {"photonic-foundry": "photonic", "quantum-planner": "quantum"}
HSTS_MAX_AGE = 365 * 24 * 3600  # one year: above the 180 days tls.hsts_min_age asks for


class Metrics:
    """The service's metric families in a private registry; some are left out on request."""

    def __init__(self, options: argparse.Namespace) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.stale = float(options.stale)
        omit = {n.removesuffix("_total") for n in options.omit_metric}
        prefix = PREFIXES.get(options.name, "backend")

        def wanted(name: str) -> bool:
            return name.removesuffix("_total") not in omit

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, registry=self.registry) if wanted(name) else None

        error_rate = gauge("error_rate", "Share of requests that failed over the last minute")
        if error_rate is not None:
            error_rate.set(options.error_rate)
        self.memory = gauge("memory_usage", "Resident memory of the service in bytes")
        self.updated = gauge(f"{prefix}_last_update_timestamp_seconds", "Unix time of the last metrics update")
        rng = random.Random(options.name)
        if prefix == "quantum":
            if wanted("quantum_solve_duration"):
                solve = Histogram("quantum_solve_duration", "Solver wall time in seconds", registry=self.registry)
                for _ in range(20):
                    solve.observe(rng.uniform(0.05, 4.0))
            if wanted("quantum_jobs_total"):
                Counter("quantum_jobs_total", "Optimization jobs accepted", registry=self.registry).inc(1342)
        elif prefix == "photonic":
            if wanted("photonic_simulations_total"):
                Counter("photonic_simulations_total", "Simulations run", registry=self.registry).inc(5000)
            if wanted("photonic_simulation_duration_seconds"):
                sim = Histogram("photonic_simulation_duration_seconds", "Simulation time", registry=self.registry)
                for _ in range(20):
                    sim.observe(rng.uniform(0.5, 30.0))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        if self.memory is not None:
            self.memory.set(_rss_bytes())
        if self.updated is not None:
            self.updated.set(time.time() - self.stale)
        return generate_latest(self.registry)


def _rss_bytes() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return float(pages * os.sysconf("SC_PAGE_SIZE"))


def _handler(options: argparse.Namespace, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{options.name}/{VERSIONS.get(options.name, '0.9.0')}"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                time.sleep(options.delay)
                self._health()
            elif path == "/metrics":
                self._send(200, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._send(404, b'{"error": "not found"}\n', "application/json")

        def _health(self) -> None:
            status = options.health_body_status or ("healthy" if options.health_status < 400 else "unhealthy")
            body = {
                "status": status,
                "version": VERSIONS.get(options.name, "0.9.0"),
                "service": options.name,
                "checks": {"database": "ok", "cache": "ok"} if status == "healthy" else {"database": status},
            }
            self._send(options.health_status, json.dumps(body).encode() + b"\n", "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if options.certfile:  # HTTPS only: browsers must never fall back to http (QP-30, checks/security)
                self.send_header("Strict-Transport-Security", f"max-age={HSTS_MAX_AGE}")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.log_date_time_string()} {options.name} {format % args}\n")

    return Handler


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opsverify.sandbox.app", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--certfile", type=Path)
    parser.add_argument("--keyfile", type=Path)
    parser.add_argument("--health-status", type=int, default=200)
    parser.add_argument("--health-body-status", default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--omit-metric", action="append", default=[])
    parser.add_argument("--stale", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.01)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    options = _parser().parse_args(argv)
    server = ThreadingHTTPServer((options.host, options.port), _handler(options, Metrics(options)))
    server.daemon_threads = True
    if options.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # the sandbox refuses SSLv3/TLS 1.0/1.1 (QP-30)
        context.load_cert_chain(options.certfile, options.keyfile)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    sys.stderr.write(f"{options.name} listening on {options.host}:{options.port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


def app_command(name: str, port: int, *extra_args: str, tls: tuple[Path, Path] | None = None) -> list[str]:
    """The argv that runs one app."""
    args = [sys.executable, "-m", "opsverify.sandbox.app", "--name", name, "--port", str(port)]
    if tls is not None:
        args += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
    return [*args, *extra_args]


def app_env() -> dict[str, str]:
    """The environment of an app: this one, with this package importable."""
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def start_app(
    name: str, port: int, log: Path, *extra_args: str, tls: tuple[Path, Path] | None = None
) -> subprocess.Popen[bytes]:
    """Start an app in its own session, logging to ``log``; return once its port accepts connections."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            app_command(name, port, *extra_args, tls=tls),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=app_env(),
            start_new_session=True,
        )
    try:
        await_app(proc.pid, name, port, log)
    except LocalServerError:
        stop_process(proc, timeout=5)
        raise
    return proc


def await_app(pid: int, name: str, port: int, log: Path, timeout: float = 10) -> None:
    """Wait until the app's port opens; fail early, quoting its log, when the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise SandboxError(f"app {name} exited at start ({' '.join(tail) or 'no output'}): see {log}")
        try:
            wait_for_port(LOOPBACK, port, timeout=0.5)
            return
        except LocalServerError:
            continue
    raise SandboxError(f"app {name} does not listen on {LOOPBACK}:{port} after {timeout:g}s: see {log}")


if __name__ == "__main__":
    raise SystemExit(main())
