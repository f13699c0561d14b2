"""Run bandit offline over a source tree and read its JSON like a report (PF-42)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from opsverify.scanners.report import ReportError, ScanReport, read_report


def run_bandit(source: Path, timeout: float) -> ScanReport:
    """``python -m bandit -r SOURCE -f json`` (files only, no network); ``ReportError`` when it cannot run."""
    if not source.exists():
        raise ReportError(f"bandit source tree {source} does not exist: fix scanners.bandit[].source")
    with tempfile.TemporaryDirectory(prefix="opsverify-bandit-") as scratch:
        out = Path(scratch) / "bandit.json"
        command = [sys.executable, "-m", "bandit", "-r", str(source), "-f", "json", "-o", str(out), "-q"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ReportError(
                f"bandit did not finish scanning {source} within {timeout:g}s: raise scanners.bandit[].timeout"
            ) from exc
        if done.returncode not in (0, 1) or not out.is_file():  # 1: findings; anything else: bandit failed
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ReportError(
                f"bandit failed on {source} (exit {done.returncode}: {last}): is bandit installed in this Python?"
            )
        report = read_report("bandit", out)
    findings = tuple(replace(f, where=_relative(f.where, source)) for f in report.findings)
    skipped = tuple(replace(s, where=_relative(s.where, source)) for s in report.skipped)
    return ScanReport("bandit", source, report.generated, report.modified, findings, skipped)


def _relative(where: str, source: Path) -> str:
    """``/src/app/x.py:3`` -> ``app/x.py:3`` for a scan of ``/src`` (a single-file scan keeps its name)."""
    base = source if source.is_dir() else source.parent
    return where.removeprefix(f"{base}/")
