"""Evidence per check: outcome, one-line message, runbook IDs, measured value vs threshold.

Written as ``evidence.json`` (for auditors and tooling) and ``summary.txt`` (for people).
Only what checks record goes in: names, measurements and thresholds, never credentials.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import opsverify

EVIDENCE_PREFIX = "evidence."


@dataclass
class CheckRecord:
    """One check's result as the report states it."""

    id: str
    outcome: str = "passed"
    message: str = ""
    duration_s: float = 0.0
    runbook: list[str] = field(default_factory=list)
    cadence: list[str] = field(default_factory=list)
    domain: list[str] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)

    def absorb(self, properties: list[tuple[str, object]]) -> None:
        """Take the labels and measurements a check put in its user properties."""
        for key, value in properties:
            if key in ("runbook", "cadence", "domain"):
                setattr(self, key, str(value).split())
            elif key.startswith(EVIDENCE_PREFIX):
                self.evidence[key.removeprefix(EVIDENCE_PREFIX)] = str(value)


@dataclass
class Evidence:
    """All checks of one run, with the run's context."""

    profile: str
    role: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    checks: dict[str, CheckRecord] = field(default_factory=dict)

    def record(self, nodeid: str) -> CheckRecord:
        return self.checks.setdefault(nodeid, CheckRecord(nodeid))

    def totals(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for check in self.checks.values():
            counts[check.outcome] = counts.get(check.outcome, 0) + 1
        return counts

    def as_json(self) -> dict[str, Any]:
        return {
            "run": {
                "profile": self.profile,
                "role": self.role,
                "started": self.started.isoformat(timespec="seconds"),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "opsverify": opsverify.__version__,
                "host": platform.node(),
                "totals": self.totals(),
            },
            "checks": [asdict(c) for c in self.checks.values()],
        }

    def write(self, run_dir: Path) -> None:
        (run_dir / "evidence.json").write_text(json.dumps(self.as_json(), indent=2) + "\n")
        (run_dir / "summary.txt").write_text(self.summary())

    def summary(self) -> str:
        totals = ", ".join(f"{n} {k}" for k, n in sorted(self.totals().items())) or "no checks ran"
        lines = [f"opsverify run against profile {self.profile} ({self.role}): {totals}"]
        for check in self.checks.values():
            if check.outcome in ("failed", "error"):
                ids = f" [{' '.join(check.runbook)}]" if check.runbook else ""
                lines.append(f"{check.outcome.upper()} {check.id}{ids}: {check.message}")
        return "\n".join(lines) + "\n"
