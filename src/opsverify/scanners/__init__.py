"""Security scanner evidence: trivy, bandit, pip-audit and safety JSON reports as typed findings (no pytest)."""

from opsverify.scanners.bandit import run_bandit
from opsverify.scanners.report import (
    MAX_REPORT_BYTES,
    Finding,
    ReportError,
    ScanReport,
    Skipped,
    modified_at,
    newest_file,
    read_report,
)

__all__ = [
    "MAX_REPORT_BYTES", "Finding", "ReportError", "ScanReport", "Skipped",
    "modified_at", "newest_file", "read_report", "run_bandit",
]
