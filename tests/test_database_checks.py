"""checks/health/test_postgres.py against a real slow path: the database behind a TCP relay that holds
the server's first answer for a while, as a congested link or a server slow to accept sessions does."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import LOOPBACK, free_port
from opsverify.profile.environment import Profile

Run = Callable[..., Any]
Variant = Callable[..., Path]
BUDGET = "test_postgres.py::test_database_connects_within_budget[photonic_foundry]"
SESSION = "test_postgres.py::test_database_accepts_a_session[photonic_foundry]"


class SlowRelay:
    """Forwards 127.0.0.1:port to the upstream; the upstream's first bytes on each connection wait ``delay``."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.upstream, self.delay, self.port = upstream, delay, free_port()
        self.listener = socket.create_server((LOOPBACK, self.port))
        self.listener.settimeout(0.5)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            server = socket.create_connection((LOOPBACK, self.upstream), timeout=10)
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.delay), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, first_delay: float) -> None:
        source.settimeout(30)
        try:
            while chunk := source.recv(65536):
                time.sleep(first_delay)
                first_delay = 0.0
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                sock.close()

    def close(self) -> None:
        self.running = False
        self.listener.close()


@pytest.fixture
def slow_database(sandbox: Profile) -> Iterator[SlowRelay]:
    relay = SlowRelay(sandbox.databases[0].port, delay=2.5)
    yield relay
    relay.close()


def only_first_database(port: int) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["databases"] = [{**data["databases"][0], "port": port}]

    return mutate


def test_slow_session_fails_only_the_connect_budget(
    run_checks: Run, profile_variant: Variant, slow_database: SlowRelay
) -> None:
    run = run_checks(profile_variant(only_first_database(slow_database.port)), "health/test_postgres.py")
    assert run.failed() == {BUDGET}
    assert run.outcome(SESSION) == "passed"  # slow, but it answered: no outage
    message = run.message(BUDGET)
    assert message.startswith("database photonic_foundry took ")
    assert message.endswith(f" to open a session (budget 2s) at 127.0.0.1:{slow_database.port}/photonic_foundry")


def test_direct_session_passes_the_connect_budget(run_checks: Run, profile_variant: Variant, sandbox: Profile) -> None:
    run = run_checks(profile_variant(only_first_database(sandbox.databases[0].port)), "health/test_postgres.py")
    assert run.outcome(BUDGET) == "passed"
    assert run.checks[BUDGET]["evidence"]["budget"] == "2s"
