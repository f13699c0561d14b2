"""``opsverify history``: the last runs, or one metric's trend per component, as text or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from opsverify.durations import format_duration
from opsverify.errors import OpsverifyError
from opsverify.profile import Profile
from opsverify.profile.reporting import History
from opsverify.reporting.evidence import OUTCOMES
from opsverify.reporting.history import HistoryStore, Point, RunRow, default_sqlite, open_history
from opsverify.reporting.trend import MIN_POINTS, MIN_SPAN, Sample, fit, rate_worthy


@dataclass(frozen=True)
class Request:
    """What the command was asked: where the store is, how many runs or points, which metric and component."""

    profile: Profile | None
    store: Path | None
    reports_root: Path
    last: int
    metric: str | None
    component: str | None
    as_json: bool


def open_for_reading(request: Request) -> HistoryStore:
    """The store to read (``--store``, else the profile's, else the reports root's ``history.sqlite``); a missing
    SQLite file is named, with how one is made, and not created."""
    declared = request.profile.reporting.history if request.profile is not None else History()
    if request.store is not None:
        declared = History(sqlite=request.store)
    if declared.postgres is None:
        path = declared.sqlite or default_sqlite(request.reports_root)
        if path.is_dir():
            raise OpsverifyError(f"the history store {path} is a directory: name the SQLite file (e.g. "
                                 f"{path / 'history.sqlite'}) with --store or in reporting.history.sqlite")
        if not path.is_file():
            raise OpsverifyError(f"no history store at {path}: a pytest run of the checks creates it (run pytest "
                                 "once, e.g. `pytest -m daily --profile=FILE`), or name one with --store PATH")
    timeouts = request.profile.timeouts if request.profile is not None else None
    return open_history(declared, request.reports_root,
                        timeouts.request.total_seconds() if timeouts else 10.0,
                        connect_timeout_s=timeouts.connect.total_seconds() if timeouts else 5.0)


def show(request: Request) -> str:
    """The text (or JSON) ``opsverify history`` prints."""
    store = open_for_reading(request)
    try:
        name = request.profile.name if request.profile is not None else None
        if request.metric is None:
            return _runs(store.runs(limit=request.last, profile=name), store.where, request.as_json)
        points = [p for p in store.series(request.metric, profile=name)
                  if request.component is None or p.component == request.component]
        return _trends(request.metric, points, store.where, request)
    finally:
        store.close()


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%MZ")


def totals_text(totals: dict[str, int]) -> str:
    """``5 passed, 1 failed`` in the summary's order (failures first)."""
    return ", ".join(f"{totals[o]} {o}" for o in OUTCOMES if totals.get(o)) or "no checks"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _runs(runs: list[RunRow], where: str, as_json: bool) -> str:
    if as_json:
        return json.dumps([{"run": r.run_id, "started": r.started.isoformat(), "finished": r.finished.isoformat(),
                            "profile": r.profile, "role": r.role, "selection": r.selection, "totals": r.totals,
                            "exit_status": r.exit_status} for r in runs], indent=2)
    if not runs:
        return f"no runs recorded in {where}"
    header = ("STARTED", "PROFILE", "ROLE", "SELECTION", "TOTALS", "EXIT")
    rows = [(_stamp(r.started), r.profile, r.role, r.selection, totals_text(r.totals),
             "-" if r.exit_status is None else str(r.exit_status)) for r in runs]
    return f"{len(runs)} newest run(s) in {where}\n" + _table([header, *rows])


def value_text(metric: str, value: float) -> str:
    """A metric's value with its unit: ``1.5 MiB`` for ``…_bytes``, ``2m 30s`` for ``…_seconds``, else the number."""
    from opsverify.backups.directory import human_size
    from opsverify.durations import format_duration

    if metric.endswith("_bytes"):
        return human_size(round(value))
    if metric.endswith("_seconds"):
        return format_duration(timedelta(seconds=round(value, 3)))
    return f"{value:g}"


def _trends(metric: str, points: list[Point], where: str, request: Request) -> str:
    by_component: dict[str, list[Point]] = {}
    for point in points:
        by_component.setdefault(point.component or "-", []).append(point)
    if request.as_json:
        return json.dumps({c: _trend_json(metric, ps[-request.last:]) for c, ps in sorted(by_component.items())},
                          indent=2)
    if not by_component:
        scope = f" of component {request.component}" if request.component else ""
        return f"no values of {metric}{scope} recorded in {where}"
    return "\n\n".join(_trend_text(metric, c, ps[-request.last:]) for c, ps in sorted(by_component.items()))


def _trend_json(metric: str, points: list[Point]) -> dict[str, object]:
    samples = [Sample(p.time, p.value) for p in points]
    trend = fit(samples) if rate_worthy(samples) else None
    return {"points": [{"run": p.run_id, "time": p.time.isoformat(), "value": p.value, "check": p.nodeid}
                       for p in points],
            "change_per_30d": trend.change_per() if trend else None,
            "percent_per_30d": trend.percent_per() if trend else None}


def _trend_text(metric: str, component: str, points: list[Point]) -> str:
    first, last = points[0], points[-1]
    head = (f"{metric} of {component}: {len(points)} point(s), {_stamp(first.time)} → {_stamp(last.time)}: "
            f"{value_text(metric, first.value)} → {value_text(metric, last.value)}")
    samples = [Sample(p.time, p.value) for p in points]
    trend = fit(samples) if rate_worthy(samples) else None
    if trend is None:
        head += f"; too few values for a rate (one needs {MIN_POINTS} over at least {format_duration(MIN_SPAN)})"
    else:
        change = trend.change_per()
        percent = trend.percent_per()
        sign = "+" if change >= 0 else "-"
        head += f", {sign}{value_text(metric, abs(change))} per 30 days"
        head += f" ({percent:+.1f}%)" if percent is not None else ""
    rows = [(f"  {_stamp(p.time)}", value_text(metric, p.value), p.run_id) for p in points]
    return head + "\n" + _table(rows)
