"""A scanner's JSON report as typed findings: read size-capped, parsed per tool, judged against a threshold.

``read_report(tool, path)`` returns a ``ScanReport`` or raises ``ReportError`` with one sentence naming
the file, what is wrong with it and what to do. Severities are the tools' own words (trivy: UNKNOWN to
CRITICAL, bandit: LOW to HIGH). A finding whose tool gives no severity (pip-audit always, safety without
an API key, trivy's UNKNOWN) is ``None`` and counts as at or above any threshold: an unrated
vulnerability is not a harmless one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Tool = Literal["trivy", "bandit", "pip-audit", "safety"]
RANK = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
MAX_REPORT_BYTES = 64 * 1024 * 1024  # a bigger "report" is something else (a log, an image): refused unread


class ReportError(Exception):
    """A report that cannot be read or is not the tool's JSON; the message is one sentence."""


@dataclass(frozen=True)
class Finding:
    """One finding: its ID (CVE-…, B602, PYSEC-…), severity (None: unrated), where (package or file:line), title."""

    id: str
    severity: str | None
    where: str
    title: str = ""
    aliases: tuple[str, ...] = ()  # other IDs of the same finding (pip-audit's CVE aliases, safety's CVE)

    def at_or_above(self, threshold: str) -> bool:
        """True when rated at or above ``threshold``, or unrated."""
        rank = RANK.get((self.severity or "").upper())
        return rank is None or rank >= RANK[threshold]

    def ignored(self, ignore: Iterable[str]) -> bool:
        accepted = {i.upper() for i in ignore}
        return self.id.upper() in accepted or any(a.upper() in accepted for a in self.aliases)

    def describe(self) -> str:
        """``CVE-2023-1 (openssl 3.0.1, CRITICAL)``."""
        return f"{self.id} ({self.where}, {self.severity or 'unrated'})"


@dataclass(frozen=True)
class Skipped:
    """What a scan did not cover: a file bandit could not parse, a dependency pip-audit could not audit; why."""

    where: str
    reason: str

    def describe(self) -> str:
        """``app/broken.py (syntax error while parsing AST from file)``."""
        return f"{self.where} ({self.reason})" if self.reason else self.where


@dataclass(frozen=True)
class ScanReport:
    """A parsed report: the tool, the file, when the tool says it ran (None: it does not say), the findings."""

    tool: str
    path: Path
    generated: datetime | None
    modified: datetime
    findings: tuple[Finding, ...]
    skipped: tuple[Skipped, ...] = ()  # not scanned (bandit's errors[]) or not audited (pip-audit's skip_reason)

    @property
    def time(self) -> datetime:
        """When the scan ran: the report's own timestamp, else the file's modification time."""
        return self.generated or self.modified

    @property
    def time_from(self) -> str:
        return "report timestamp" if self.generated else "file mtime"

    def blocking(self, fail_at: str, ignore: Iterable[str] = ()) -> list[Finding]:
        """The findings at or above ``fail_at`` not in ``ignore``, most severe first."""
        ignore = list(ignore)
        found = [f for f in self.findings if f.at_or_above(fail_at) and not f.ignored(ignore)]
        return sorted(found, key=lambda f: -RANK.get((f.severity or "").upper(), 5))

    def not_covered(self, ignore: Iterable[str] = ()) -> list[Skipped]:
        """What the scan skipped, less what ``ignore`` names (case-insensitively: a package name, a file)."""
        accepted = {i.upper() for i in ignore}
        return [s for s in self.skipped if s.where.upper() not in accepted]


def modified_at(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def load_json(path: Path) -> Any:
    """The file's JSON; a missing, oversized, unreadable or invalid file raises ``ReportError``."""
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ReportError(
                f"{path} is {size / 2**20:.0f} MiB, over the {MAX_REPORT_BYTES // 2**20} MiB a scanner report may be: "
                "point the pattern at the JSON reports only"
            )
        with path.open("rb") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno} column {exc.colno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ReportError(f"{path} is not valid JSON{where}: the scan wrote a truncated or non-JSON report") from exc


def parse_time(text: object) -> datetime | None:
    """An ISO-8601 or ``YYYY-MM-DD HH:MM:SS`` timestamp; a naive one is local time (safety writes local time)."""
    if not isinstance(text, str) or not text:
        return None
    head, dot, rest = text.replace("Z", "+00:00").partition(".")
    if dot:  # trivy writes nanoseconds: keep microseconds
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    else:
        text = head
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC)


def read_report(tool: Tool, path: Path) -> ScanReport:
    """Parse ``path`` as ``tool``'s JSON report (``ReportError`` when it is not one)."""
    from opsverify.scanners.formats import PARSERS

    data = load_json(path)
    generated, findings, skipped = PARSERS[tool](data, path)
    return ScanReport(tool, path, generated, modified_at(path), tuple(findings), tuple(skipped))


def newest_file(directory: Path, pattern: str) -> Path | None:
    """The most recently written file in ``directory`` matching ``pattern`` (``ReportError`` if unlistable)."""
    try:
        files = [p for p in directory.glob(pattern) if p.is_file()]
    except OSError as exc:
        raise ReportError(f"cannot list {directory}: {exc.strerror or exc}") from exc
    if not files and not directory.is_dir():
        raise ReportError(f"report directory {directory} does not exist: fix the path or run the scan")
    if not files and not os.access(directory, os.R_OK | os.X_OK):
        raise ReportError(f"report directory {directory} is not readable: give the user running opsverify read access")
    return max(files, key=lambda p: (os.stat(p).st_mtime, p.name), default=None)
