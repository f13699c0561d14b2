"""The embedded sandbox: a miniature of Photonic Foundry and Quantum Planner on loopback, real servers.

``up(state_dir)`` starts PostgreSQL 15, Redis and three small HTTP apps (one behind TLS), seeds
them, runs the runbooks' backup jobs and writes ``state_dir/profile.yaml``; ``down`` stops all of
it and verifies nothing is left; ``status`` says what runs where. See ``control`` for the details.
"""

from __future__ import annotations

from pathlib import Path

from opsverify.sandbox.status import ComponentStatus, SandboxStatus

__all__ = ["ComponentStatus", "SandboxStatus", "down", "status", "up"]


def up(state_dir: Path) -> SandboxStatus:
    """Start the sandbox (idempotent): create it the first time, restart what stopped, else do nothing."""
    from opsverify.sandbox import control

    return control.up(state_dir)


def down(state_dir: Path, purge: bool = False) -> None:
    """Stop everything and verify no process and no port is left; ``purge`` also deletes the state."""
    from opsverify.sandbox import control

    control.down(state_dir, purge=purge)


def status(state_dir: Path) -> SandboxStatus:
    """What runs where; never raises for a missing state dir (reports "not created")."""
    from opsverify.sandbox import control

    return control.status(state_dir)
