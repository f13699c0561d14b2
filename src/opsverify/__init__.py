"""opsverify: runbook procedures as an executable, reported pytest suite."""

from __future__ import annotations

__version__ = "0.1.0"
