"""Manifests: what a backup held at backup time, in ``<backup>.manifest.json`` beside it.

A backup job (the sandbox's, or a team's own) writes the facts of what it dumped; a drill
compares the restored copy with them. Database facts and Redis key facts share the file format.
``write_manifest`` also binds the manifest to its backup: ``"backup": {"name", "size", "sha256"}``
of the file (of ``toc.dat`` for a ``pg_dump -Fd`` directory), hashed while streaming, so a backup
replaced after its manifest was written, or a manifest copied from another backup, is found out
(``recorded_binding`` against ``binding``: checks/backup/test_backup_content.py's
``test_newest_manifest_matches_its_backup``).

The format is versioned (``"format": "opsverify-manifest", "version": 1``) and documented in
docs/manifest.md; ``SCHEMA`` is its JSON Schema (``opsverify manifest schema``). Version 1 is what
the sandbox's jobs always wrote (the binding, ``tables`` or ``redis``) plus the fields saying what
it is, when and by what it was written and where its facts come from, all optional for a reader: a
manifest without ``format`` and ``version`` is read as version 1. Another ``format`` is a
``ManifestError``; a newer version a ``NewerManifest`` (a ``ManifestError`` whose one fix is to upgrade).
``manifest_data`` builds what ``write_manifest`` writes, so a caller can compare it with the file there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

BINDING = "backup"
READ_SIZE = 1 << 20
FORMAT = "opsverify-manifest"
VERSION = 1
FACTS_FROM = ("backup", "source")


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


def manifest_data(
    backup: Path,
    facts: Facts | dict[str, Any],
    *,
    written_by: str = "a backup job (opsverify.facts.manifest.write_manifest)",
    facts_from: str = "source",
    source: str | None = None,
    bound: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest ``write_manifest`` writes: the facts, what wrote them when, and the binding (``bound``, or
    the backup's size and hash read now)."""
    data = facts.to_json() if not isinstance(facts, dict) else facts
    written_at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "written_at": written_at,
                            "written_by": written_by, "facts_from": facts_from}
    if source is not None:
        meta["source"] = source
    return {**data, **meta, BINDING: bound if bound is not None else binding(backup)}


def manifest_text(data: dict[str, Any]) -> str:
    """The file's text: sorted, indented JSON (so the same facts give the same bytes)."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_manifest(
    backup: Path,
    facts: Facts | dict[str, Any],
    *,
    written_by: str = "a backup job (opsverify.facts.manifest.write_manifest)",
    facts_from: str = "source",
    source: str | None = None,
) -> Path:
    """Record what a backup holds, bound to the backup's size and hash; written atomically (tmp + rename).

    ``written_by``: what wrote it (``opsverify 0.1 manifest write``, a backup job); ``facts_from``:
    ``backup`` (read from the backup file itself) or ``source`` (read from the live source at backup
    time), ``source`` the profile's name of that source.
    """
    data = manifest_data(backup, facts, written_by=written_by, facts_from=facts_from, source=source)
    return write_manifest_data(backup, data)


def write_manifest_data(backup: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (``manifest_data``) beside ``backup`` atomically: a temporary file renamed into place."""
    target = manifest_path(backup)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(manifest_text(data))
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644 if not backup.exists() else (backup.stat().st_mode & 0o666) | 0o400)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


class NewerManifest(ManifestError):
    """A manifest of a format version newer than this opsverify reads: the text ends in its one fix (upgrade)."""


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
    check_version(data)
    return data


def check_version(data: dict[str, Any]) -> int:
    """The manifest's format version (1 for one written before versions: honest, version 1 only added fields);
    ``ManifestError`` for another format or a version newer than ``VERSION``."""
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT:
        raise ManifestError(f"is not an opsverify manifest (format {fmt!r}, expected {FORMAT!r})")
    version = data.get("version", 1 if "format" not in data else None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(f"has no valid version (version {version!r}, expected a positive integer)")
    if version > VERSION:
        raise NewerManifest(
            f"is format version {version}, newer than the version {VERSION} this opsverify reads: upgrade "
            "opsverify to read it"
        )
    return version


def recorded_binding(manifest: dict[str, Any]) -> tuple[int, str]:
    """(size, sha256) the manifest records for its backup; ``ManifestError`` when they are missing or malformed."""
    bound = manifest.get(BINDING)
    size = bound.get("size") if isinstance(bound, dict) else None
    sha = bound.get("sha256") if isinstance(bound, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha, str) or len(sha) != 64:
        raise ManifestError("records no size and sha256 of its backup (backup.size, backup.sha256)")
    return size, sha.lower()


_COUNT = {"type": "integer", "minimum": 0}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://opsverify.invalid/manifest-v1.schema.json",
    "title": "opsverify backup manifest, version 1",
    "description": "<backup>.manifest.json beside a backup: what it held at backup time, bound to its size and "
    "SHA-256. A manifest without format and version is read as version 1.",
    "type": "object",
    "required": [BINDING],
    "anyOf": [{"required": ["tables"]}, {"required": ["redis"]}],
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": VERSION, "description": "a newer version is refused: upgrade opsverify"},
        "written_at": {"type": "string", "format": "date-time", "description": "UTC, when it was written"},
        "written_by": {"type": "string", "description": "what wrote it: `opsverify <version> manifest write`, a job"},
        "facts_from": {"enum": list(FACTS_FROM), "description": "backup: read from the backup file itself; "
                       "source: read from the live source right after the dump"},
        "source": {"type": "string", "description": "the profile's backup source whose live database or Redis "
                   "was read (facts_from: source)"},
        BINDING: {
            "type": "object",
            "description": "the backup file it describes (toc.dat of a pg_dump -Fd directory)",
            "required": ["size", "sha256"],
            "properties": {
                "name": {"type": "string"},
                "size": _COUNT,
                "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
            },
        },
        "checksum_algorithm": {"type": "string", "description": "sum-hash-64: checksums of another are not compared"},
        "tables": {
            "type": "object",
            "description": "schema.table -> its rows at backup time and, optionally, its content checksum",
            "additionalProperties": {
                "type": "object",
                "required": ["rows"],
                "properties": {
                    "rows": _COUNT,
                    "checksum": {"type": ["string", "null"], "pattern": "^[rt]:-?[0-9]+$"},
                },
            },
        },
        "redis": {
            "type": "object",
            "description": "persistent keys (no TTL) per database and a sample of them with their types",
            "required": ["dbsize", "persistent_keys", "sample"],
            "properties": {
                "dbsize": _COUNT,
                "persistent_keys": _COUNT,
                "per_db": {"type": "object", "additionalProperties": _COUNT, "description": "db0 -> persistent keys"},
                "sample_method": {"type": "string", "description": "db0-smallest-crc32"},
                "sample": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "key -> type (string, hash, list, set, zset, stream)"},
            },
        },
    },
}
