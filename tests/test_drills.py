"""checks/restore and checks/recovery against the real test sandbox: a healthy drill passes and records
RTO/RPO; faults in the backups fail the right check; scratch databases never outlive a run.

Faulty backups are made with the real tools: the sandbox's own dump restored into a scratch
database, changed there, and dumped again beside the original backup's manifest.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.actions.base import performed
from opsverify.actions.database import ScratchDatabase, connect, drop_database
from opsverify.backups.jobs import pg_dump
from opsverify.facts.database import source_facts
from opsverify.facts.manifest import manifest_path
from opsverify.localserver.scratch import SCRATCH_PREFIX
from opsverify.pgtools import pg_env, pg_tool
from opsverify.profile import Database
from opsverify.profile.environment import Profile
from opsverify.restore.pgrestore import restore_backup
from opsverify.sandbox.postgres import serve_sandbox_tls

Run = Callable[..., Any]
Variant = Callable[..., Path]
PF = "pf-database-custom"
DRILL = "restore/test_database_drill.py"
T = timedelta(seconds=10)
DRILLS = (PF, "qp-database-gzip", "cache-rdb")


def scratch_databases(profile: Profile) -> set[str]:
    assert profile.restore_target is not None
    with connect(profile.restore_target, None, T) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'opsverify\\_scratch\\_%'").fetchall()
    return {str(r[0]) for r in rows}


def newest(profile: Profile, source: str) -> Path:
    backup = next(b for b in profile.backups if b.name == source)
    return max(Path(backup.path).glob(backup.pattern), key=lambda p: p.stat().st_mtime)


def only_drill(drill_name: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    """Keep one drill (changed as asked); its backup source may be replaced by ``source``."""

    def mutate(data: dict[str, Any]) -> None:
        drill = next(d for d in data["drills"] if d["name"] == drill_name)
        source = changes.pop("source", None)
        if source is not None:
            data["backups"] = [source]
            drill["backup"] = source["name"]
        drill.update(changes)
        data["drills"] = [drill]

    return mutate


def tampered_dump(
    profile: Profile, tmp_path: Path, sql: str, name: str, facts: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The newest custom dump of photonic_foundry, restored, changed by ``sql``, dumped again with the old manifest.

    ``facts``, when given, receives the changed copy's table facts (row counts and checksums).
    """
    original = newest(profile, "pf-postgres-custom")
    target = profile.restore_target
    assert target is not None
    directory = tmp_path / name
    directory.mkdir()
    dump = directory / original.name
    scratch = f"{SCRATCH_PREFIX}test_{name}_{os.getpid()}"
    with performed(ScratchDatabase(target, scratch, T)):
        assert restore_backup(original, "pg-custom", target, scratch, jobs=1, connect=T, timeout=T * 6).ok
        with connect(target, scratch, T) as conn:
            conn.execute(sql)
            if facts is not None:
                facts.update(source_facts(conn, 100_000).to_json()["tables"])
        copy = Database(
            name=scratch, host=target.host, port=target.port, dbname=scratch, user=target.user,
            password=target.password, password_file=target.password_file, sslmode=target.sslmode,
            sslrootcert=target.sslrootcert,
        )
        pg_dump(copy, dump, T, T * 6)
    shutil.copy2(manifest_path(original), manifest_path(dump))
    os.utime(dump, (original.stat().st_atime, original.stat().st_mtime))
    return {"name": "pf-tampered", "kind": "postgres", "path": str(directory), "pattern": "backup_*.dump"}


def used_scratch(run: Any) -> set[str]:
    """The scratch databases the run's drills restored into (their restore checks record the names)."""
    return {c["evidence"]["scratch_database"] for t, c in run.checks.items()
            if "test_restore_completes_without_errors" in t and "scratch_database" in c["evidence"]}


def drills_of(scratch: set[str]) -> set[str]:
    """The drill part of scratch database names (``opsverify_scratch_<run>_<worker>_<n>_<drill>``)."""
    return {re.sub(r"^opsverify_scratch_[a-z0-9]+_[a-z0-9]+_\d+_", "", name) for name in scratch}


def test_healthy_drills_pass_and_record_rto_and_rpo(
    run_checks: Run, profile_variant: Variant, sandbox: Profile
) -> None:
    run = run_checks(profile_variant(), "restore", "recovery")
    assert run.result.ret == 0, run.result.stdout.str()
    rto = run.checks[f"test_database_drill.py::test_restore_time_is_within_rto[{PF}]"]
    assert rto["evidence"]["rto_objective"] == "30m"
    assert rto["evidence"]["rto_measured"].endswith(("ms", "s"))
    assert float(rto["evidence"]["rto_seconds"]) > float(rto["evidence"]["restore_seconds"]) > 0
    rpo = run.checks[f"test_objectives.py::test_recovery_point_is_within_rpo[{PF}]"]
    assert rpo["evidence"]["rpo_objective"] == "1h"
    assert rpo["evidence"]["recovery_path"].startswith("point-in-time recovery (base backup base_")
    promoted = run.checks["test_replicas.py::test_promoted_copy_accepts_writes_on_a_new_timeline[pf-replica]"]
    assert int(promoted["evidence"]["timeline"]) > int(promoted["evidence"]["primary_timeline"])
    checksums = run.checks[f"test_database_drill.py::test_restored_tables_match_their_checksums[{PF}]"]
    assert checksums["outcome"] == "passed"
    assert checksums["evidence"]["checksummed_tables"] == "2"
    junit = (run.report_dir / "junit.xml").read_text()
    assert 'name="evidence.rto_measured"' in junit
    assert drills_of(used_scratch(run)) == {"pf_database_custom", "qp_database_gzip"}
    assert not used_scratch(run) & scratch_databases(sandbox)  # every drill dropped its scratch database
    assert Path(promoted["evidence"]["standby_dir"]).name.startswith(SCRATCH_PREFIX)
    assert not Path(promoted["evidence"]["standby_dir"]).exists()  # the scratch standby is gone


def test_backup_missing_a_table_fails_the_row_counts(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = tampered_dump(sandbox, tmp_path, "DROP TABLE models CASCADE", "missing_table")
    run = run_checks(profile_variant(only_drill(PF, source=source)), DRILL)
    test = f"test_database_drill.py::test_restored_row_counts_match_the_backup[{PF}]"
    smoke = f"test_database_drill.py::test_smoke_queries_return_rows[{PF}]"
    rto = f"test_database_drill.py::test_restore_time_is_within_rto[{PF}]"
    assert run.failed() == {test, smoke, rto}
    assert run.message(smoke) == (
        f"drill {PF}: smoke query 'SELECT name FROM models LIMIT 1' failed: relation \"models\" does not exist"
    )
    assert run.message(rto) == (
        f"drill {PF}: not recovered (smoke query 'SELECT name FROM models LIMIT 1' did not return a row), "
        "RTO 30m not met"
    )
    manifest = manifest_path(newest(sandbox, "pf-postgres-custom")).name
    assert run.message(test) == (
        f"drill {PF}: 1 table(s) differ from the manifest {manifest}, "
        "first public.models: missing from the restored copy"
    )


def test_deleted_row_fails_row_counts_and_checksums(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    changed: dict[str, Any] = {}
    source = tampered_dump(sandbox, tmp_path, "DELETE FROM simulations WHERE id = 4242", "deleted_row", changed)
    run = run_checks(profile_variant(only_drill(PF, source=source)), DRILL)
    counts = f"test_database_drill.py::test_restored_row_counts_match_the_backup[{PF}]"
    checksums = f"test_database_drill.py::test_restored_tables_match_their_checksums[{PF}]"
    assert run.failed() == {counts, checksums}
    manifest = manifest_path(newest(sandbox, "pf-postgres-custom"))
    recorded = json.loads(manifest.read_text())["tables"]["public.simulations"]["checksum"]
    assert run.message(counts) == (
        f"drill {PF}: 1 table(s) differ from the manifest {manifest.name}, "
        "first public.simulations: 4999 rows restored, 5000 expected"
    )
    assert run.message(checksums) == (
        f"drill {PF}: public.simulations content checksum {changed['public.simulations']['checksum']} differs from "
        f"{recorded} (the manifest {manifest.name})"
    )


def test_changed_row_fails_only_the_checksums(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    changed: dict[str, Any] = {}
    source = tampered_dump(sandbox, tmp_path, "UPDATE models SET accuracy = 0.5 WHERE id = 7", "changed_row", changed)
    run = run_checks(profile_variant(only_drill(PF, source=source)), DRILL)
    test = f"test_database_drill.py::test_restored_tables_match_their_checksums[{PF}]"
    assert run.failed() == {test}
    manifest = manifest_path(newest(sandbox, "pf-postgres-custom"))
    recorded = json.loads(manifest.read_text())["tables"]["public.models"]["checksum"]
    assert run.message(test) == (
        f"drill {PF}: public.models content checksum {changed['public.models']['checksum']} differs from "
        f"{recorded} (the manifest {manifest.name})"
    )


# A btree operator class whose comparison lies (it answers at random): the index the restore builds
# with it is out of order, as an index is after the collation it was sorted by changed under it.
LYING_INDEX = """
CREATE FUNCTION lying_cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT CASE WHEN random() < 0.5 THEN -1 ELSE 1 END $$;
CREATE OPERATOR CLASS lying_ops FOR TYPE int USING btree AS
  OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 lying_cmp(int, int);
CREATE TABLE lying AS SELECT g AS n FROM generate_series(1, 2000) AS g;
CREATE INDEX lying_n ON lying (n lying_ops);
"""


def test_index_out_of_order_fails_only_amcheck(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = tampered_dump(sandbox, tmp_path, LYING_INDEX, "lying_index")
    run = run_checks(profile_variant(only_drill(PF, source=source)), DRILL)
    test = f"test_database_drill.py::test_restored_copy_passes_amcheck[{PF}]"
    assert run.failed() == {test}
    assert run.message(test).startswith(f"drill {PF}: pg_amcheck on the restored copy: ")
    assert "lying_n" in run.message(test)
    healthy = run_checks(profile_variant(only_drill(PF)), DRILL)
    assert healthy.outcome(test) == "passed"
    assert healthy.checks[test]["evidence"]["amcheck"] == "clean"


def broken_sql_dump(profile: Profile, tmp_path: Path, insert: str) -> dict[str, Any]:
    """The newest gzip SQL dump of quantum_planner with ``insert`` placed after its first table."""
    original = newest(profile, "qp-database-daily")
    directory = tmp_path / "broken"
    directory.mkdir()
    with gzip.open(original, "rt") as source:
        text = source.read()
    cut = text.index("CREATE TABLE public.users")
    with gzip.open(directory / original.name, "wt") as out:
        out.write(text[:cut] + insert + "\n" + text[cut:])
    shutil.copy2(manifest_path(original), manifest_path(directory / original.name))
    return {"name": "qp-broken", "kind": "postgres", "path": str(directory), "pattern": "quantum_planner_*.sql.gz"}


def test_restore_that_errors_half_way_fails_and_drops_its_scratch_database(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = broken_sql_dump(sandbox, tmp_path, "THIS IS NOT SQL;")
    run = run_checks(profile_variant(only_drill("qp-database-gzip", source=source)), DRILL)
    test = "test_database_drill.py::test_restore_completes_without_errors[qp-database-gzip]"
    rto = "test_database_drill.py::test_restore_time_is_within_rto[qp-database-gzip]"
    assert run.failed() == {test, rto}
    dump = Path(source["path"]) / newest(sandbox, "qp-database-daily").name
    with gzip.open(dump, "rt") as text:
        line = next(n for n, row in enumerate(text, 1) if row.startswith("THIS IS NOT SQL;"))
    assert run.message(test) == (
        f"restore of {dump} for drill qp-database-gzip failed: psql:<stdin>:{line}: ERROR:  syntax error at or near "
        '"THIS"'
    )
    assert run.message(rto) == "drill qp-database-gzip: not recovered (the restore failed), RTO 30m not met"
    skipped = {t for t, c in run.checks.items() if c["outcome"] == "skipped"}
    assert skipped == {
        check(name, "qp-database-gzip")
        for name in ("test_restored_schema_matches_the_dump", "test_restored_row_counts_match_the_backup",
                     "test_restored_tables_match_their_checksums", "test_smoke_queries_return_rows",
                     "test_restored_copy_passes_amcheck")
    }
    assert drills_of(used_scratch(run)) == {"qp_database_gzip"}
    assert not used_scratch(run) & scratch_databases(sandbox)


def test_restore_slower_than_the_rto_fails_only_the_rto(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = broken_sql_dump(sandbox, tmp_path, "SELECT pg_sleep(2.5);")  # a restore that really takes 2.5 s more

    def mutate(data: dict[str, Any]) -> None:
        only_drill("qp-database-gzip", source=source)(data)
        data["objectives"] = [{"component": "database", "rto": "2s", "rpo": "1h"}]

    run = run_checks(profile_variant(mutate), DRILL)
    test = "test_database_drill.py::test_restore_time_is_within_rto[qp-database-gzip]"
    assert run.failed() == {test}
    measured = run.checks[test]["evidence"]["rto_measured"]
    assert float(run.checks[test]["evidence"]["rto_seconds"]) > 2.5
    dump = Path(source["path"]) / newest(sandbox, "qp-database-daily").name
    assert run.message(test) == f"drill qp-database-gzip took {measured} to recover (database RTO 2s): {dump}"


def test_killed_run_leaves_a_scratch_database_that_the_next_run_drops(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path, pytester: pytest.Pytester
) -> None:
    source = broken_sql_dump(sandbox, tmp_path, "SELECT pg_sleep(60);")
    profile = profile_variant(only_drill("qp-database-gzip", source=source, name="killed-drill"))

    def killed() -> set[str]:
        return {name for name in scratch_databases(sandbox) if name.endswith("_killed_drill")}

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(root / "checks" / DRILL), "--rootdir", str(root), "-c",
         str(root / "pyproject.toml"), "--profile", str(profile), "--no-reports", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not killed():
            assert time.monotonic() < deadline, "the drill never created its scratch database"
            time.sleep(0.2)
        time.sleep(1)  # mid-restore: psql sleeps inside the dump
        proc.send_signal(signal.SIGKILL)  # a SIGTERM'd run runs its teardowns (fixtures/actions.py): no orphan
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    orphans = killed()
    assert len(orphans) == 1
    run = run_checks(profile_variant(only_drill(PF)), DRILL)  # the next run's janitor drops the orphan
    assert run.result.ret == 0, run.result.stdout.str()
    assert not (scratch_databases(sandbox) & orphans)


def test_a_whole_dr_run_leaves_the_source_databases_unchanged(
    run_checks: Run, profile_variant: Variant, sandbox: Profile
) -> None:
    from opsverify.probes.postgres import connect as read_only

    def snapshot() -> dict[str, Any]:
        facts = {}
        for db in sandbox.databases:
            with read_only(db, T) as conn:
                facts[db.name] = source_facts(conn, 1_000_000).to_json()
        return facts

    before = snapshot()
    run = run_checks(profile_variant(), extra=("-m", "dr"))
    assert run.result.ret == 0, run.result.stdout.str()
    assert snapshot() == before


def test_rdb_with_a_lost_key_fails_the_key_comparison(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    from opsverify.localserver.net import free_port
    from opsverify.localserver.redis import start_redis

    original = newest(sandbox, "redis-rdb")
    work = tmp_path / "redis"
    work.mkdir()
    shutil.copy2(original, work / "dump.rdb")
    server = start_redis(work, free_port())
    try:
        client = server.client()
        client.delete("user:1")
        client.save()
    finally:
        server.stop()
    directory = tmp_path / "rdb"
    directory.mkdir()
    shutil.copy2(work / "dump.rdb", directory / original.name)
    shutil.copy2(manifest_path(original), manifest_path(directory / original.name))
    source = {"name": "rdb-lost-key", "kind": "redis", "path": str(directory), "pattern": "redis_backup_*.rdb"}
    run = run_checks(profile_variant(only_drill("cache-rdb", source=source)), "restore/test_cache_drill.py")
    test = "test_cache_drill.py::test_restored_keys_match_the_backup[cache-rdb]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"drill cache-rdb: 1479 persistent keys restored, 1480 expected ({manifest_path(original).name})"
    )


def test_corrupt_rdb_fails_to_load(run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path) -> None:
    original = newest(sandbox, "redis-rdb")
    data = bytearray(original.read_bytes())
    # bit rot inside a key's name: the file still parses, only its CRC64 can tell (a flipped byte in the RDB's
    # structure would be caught earlier, by whichever length or type byte it hit)
    data[data.index(b"cache:simulation:") + 1] ^= 0x20
    (tmp_path / original.name).write_bytes(bytes(data))
    source = {"name": "rdb-corrupt", "kind": "redis", "path": str(tmp_path), "pattern": "redis_backup_*.rdb"}
    run = run_checks(profile_variant(only_drill("cache-rdb", source=source)), "restore/test_cache_drill.py")
    load = "test_cache_drill.py::test_rdb_loads_into_a_scratch_redis[cache-rdb]"
    assert run.failed() == {load, "test_cache_drill.py::test_cache_recovers_within_rto[cache-rdb]"}
    assert re.fullmatch(  # the line of rdb.c is redis-server's own
        rf"RDB {re.escape(str(tmp_path / original.name))} does not load: redis-server did not load the RDB: "
        r"Internal error in RDB reading offset 0, function at rdb\.c:\d+ -> RDB CRC error",
        run.message(load),
    )
    assert "Terminating server" not in run.message(load)  # redis-server's own reason, not its last words
    assert sandbox.scratch_dir is not None
    assert not list(sandbox.scratch_dir.glob(f"{SCRATCH_PREFIX}*cache*"))  # the scratch server's directory is gone


def test_dump_that_would_leave_the_scratch_database_is_refused(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = broken_sql_dump(sandbox, tmp_path, "\\connect photonic_foundry\nDROP TABLE simulations;")
    run = run_checks(profile_variant(only_drill("qp-database-gzip", source=source)), DRILL)
    test = "test_database_drill.py::test_restore_completes_without_errors[qp-database-gzip]"
    rto = "test_database_drill.py::test_restore_time_is_within_rto[qp-database-gzip]"
    assert run.failed() == {test, rto}
    dump = Path(source["path"]) / newest(sandbox, "qp-database-daily").name
    with gzip.open(dump, "rt") as text:
        line = next(n for n, row in enumerate(text, 1) if row.startswith("\\connect photonic_foundry"))
    assert run.message(test) == (
        f"restore of {dump} for drill qp-database-gzip failed: refused: line {line} ('\\\\connect photonic_foundry') "
        "would reach beyond the scratch database (a pg_dumpall or --create dump?): drills restore per-database "
        "pg_dump files"
    )
    from opsverify.probes.postgres import connect as read_only

    with read_only(sandbox.databases[0], T) as conn:  # the source still has its table
        assert conn.execute("SELECT count(*) FROM simulations").fetchone() == (5000,)


def test_dump_that_restores_without_an_object_of_its_toc_fails_the_schema_check(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = broken_sql_dump(sandbox, tmp_path, "")
    path = Path(source["path"]) / newest(sandbox, "qp-database-daily").name
    stat = path.stat()
    with gzip.open(path, "rt") as dump:
        text = dump.read()
    statement = "CREATE INDEX optimization_jobs_user_idx ON public.optimization_jobs USING btree (user_id);"
    assert statement in text
    with gzip.open(path, "wt") as out:  # the TOC comment stays, the statement is gone
        out.write(text.replace(statement, ""))
    os.utime(path, (stat.st_atime, stat.st_mtime))
    run = run_checks(profile_variant(only_drill("qp-database-gzip", source=source)), DRILL)
    test = "test_database_drill.py::test_restored_schema_matches_the_dump[qp-database-gzip]"
    assert run.failed() == {test}
    assert run.message(test) == (
        "drill qp-database-gzip: restored copy lacks INDEX public.optimization_jobs_user_idx listed in the dump"
    )


def test_recovery_point_older_than_the_rpo_fails(run_checks: Run, profile_variant: Variant, sandbox: Profile) -> None:
    def mutate(data: dict[str, Any]) -> None:
        for database in data["databases"]:
            database.pop("wal_archive")  # the newest backup is the only recovery path left
        data["objectives"] = [{"component": c, "rto": "1h", "rpo": "1s"} for c in ("database", "full-system")]

    run = run_checks(profile_variant(mutate), "recovery/test_objectives.py")
    test = f"test_objectives.py::test_recovery_point_is_within_rpo[{PF}]"
    assert run.failed() == {f"test_objectives.py::test_recovery_point_is_within_rpo[{d}]" for d in DRILLS}
    backup = newest(sandbox, "pf-postgres-custom").name
    lost = run.checks[test]["evidence"]["rpo_measured"]
    assert run.message(test) == (
        f"drill {PF} would lose {lost} of data (best path: backup {backup}; database RPO 1s; "
        "no point-in-time recovery: photonic_foundry declares no wal_archive)"
    )


def check(name: str, drill: str = PF) -> str:
    return f"test_database_drill.py::{name}[{drill}]"


SMOKE = check("test_smoke_queries_return_rows")
COUNTS = check("test_restored_row_counts_match_the_backup")
CHECKSUMS = check("test_restored_tables_match_their_checksums")
AMCHECK = check("test_restored_copy_passes_amcheck")
RESTORE = check("test_restore_completes_without_errors")
RTO = check("test_restore_time_is_within_rto")


def copied_newest(profile: Profile, tmp_path: Path, manifest: str | None = "copy") -> dict[str, Any]:
    """The newest custom dump of photonic_foundry copied into tmp_path; its manifest copied, replaced or left out."""
    original = newest(profile, "pf-postgres-custom")
    directory = tmp_path / "copied"
    directory.mkdir()
    shutil.copy2(original, directory / original.name)
    if manifest == "copy":
        shutil.copy2(manifest_path(original), manifest_path(directory / original.name))
    elif manifest is not None:
        manifest_path(directory / original.name).write_text(manifest)
    return {"name": "pf-copied", "kind": "postgres", "path": str(directory), "pattern": "backup_*.dump"}


def test_drill_without_smoke_queries_smokes_each_table_and_stops_the_clock_after_the_last(
    run_checks: Run, profile_variant: Variant
) -> None:
    run = run_checks(profile_variant(only_drill(PF, smoke_queries=[])), DRILL)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    evidence = run.checks[SMOKE]["evidence"]
    assert (evidence["smoke"], evidence["queries"]) == ("default: each table the backup holds rows for", "3")
    assert (evidence["query_1"], evidence["query_2"], evidence["query_3"]) == ("1 rows", "1 rows", "1 rows")
    rto = run.checks[RTO]["evidence"]
    assert float(rto["rto_seconds"]) > float(rto["restore_seconds"]) > 0


def test_table_whose_data_the_dump_lacks_fails_the_default_smoke(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    original = newest(sandbox, "pf-postgres-custom")
    directory = tmp_path / "no_simulations_data"
    directory.mkdir()
    dump = directory / original.name
    source = sandbox.database("photonic_foundry")
    subprocess.run(
        [pg_tool("pg_dump"), "--format=custom", "--exclude-table-data=public.simulations", "-f", str(dump)],
        env=pg_env(source, source.dbname, T), check=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    shutil.copy2(manifest_path(original), manifest_path(dump))
    os.utime(dump, (original.stat().st_atime, original.stat().st_mtime))
    series = {"name": "pf-no-simulations-data", "kind": "postgres", "path": str(directory), "pattern": "backup_*.dump"}
    run = run_checks(profile_variant(only_drill(PF, source=series, smoke_queries=[])), DRILL)
    assert run.failed() == {SMOKE, COUNTS, CHECKSUMS, RTO}
    assert run.message(SMOKE) == (
        f"drill {PF}: smoke query 'SELECT 1 FROM public.simulations LIMIT 1' returned no rows "
        f"(the manifest {manifest_path(dump).name} records 5000 rows)"
    )
    assert run.message(RTO) == (
        f"drill {PF}: not recovered (smoke query 'SELECT 1 FROM public.simulations LIMIT 1' did not return a row), "
        "RTO 30m not met"
    )
    assert run.message(COUNTS) == (
        f"drill {PF}: 1 table(s) differ from the manifest {manifest_path(dump).name}, "
        "first public.simulations: 0 rows restored, 5000 expected"
    )
    assert run.outcome(check("test_restored_schema_matches_the_dump")) == "passed"


def test_unreadable_source_fails_the_comparisons_with_source(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    series = copied_newest(sandbox, tmp_path, manifest=None)
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")

    def mutate(data: dict[str, Any]) -> None:
        only_drill(PF, source=series, compare_with_source=True)(data)
        next(d for d in data["databases"] if d["name"] == "photonic_foundry")["password_file"] = str(wrong)

    run = run_checks(profile_variant(mutate), DRILL)
    assert run.failed() == {COUNTS, CHECKSUMS}
    cause = (
        'source photonic_foundry is unreadable (password authentication failed for user '
        '"opsverify"); '
        "compare_with_source is on and no manifest is beside the backup"
    )
    assert run.message(COUNTS) == f"drill {PF}: cannot compare row counts: {cause}"
    assert run.message(CHECKSUMS) == f"drill {PF}: cannot compare checksums: {cause}"
    readable = run_checks(profile_variant(only_drill(PF, source=series, compare_with_source=True)), DRILL)
    assert readable.failed() == set()
    assert (readable.outcome(COUNTS), readable.outcome(CHECKSUMS)) == ("passed", "passed")
    assert readable.checks[COUNTS]["evidence"]["compared_with"] == "source photonic_foundry (REPEATABLE READ snapshot)"


@pytest.fixture
def locked_source(tmp_path: Path, sandbox: Profile) -> Iterator[tuple[int, Path]]:
    """A throwaway cluster whose ``photonic_foundry.simulations`` a session holds ACCESS EXCLUSIVE (a migration)."""
    import psycopg

    from opsverify.localserver.net import free_port
    from opsverify.localserver.postgres import Cluster

    base = Path("/tmp") / f"opsverify-test-locked-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.initdb({})
    serve_sandbox_tls(cluster, sandbox.databases[0].sslrootcert)  # the sandbox profile says verify-full
    try:
        cluster.start()
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE photonic_foundry")
        with cluster.connect("photonic_foundry") as conn:
            conn.execute("CREATE TABLE simulations AS SELECT g AS id FROM generate_series(1, 100) g")
        (tmp_path / "superuser.pass").write_text("superuser-secret\n")
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password="superuser-secret",
                             dbname="photonic_foundry", connect_timeout=10) as holder:
            holder.execute("LOCK TABLE simulations IN ACCESS EXCLUSIVE MODE")  # held until the test ends
            yield cluster.port, tmp_path / "superuser.pass"
            holder.rollback()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists()


def test_source_read_longer_than_the_compare_timeout_fails_the_comparisons_naming_the_field(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path, locked_source: tuple[int, Path]
) -> None:
    port, secret = locked_source
    series = copied_newest(sandbox, tmp_path, manifest=None)

    def mutate(data: dict[str, Any]) -> None:
        only_drill(PF, source=series, compare_with_source=True, compare_timeout="2s")(data)
        source = next(d for d in data["databases"] if d["name"] == "photonic_foundry")
        source.update(port=port, user="postgres", password_file=str(secret))

    started = time.monotonic()
    run = run_checks(profile_variant(mutate), DRILL)
    assert run.failed() == {COUNTS, CHECKSUMS}
    cause = (
        "reading the row counts and checksums of source photonic_foundry did not finish within 2s: raise the "
        "drill's compare_timeout, or lower checksum_max_rows"
    )
    assert run.message(COUNTS) == f"drill {PF}: cannot compare row counts: {cause}"
    assert run.message(CHECKSUMS) == f"drill {PF}: cannot compare checksums: {cause}"
    assert time.monotonic() - started < 120  # the lock is held for the whole test: the bound ended the wait
    bounded = only_drill(PF, source=series, compare_with_source=True, compare_timeout="2s")
    readable = run_checks(profile_variant(bounded), DRILL)
    assert readable.failed() == set()
    assert (readable.outcome(COUNTS), readable.outcome(CHECKSUMS)) == ("passed", "passed")


def test_data_facts_of_a_copy_that_cannot_be_read_in_time_raise_facts_timeout(locked_source: tuple[int, Path]) -> None:
    """The bound the drill puts on the restored copy's row counts and checksums (a locked table waits)."""
    import psycopg

    from opsverify.facts.database import FactsTimeout, data_facts

    port, secret = locked_source
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=secret.read_text().strip(),
                         dbname="photonic_foundry", connect_timeout=10, autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(FactsTimeout, match=r"^did not finish within 1s$"):
            data_facts(conn, 1000, timedelta(seconds=1))
        assert 1 <= time.monotonic() - started < 10
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable after the bound


@pytest.mark.parametrize(
    ("manifest", "defect"),
    [
        ("{not json", "is not valid JSON (line 1 column 2)"),
        ("[1, 2]", "is a JSON list, not an object"),
        (
            '{"checksum_algorithm": "sum-hash-64"}',
            'holds no table facts (a "tables" object with the rows of each table)',
        ),
        ('{"tables": {}}', 'holds no table facts (its "tables" object is empty)'),
    ],
    ids=["not-json", "not-an-object", "no-tables", "empty-tables"],
)
def test_malformed_manifest_fails_the_comparisons_naming_the_file(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path, manifest: str, defect: str
) -> None:
    series = copied_newest(sandbox, tmp_path, manifest=manifest)
    run = run_checks(profile_variant(only_drill(PF, source=series)), DRILL)
    assert run.failed() == {COUNTS, CHECKSUMS}
    dump = Path(series["path"]) / newest(sandbox, "pf-postgres-custom").name
    problem = (f"the manifest {dump}.manifest.json {defect}: re-run the backup job that writes it, or write it with "
               f"`opsverify manifest write {dump}`")
    assert run.message(COUNTS) == f"drill {PF}: cannot compare row counts: {problem}"
    assert run.message(CHECKSUMS) == f"drill {PF}: cannot compare checksums: {problem}"


def test_missing_manifest_without_compare_with_source_skips_the_comparisons(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    series = copied_newest(sandbox, tmp_path, manifest=None)
    run = run_checks(profile_variant(only_drill(PF, source=series)), DRILL)
    assert run.failed() == set()
    dump = Path(series["path"]) / newest(sandbox, "pf-postgres-custom").name
    why = f"no manifest beside {dump} and compare_with_source is off"
    assert (run.outcome(COUNTS), run.outcome(CHECKSUMS)) == ("skipped", "skipped")
    assert run.message(COUNTS) == f"drill {PF}: nothing to compare row counts with ({why})"
    assert run.message(CHECKSUMS) == f"drill {PF}: nothing to compare checksums with ({why})"


def s3_series(bucket: tuple[Any, dict[str, Any]], dump: bytes, name: str, manifest: Path) -> dict[str, Any]:
    s3, access = bucket
    bucket_name = access["url"].split("/")[2]
    s3.put_object(Bucket=bucket_name, Key=f"database/{name}", Body=dump)
    s3.put_object(Bucket=bucket_name, Key=f"database/{name}.manifest.json", Body=manifest.read_bytes())
    settings = {k: v for k, v in access.items() if k != "url"}
    return {"name": "pf-s3", "kind": "postgres", "path": access["url"], "pattern": "backup_*.dump", "s3": settings}


def downloads_left(profile: Profile) -> list[Path]:
    assert profile.scratch_dir is not None
    return list(profile.scratch_dir.glob(f"{SCRATCH_PREFIX}*_download"))


def test_drill_of_a_backup_in_s3_downloads_restores_and_cleans_up(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, bucket: Any
) -> None:
    original = newest(sandbox, "pf-postgres-custom")
    series = s3_series(bucket, original.read_bytes(), original.name, manifest_path(original))
    run = run_checks(profile_variant(only_drill(PF, source=series)), DRILL)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    location = f"{series['path']}{original.name}"
    assert run.checks[RESTORE]["evidence"]["backup"] == location
    assert run.checks[COUNTS]["evidence"]["compared_with"] == f"the manifest {original.name}.manifest.json"
    assert float(run.checks[RTO]["evidence"]["rto_seconds"]) > float(run.checks[RTO]["evidence"]["restore_seconds"])
    assert downloads_left(sandbox) == []


def test_truncated_backup_in_s3_fails_the_restore(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, bucket: Any
) -> None:
    original = newest(sandbox, "pf-postgres-custom")
    data = original.read_bytes()
    cut = data[: len(data) - 4096]  # inside the last data block (simulations), as a transfer cut short leaves it
    series = s3_series(bucket, cut, original.name, manifest_path(original))
    run = run_checks(profile_variant(only_drill(PF, source=series)), DRILL)
    assert run.failed() == {RESTORE, RTO}
    location = f"{series['path']}{original.name}"
    assert run.message(RESTORE) == (
        f"restore of {location} for drill {PF} failed: could not read from input file: end of file"
    )
    assert run.message(RTO) == f"drill {PF}: not recovered (the restore failed), RTO 30m not met"
    assert downloads_left(sandbox) == []


@pytest.fixture
def creatdb_role(sandbox: Profile, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A role of this test with LOGIN and CREATEDB but not superuser (so no amcheck); dropped after."""
    import secrets

    from psycopg import sql

    assert sandbox.restore_target is not None
    role = f"opsverify_test_amcheck_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    password = secrets.token_hex(16)
    secret = tmp_path / "role.pass"
    secret.write_text(password + "\n")
    with connect(sandbox.restore_target, None, T) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    try:
        yield role, secret
    finally:
        with connect(sandbox.restore_target, None, T) as conn:
            owned = conn.execute(  # a drill whose cleanup failed left its scratch database (the test fails anyway)
                "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)", (role,)
            ).fetchall()
            for (database,) in owned:
                drop_database(conn, str(database))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None


def test_amcheck_denied_to_the_restore_role_fails_unless_the_drill_opts_out(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path, creatdb_role: tuple[str, Path]
) -> None:
    role, secret = creatdb_role
    # pg_stat_statements is not a trusted extension: a dump without it, so that the role can restore it
    source = tampered_dump(sandbox, tmp_path, "DROP EXTENSION IF EXISTS pg_stat_statements", "no_extension")

    def as_role(**changes: Any) -> Callable[[dict[str, Any]], None]:
        def mutate(data: dict[str, Any]) -> None:
            only_drill(PF, source=source, **changes)(data)
            data["restore_target"].update(user=role, password_file=str(secret))

        return mutate

    run = run_checks(profile_variant(as_role()), DRILL)
    assert run.failed() == {AMCHECK}
    assert run.message(AMCHECK) == (
        f"drill {PF}: pg_amcheck may not check the restored copy as role {role} (query failed: ERROR:  permission "
        'denied to create extension "amcheck"): amcheck is not a trusted extension and the scratch database is '
        "a copy of template0, which lacks it, so use a superuser restore role, or set amcheck: false on the drill"
    )
    opted_out = run_checks(profile_variant(as_role(amcheck=False)), DRILL)
    assert opted_out.failed() == set()
    assert opted_out.outcome(AMCHECK) == "skipped"
    assert opted_out.message(AMCHECK) == f"drill {PF}: pg_amcheck off: the drill sets amcheck: false"


def test_checksum_bound_below_every_table_fails_unless_checksums_are_off(
    run_checks: Run, profile_variant: Variant
) -> None:
    run = run_checks(profile_variant(only_drill(PF, checksum_max_rows=10)), DRILL)
    assert run.failed() == {CHECKSUMS}
    assert run.message(CHECKSUMS) == (
        f"no table of drill {PF} has at most 10 rows: raise checksum_max_rows to at least 36 "
        "(the smallest table, public.models) or set it to 0 to turn checksums off"
    )
    off = run_checks(profile_variant(only_drill(PF, checksum_max_rows=0)), DRILL)
    assert off.failed() == set()
    assert off.outcome(CHECKSUMS) == "skipped"
    assert off.message(CHECKSUMS) == f"drill {PF}: checksums are off (checksum_max_rows: 0)"


CACHE = "restore/test_cache_drill.py"
KEYS = "test_cache_drill.py::test_restored_keys_match_the_backup[cache-rdb]"
LOAD = "test_cache_drill.py::test_rdb_loads_into_a_scratch_redis[cache-rdb]"


def test_cache_drill_of_an_rdb_in_s3_downloads_loads_and_cleans_up(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, bucket: Any
) -> None:
    original = newest(sandbox, "redis-rdb")
    s3, access = bucket
    name = access["url"].split("/")[2]
    s3.put_object(Bucket=name, Key=f"database/{original.name}", Body=original.read_bytes())
    s3.put_object(Bucket=name, Key=f"database/{original.name}.manifest.json", Body=manifest_path(original).read_bytes())
    settings = {k: v for k, v in access.items() if k != "url"}
    series = {"name": "rdb-s3", "kind": "redis", "path": access["url"], "pattern": "redis_backup_*.rdb", "s3": settings}
    run = run_checks(profile_variant(only_drill("cache-rdb", source=series)), CACHE)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    assert run.checks[LOAD]["evidence"]["backup"] == f"{access['url']}{original.name}"
    assert run.outcome(KEYS) == "passed"
    assert downloads_left(sandbox) == []


def test_malformed_rdb_manifest_fails_the_key_comparison(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    original = newest(sandbox, "redis-rdb")
    shutil.copy2(original, tmp_path / original.name)
    manifest_path(tmp_path / original.name).write_text('{"tables": {}}')  # a database manifest: no key facts
    series = {"name": "rdb-copied", "kind": "redis", "path": str(tmp_path), "pattern": "redis_backup_*.rdb"}
    run = run_checks(profile_variant(only_drill("cache-rdb", source=series)), CACHE)
    assert run.failed() == {KEYS}
    assert run.message(KEYS) == (
        f"drill cache-rdb: cannot compare keys: the manifest {tmp_path / original.name}.manifest.json holds no key "
        'facts (a "redis" object with dbsize, persistent_keys and sample): re-run the backup job that writes it'
    )
    manifest_path(tmp_path / original.name).write_text("not json")
    run = run_checks(profile_variant(only_drill("cache-rdb", source=series)), CACHE)
    assert run.failed() == {KEYS}
    assert run.message(KEYS) == (
        f"drill cache-rdb: cannot compare keys: the manifest {tmp_path / original.name}.manifest.json is not valid "
        f"JSON (line 1 column 1): re-run the backup job that writes it, or write it with `opsverify manifest write "
        f"{tmp_path / original.name}`"
    )


def test_default_smoke_without_a_manifest_smokes_the_tables_whose_data_the_archive_holds(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = tampered_dump(sandbox, tmp_path, "DELETE FROM simulations", "emptied_table")
    dump = Path(source["path"]) / newest(sandbox, "pf-postgres-custom").name
    manifest_path(dump).unlink()  # nothing says simulations should hold rows: its empty data is not smoked
    run = run_checks(profile_variant(only_drill(PF, source=source, smoke_queries=[])), DRILL)
    assert run.failed() == set()
    evidence = run.checks[SMOKE]["evidence"]
    assert (evidence["queries"], evidence["query_1"]) == ("2", "1 rows")  # models and simulation_events
