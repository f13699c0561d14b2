"""Manifests: what a backup held at backup time, in ``<backup>.manifest.json`` beside it.

A backup job (the sandbox's, or a team's own) writes the facts of what it dumped; a drill
compares the restored copy with them. Database facts and Redis key facts share the file format.
``write_manifest`` also binds the manifest to its backup: ``"backup": {"name", "size", "sha256"}``
of the file (of ``toc.dat`` for a ``pg_dump -Fd`` directory), hashed while streaming, so a backup
replaced after its manifest was written, or a manifest copied from another backup, is found out
(``binding_problem``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

BINDING = "backup"
READ_SIZE = 1 << 20


class Facts(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def manifest_path(backup: Path) -> Path:
    """Where the backup job left its manifest: ``<backup>.manifest.json`` beside it."""
    return backup.with_name(backup.name + ".manifest.json")


def bound_file(backup: Path) -> Path:
    """The file a manifest's binding describes: the backup, or a directory dump's ``toc.dat``."""
    return backup / "toc.dat" if backup.is_dir() else backup


def binding(backup: Path) -> dict[str, Any]:
    """``{"name", "size", "sha256"}`` of the backup, read in constant memory."""
    file = bound_file(backup)
    digest = hashlib.sha256()
    size = 0
    with file.open("rb") as stream:
        while chunk := stream.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return {"name": backup.name, "size": size, "sha256": digest.hexdigest()}


def write_manifest(backup: Path, facts: Facts | dict[str, Any]) -> Path:
    """Record what a backup holds, at backup time, bound to the backup's size and hash (the sandbox's jobs do)."""
    data = facts.to_json() if not isinstance(facts, dict) else facts
    data = {**data, BINDING: binding(backup)}
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
    """A manifest that cannot serve as evidence: unreadable, not JSON, or without its binding; the text says which."""


def load_manifest(backup: Path) -> dict[str, Any] | None:
    """The backup's manifest as a JSON object; None when there is none; ``ManifestError`` saying what is wrong."""
    path = manifest_path(backup)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ManifestError("is not text") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ManifestError(f"is not valid JSON{where}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"is a JSON {type(data).__name__}, not an object")
    return data


def recorded_binding(manifest: dict[str, Any]) -> tuple[int, str]:
    """(size, sha256) the manifest records for its backup; ``ManifestError`` when they are missing or malformed."""
    bound = manifest.get(BINDING)
    size = bound.get("size") if isinstance(bound, dict) else None
    sha = bound.get("sha256") if isinstance(bound, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha, str) or len(sha) != 64:
        raise ManifestError("records no size and sha256 of its backup (backup.size, backup.sha256)")
    return size, sha.lower()
