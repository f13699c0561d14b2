"""``summary.md`` (GitHub-flavoured markdown tables) and ``summary.html`` (an autoescaped Jinja template: inline
CSS and SVG, no script, no link, so it opens offline) of one ``Summary``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple

from opsverify.reporting.evidence import OUTCOMES, CheckResult
from opsverify.reporting.summary import NOT_CONFIGURED, Summary, short

NO_CHARTS = "No measured RTO, backup age or backup size was recorded: no chart."


def header_rows(summary: Summary) -> list[tuple[str, str]]:
    """The run's context as (field, value) pairs."""
    run = summary.doc.run
    chosen = run.selection
    selection = "; ".join(part for part in (
        f"-m {chosen.markexpr!r}" if chosen.markexpr else "", f"-k {chosen.keyword!r}" if chosen.keyword else "",
        " ".join(chosen.args), f"{chosen.workers} workers" if chosen.workers else "",
    ) if part) or "everything"
    totals = ", ".join(f"{run.totals[o]} {o}" for o in OUTCOMES if run.totals.get(o)) or "no check ran"
    return [
        ("profile", f"{run.profile} ({run.role})"), ("run", run.id),
        ("started", f"{run.started:%Y-%m-%d %H:%M:%S} UTC"), ("finished", f"{run.finished:%Y-%m-%d %H:%M:%S} UTC"),
        ("host", run.host), ("selection", selection), ("totals", totals), ("opsverify", run.opsverify),
        ("inventory", summary.inventory.shown() if summary.inventory else "none readable"),
    ]


def ran_text(checks: Sequence[CheckResult]) -> list[str]:
    return [f"{short(c.nodeid)} ({c.outcome})" for c in checks]


def _cell(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return [*lines, *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows), ""]


def render_markdown(summary: Summary) -> str:
    """``summary.md``: the same sections as the HTML, as markdown tables; the charts are only in the HTML."""
    doc = summary.doc
    out = [f"# opsverify summary: {doc.run.profile} ({doc.run.role}), run {doc.run.id}", ""]
    out += _table(("", ""), header_rows(summary))
    failures = doc.failures()
    out += ["## Failures", ""]
    out += _table(("check", "runbook", "outcome", "message"), [
        (short(c.nodeid), " ".join(c.runbook), c.outcome, c.message) for c in sorted(failures, key=lambda c: c.nodeid)
    ]) if failures else ["None: no check failed or broke.", ""]
    out += ["## Warnings", ""]
    out += _table(("kind", "warning"), [(n.kind, n.text) for n in summary.notices]) if summary.notices else [
        "None.", ""]
    out += _coverage_markdown(summary)
    out += ["## RTO / RPO", ""]
    out += _table(("drill", "component", "measured RTO", "RTO objective", "recovery point", "RPO objective",
                   "outcome"), [astuple(o) for o in summary.objectives]) if summary.objectives else [
        "No restore drill or recovery point was measured in this run.", ""]
    out += ["## Charts", "", "The charts (measured RTO, backup age and backup size over the recorded history) are "
            "in summary.html." + (f" {summary.history_note}" if summary.history_note else ""), ""]
    out += ["## Checks", ""]
    out += _table(("check", "outcome", "runbook", "duration", "message"), [
        (short(c.nodeid), c.outcome, " ".join(c.runbook), f"{c.duration_s:.2f}s", c.message) for c in doc.ordered()])
    return "\n".join(out)


def _coverage_markdown(summary: Summary) -> list[str]:
    out = ["## Runbook coverage", ""]
    if summary.inventory is None:
        return [*out, "No runbook inventory was readable: no coverage matrix.", ""]
    counts = summary.status_counts()
    out += [", ".join(f"{n} {s}" for s, n in counts.items()), ""]
    for group, procedures in summary.inventory.groups().items():
        rows = [r for r in summary.coverage if r.procedure in procedures]
        out += [f"### {group}", ""]
        out += _table(("ID", "cadence", "procedure", "status", "checks"), [
            (r.procedure.id, r.procedure.cadence, r.procedure.procedure, r.status,
             "<br>".join(ran_text(r.ran)) or (f"{r.collected} collected, none in this run" if r.collected else
                                              NOT_CONFIGURED if r.status == "not configured" else ""))
            for r in rows
        ])
    return out


def render_html(summary: Summary) -> str:
    """``summary.html``: one self-contained page."""
    import jinja2
    from markupsafe import Markup

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                     lstrip_blocks=True)
    template = environment.from_string(TEMPLATE)
    doc = summary.doc
    return template.render(
        s=summary, doc=doc, header=header_rows(summary), failures=sorted(doc.failures(), key=lambda c: c.nodeid),
        counts=summary.status_counts(), groups=summary.inventory.groups() if summary.inventory else {},
        rows={r.procedure.id: r for r in summary.coverage}, short=short, charts=summary.charts,
        svg=Markup, no_charts=NO_CHARTS, not_configured=NOT_CONFIGURED,
    )


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>opsverify summary: {{ doc.run.profile }} {{ doc.run.id }}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:2px solid #d8dde6}h3{font-size:1em}
table{border-collapse:collapse;margin:.4em 0 1em}th,td{border:1px solid #d8dde6;padding:3px 7px;
vertical-align:top;text-align:left}th{background:#eef1f6}td ul{margin:0;padding-left:1.1em}
.status,.outcome{font-weight:600;white-space:nowrap}
.st-verified,.oc-passed{color:#17612c}.st-failed,.oc-failed,.oc-broken{color:#b3261e}
.st-waived,.oc-waived{color:#8a5a00}.st-gap{color:#fff;background:#b3261e}.st-not-selected,.st-not-collected,.st-not-configured,.st-skipped,
.oc-skipped{color:#5b6270}.st-human{color:#3d4aa8}
tr.row-failed{background:#fdecea}tr.row-gap{background:#fff4f2}
.matrix td:first-child{white-space:nowrap}.counts span{margin-right:1em}
.chart{margin:.5em 0}.chart svg{max-width:100%;height:auto}
table{max-width:100%}.nodeid,.message{overflow-wrap:anywhere;word-break:break-word}
</style></head><body>
<h1>opsverify summary: {{ doc.run.profile }} ({{ doc.run.role }})</h1>
<table class="header">{% for k, v in header %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
<h2 id="failures">Failures</h2>
{% if failures %}
<table><tr><th>check</th><th>runbook</th><th>outcome</th><th>message</th></tr>
{% for c in failures %}<tr class="failure"><td class="nodeid">{{ short(c.nodeid) }}</td><td>{{ c.runbook|join(" ") }}
</td><td class="outcome oc-{{ c.outcome }}">{{ c.outcome }}</td><td class="message">{{ c.message }}</td></tr>
{% endfor %}</table>
{% else %}<p>None: no check failed or broke.</p>{% endif %}
<h2 id="warnings">Warnings</h2>
{% if s.notices %}<table><tr><th>kind</th><th>warning</th></tr>
{% for n in s.notices %}<tr><td>{{ n.kind }}</td><td class="message">{{ n.text }}</td></tr>{% endfor %}</table>
{% else %}<p>None.</p>{% endif %}
<h2 id="coverage">Runbook coverage</h2>
{% if not s.inventory %}<p>No runbook inventory was readable: no coverage matrix.</p>{% else %}
<p class="counts">{% for st, n in counts.items() %}<span class="status st-{{ st|replace(' ', '-') }}">{{ n }} {{ st }}
</span>{% endfor %}</p>
{% for group, procedures in groups.items() %}<h3>{{ group }}</h3>
<table class="matrix"><tr><th>ID</th><th>cadence</th><th>procedure</th><th>status</th><th>checks</th></tr>
{% for p in procedures %}{% set r = rows[p.id] %}
<tr id="procedure-{{ p.id }}" class="procedure row-{{ r.status|replace(' ', '-') }}" data-status="{{ r.status }}">
<td>{{ p.id }}</td><td>{{ p.cadence }}</td><td>{{ p.procedure }}</td>
<td class="status st-{{ r.status|replace(' ', '-') }}">{{ r.status }}</td><td class="nodeid">
{% if r.ran %}<ul>{% for c in r.ran %}<li>{{ short(c.nodeid) }}
<span class="outcome oc-{{ c.outcome }}">{{ c.outcome }}</span></li>{% endfor %}</ul>
{% elif r.collected %}{{ r.collected }} collected, none in this run
{% elif r.status == "not configured" %}{{ not_configured }}{% endif %}</td></tr>
{% endfor %}</table>
{% endfor %}{% endif %}
<h2 id="objectives">RTO / RPO</h2>
{% if s.objectives %}<table><tr><th>drill</th><th>component</th><th>measured RTO</th><th>RTO objective</th>
<th>recovery point</th><th>RPO objective</th><th>outcome</th></tr>
{% for o in s.objectives %}<tr class="objective"><td>{{ o.drill }}</td><td>{{ o.component }}</td><td>{{ o.rto }}</td>
<td>{{ o.rto_objective }}</td><td>{{ o.recovery_point }}</td><td>{{ o.rpo_objective }}</td>
<td class="outcome oc-{{ o.outcome }}">{{ o.outcome }}</td></tr>{% endfor %}</table>
{% else %}<p>No restore drill or recovery point was measured in this run.</p>{% endif %}
<h2 id="charts">Charts</h2>
{% if s.history_note %}<p>{{ s.history_note }}</p>{% endif %}
{% for chart, text in charts %}<div class="chart" id="chart-{{ chart.metric }}">{{ svg(text) }}</div>
{% else %}<p>{{ no_charts }}</p>{% endfor %}
<h2 id="checks">Checks</h2>
<table><tr><th>check</th><th>outcome</th><th>runbook</th><th>duration</th><th>message</th></tr>
{% for c in doc.ordered() %}<tr class="check"><td class="nodeid">{{ short(c.nodeid) }}</td>
<td class="outcome oc-{{ c.outcome }}">{{ c.outcome }}</td><td>{{ c.runbook|join(" ") }}</td>
<td>{{ "%.2f"|format(c.duration_s) }}s</td><td class="message">{{ c.message }}</td></tr>
{% endfor %}</table>
</body></html>
"""
