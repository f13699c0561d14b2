"""Data fidelity of a restored copy: its facts compared with what the backup held (a manifest, or
the source read in one snapshot). Every difference is named, table by table or key by key.

What "equal" means depends on where the expectation comes from (``Basis``): a manifest records the
state at backup time and a quiescent source has not changed since, so both compare exactly; a live
source has taken writes since the backup, so its row counts compare within the drill's
``row_tolerance``. Tables declared ``append_only`` only grow: the restored copy may hold fewer rows
than a live source (at most ``row_tolerance`` fewer), never more, and at least a manifest's rows. A
table restored empty while a live source holds rows fails whatever the tolerance (an emptied table):
only a manifest can prove it was empty at backup time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opsverify.facts.database import DataFacts
from opsverify.facts.redis import RedisFacts
from opsverify.profile.recovery import RowTolerance

Basis = Literal["manifest", "quiescent", "live"]


@dataclass(frozen=True)
class Difference:
    """One table whose restored state differs from the expected one."""

    table: str
    problem: str


def matches(table: str, globs: Sequence[str]) -> bool:
    """Table globs match ``schema.table`` or, without a dot, the bare table name."""
    bare = table.partition(".")[2]
    return any(fnmatch.fnmatchcase(table if "." in glob else bare, glob) for glob in globs)


def compare_rows(
    expected: DataFacts,
    restored: DataFacts,
    basis: Basis = "manifest",
    tolerance: RowTolerance | None = None,
    append_only: Sequence[str] = (),
) -> list[Difference]:
    """Tables missing from the restore, or whose row count is not what ``basis`` allows.

    ``manifest``: exactly the manifest's rows (an ``append_only`` table: at least them). ``quiescent``:
    exactly the source's. ``live``: within ``tolerance`` of the source's (an ``append_only`` table: at
    most the source's and at least the source's less ``tolerance``); never 0 where the source holds rows.
    """
    tolerance = tolerance or RowTolerance()
    out = []
    for name, want in expected.tables.items():
        got = restored.tables.get(name)
        if got is None:
            out.append(Difference(name, "missing from the restored copy"))
            continue
        problem = _row_problem(got.rows, want.rows, basis, tolerance, matches(name, append_only))
        if problem is not None:
            out.append(Difference(name, problem))
    return out


EMPTIED = ("an emptied table fails whatever the row_tolerance; if it really was empty at backup time, record that "
           "exact evidence in a manifest written at backup time (opsverify manifest write BACKUP)")


def in_the_dump(expected: DataFacts, dump_toc: set[str] | None) -> tuple[DataFacts, list[str]]:
    """A live source's facts limited to the tables the dump's TOC lists; and the source's tables it does not list.

    A table created in the source after the backup is not in the dump, so it is no restore failure: the
    drill proves the restore of what the dump holds (whether a dump left a live table out is
    checks/backup/test_backup_content.py's finding). Without a readable TOC nothing is left out.
    """
    if dump_toc is None:
        return expected, []
    absent = sorted(name for name in expected.tables if f"TABLE {name}" not in dump_toc)
    kept = {name: fact for name, fact in expected.tables.items() if name not in absent}
    return DataFacts(kept), absent


def _row_problem(got: int, want: int, basis: Basis, tolerance: RowTolerance, append_only: bool) -> str | None:
    if basis == "manifest" and append_only:
        return None if got >= want else f"{got} rows restored, fewer than the {want} recorded (append_only)"
    if basis != "live":
        return None if got == want else f"{got} rows restored, {want} expected"
    if got == 0 and want > 0:
        return f"0 rows restored, {want} in the source: {EMPTIED}"
    allowed = tolerance.allowed(want)
    within = f"the row_tolerance of {allowed} rows ({tolerance.percent:g}% of {want}, at least {tolerance.min_rows})"
    if append_only:
        if got > want:
            return (f"{got} rows restored, more than the {want} the source holds now (append_only: the table "
                    "cannot have shrunk since the backup)")
        if want - got > allowed:
            return (f"{got} rows restored, {want} in the source, {want - got} fewer: beyond {within} (append_only: "
                    "rows appended since the backup may be missing, no more)")
        return None
    if abs(got - want) <= allowed:
        return None
    return f"{got} rows restored, {want} in the source, off by {abs(got - want)}: beyond {within}"


def compare_checksums(
    expected: DataFacts, restored: DataFacts, exclude: frozenset[str] = frozenset()
) -> tuple[list[Difference], int]:
    """Tables whose content checksum differs; and how many tables were compared (``exclude`` aside)."""
    out, compared = [], 0
    for name, want in expected.tables.items():
        got = restored.tables.get(name)
        if want.checksum is None or got is None or got.checksum is None or name in exclude:
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
