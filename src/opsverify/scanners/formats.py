"""One parser per tool: the JSON a tool writes -> (its own timestamp or None, findings, what it skipped).

Formats understood (the tools' own JSON output):

* trivy ``trivy fs|image -f json``: ``{"SchemaVersion": 2, "CreatedAt": …, "Results": [{"Target",
  "Vulnerabilities": [{VulnerabilityID, PkgName, InstalledVersion, Severity, Title}], "Misconfigurations":
  [{ID, Severity, Title, Status}], "Secrets": [{RuleID, Severity, Title, StartLine}]}]}``; the pre-0.20
  top-level list of results is read too. Misconfigurations count only with ``Status: FAIL``.
* bandit ``bandit -f json``: ``{"generated_at", "results": [{test_id, issue_severity, filename, line_number,
  issue_text}], "errors": [{filename, reason}]}``; an error is a file bandit could not parse (not scanned).
* pip-audit ``pip-audit -f json``: ``{"dependencies": [{name, version, vulns: [{id, fix_versions, aliases,
  description}]} | {name, skip_reason}]}`` or the older top-level list of dependencies; no severity, no
  timestamp; a dependency with ``skip_reason`` was not audited.
* safety ``safety check --json``: 1.x a list of ``[package, affected, installed, advisory, id, …]``;
  2.x/3.x ``{"report_meta": {"timestamp"}, "vulnerabilities": [{vulnerability_id, package_name,
  analyzed_version, advisory, CVE, severity: null | {cvssv3: {base_severity}, cvssv2: …}}]}``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from opsverify.scanners.report import Finding, ReportError, Skipped, parse_time

Parsed = tuple[datetime | None, list[Finding], list[Skipped]]


def _not_a(tool: str, path: Path, expected: str) -> ReportError:
    flag = "--json" if tool == "safety" else "-f json"
    return ReportError(f"{path} is JSON but not a {tool} JSON report ({expected}): write it with {tool} {flag}")


def _list(value: Any, tool: str, path: Path, expected: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _not_a(tool, path, expected)
    return value


def _dicts(value: Any, tool: str, path: Path, expected: str) -> list[dict[str, Any]]:
    items = _list(value, tool, path, expected)
    if not all(isinstance(i, dict) for i in items):
        raise _not_a(tool, path, expected)
    return items


def _title(text: object) -> str:
    return str(text or "").strip().splitlines()[0][:120] if str(text or "").strip() else ""


def trivy(data: Any, path: Path) -> Parsed:
    expected = "expected an object with SchemaVersion and Results[]"
    if isinstance(data, dict):
        if "SchemaVersion" not in data and "Results" not in data:
            raise _not_a("trivy", path, expected)
        generated, results = parse_time(data.get("CreatedAt")), data.get("Results")
    else:
        generated, results = None, data  # before trivy 0.20: the list of results itself
    findings: list[Finding] = []
    for result in _dicts(results, "trivy", path, expected):
        target = str(result.get("Target", "?"))
        for v in _dicts(result.get("Vulnerabilities"), "trivy", path, "Vulnerabilities[] of objects"):
            where = f"{v.get('PkgName', '?')} {v.get('InstalledVersion', '')}".strip()
            findings.append(Finding(str(v.get("VulnerabilityID", "?")), _severity(v), where, _title(v.get("Title"))))
        for m in _dicts(result.get("Misconfigurations"), "trivy", path, "Misconfigurations[] of objects"):
            if str(m.get("Status", "FAIL")).upper() == "FAIL":
                ident = str(m.get("ID") or m.get("AVDID") or "?")
                avd = (str(m["AVDID"]),) if m.get("AVDID") else ()
                findings.append(Finding(ident, _severity(m), target, _title(m.get("Title")), avd))
        for s in _dicts(result.get("Secrets"), "trivy", path, "Secrets[] of objects"):
            where = f"{target}:{s.get('StartLine', '?')}"
            findings.append(Finding(str(s.get("RuleID", "?")), _severity(s), where, _title(s.get("Title"))))
    return generated, findings, []


def _severity(item: dict[str, Any]) -> str | None:
    severity = str(item.get("Severity") or "").upper()
    return severity if severity in ("LOW", "MEDIUM", "HIGH", "CRITICAL") else None  # UNKNOWN: unrated


def bandit(data: Any, path: Path) -> Parsed:
    expected = "expected an object with results[] and metrics"
    if not isinstance(data, dict) or "results" not in data:
        raise _not_a("bandit", path, expected)
    findings = [
        Finding(
            str(r.get("test_id", "?")), str(r.get("issue_severity") or "").upper() or None,
            f"{r.get('filename', '?')}:{r.get('line_number', '?')}", _title(r.get("issue_text")),
        )
        for r in _dicts(data["results"], "bandit", path, expected)
    ]
    errors = [
        Skipped(str(e.get("filename", "?")), _title(e.get("reason")))
        for e in _dicts(data.get("errors"), "bandit", path, "errors[] of objects")
    ]
    return parse_time(data.get("generated_at")), findings, errors


def pip_audit(data: Any, path: Path) -> Parsed:
    expected = "expected an object with dependencies[]"
    if isinstance(data, dict):
        if "dependencies" not in data:
            raise _not_a("pip-audit", path, expected)
        data = data["dependencies"]
    findings, skipped = [], []
    for dep in _dicts(data, "pip-audit", path, expected):
        if dep.get("skip_reason"):  # not audited (not on PyPI, no version, ...): no evidence either way
            skipped.append(Skipped(str(dep.get("name", "?")), _title(dep["skip_reason"])))
            continue
        where = f"{dep.get('name', '?')} {dep.get('version', '')}".strip()
        for vuln in _dicts(dep.get("vulns"), "pip-audit", path, "vulns[] of objects"):
            fixes = ", ".join(str(v) for v in vuln.get("fix_versions") or [])
            title = f"fixed in {fixes}" if fixes else "no fixed version"
            aliases = tuple(str(a) for a in vuln.get("aliases") or [])
            findings.append(Finding(str(vuln.get("id", "?")), None, where, title, aliases))
    return None, findings, skipped


def safety(data: Any, path: Path) -> Parsed:
    if isinstance(data, list):  # safety 1.x: [package, affected spec, installed, advisory, id, ...]
        findings = []
        for row in data:
            if not isinstance(row, list) or len(row) < 5:
                raise _not_a("safety", path, "expected [package, affected, installed, advisory, id] rows")
            findings.append(Finding(str(row[4]), None, f"{row[0]} {row[2]}", _title(row[3])))
        return None, findings, []
    if not isinstance(data, dict) or "vulnerabilities" not in data:
        raise _not_a("safety", path, "expected an object with report_meta and vulnerabilities[]")
    meta = data.get("report_meta")
    findings = []
    for v in _dicts(data["vulnerabilities"], "safety", path, "vulnerabilities[] of objects"):
        where = f"{v.get('package_name', '?')} {v.get('analyzed_version', '')}".strip()
        cve = (str(v["CVE"]),) if v.get("CVE") else ()
        ident = str(v.get("vulnerability_id", "?"))
        findings.append(Finding(ident, _safety_severity(v.get("severity")), where, _title(v.get("advisory")), cve))
    return parse_time(meta.get("timestamp") if isinstance(meta, dict) else None), findings, []


def _safety_severity(severity: Any) -> str | None:
    """safety gives a CVSS block only with an API key: cvssv3's base_severity, else cvssv2's, else unrated."""
    if not isinstance(severity, dict):
        return None
    for version in ("cvssv3", "cvssv2"):
        block = severity.get(version)
        rated = str(block.get("base_severity", "")).upper() if isinstance(block, dict) else ""
        if rated in ("LOW", "MEDIUM", "HIGH", "CRITICAL"):
            return rated
    return None


PARSERS: dict[str, Callable[[Any, Path], Parsed]] = {
    "trivy": trivy, "bandit": bandit, "pip-audit": pip_audit, "safety": safety,
}
