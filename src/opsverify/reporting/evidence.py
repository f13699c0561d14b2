"""Evidence of one run: its context and, per check, outcome, runbook IDs, measured values, thresholds, message.

Written as ``evidence.json``; its JSON Schema (``opsverify evidence schema``, shipped as
``docs/evidence.schema.json``) is versioned by ``schema_version``: a reader refuses a major version it
does not know. Only what checks record goes in (names, measurements, thresholds), never credentials;
the reporting plugin masks the profile's secret values in every message and recorded value before they get here.

Outcomes, as Allure distinguishes them: ``passed``; ``failed`` (an expectation about the environment
did not hold: ``expect``/``fail``/``assert``); ``broken`` (any other exception: the check or its
fixture could not judge); ``skipped``; ``waived`` (a failure accepted by an unexpired waiver).
"""

from __future__ import annotations

import json
import os
import platform
import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import opsverify
from opsverify.errors import OpsverifyError

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://opsverify.dev/schemas/evidence/1.0/evidence.schema.json"
Outcome = Literal["passed", "failed", "broken", "skipped", "waived"]
OUTCOMES: tuple[Outcome, ...] = ("failed", "broken", "waived", "skipped", "passed")  # the order a summary shows
EVIDENCE_PREFIX = "evidence."
METRIC_PREFIX = "metric."
# A recorded key is a threshold (what was expected) rather than a measurement when its name says so.
THRESHOLD = re.compile(
    r"^(max|min|limit)_|_(objective|budget|limit|threshold|max|min|max_age)$|^(rpo|rto|budget|limit|expected"
    r"|retention|schedule|max_age|threshold|keep)$"
)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WaiverNote(_Doc):
    """The waiver that matched a check, and what became of it."""

    check: str = Field(description="the waiver's node id or glob, as the profile writes it")
    reason: str
    owner: str
    ticket: str
    expires: date
    state: Literal["applied", "not-needed", "expired"] = Field(
        description="applied: the failure is reported waived; not-needed: the check passed, the waiver can go; "
        "expired: the check counts again"
    )


class CheckResult(_Doc):
    """One check's result as every report states it."""

    nodeid: str = Field(description="pytest node id, e.g. checks/backup/test_backup_size.py::test_x[param]")
    component: str | None = Field(default=None, description="the parameter id (the profile's component), if any")
    runbook: list[str] = Field(default_factory=list, description="procedures the check verifies, e.g. PF-04")
    markers: list[str] = Field(default_factory=list, description="cadence, domain and dr markers")
    severity: str = Field(default="normal", description="Allure severity, from the domain: blocker, critical, normal")
    outcome: Outcome = "passed"
    duration_s: float = Field(default=0.0, ge=0)
    message: str = Field(default="", description="the one-line failure, skip or waiver reason")
    measured: dict[str, str] = Field(default_factory=dict, description="what the check measured")
    thresholds: dict[str, str] = Field(default_factory=dict, description="what it compared the measurement with")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="numeric measurements (exported as opsverify_<name> gauges, kept in history)"
    )
    waiver: WaiverNote | None = None
    notes: list[str] = Field(default_factory=list)


class Selection(_Doc):
    """What the run was asked to run."""

    markexpr: str = Field(default="", description="the -m expression")
    keyword: str = Field(default="", description="the -k expression")
    args: list[str] = Field(default_factory=list, description="paths and node ids given")
    workers: int = Field(default=0, ge=0, description="xdist workers (0: one process)")


class RunInfo(_Doc):
    """The run's context."""

    id: str
    profile: str
    role: str
    opsverify: str
    started: datetime
    finished: datetime
    host: str
    selection: Selection = Selection()
    totals: dict[str, int] = Field(default_factory=dict)
    exit_status: int | None = None


class WaiverProblem(_Doc):
    check: str
    owner: str
    ticket: str
    expires: date
    problem: Literal["expired", "unmatched"]


class EvidenceDoc(_Doc):
    """``evidence.json``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"$id": SCHEMA_ID})

    schema_version: Literal["1.0"] = "1.0"
    run: RunInfo
    checks: list[CheckResult] = Field(default_factory=list)
    waivers: list[WaiverProblem] = Field(default_factory=list, description="expired and unmatched waivers")

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome in ("failed", "broken")]

    def ordered(self) -> list[CheckResult]:
        """Failures first, then broken, waived, skipped and passed; node id order within each."""
        return sorted(self.checks, key=lambda c: (OUTCOMES.index(c.outcome), c.nodeid))


def evidence_schema() -> dict[str, Any]:
    """The JSON Schema of ``evidence.json``."""
    schema = EvidenceDoc.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"opsverify evidence {SCHEMA_VERSION}"
    return schema


class EvidenceFormatError(OpsverifyError):
    """An evidence.json that cannot be read, is not JSON, or does not follow the schema."""


def read_evidence(path: Path) -> EvidenceDoc:
    """Read and validate an ``evidence.json``; one sentence naming the file and the first problem if it fails."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as err:
        raise EvidenceFormatError(f"cannot read {path}: {err.strerror or err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise EvidenceFormatError(f"{path} is not JSON ({err}): it is not an opsverify evidence file") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, str) and version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise EvidenceFormatError(f"{path} is evidence format {version}; this opsverify {opsverify.__version__} "
                                  f"reads {SCHEMA_VERSION}: upgrade opsverify to read it")
    try:
        return EvidenceDoc.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise EvidenceFormatError(f"{path} does not follow the evidence schema {SCHEMA_VERSION}: {where}: "
                                  f"{first['msg']} ({err.error_count()} problem(s) in all)") from None


class Collector:
    """Builds one run's evidence from the reports of every check (controller side)."""

    def __init__(self, profile: str = "(none)", role: str = "-", selection: Selection | None = None) -> None:
        self.profile, self.role = profile, role
        self.selection = selection or Selection()
        self.started = datetime.now(UTC)
        self.run_id = f"{self.started.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        self.checks: dict[str, CheckResult] = {}
        self.waiver_problems: list[WaiverProblem] = []

    def record(self, nodeid: str) -> CheckResult:
        return self.checks.setdefault(nodeid, CheckResult(nodeid=nodeid))

    def totals(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for check in self.checks.values():
            counts[check.outcome] = counts.get(check.outcome, 0) + 1
        return counts

    def document(self, exit_status: int | None = None) -> EvidenceDoc:
        run = RunInfo(
            id=self.run_id, profile=self.profile, role=self.role, opsverify=opsverify.__version__,
            started=self.started, finished=datetime.now(UTC), host=platform.node(), selection=self.selection,
            totals=self.totals(), exit_status=exit_status,
        )
        return EvidenceDoc(run=run, checks=list(self.checks.values()),
                           waivers=list(self.waiver_problems))


def absorb(check: CheckResult, properties: list[tuple[str, object]]) -> None:
    """Take the labels and measurements a check put in its user properties (repeated phases overwrite)."""
    for key, value in properties:
        if key == "runbook":
            check.runbook = str(value).split()
        elif key == "markers":
            check.markers = str(value).split()
        elif key == "severity":
            check.severity = str(value)
        elif key == "component":
            check.component = str(value) or None
        elif key.startswith(METRIC_PREFIX):
            check.metrics[key.removeprefix(METRIC_PREFIX)] = float(value)  # type: ignore[arg-type]
        elif key.startswith(EVIDENCE_PREFIX):
            name = key.removeprefix(EVIDENCE_PREFIX)
            (check.thresholds if THRESHOLD.search(name) else check.measured)[name] = str(value)


def write_json_atomically(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON through a temporary file renamed into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def write_evidence(run_dir: Path, doc: EvidenceDoc) -> Path:
    path = run_dir / "evidence.json"
    write_json_atomically(path, doc.model_dump(mode="json"))
    return path
