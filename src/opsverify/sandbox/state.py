"""The sandbox's state dir: where each part lives, its ports, and its generated secrets.

``state.json`` records the ports, where PostgreSQL keeps its data and whether the first ``up``
finished (``ready``). Secrets are random, one per file, mode 0600, under ``secrets/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opsverify.errors import SandboxError
from opsverify.localserver.net import free_port

APPS = ("photonic-foundry", "quantum-planner", "quantum-backend")
SPAWNED = (*APPS, "s3")  # processes the sandbox spawns itself: the apps and the S3 server (moto)
COMPONENTS = ("postgres", "replica", "redis", *SPAWNED)
# What the sandbox's data holds, as the checks read it: a sandbox made by an older seed is recreated by `up`.
# 2: issue 11 (simulation_events, the jobs' archive table, jobs within 90 days, log files, maintenance declarations)
SEED_VERSION = 2


@dataclass
class State:
    """What ``state.json`` holds."""

    ports: dict[str, int] = field(default_factory=dict)
    pg_base: str = ""
    pg_as_postgres: bool = False
    created: float = 0.0
    ready: bool = False
    seed: int = 1  # the SEED_VERSION its data was made with (a state.json without it: the first)


@dataclass(frozen=True)
class Layout:
    """Paths inside one state dir."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def profile(self) -> Path:
        return self.root / "profile.yaml"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def default_pg_base(self) -> Path:
        return self.root / "postgres"

    def tmp_pg_base(self) -> Path:
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        return Path("/tmp") / f"opsverify-pg-{digest}"

    def secret_file(self, name: str) -> Path:
        return self.secrets / f"{name}.pass"


def load_state(layout: Layout) -> State | None:
    """The recorded state, or None when the sandbox was never created there."""
    if not layout.state_file.is_file():
        return None
    try:
        state = State(**json.loads(layout.state_file.read_text()))
    except (ValueError, TypeError) as exc:
        raise SandboxError(
            f"{layout.state_file} is unreadable ({exc}): run `opsverify sandbox down --purge` and `up` again"
        ) from None
    for name in COMPONENTS:  # a component newer than this state dir gets a port of its own
        if name not in state.ports:
            state.ports[name] = free_port()
    return state


def save_state(layout: Layout, state: State) -> None:
    """Write ``state.json`` atomically."""
    layout.root.mkdir(parents=True, exist_ok=True)
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")
    tmp.replace(layout.state_file)


def ensure_secret(layout: Layout, name: str) -> str:
    """The secret ``name``, generated on first use into ``secrets/<name>.pass`` (mode 0600)."""
    path = layout.secret_file(name)
    if path.is_file():
        return path.read_text().strip()
    layout.secrets.mkdir(parents=True, exist_ok=True)
    layout.secrets.chmod(0o700)
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value
