"""Data fidelity of a restored copy: its facts compared with what the backup held (a manifest, or
the source read in one snapshot). Every difference is named, table by table or key by key.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsverify.facts.database import DataFacts
from opsverify.facts.redis import RedisFacts


@dataclass(frozen=True)
class Difference:
    """One table whose restored state differs from the expected one."""

    table: str
    problem: str


def compare_rows(expected: DataFacts, restored: DataFacts) -> list[Difference]:
    """Tables missing from the restore or with another row count."""
    out = []
    for name, want in expected.tables.items():
        got = restored.tables.get(name)
        if got is None:
            out.append(Difference(name, "missing from the restored copy"))
        elif got.rows != want.rows:
            out.append(Difference(name, f"{got.rows} rows restored, {want.rows} expected"))
    return out


def compare_checksums(expected: DataFacts, restored: DataFacts) -> tuple[list[Difference], int]:
    """Tables whose content checksum differs; and how many tables were compared."""
    out, compared = [], 0
    for name, want in expected.tables.items():
        got = restored.tables.get(name)
        if want.checksum is None or got is None or got.checksum is None:
            continue
        if got.checksum.partition(":")[0] != want.checksum.partition(":")[0]:
            continue  # hashed by another method (a column type hashable on one server only): not comparable
        compared += 1
        if got.checksum != want.checksum:
            out.append(Difference(name, f"content checksum {got.checksum} differs from {want.checksum}"))
    return out, compared


def compare_redis(expected: RedisFacts, restored: RedisFacts) -> list[str]:
    """What differs: the persistent key count, and sampled keys missing or of another type."""
    problems = []
    if restored.persistent_keys != expected.persistent_keys:
        problems.append(f"{restored.persistent_keys} persistent keys restored, {expected.persistent_keys} expected")
    for db, keys in expected.per_db.items():
        if restored.per_db.get(db, 0) != keys:
            problems.append(f"{db} holds {restored.per_db.get(db, 0)} persistent keys, {keys} expected")
    for key, kind in expected.sample.items():
        got = restored.sample.get(key, "missing")
        if got != kind:
            problems.append(f"key {key} is {got}, expected {kind}")
    return problems
