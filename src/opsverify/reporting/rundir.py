"""``reports/<UTC timestamp>/`` per run, and ``reports/latest`` pointing at the newest."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def new_run_dir(root: Path, now: datetime | None = None) -> Path:
    """Create a fresh ``root/<YYYYmmddTHHMMSSZ>`` (suffixed when two runs start in one second)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    root.mkdir(parents=True, exist_ok=True)
    for suffix in ["", *(f"-{n}" for n in range(1, 100))]:
        candidate = root / f"{stamp}{suffix}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"too many runs in {root} at {stamp}")


def point_latest(run_dir: Path) -> Path:
    """Atomically repoint ``<root>/latest`` at ``run_dir`` (a relative symlink)."""
    latest = run_dir.parent / "latest"
    temporary = run_dir.parent / f".latest-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(temporary, latest)
    return latest
