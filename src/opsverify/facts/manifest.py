"""Manifests: what a backup held at backup time, in ``<backup>.manifest.json`` beside it.

A backup job (the sandbox's, or a team's own) writes the facts of what it dumped; a drill
compares the restored copy with them. Database facts and Redis key facts share the file format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class Facts(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def manifest_path(backup: Path) -> Path:
    """Where the backup job left its manifest: ``<backup>.manifest.json`` beside it."""
    return backup.with_name(backup.name + ".manifest.json")


def write_manifest(backup: Path, facts: Facts | dict[str, Any]) -> Path:
    """Record what a backup holds, at backup time (the sandbox's jobs do; a real job can too)."""
    data = facts.to_json() if not isinstance(facts, dict) else facts
    target = manifest_path(backup)
    target.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return target


def read_manifest(backup: Path) -> dict[str, Any] | None:
    """The backup's manifest, or None when the job wrote none."""
    path = manifest_path(backup)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ManifestError(ValueError):
    """A manifest exists but cannot be used: not JSON, or not a JSON object."""


def load_manifest(backup: Path) -> dict[str, Any] | None:
    """The backup's manifest; None when there is none; ``ManifestError`` (naming the defect) when malformed."""
    path = manifest_path(backup)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"is not a JSON object (it holds a {type(data).__name__})")
    return data
