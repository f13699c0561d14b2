"""A manifest that cannot serve names the fix that exists: `opsverify manifest write BACKUP`, or, for a manifest of
a newer format version (which is fine), upgrading opsverify — never "re-run the job" for that."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsverify.facts.manifest import VERSION, manifest_path
from opsverify.profile import Profile

Variant = Callable[..., Path]
Run = Callable[..., Any]
MANIFEST = "test_backup_content.py::test_newest_manifest_matches_its_backup[pf-copied]"
COUNTS = "test_database_drill.py::test_restored_row_counts_match_the_backup[pf-database-custom]"
CHECKSUMS = "test_database_drill.py::test_restored_tables_match_their_checksums[pf-database-custom]"


def newer_manifest_copy(sandbox: Profile, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The newest custom dump of photonic_foundry copied into tmp_path, with its manifest marked a newer version."""
    source = next(b for b in sandbox.backups if b.name == "pf-postgres-custom")
    original = max(Path(source.path).glob(source.pattern), key=lambda p: p.stat().st_mtime)
    directory = tmp_path / "copied"
    directory.mkdir()
    dump = directory / original.name
    shutil.copy2(original, dump)
    data = json.loads(manifest_path(original).read_text())
    manifest_path(dump).write_text(json.dumps({**data, "format": "opsverify-manifest", "version": VERSION + 1}))
    return {"name": "pf-copied", "kind": "postgres", "path": str(directory), "pattern": "backup_*.dump"}, dump


def newer(dump: Path) -> str:
    return (f"is format version {VERSION + 1}, newer than the version {VERSION} this opsverify reads: "
            "upgrade opsverify to read it")


def test_a_manifest_of_a_newer_format_version_fails_naming_the_upgrade_only(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source, dump = newer_manifest_copy(sandbox, tmp_path)

    def only_source(data: dict[str, Any]) -> None:
        data["backups"] = [source]

    content = run_checks(profile_variant(only_source), "backup/test_backup_content.py")
    assert content.failed() == {MANIFEST}
    assert content.message(MANIFEST) == (
        f"manifest {dump.name}.manifest.json of pf-copied {newer(dump)} ({dump}.manifest.json)")

    def only_drill(data: dict[str, Any]) -> None:
        drill = next(d for d in data["drills"] if d["name"] == "pf-database-custom")
        data["backups"] = [source]
        data["drills"] = [{**drill, "backup": "pf-copied"}]

    drill = run_checks(profile_variant(only_drill), "restore/test_database_drill.py")
    assert drill.failed() == {COUNTS, CHECKSUMS}
    problem = f"the manifest {dump}.manifest.json {newer(dump)}"
    assert drill.message(COUNTS) == f"drill pf-database-custom: cannot compare row counts: {problem}"
    assert drill.message(CHECKSUMS) == f"drill pf-database-custom: cannot compare checksums: {problem}"
