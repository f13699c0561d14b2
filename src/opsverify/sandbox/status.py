"""What runs where: the answer of ``up`` and ``status``, and its text table for the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ComponentStatus:
    """One server of the sandbox."""

    name: str
    running: bool
    address: str
    pid: int | None = None


@dataclass(frozen=True)
class SandboxStatus:
    """Every component of one sandbox; ``created`` is False when its state dir holds none."""

    state_dir: Path
    profile_path: Path
    components: list[ComponentStatus] = field(default_factory=list)
    created: bool = True

    @property
    def all_running(self) -> bool:
        return self.created and bool(self.components) and all(c.running for c in self.components)

    def component(self, name: str) -> ComponentStatus:
        return next(c for c in self.components if c.name == name)

    def render(self) -> str:
        """A small aligned table, or one line saying the sandbox was not created."""
        if not self.created:
            return f"sandbox {self.state_dir}: not created (start it with `opsverify sandbox up`)"
        rows = [("COMPONENT", "STATE", "PID", "ADDRESS")]
        rows += [(c.name, "running" if c.running else "stopped", str(c.pid or "-"), c.address) for c in self.components]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            "  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]]).rstrip()
            for row in rows
        ]
        running = sum(c.running for c in self.components)
        state = "running" if self.all_running else "partly stopped" if running else "stopped"
        return "\n".join([f"sandbox {self.state_dir} is {state}; profile: {self.profile_path}", *lines])
