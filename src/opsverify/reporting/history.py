"""The run history: every run's evidence appended to a store (SQLite by default, PostgreSQL when declared).

Interface only so far (issue 12 builds the stores): the summary's charts, ``opsverify history`` and the
growth checks read ``series``; the controller appends once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from opsverify.profile.reporting import History
from opsverify.reporting.evidence import EvidenceDoc


@dataclass(frozen=True)
class Point:
    """One recorded value of a metric: which run, when (the run's start), which check and component."""

    run_id: str
    time: datetime
    value: float
    nodeid: str
    component: str | None


@dataclass(frozen=True)
class RunRow:
    """One recorded run, as ``opsverify history`` lists it."""

    run_id: str
    started: datetime
    finished: datetime
    profile: str
    role: str
    selection: str
    exit_status: int | None
    totals: dict[str, int] = field(default_factory=dict)


class HistoryStore(Protocol):
    """What every store offers."""

    where: str  # shown to people: the SQLite path, or user@host:port/dbname (never a password)

    def append(self, doc: EvidenceDoc) -> None:
        """Add one run (its checks and metrics), then apply the retention."""

    def runs(self, limit: int = 20, profile: str | None = None) -> list[RunRow]:
        """The newest runs first."""

    def series(
        self, metric: str, *, profile: str | None = None, since: datetime | None = None
    ) -> list[Point]:
        """Every recorded value of ``metric`` (oldest first), over all checks and components."""

    def close(self) -> None: ...


def default_sqlite(reports_root: Path) -> Path:
    """Where the SQLite history lives when the profile names none: beside the run folders."""
    return reports_root / "history.sqlite"


def open_history(history: History, reports_root: Path, timeout_s: float) -> HistoryStore:
    """The declared store (created on first use), bounded by ``timeout_s`` for every statement."""
    raise NotImplementedError("the history stores are built in issue 12")
