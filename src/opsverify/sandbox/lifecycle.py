"""What the sandbox cleans up, like the runbooks' teams do (issue 11): the ``lifecycle`` section of its profile.

The job table keeps finished jobs 90 days (older ones move to its archive table), temporary
optimisation tables are dropped, users inactive for a year are deleted, application and audit
logs rotate (compressed, 30 days), job logs older than 90 days move to the archive directory,
``quantum_*`` temporary files live a day. The sandbox seeds no fault: ``pytest -m maintenance``
is green on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opsverify.sandbox.state import Layout


def lifecycle_dirs(layout: Layout) -> dict[str, Path]:
    """The sandbox's log, archive and temporary directories (under its state dir, never the machine's /tmp)."""
    root = layout.root.resolve()
    return {
        "app_logs": root / "logs" / "app",
        "audit_logs": root / "logs" / "audit",
        "job_logs": root / "logs" / "jobs",
        "job_archive": root / "archive" / "jobs",
        "tmp": root / "tmp",
    }


def lifecycle_section(layout: Layout) -> dict[str, Any]:
    """The profile's ``lifecycle`` section: what the checks judge and the maintenance fixtures act on."""
    dirs = lifecycle_dirs(layout)
    return {
        "job_tables": [
            {"name": "qp-finished-jobs", "database": "quantum_planner", "table": "optimization_jobs",
             "archive_table": "optimization_jobs_archive"},
        ],
        "temp_tables": [{"name": "qp-temp-tables", "database": "quantum_planner", "pattern": "temp_optimization_*"}],
        "personal_data": [
            {"name": "qp-inactive-users", "database": "quantum_planner", "table": "users", "column": "last_login",
             "retention": "365d"},
        ],
        "log_dirs": [
            {"name": "app-logs", "path": str(dirs["app_logs"]), "pattern": "*.log*", "retention": "30d",
             "max_size": "100MB", "delaycompress": True},
            {"name": "audit-logs", "path": str(dirs["audit_logs"]), "pattern": "audit.log*", "retention": "30d",
             "audit": True},
        ],
        "archives": [
            {"name": "job-logs", "live": str(dirs["job_logs"]), "archive": str(dirs["job_archive"]),
             "pattern": "job-*.log*", "max_age": "90d"},
        ],
        "tmp_files": [{"name": "quantum-tmp", "pattern": str(dirs["tmp"] / "quantum_*"), "max_age": "1d"}],
        "error_logs": [
            {"name": "app-errors", "paths": [str(dirs["app_logs"] / "*.log")], "window": "24h", "max_lines": 20},
        ],
    }
