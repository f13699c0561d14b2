"""The newest dump of each PostgreSQL series holds the live database's data, not just intact bytes.

An intact, complete dump can still be the wrong one: another database saved under this one's name,
a schema-only dump (``pg_dump -s``), a dump of tables emptied since, or a dump that left a table
out (``-T``). These checks read what the newest dump holds (custom and directory archives: header,
TOC and the first row of each table's data; plain SQL: ``-- Name`` comments and the rows of each
``COPY`` section or ``INSERT``, streamed; other formats, such as ``-Ft``, are skipped) and
compare it with the live database the source declares (``database:``), read once per run through
a read-only session (one bounded catalog query plus one ``SELECT EXISTS`` per table estimated to
hold rows). A source without ``database:`` is skipped with a
reason; a live database that does not answer or a dump that cannot be read fails.

Runbook IDs: PF-04 "backup verification" (the newest backup is non-empty and complete: it holds
the right database, every live table and their rows) and QP-19 "backup verification
(``pg_restore --list``)" (the TOC of the newest dump is what the database holds).

Manifests (``<backup>.manifest.json``, what the drill compares a restore with) are evidence too:
when any backup of the series has one, the newest must have one too, and be the file it was
written for (size and sha256 recorded by ``write_manifest``); a database manifest must list the
tables the live database has. By kind: PostgreSQL PF-16 (integrity of each file of the daily series) and QP-19 (backup
verification); Redis PF-10 (every backup kind intact). An unreadable manifest, or one without the
binding, fails: evidence that cannot be read is not evidence.

A table created after the newest dump is missing from it until the next run of the job, and is not
a failure: a live table the dump lacks whose OID (``pg_class.oid``, assigned in creation order) is
greater than the largest live OID of the tables the dump does hold is taken as created since the
dump and recorded in the evidence (``created_since_dump``). A missing table with a smaller OID
existed when the dump was taken and fails; so does every missing table when the dump holds none of
the live ones (nothing to compare with). Caveats: OIDs restart after a wraparound (some 4 billion
objects) and a table dropped and re-created gets a new, larger OID, so such a table passes until
the next dump. When a table is never meant to be dumped, list it in the source's
``exclude_tables``. Single-table series (``scope: tables``, ``pg_dump -t``) are compared only on
the tables they hold.

Rows are compared per table with the manifest beside the backup when there is one: a table the
manifest recorded rows for at dump time must have rows in the dump. Without a manifest the live
row counts are no evidence of what a table held at dump time (a queue emptied then, refilled now),
so the check fails only when the dump holds rows for none of the tables the live database fills:
a schema-only dump, or one of emptied tables. A small lz4/zstd data block (not inflated here) is
taken as holding rows.

The archive header names the database the backup job connected with; through a connection pooler
that may be an alias, so the live session's ``current_database()`` is accepted as well as the
profile's ``dbname``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.backups import CatalogOf, NewestDump, listed, none_taken
from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.facts.database import LiveTables
from opsverify.facts.manifest import (
    ManifestError,
    NewerManifest,
    binding,
    load_manifest,
    manifest_path,
    recorded_binding,
)
from opsverify.profile import BackupSource, Database, Profile

pytestmark = [pytest.mark.backup, pytest.mark.daily]
TIME = "%Y-%m-%d %H:%M %Z"


def _of_this_database(dump: NewestDump) -> None:
    """One root cause: a dump of another database is reported by the database check alone."""
    if dump.of_another_database:
        pytest.skip(f"newest dump {dump.backup.name} holds database {dump.content.dbname}: "
                    "test_newest_dump_is_of_its_database fails for it")


def _excluded(table: str, globs: list[str]) -> bool:
    """``exclude_tables`` globs match ``schema.table`` or, without a dot, the bare table name."""
    bare = table.partition(".")[2]
    return any(fnmatch.fnmatchcase(table if "." in glob else bare, glob) for glob in globs)


@pytest.mark.runbook("PF-04", "QP-19")
def test_newest_dump_is_of_its_database(newest_dump: NewestDump | None, evidence: Recorder) -> None:
    """PF-04/QP-19: a custom (or directory) archive's header names the profile database the source backs up."""
    dump = newest_dump
    if dump is None:  # an on_demand source with no dump taken
        return
    evidence.record(backup=dump.backup.location, format=dump.content.format, dump_dbname=dump.content.dbname,
                    expected_dbname=dump.database.dbname)
    if dump.content.dbname is None:
        pytest.skip(f"newest dump {dump.backup.name} is plain SQL, which names no database: "
                    "its tables are compared with the live ones instead")
    evidence.record(live_current_database=dump.live.current_database)
    live = dump.live.current_database
    session = f"; the live session's current_database() is {live}" if live and live != dump.database.dbname else ""
    expect(
        not dump.of_another_database,
        f"newest dump {dump.backup.name} of {dump.source.name} holds database {dump.content.dbname}, not "
        f"{dump.database.dbname} (profile database {dump.database.name}{session}): check the job's pg_dump -d "
        f"({dump.backup.location})",
    )


@pytest.mark.runbook("PF-04", "QP-19")
def test_newest_dump_holds_rows_the_live_database_has(newest_dump: NewestDump | None, evidence: Recorder) -> None:
    """PF-04/QP-19: the dump holds the rows its tables had at dump time, as far as that can be known.

    With a manifest beside the backup (``tables``: rows at dump time), every table the manifest
    recorded rows for must have rows in the dump. Without one, the dump must hold rows for at least
    one of the tables the live database fills now: a schema-only dump (``pg_dump -s``) or a dump of
    emptied tables fails; one table empty at dump time and filled since (a queue) does not. A small
    lz4/zstd block counts as holding rows (unknown). A table the dump lacks altogether is the
    every-table check's finding, not this one's; tables matching ``exclude_tables`` (e.g. dumped
    with ``--exclude-table-data``) are left out.
    """
    dump = newest_dump
    if dump is None:  # an on_demand source with no dump taken
        return
    _of_this_database(dump)
    recorded = _manifest_rows(dump)
    if recorded is not None:
        had = {t: rows for t, rows in sorted(recorded.items())
               if rows > 0 and t in dump.content.tables and not _excluded(t, dump.source.exclude_tables)}
        empty = [t for t in had if dump.content.holds_rows(t) is False]
        evidence.record(backup=dump.backup.location, manifest_filled_tables=len(had),
                        dump_tables_without_rows=len(empty), unknown=",".join(sorted(dump.content.unknown)))
        if empty:
            first = empty[0]
            fail(f"newest dump {dump.backup.name} of {dump.source.name} holds no rows for {len(empty)} table(s) its "
                 f"manifest recorded rows for at dump time, first {first} ({had[first]} rows recorded): "
                 f"{dump.backup.location}")
        return
    kept = {t: rows for t, rows in dump.live.rows.items() if not _excluded(t, dump.source.exclude_tables)}
    filled = {t: rows for t, rows in sorted(kept.items()) if rows > 0 and t in dump.content.tables}
    with_rows = [t for t in filled if dump.content.holds_rows(t) is not False]
    evidence.record(backup=dump.backup.location, live_filled_tables=len(filled), dump_tables_with_rows=len(with_rows),
                    unknown=",".join(sorted(dump.content.unknown)))
    if filled and not with_rows:
        first = next(iter(filled))
        fail(f"newest dump {dump.backup.name} of {dump.source.name} holds no rows for any of the {len(filled)} "
             f"table(s) the live database fills, first {first} (live ~{filled[first]} rows; a schema-only dump or "
             f"one of emptied tables): {dump.backup.location}")


def _manifest_rows(dump: NewestDump) -> dict[str, int] | None:
    """Rows per table the manifest beside a local backup recorded at dump time; None without a usable one.

    An unreadable manifest is the manifest check's finding; here it is treated as absent.
    """
    if not dump.backup.is_local:
        return None
    try:
        data = load_manifest(Path(dump.backup.location))
    except ManifestError:
        return None
    tables = (data or {}).get("tables")
    if not isinstance(tables, dict) or not tables:
        return None
    try:
        return {str(t): int(f["rows"]) for t, f in tables.items()}
    except (TypeError, KeyError, ValueError):
        return None


@pytest.mark.runbook("PF-04", "QP-19")
def test_newest_full_dump_holds_every_live_table(newest_dump: NewestDump | None, evidence: Recorder) -> None:
    """PF-04/QP-19: a full dump (``scope: full``) holds every table the live database has, ``exclude_tables`` aside.

    The live tables are every ordinary and partitioned table outside the system schemas (partitions
    go with their parent), whatever ``tables:`` lists: a dump of another database (plain SQL names
    none) or one taken with ``-T`` fails here.
    """
    dump = newest_dump
    if dump is None:  # an on_demand source with no dump taken
        return
    if dump.source.scope != "full":
        pytest.skip(f"{dump.source.name} dumps selected tables (scope: {dump.source.scope}), not the whole database")
    _of_this_database(dump)
    live = sorted(t for t in dump.live.tables if not _excluded(t, dump.source.exclude_tables))
    absent = [t for t in live if t not in dump.content.tables]
    held = [dump.live.oids[t] for t in live if t in dump.content.tables and t in dump.live.oids]
    newest_held = max(held, default=None)
    since = [t for t in absent if newest_held is not None and dump.live.oids.get(t, 0) > newest_held]
    missing = [t for t in absent if t not in since]
    evidence.record(backup=dump.backup.location, live_tables=len(live), dump_tables=len(dump.content.tables),
                    missing=",".join(missing), created_since_dump=",".join(since),
                    excluded=",".join(dump.source.exclude_tables))
    if missing:
        taken = dump.backup.taken.astimezone().strftime(TIME)
        why = ("it holds none of the live tables: check the job's pg_dump -d" if newest_held is None else
               "older than the tables it holds, so not created since: add it to the job's dump, or to "
               "exclude_tables when it is never dumped")
        fail(f"newest dump {dump.backup.name} of {dump.source.name} lacks {len(missing)} of the {len(live)} table(s) "
             f"database {dump.database.name} holds live, first {missing[0]} (dump taken {taken}; {why}): "
             f"{dump.backup.location}")


PF10 = ("PF-10",)
MANIFEST = {"postgres": ("PF-16", "QP-19"), "redis": PF10, "config": PF10, "archive": PF10, "globals": PF10}


def rewrite(source: BackupSource, backup: Path | str) -> str:
    """The fix for a missing or unusable manifest: the job that writes it, or the command that writes one
    (`opsverify manifest write` describes database dumps and RDBs)."""
    if source.kind not in ("postgres", "redis"):
        return "re-run the backup job that writes it"
    return f"re-run the backup job, or write the manifest with `opsverify manifest write {backup}`"


@pytest.mark.runbook(by_kind=MANIFEST)
def test_newest_manifest_matches_its_backup(
    backup_source: BackupSource,
    profile: Profile,
    catalog_of: CatalogOf,
    live_tables_of: Callable[[Database], LiveTables],
    evidence: Recorder,
) -> None:
    """PF-16/QP-19 (MANIFEST by kind): the newest backup has a manifest when any backup of the series has one,
    and has the recorded size and sha256.

    A PostgreSQL manifest must also list at least one table when the live database holds tables.
    """
    source = backup_source
    catalog = listed(source, catalog_of)
    if none_taken(source, catalog, evidence):
        return
    local = [f for f in catalog.files if f.is_local]
    if not local:
        pytest.skip(f"backups of {source.name} are not on this machine: manifests are read beside local backups")
    newest = next((f for f in local if manifest_path(Path(f.location)).exists()), None)
    if newest is None:
        pytest.skip(f"no backup of {source.name} has a manifest (<backup>.manifest.json)")
    if newest is not local[0]:
        latest = manifest_path(Path(local[0].location))
        fail(f"newest backup {local[0].name} of {source.name} has no manifest ({latest.name}), though older backup "
             f"{newest.name} has one: the job stopped writing manifests or failed before it; "
             f"{rewrite(source, local[0].location)} ({latest})")
    backup = Path(newest.location)
    manifest = manifest_path(backup)
    try:
        data = load_manifest(backup)
        size, sha = recorded_binding(data or {})  # None: deleted since it was listed
    except ManifestError as exc:
        newer = isinstance(exc, NewerManifest)  # the manifest is fine, this reader old
        fix = "" if newer else f": {rewrite(source, backup)}"
        fail(f"manifest {manifest.name} of {source.name} {exc}{fix} ({manifest})")
    try:
        actual = binding(backup)
    except OSError as exc:
        fail(f"cannot read backup {newest.name} of {source.name} to compare it with its manifest: "
             f"{exc.strerror or exc} ({newest.location})")
    evidence.record(backup=newest.location, manifest=str(manifest), recorded_size=size, recorded_sha256=sha,
                    size=actual["size"], sha256=actual["sha256"])
    expect(
        (size, sha) == (actual["size"], actual["sha256"]),
        f"manifest {manifest.name} does not match backup {newest.name} of {source.name}: it records {size:,} bytes "
        f"sha256 {sha[:12]}, the file has {actual['size']:,} bytes sha256 {actual['sha256'][:12]}: the backup was "
        f"replaced after its manifest was written, or the manifest is another backup's ({manifest})",
    )
    if source.kind != "postgres":
        return
    tables = data.get("tables")
    if not isinstance(tables, dict):
        fail(f"manifest {manifest.name} of {source.name} holds no table map ('tables'): {rewrite(source, backup)} "
             f"({manifest})")
    evidence.record(manifest_tables=len(tables))
    if tables or source.database is None:
        return
    database = profile.database(source.database)
    live = live_tables_of(database)
    expect(live.error is None, f"cannot read the live tables of database {database.name} ({live.address}): "
           f"{live.error}")
    expect(
        not live.tables,
        f"manifest {manifest.name} of {source.name} lists no table, but database {database.name} holds "
        f"{len(live.tables)} live: {rewrite(source, backup)} ({manifest})",
    )
