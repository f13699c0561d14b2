"""checks/restore and checks/recovery against the real test sandbox: a healthy drill passes and records
RTO/RPO; faults in the backups fail the right check; scratch databases never outlive a run.

Faulty backups are made with the real tools: the sandbox's own dump restored into a scratch
database, changed there, and dumped again beside the original backup's manifest.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.actions.base import performed
from opsverify.actions.database import ScratchDatabase, connect
from opsverify.backups.jobs import pg_dump
from opsverify.facts.database import source_facts
from opsverify.facts.manifest import manifest_path
from opsverify.localserver.scratch import SCRATCH_PREFIX
from opsverify.profile.environment import Profile
from opsverify.restore.pgrestore import restore_backup

Run = Callable[..., Any]
Variant = Callable[..., Path]
PF = "pf-database-custom"
DRILL = "restore/test_database_drill.py"
T = timedelta(seconds=10)


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


def tampered_dump(profile: Profile, tmp_path: Path, sql: str, name: str) -> dict[str, Any]:
    """The newest custom dump of photonic_foundry, restored, changed by ``sql``, dumped again with the old manifest."""
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
        copy = target.model_copy(update={"name": scratch, "dbname": scratch})
        pg_dump(copy, dump, T, T * 6)  # type: ignore[arg-type]
    shutil.copy2(manifest_path(original), manifest_path(dump))
    os.utime(dump, (original.stat().st_atime, original.stat().st_mtime))
    return {"name": "pf-tampered", "kind": "postgres", "path": str(directory), "pattern": "backup_*.dump"}


def used_scratch(run: Any) -> set[str]:
    """The scratch databases the run's drills restored into (their restore checks record the names)."""
    return {c["evidence"]["scratch_database"] for t, c in run.checks.items()
            if "test_restore_completes_without_errors" in t and "scratch_database" in c["evidence"]}


def test_healthy_drills_pass_and_record_rto_and_rpo(
    run_checks: Run, profile_variant: Variant, sandbox: Profile
) -> None:
    run = run_checks(profile_variant(), "restore", "recovery")
    assert run.result.ret == 0, run.result.stdout.str()
    rto = run.checks[f"test_database_drill.py::test_restore_time_is_within_rto[{PF}]"]
    assert rto["evidence"]["rto_objective"] == "30m"
    assert rto["evidence"]["rto_measured"].endswith(("ms", "s"))
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
    assert len(used_scratch(run)) == 2
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
    assert run.failed() == {test, smoke}
    assert run.message(smoke) == (
        f"drill {PF}: smoke query 'SELECT name FROM models LIMIT 1' failed: relation \"models\" does not exist"
    )
    assert run.message(test).startswith(f"drill {PF}: 1 table(s) differ from the manifest ")
    assert run.message(test).endswith("first public.models: missing from the restored copy")


def test_deleted_row_fails_row_counts_and_checksums(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = tampered_dump(sandbox, tmp_path, "DELETE FROM simulations WHERE id = 4242", "deleted_row")
    run = run_checks(profile_variant(only_drill(PF, source=source)), DRILL)
    counts = f"test_database_drill.py::test_restored_row_counts_match_the_backup[{PF}]"
    checksums = f"test_database_drill.py::test_restored_tables_match_their_checksums[{PF}]"
    assert run.failed() == {counts, checksums}
    assert run.message(counts).endswith("first public.simulations: 4999 rows restored, 5000 expected")
    assert run.message(checksums).startswith(f"drill {PF}: public.simulations content checksum ")


def test_changed_row_fails_only_the_checksums(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = tampered_dump(sandbox, tmp_path, "UPDATE models SET accuracy = 0.5 WHERE id = 7", "changed_row")
    run = run_checks(profile_variant(only_drill(PF, source=source)), DRILL)
    test = f"test_database_drill.py::test_restored_tables_match_their_checksums[{PF}]"
    assert run.failed() == {test}
    assert run.message(test).startswith(f"drill {PF}: public.models content checksum ")


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
    assert "failed: psql:<stdin>:" in run.message(test)
    assert 'ERROR:  syntax error at or near "THIS"' in run.message(test)
    assert run.message(rto) == (
        "drill qp-database-gzip: not recovered (restore or every smoke query failed), RTO 30m not met"
    )
    skipped = {t for t, c in run.checks.items() if c["outcome"] == "skipped"}
    assert "test_database_drill.py::test_restored_schema_matches_the_dump[qp-database-gzip]" in skipped
    assert len(used_scratch(run)) == 1
    assert not used_scratch(run) & scratch_databases(sandbox)


def test_rto_below_the_measured_time_fails(run_checks: Run, profile_variant: Variant) -> None:
    def mutate(data: dict[str, Any]) -> None:
        only_drill(PF)(data)
        data["objectives"] = [{"component": "database", "rto": "1ms", "rpo": "1h"}]

    run = run_checks(profile_variant(mutate), DRILL)
    test = f"test_database_drill.py::test_restore_time_is_within_rto[{PF}]"
    assert run.failed() == {test}
    assert run.message(test).startswith(f"drill {PF} took ")
    assert " to recover (database RTO 1ms): " in run.message(test)


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
        proc.send_signal(signal.SIGTERM)
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
    data[len(data) // 2] ^= 0xFF
    (tmp_path / original.name).write_bytes(bytes(data))
    source = {"name": "rdb-corrupt", "kind": "redis", "path": str(tmp_path), "pattern": "redis_backup_*.rdb"}
    run = run_checks(profile_variant(only_drill("cache-rdb", source=source)), "restore/test_cache_drill.py")
    load = "test_cache_drill.py::test_rdb_loads_into_a_scratch_redis[cache-rdb]"
    assert run.failed() == {load, "test_cache_drill.py::test_cache_recovers_within_rto[cache-rdb]"}
    assert run.message(load).startswith(f"RDB {tmp_path / original.name} does not load: redis-server did not load")
    assert "Terminating server" not in run.message(load)  # redis-server's own reason, not its last words
    assert sandbox.scratch_dir is not None
    assert not list(sandbox.scratch_dir.glob(f"{SCRATCH_PREFIX}*cache*"))  # the scratch server's directory is gone


def test_dump_that_would_leave_the_scratch_database_is_refused(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    source = broken_sql_dump(sandbox, tmp_path, "\\connect photonic_foundry\nDROP TABLE simulations;")
    run = run_checks(profile_variant(only_drill("qp-database-gzip", source=source)), DRILL)
    test = "test_database_drill.py::test_restore_completes_without_errors[qp-database-gzip]"
    assert test in run.failed()
    assert "failed: refused: line " in run.message(test)
    assert "('\\\\connect photonic_foundry') would reach beyond the scratch database" in run.message(test)
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


def test_recovery_point_older_than_the_rpo_fails(run_checks: Run, profile_variant: Variant) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["databases"][0].pop("wal_archive")  # the newest backup is the only recovery path left
        data["objectives"] = [{"component": c, "rto": "1h", "rpo": "1s"} for c in ("database", "full-system")]

    run = run_checks(profile_variant(mutate), "recovery/test_objectives.py")
    test = f"test_objectives.py::test_recovery_point_is_within_rpo[{PF}]"
    assert test in run.failed()
    assert run.message(test).startswith(f"drill {PF} would lose ")
    assert run.message(test).endswith("; database RPO 1s; no point-in-time recovery: photonic_foundry declares no "
                                      "wal_archive)")
