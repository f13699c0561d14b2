"""The run summary an auditor reads: failures first, warnings, runbook coverage, RTO/RPO, charts, every check.

Pure functions over one run's ``EvidenceDoc``, the runbook procedures (``inventory.py``), the catalogue of
collected checks (node id -> runbook IDs, everything collected before ``-m``/``-k`` deselection) and the
recorded history of the charted metrics. ``summary.md`` (GitHub-flavoured markdown) and ``summary.html``
(one self-contained file: inline CSS and SVG, no script, no link) hold the same sections.

A procedure's status: ``human`` (judgement work), ``gap`` (no check of the whole suite carries it), ``not collected``
(no collected check carries it, and the run collected only part of ``checks/``), ``not selected``
(checks carry it, none ran in this run), ``failed`` (one that ran failed or broke), ``waived`` (one failure is
waived, none other), ``skipped`` (every one that ran was skipped), ``verified`` (those that ran passed, some
perhaps skipped).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

from opsverify.durations import format_duration
from opsverify.reporting.charts import CHARTS, Chart, chart_svg
from opsverify.reporting.evidence import OUTCOMES, CheckResult, EvidenceDoc
from opsverify.reporting.history import Point
from opsverify.reporting.inventory import Inventory, Procedure
from opsverify.reporting.waivers import needless_text, problem_text

# the order counts show
STATUSES = ("failed", "waived", "gap", "not collected", "not configured", "not selected", "skipped", "verified",
            "human")
NOT_CONFIGURED = "the suite checks it, this profile declares nothing it applies to"
CERTIFICATE_WARN_DAYS = 30
NOT_AFTER = re.compile(r"(\S.*?)=(\d{4}-\d{2}-\d{2})(?=\s|$)")
Catalogue = Mapping[str, Sequence[str]]  # node id -> runbook IDs of every collected check


@dataclass(frozen=True)
class Coverage:
    """One procedure row of the matrix: the checks that ran for it and its status."""

    procedure: Procedure
    ran: list[CheckResult]
    collected: int
    status: str


@dataclass(frozen=True)
class Notice:
    """One warning line: its kind (waiver, waived, certificate, security updates, not proved) and sentence."""

    kind: str
    text: str


@dataclass(frozen=True)
class Objective:
    """One row of the RTO/RPO table: a drill of an objective component, measured vs objective."""

    drill: str
    component: str
    rto: str = "-"
    rto_objective: str = "-"
    recovery_point: str = "-"
    rpo_objective: str = "-"
    outcome: str = "passed"


@dataclass
class Summary:
    """Everything both files show, in their order."""

    doc: EvidenceDoc
    inventory: Inventory | None
    coverage: list[Coverage]
    notices: list[Notice]
    objectives: list[Objective]
    charts: list[tuple[Chart, str]] = field(default_factory=list)
    history_note: str = ""

    def status_counts(self) -> dict[str, int]:
        counts = {s: sum(1 for row in self.coverage if row.status == s) for s in STATUSES}
        return {s: n for s, n in counts.items() if n}


def short(nodeid: str) -> str:
    """A node id as the matrix shows it: without the leading ``checks/``."""
    return nodeid.removeprefix("checks/")


def status_of(procedure: Procedure, ran: Sequence[CheckResult], collected: int, complete: bool = True,
              could: bool = False) -> str:
    """The procedure's status from the checks that ran for it and how many collected checks carry it; ``complete``:
    the run collected the whole suite, so a procedure no collected check carries is a gap, not just left out;
    ``could``: a collected check would carry it for a component kind (``runbook(by_kind=…)``) this profile does not
    declare, so it is "not configured" rather than a gap."""
    outcomes = {c.outcome for c in ran}
    if procedure.human:
        return "human"
    if not collected and not ran:
        return "not configured" if could else "gap" if complete else "not collected"
    if not ran:
        return "not selected"
    if outcomes & {"failed", "broken"}:
        return "failed"
    if "waived" in outcomes:
        return "waived"
    return "skipped" if outcomes == {"skipped"} else "verified"


def coverage(inventory: Inventory, doc: EvidenceDoc, catalogue: Catalogue, complete: bool = True,
             capable: Catalogue | None = None) -> list[Coverage]:
    """Every procedure of the inventory with the checks that ran for it (node id order) and its status;
    ``capable``: per collected check, every ID its markers could give it (``Catalogue`` of every kind)."""
    rows = []
    could_carry = {i for ids in (capable or {}).values() for i in ids}
    for procedure in inventory.procedures:
        ran = sorted((c for c in doc.checks if procedure.id in c.runbook), key=lambda c: c.nodeid)
        collected = sum(1 for ids in catalogue.values() if procedure.id in ids)
        status = status_of(procedure, ran, collected, complete, procedure.id in could_carry)
        rows.append(Coverage(procedure, ran, collected, status))
    return rows


def notices(doc: EvidenceDoc) -> list[Notice]:
    """Waiver problems, waived checks and needless waivers, expiring certificates, pending security updates and
    tables a maintenance action could not prove."""
    found = [Notice("waiver", problem_text(p)) for p in doc.waivers]
    needless: dict[tuple[str, str, str], int] = {}  # the waiver plugin leaves "not-needed" on a waiver's matches
    for check in doc.checks:  # only when none of them failed
        if check.waiver is not None and check.waiver.state == "not-needed":
            key = (check.waiver.check, check.waiver.ticket, check.waiver.owner)
            needless[key] = needless.get(key, 0) + 1
    found += [Notice("waiver", needless_text(*key, passed=count)) for key, count in needless.items()]
    today = doc.run.finished.date()
    for check in sorted(doc.checks, key=lambda c: c.nodeid):
        found += _check_notices(check, today)
    return found


def _check_notices(check: CheckResult, today: date) -> list[Notice]:
    name, found = short(check.nodeid), []
    waiver = check.waiver
    if waiver is not None and check.outcome == "waived":
        found.append(Notice("waived", f"{name}: waived by {waiver.owner} ({waiver.ticket}) until {waiver.expires}: "
                                      f"{waiver.reason}; the failure: {check.message}"))
    found += [Notice("certificate", f"{name}: {text}") for text in _expiring(check, today)]
    pending = check.measured.get("pending_security", "0")
    if pending.isdigit() and int(pending) > 0:
        found.append(Notice("security updates", f"{name}: {pending} security update(s) pending: "
                                                f"{check.measured.get('security_updates', '?')}"))
    if check.measured.get("not_proved"):
        found.append(Notice("not proved", f"{name}: {check.measured['not_proved']}"))
    return found


def _expiring(check: CheckResult, today: date) -> list[str]:
    """Certificates of the check's evidence that expire within 30 days of the run (or have expired)."""
    found = []
    days_left = check.measured.get("days_left", "")
    if re.fullmatch(r"-?\d+(\.\d+)?", days_left) and float(days_left) <= CERTIFICATE_WARN_DAYS:
        found.append(f"a certificate expires in {float(days_left):g} days")
    for subject, when in NOT_AFTER.findall(check.measured.get("not_after", "")):
        left = (date.fromisoformat(when) - today).days
        if left < 0:
            found.append(f"certificate {subject} expired on {when} ({-left} days ago)")
        elif left <= CERTIFICATE_WARN_DAYS:
            found.append(f"certificate {subject} expires on {when} (in {left} days)")
    return found


def objectives(doc: EvidenceDoc) -> list[Objective]:
    """Per drill and objective component: measured RTO and recovery point against the objectives, the worst
    outcome of the checks that measured them."""
    rows: dict[tuple[str, str], Objective] = {}
    for check in sorted(doc.checks, key=lambda c: c.nodeid):
        values = _objective_values(check.metrics)
        if not values:
            continue
        key = (check.component or short(check.nodeid), check.measured.get("component", "?"))
        row = rows.get(key, Objective(*key))
        worst = min(row.outcome, check.outcome, key=OUTCOMES.index)
        if "rto" in values or "rto_objective" in values:
            values.setdefault("rto", "not recovered")
        rows[key] = replace(row, **values, outcome=worst)
    return list(rows.values())


def _objective_values(metrics: Mapping[str, float]) -> dict[str, str]:
    names = {"restore_rto_seconds": "rto", "rto_objective_seconds": "rto_objective",
             "recovery_point_seconds": "recovery_point", "rpo_objective_seconds": "rpo_objective"}
    return {names[k]: format_duration(timedelta(seconds=v)) for k, v in metrics.items() if k in names}


def run_points(doc: EvidenceDoc, metric: str) -> list[Point]:
    """This run's own values of ``metric``, as the history store would give them."""
    return [Point(doc.run.id, doc.run.started, c.metrics[metric], c.nodeid, c.component)
            for c in doc.checks if metric in c.metrics]


def with_this_run(doc: EvidenceDoc, metric: str, recorded: Sequence[Point]) -> list[Point]:
    """The recorded points, plus this run's own when the store does not hold them (yet)."""
    if any(p.run_id == doc.run.id for p in recorded):
        return list(recorded)
    return [*recorded, *run_points(doc, metric)]


def build_summary(
    doc: EvidenceDoc, inventory: Inventory | None, catalogue: Catalogue,
    history: Mapping[str, Sequence[Point]] | None, history_note: str = "", complete: bool = True,
    capable: Catalogue | None = None,
) -> Summary:
    """The summary of one run; ``history`` maps each charted metric to its recorded points (``None``: no store);
    ``complete``: the run collected the whole suite (``checks/``), so uncovered procedures are gaps; ``capable``:
    the IDs each collected check could carry, so a procedure only a kind this profile lacks would bring is "not
    configured"."""
    rows = coverage(inventory, doc, catalogue, complete, capable) if inventory is not None else []
    charts = [(c, chart_svg(c, with_this_run(doc, c.metric, (history or {}).get(c.metric, ())))) for c in CHARTS]
    return Summary(doc, inventory, rows, notices(doc), objectives(doc), [(c, s) for c, s in charts if s],
                   history_note)


def write_summary(run_dir: Path, summary: Summary) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.html`` into the run folder; their paths."""
    from opsverify.reporting.summary_render import render_html, render_markdown

    markdown, page = run_dir / "summary.md", run_dir / "summary.html"
    markdown.write_text(render_markdown(summary), encoding="utf-8")
    page.write_text(render_html(summary), encoding="utf-8")
    return markdown, page
