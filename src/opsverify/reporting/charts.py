"""The summary's charts: a recorded metric over the run history, one line per component, as inline SVG.

Made with matplotlib (imported when a chart is drawn) on its SVG canvas, no pyplot and no display: text stays
text (``svg.fonttype: none``), the ids are stable (``svg.hashsalt``), and no metadata block or link is written,
so the SVG can be inlined in a self-contained HTML file that opens offline.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from opsverify.reporting.history import Point

SCALES = {
    "seconds": ((86400, "days"), (3600, "hours"), (60, "minutes"), (1, "seconds")),
    "bytes": ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "bytes")),
}
MIN_SPAN = timedelta(hours=6)


@dataclass(frozen=True)
class Chart:
    """One chart of the summary: which metric, its title and unit."""

    metric: str
    title: str
    unit: str  # "seconds" or "bytes"


CHARTS = (
    Chart("restore_rto_seconds", "Measured RTO of the restore drills", "seconds"),
    Chart("backup_age_seconds", "Age of the newest backup", "seconds"),
    Chart("backup_size_bytes", "Size of the newest backup", "bytes"),
)


def scale(unit: str, largest: float) -> tuple[float, str]:
    """The divisor and unit name that show ``largest`` as a readable number (hours, MiB, …)."""
    steps = SCALES.get(unit, ((1, unit),))
    return next(((d, n) for d, n in steps if largest >= d), steps[-1])


def lines_of(points: Sequence[Point]) -> dict[str, list[Point]]:
    """The points by component (the check's node id where it has none), each line oldest first."""
    lines: dict[str, list[Point]] = {}
    for point in sorted(points, key=lambda p: p.time):
        lines.setdefault(point.component or point.nodeid, []).append(point)
    return dict(sorted(lines.items()))


def chart_svg(chart: Chart, points: Sequence[Point]) -> str:
    """The chart as an ``<svg>`` element (no XML declaration), or "" when there is no point."""
    if not points:
        return ""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    divisor, name = scale(chart.unit, max(p.value for p in points))
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "opsverify", "font.size": 8}):
        figure = Figure(figsize=(6.4, 2.6), dpi=72)
        FigureCanvasSVG(figure)
        axes = figure.add_subplot()
        for label, line in lines_of(points).items():
            days = [date2num(p.time) for p in line]  # type: ignore[no-untyped-call]
            axes.plot(days, [p.value / divisor for p in line], marker="o", markersize=3, linewidth=1.2, label=label)
        first, last = min(p.time for p in points), max(p.time for p in points)
        if last - first < MIN_SPAN:  # one run, or runs minutes apart: six hours around them
            around = (first - MIN_SPAN / 2, last + MIN_SPAN / 2)
            axes.set_xlim(*(date2num(t) for t in around))  # type: ignore[no-untyped-call]
        locator = AutoDateLocator(maxticks=6)  # type: ignore[no-untyped-call]
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        axes.set_title(chart.title)
        axes.set_ylabel(name)
        axes.set_ylim(0, max(p.value for p in points) / divisor * 1.15)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        figure.tight_layout()
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = out.getvalue()
    return text[text.index("<svg"):]
