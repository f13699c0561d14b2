"""``opsverify manifest`` against the real test sandbox: a runbook series without manifests gets them from
the command (run as a backup script would, a subprocess), and the drills then compare and pass; a backup
changed after its manifest was written fails exactly the comparison that should catch it.

The series are copies in tmp_path of the sandbox's own backups (their manifests left behind); the faults
are made on those copies (a table's rows cut out of the gzipped dump, a key deleted by a throwaway
redis-server, another backup put under the same name), never on the shared sandbox.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.facts.manifest import FORMAT, SCHEMA, VERSION, manifest_path
from opsverify.localserver.net import free_port
from opsverify.manifests import CHECKSUM_MAX_ROWS
from opsverify.profile.environment import Profile

Run = Callable[..., Any]
Variant = Callable[..., Path]
PF = "pf-database-custom"
ROWS = f"test_database_drill.py::test_restored_row_counts_match_the_backup[{PF}]"
CHECKSUMS = f"test_database_drill.py::test_restored_tables_match_their_checksums[{PF}]"
KEYS = "test_cache_drill.py::test_restored_keys_match_the_backup[cache-rdb]"
BOUND = "test_backup_content.py::test_newest_manifest_matches_its_backup[pf-runbook-sql]"
DRILLS = ("restore/test_database_drill.py", "restore/test_cache_drill.py")


def opsverify(*args: str) -> subprocess.CompletedProcess[str]:
    """``opsverify ARGS`` as a runbook script runs it: a process of its own."""
    return subprocess.run([sys.executable, "-m", "opsverify", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def newest(profile: Profile, source: str, rank: int = 0) -> Path:
    backup = next(b for b in profile.backups if b.name == source)
    return sorted(Path(backup.path).glob(backup.pattern), key=lambda p: p.stat().st_mtime, reverse=True)[rank]


def runbook_series(profile: Profile, tmp_path: Path) -> tuple[Path, Path]:
    """The newest ``backup_*.sql.gz`` and ``redis_backup_*.rdb``, copied WITHOUT their manifests."""
    copies = []
    for source, sub in (("pf-postgres-daily", "postgres"), ("redis-rdb", "redis")):
        original = newest(profile, source)
        (tmp_path / sub).mkdir()
        copies.append(Path(shutil.copy2(original, tmp_path / sub / original.name)))
        os.utime(copies[-1])  # just finished: the manifest is written right after the backup (--max-lag)
        assert not manifest_path(copies[-1]).exists()
    return copies[0], copies[1]


def pointing_at(dump: Path, rdb: Path) -> Callable[[dict[str, Any]], None]:
    """The PF drill restores the copied ``backup_*.sql.gz`` series, the cache drill the copied RDB series."""

    def mutate(data: dict[str, Any]) -> None:
        data["backups"] = [
            {"name": "pf-runbook-sql", "kind": "postgres", "path": str(dump.parent), "pattern": "backup_*.sql.gz",
             "database": "photonic_foundry"},
            {"name": "runbook-rdb", "kind": "redis", "path": str(rdb.parent), "pattern": "redis_backup_*.rdb"},
        ]
        drills = {d["name"]: d for d in data["drills"]}
        drills[PF]["backup"], drills["cache-rdb"]["backup"] = "pf-runbook-sql", "runbook-rdb"
        data["drills"] = [drills[PF], drills["cache-rdb"]]

    return mutate


def written(backup: Path) -> dict[str, Any]:
    done = opsverify("manifest", "write", str(backup))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {manifest_path(backup)}: "), done.stdout
    data: dict[str, Any] = json.loads(manifest_path(backup).read_text())
    return data


def test_manifests_written_by_the_command_make_the_drills_compare_and_pass(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    facts = written(dump)
    assert facts["format"] == FORMAT
    assert facts["version"] == VERSION
    assert facts["facts_from"] == "backup"
    assert facts["backup"]["name"] == dump.name
    assert facts["backup"]["size"] == dump.stat().st_size
    assert facts["tables"]["public.simulations"]["rows"] == 5000
    assert written(rdb)["redis"]["persistent_keys"] > 0
    run = run_checks(profile_variant(pointing_at(dump, rdb)), *DRILLS)
    assert run.failed() == set(), run.result.stdout.str()
    assert run.outcome(ROWS) == "passed"
    assert run.checks[ROWS]["evidence"]["compared_with"] == f"the manifest {manifest_path(dump).name}"
    assert run.outcome(KEYS) == "passed"
    assert run.outcome(CHECKSUMS) == "skipped"  # a dump holds no checksums: only --from-source records them


def emptied(dump: Path, table: str) -> None:
    """Rewrite the gzipped dump in place with the rows of ``table``'s COPY section cut out (a real, restorable dump)."""
    lines = gzip.decompress(dump.read_bytes()).split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"COPY {table} ".encode()))
    end = lines.index(b"\\.", start)
    dump.write_bytes(gzip.compress(b"\n".join(lines[: start + 1] + lines[end:])))


def lose_key(rdb: Path, tmp_path: Path) -> None:
    """Delete one persistent key from the RDB: a throwaway redis-server loads it, deletes, saves."""
    from opsverify.localserver.redis import start_redis

    work = tmp_path / "redis-work"
    work.mkdir()
    shutil.copy2(rdb, work / "dump.rdb")
    server = start_redis(work, free_port())
    try:
        client = server.client()
        assert client.ttl("user:1") == -1
        client.delete("user:1")
        client.save()
    finally:
        server.stop()
    shutil.copy2(work / "dump.rdb", rdb)


def test_backups_changed_after_their_manifest_fail_exactly_the_comparisons(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    rows = written(dump)["tables"]["public.simulations"]["rows"]
    keys = written(rdb)["redis"]["persistent_keys"]
    emptied(dump, "public.simulations")
    lose_key(rdb, tmp_path)
    run = run_checks(profile_variant(pointing_at(dump, rdb)), *DRILLS)
    assert run.failed() == {ROWS, KEYS}, run.result.stdout.str()
    assert run.message(ROWS) == (
        f"drill {PF}: 1 table(s) differ from the manifest {manifest_path(dump).name}, "
        f"first public.simulations: 0 rows restored, {rows} expected"
    )
    assert run.message(KEYS) == f"drill cache-rdb: {keys - 1} persistent keys restored, {keys} expected " \
                                f"({manifest_path(rdb).name})"


def test_another_backup_under_the_same_name_fails_the_manifest_binding(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    first = written(dump)
    recorded = first["backup"]
    other = newest(sandbox, "pf-postgres-daily", rank=1)
    shutil.copyfile(other, dump)  # yesterday's dump under today's name (its mtime kept: still the newest)
    run = run_checks(profile_variant(pointing_at(dump, rdb)), "backup/test_backup_content.py",
                     extra=("-k", "pf-runbook-sql"))
    assert run.failed() == {BOUND}, run.result.stdout.str()
    assert run.message(BOUND).startswith(
        f"manifest {manifest_path(dump).name} does not match backup {dump.name} of pf-runbook-sql: it records "
        f"{recorded['size']:,} bytes"
    )
    shown = opsverify("manifest", "show", str(dump))
    assert shown.returncode == 1
    assert f"the backup changed since: the file is {other.stat().st_size:,} bytes" in shown.stdout
    refused = opsverify("manifest", "write", str(dump))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        f"opsverify: manifest {manifest_path(dump)} already exists (written {first['written_at']}, facts from the "
        f"backup) and describes another file "
        f"({recorded['size']:,} bytes, sha256 {recorded['sha256'][:12]}…; {dump.name} is {other.stat().st_size:,} "
        f"bytes, sha256 {_sha(dump)[:12]}…): the backup was replaced after it was written, "
        f"or it is another backup's; pass --force to replace {manifest_path(dump).name}\n"
    )
    assert opsverify("manifest", "write", "--force", str(dump)).returncode == 0
    assert opsverify("manifest", "show", str(dump)).returncode == 0


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the command on its own --------------------------------------------------------------------------


def test_show_prints_the_facts_and_that_the_binding_matches(sandbox: Profile, tmp_path: Path) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    written(dump)
    written(rdb)
    shown = opsverify("manifest", "show", str(dump))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"manifest {manifest_path(dump)} (opsverify-manifest version 1)"
    assert lines[1].startswith(f"  backup       {dump.name}: {dump.stat().st_size:,} bytes, sha256 ")
    assert lines[1].endswith(": matches the file")
    assert re.fullmatch(r"  written      \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ by opsverify \S+ manifest write; "
                        r"facts read from the backup", lines[2])
    assert re.fullmatch(r"    public\.simulations +5,000 rows", next(x for x in lines if "simulations" in x))
    shown = opsverify("manifest", "show", str(rdb))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^  redis        [\d,]+ persistent keys \(dbsize \d+\); db0 [\d,]+$", shown.stdout, re.M)
    assert re.search(r"^  sample       50 keys \(db0-smallest-crc32\): ", shown.stdout, re.M)


def test_written_manifests_follow_the_published_schema(sandbox: Profile, tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    dump, rdb = runbook_series(sandbox, tmp_path)
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    job = json.loads(manifest_path(newest(sandbox, "pf-postgres-custom")).read_text())
    for data in (written(dump), written(rdb), job):
        jsonschema.Draft202012Validator(SCHEMA).validate(data)  # the sandbox job's manifests too
    assert json.loads(opsverify("manifest", "schema").stdout) == SCHEMA


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("write", "{tmp}/backup_missing.sql.gz"),
         "{tmp}/backup_missing.sql.gz does not exist: give the path of the backup file (or pg_dump -Fd directory)"),
        (("write", "{tmp}/notes.txt"),
         "{tmp}/notes.txt is not a backup a manifest describes (format unknown): give a plain or gzipped SQL dump, "
         "a pg_dump custom (-Fc) or directory (-Fd) archive, or a Redis RDB"),
        (("write", "{tmp}/half.sql.gz"),
         "cannot read the tables of {tmp}/half.sql.gz: dump-complete marker missing: pg_dump did not finish: "
         "verify the backup or take it again"),
        (("show", "{tmp}/notes.txt"),
         "no manifest beside {tmp}/notes.txt (notes.txt.manifest.json): write one with "
         "`opsverify manifest write {tmp}/notes.txt`"),
        (("show", "{tmp}/backup_missing.sql.gz"),
         "{tmp}/backup_missing.sql.gz does not exist: give the path of the backup the manifest describes"),
        (("write", "--from-source", "{tmp}/notes.txt"),
         "--from-source reads the live source: also pass --profile FILE and --source NAME (the backup source in "
         "the profile)"),
        (("write", "--max-lag", "1h", "{tmp}/notes.txt"),
         "--max-lag bounds how old a backup --from-source describes: add --from-source, or drop --max-lag (a "
         "manifest read from the backup itself may be written at any time)"),
    ],
    ids=["missing", "not-a-backup", "unfinished-dump", "show-without-manifest", "show-missing",
         "from-source-without-profile", "max-lag-without-from-source"],
)
def test_bad_input_is_one_sentence_and_exit_1(sandbox: Profile, tmp_path: Path, args: tuple[str, ...],
                                              message: str) -> None:
    (tmp_path / "notes.txt").write_text("not a backup\n")
    whole = gzip.decompress(newest(sandbox, "pf-postgres-daily").read_bytes())
    (tmp_path / "half.sql.gz").write_bytes(gzip.compress(whole[: len(whole) // 2]))
    done = opsverify("manifest", *(a.format(tmp=tmp_path) for a in args))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"opsverify: {message.format(tmp=tmp_path)}\n"


def test_from_source_with_a_profile_that_cannot_be_read_names_the_profile(sandbox: Profile, tmp_path: Path) -> None:
    dump, _ = runbook_series(sandbox, tmp_path)
    done = opsverify("manifest", "write", str(dump), "--from-source", "--profile", str(tmp_path / "missing.yaml"),
                     "--source", "pf-postgres-daily")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"opsverify: profile {tmp_path / 'missing.yaml'} ")  # the loader's own words
    assert "Traceback" not in done.stderr
    assert not manifest_path(dump).exists()


def test_newer_manifest_version_is_refused_naming_the_upgrade(sandbox: Profile, tmp_path: Path) -> None:
    dump, _ = runbook_series(sandbox, tmp_path)
    data = written(dump)
    manifest_path(dump).write_text(json.dumps({**data, "version": VERSION + 1}))
    done = opsverify("manifest", "show", str(dump))
    assert done.returncode == 1
    assert done.stderr == (
        f"opsverify: manifest {manifest_path(dump)} is format version {VERSION + 1}, newer than the version "
        f"{VERSION} this opsverify reads: upgrade opsverify to read it\n"
    )


def test_rdb_manifest_from_the_live_source_reads_the_sandbox_redis(
    sandbox: Profile, profile_variant: Variant, tmp_path: Path
) -> None:
    from opsverify.facts.redis import redis_facts
    from opsverify.probes.redis import client

    dump, rdb = runbook_series(sandbox, tmp_path)
    done = opsverify("manifest", "write", str(rdb), "--from-source", "--profile",
                     str(profile_variant(pointing_at(dump, rdb))), "--source", "runbook-rdb")
    assert done.returncode == 0, done.stderr
    data = json.loads(manifest_path(rdb).read_text())
    assert (data["facts_from"], data["source"]) == ("source", "runbook-rdb")
    t = sandbox.timeouts
    live = redis_facts(client(sandbox.redis[0], t.connect, t.request))
    assert data["redis"]["per_db"].keys() == live.per_db.keys()
    assert len(data["redis"]["sample"]) == len(live.sample) > 0

    port = free_port()

    def down(profile: dict[str, Any]) -> None:
        pointing_at(dump, rdb)(profile)
        profile["redis"][0]["port"] = port

    done = opsverify("manifest", "write", "--force", str(rdb), "--from-source", "--profile",
                     str(profile_variant(down)), "--source", "runbook-rdb")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert re.fullmatch(rf"opsverify: cannot read Redis cache \(127\.0\.0\.1:{port}\): [^:\n]*refused[^\n]*: "
                        r"check that it is up and the profile's address and credentials\n", done.stderr), done.stderr


def test_rdb_without_a_manifest_skips_naming_the_command_that_writes_one(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    run = run_checks(profile_variant(pointing_at(dump, rdb)), "restore/test_cache_drill.py")
    assert run.failed() == set(), run.result.stdout.str()
    assert run.outcome(KEYS) == "skipped"
    assert run.message(KEYS) == (
        f"drill cache-rdb: no manifest beside {rdb} to compare keys with: write one after each RDB copy with "
        f"`opsverify manifest write {rdb}`"
    )


def test_dump_manifest_from_the_live_source_records_checksums_the_drill_compares(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)  # the sandbox's databases take no writes: quiescent
    profile = profile_variant(pointing_at(dump, rdb))
    done = opsverify("manifest", "write", str(dump), "--from-source", "--profile", str(profile),
                     "--source", "pf-runbook-sql")
    assert done.returncode == 0, done.stderr
    data = json.loads(manifest_path(dump).read_text())
    assert (data["facts_from"], data["source"], data["checksum_algorithm"]) == ("source", "pf-runbook-sql",
                                                                                "sum-hash-64")
    small = {name: fact for name, fact in data["tables"].items() if fact["rows"] <= CHECKSUM_MAX_ROWS}
    assert all(re.fullmatch(r"r:-?\d+", fact["checksum"]) for fact in small.values())
    big = set(data["tables"]) - set(small)  # simulation_events (150k rows): counted, not checksummed
    assert big == {"public.simulation_events"}
    assert data["tables"]["public.simulation_events"]["checksum"] is None
    run = run_checks(profile, "restore/test_database_drill.py")
    assert run.failed() == set(), run.result.stdout.str()
    assert run.outcome(ROWS) == "passed"
    assert run.outcome(CHECKSUMS) == "passed"
    assert run.checks[CHECKSUMS]["evidence"]["checksummed_tables"] == str(len(small))


def test_unreachable_database_source_is_one_sentence(
    profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    port = free_port()

    def down(data: dict[str, Any]) -> None:
        pointing_at(dump, rdb)(data)
        next(d for d in data["databases"] if d["name"] == "photonic_foundry")["port"] = port

    done = opsverify("manifest", "write", str(dump), "--from-source", "--profile", str(profile_variant(down)),
                     "--source", "pf-runbook-sql")
    assert (done.returncode, done.stdout) == (1, "")
    assert re.fullmatch(
        rf"opsverify: cannot read database photonic_foundry \(127\.0\.0\.1:{port}/photonic_foundry, role opsverify\): "
        r"[^\n]*refused[^\n]*: check that it is up and the profile's connection and credentials\n",
        done.stderr,
    ), done.stderr
    assert not manifest_path(dump).exists()


# --- review round 2: stale --from-source, overwrites, the source's files, rough edges -----------------


def from_source(backup: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return opsverify("manifest", "write", str(backup), "--from-source", "--profile", str(profile),
                     "--source", "pf-runbook-sql", *extra)


def test_from_source_refuses_a_backup_finished_longer_ago_than_max_lag(
    profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    profile = profile_variant(pointing_at(dump, rdb))
    finished = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    os.utime(dump, (finished.timestamp(), finished.timestamp()))  # `touch -d "2 days ago"`
    done = from_source(dump, profile)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"opsverify: {dump} was finished 2d ago ({finished.isoformat().replace('+00:00', 'Z')}, its mtime), more "
        "than --max-lag 15m: its source has moved on since, so its facts now are not the backup's; write it from "
        "the backup itself (drop --from-source)\n"
    )
    assert not manifest_path(dump).exists()
    assert from_source(dump, profile, "--max-lag", "3d").returncode == 0  # a source known quiet since: say so


def test_an_existing_manifest_is_replaced_only_with_force_unless_it_records_the_same(
    profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    profile = profile_variant(pointing_at(dump, rdb))
    os.utime(dump)  # just finished, as a cron line right after the dump sees it
    first = written(dump)
    before = manifest_path(dump).read_bytes()
    again = opsverify("manifest", "write", str(dump))
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == (f"{manifest_path(dump)} already records these facts (written {first['written_at']}, "
                            "facts from the backup): left as it is\n")
    assert manifest_path(dump).read_bytes() == before
    done = from_source(dump, profile)
    assert (done.returncode, done.stdout) == (1, "")
    tables = len(first["tables"])
    rows = sum(t["rows"] for t in first["tables"].values())
    checked = sum(1 for t in first["tables"].values() if t["rows"] <= CHECKSUM_MAX_ROWS)  # the rest: too big
    assert done.stderr == (
        f"opsverify: manifest {manifest_path(dump)} already exists (written {first['written_at']}, facts from the "
        f"backup: {tables} tables, {rows:,} rows; now {tables} tables, {rows:,} rows, {checked} with checksums from "
        f"the live source): pass --force to replace {manifest_path(dump).name}\n"
    )
    assert manifest_path(dump).read_bytes() == before
    assert from_source(dump, profile, "--force").returncode == 0
    assert json.loads(manifest_path(dump).read_text())["facts_from"] == "source"


@pytest.mark.parametrize("where", ["other-directory", "other-pattern"])
def test_from_source_refuses_a_file_that_is_not_one_of_the_sources_backups(
    profile_variant: Variant, sandbox: Profile, tmp_path: Path, where: str
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)
    profile = profile_variant(pointing_at(dump, rdb))
    if where == "other-directory":
        (tmp_path / "elsewhere").mkdir()
        stray = Path(shutil.copy2(dump, tmp_path / "elsewhere" / dump.name))
    else:
        stray = Path(shutil.copy2(dump, dump.parent / "manual.sql.gz"))
    os.utime(stray)
    done = from_source(stray, profile)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"opsverify: {stray} is not a backup of source pf-runbook-sql, whose backups are "
        f"{dump.parent}/backup_*.sql.gz: give one of them, or pass --source with the backup source this backup "
        "belongs to\n"
    )
    assert not manifest_path(stray).exists()


def test_from_source_of_an_s3_source_takes_a_local_copy_named_by_its_pattern(
    profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    dump, rdb = runbook_series(sandbox, tmp_path)

    def s3(data: dict[str, Any]) -> None:
        pointing_at(dump, rdb)(data)
        data["backups"][0].update(path="s3://pf-backups/database/", s3={"endpoint_url": "http://127.0.0.1:9"})

    profile = profile_variant(s3)
    copy = Path(shutil.copy2(dump, tmp_path / "copy.sql.gz"))
    os.utime(copy)
    done = from_source(copy, profile)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "opsverify: copy.sql.gz does not match the pattern backup_*.sql.gz of backup source pf-runbook-sql "
        "(s3://pf-backups/database/): give a local copy of one of its backups under its own name (--source is only "
        "used to find the database or Redis it backs up), or pass --source with the source this backup belongs to\n"
    )
    os.utime(dump)
    assert from_source(dump, profile).returncode == 0  # a local copy under its own name, anywhere


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        ("gzip-text", ("write", "{tmp}/backup_1.sql.gz"),
         "{tmp}/backup_1.sql.gz is not a pg_dump SQL dump (its gzip holds text without pg_dump's `-- PostgreSQL "
         "database dump` header): give a plain or gzipped SQL dump, a pg_dump custom (-Fc) or directory (-Fd) "
         "archive, or a Redis RDB"),
        ("part", ("write", "{tmp}/backup_1.sql.gz.part"),
         "{tmp}/backup_1.sql.gz.part is a partial file (.part, still being written or abandoned): give the finished "
         "backup, after the job renamed it"),
        ("none", ("write", "s3://pf-backups/database/backup_1.sql.gz"),
         "s3:/pf-backups/database/backup_1.sql.gz is not a local file: copy the backup here first (aws s3 cp, scp) "
         "and give the path of that copy"),
        ("spaced", ("show", "{tmp}/my backups/backup_1.sql.gz"),
         "no manifest beside {tmp}/my backups/backup_1.sql.gz (backup_1.sql.gz.manifest.json): write one with "
         "`opsverify manifest write '{tmp}/my backups/backup_1.sql.gz'`"),
        ("link", ("write", "{tmp}/latest.sql.gz"),
         "{tmp}/latest.sql.gz is a symbolic link to {tmp}/backup_1.sql.gz: give that path, the backup itself (a "
         "manifest is named after the file it describes)"),
    ],
    ids=["gzip-not-a-dump", "partial-file", "s3-url", "path-with-spaces", "symbolic-link"],
)
def test_rough_edges_are_one_sentence_and_exit_1(tmp_path: Path, make: str, args: tuple[str, ...],
                                                 message: str) -> None:
    if make == "gzip-text":
        (tmp_path / "backup_1.sql.gz").write_bytes(gzip.compress(b"hello, not a dump\n"))
    elif make == "part":
        (tmp_path / "backup_1.sql.gz.part").write_bytes(gzip.compress(b"-- PostgreSQL database dump\n"))
    elif make == "spaced":
        (tmp_path / "my backups").mkdir()
        (tmp_path / "my backups" / "backup_1.sql.gz").write_bytes(gzip.compress(b"x"))
    elif make == "link":  # `ln -sf backup_$DATE.sql.gz latest.sql.gz`
        (tmp_path / "backup_1.sql.gz").write_bytes(gzip.compress(b"-- PostgreSQL database dump\n"))
        (tmp_path / "latest.sql.gz").symlink_to("backup_1.sql.gz")
    done = opsverify("manifest", *(a.format(tmp=tmp_path) for a in args))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"opsverify: {message.format(tmp=tmp_path)}\n"


def test_a_backup_still_being_written_is_refused(sandbox: Profile, tmp_path: Path) -> None:
    original = newest(sandbox, "pf-postgres-custom")
    dump = Path(shutil.copy2(original, tmp_path / original.name))
    proc = subprocess.Popen([sys.executable, "-m", "opsverify", "manifest", "write", str(dump)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with dump.open("ab") as job:  # a job still appending to it while the manifest is read
        while proc.poll() is None:
            job.write(b"\0" * 512)
            job.flush()
            time.sleep(0.005)
    out, err = proc.communicate()
    assert (proc.returncode, out) == (1, "")
    assert err == (f"opsverify: {dump} changed while it was read (it is still being written): run this after the "
                   "backup job has finished writing it\n")
    assert not manifest_path(dump).exists()


def test_no_permission_to_write_beside_the_backup_is_one_sentence(sandbox: Profile) -> None:
    work = Path(tempfile.mkdtemp(prefix="opsverify_scratch_manifest_"))  # not tmp_path: 0700, closed to nobody
    try:
        dump = Path(shutil.copy2(newest(sandbox, "pf-postgres-daily"), work / "backup_1.sql.gz"))
        dump.chmod(0o644)
        as_user: list[str] = []
        if os.geteuid() == 0:  # root writes anywhere: run as nobody, who may read but not write here
            work.chmod(0o755)
            as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        else:
            work.chmod(0o555)
        done = subprocess.run([*as_user, sys.executable, "-m", "opsverify", "manifest", "write", str(dump)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == (f"opsverify: cannot write {manifest_path(dump)} (Permission denied): run as a user "
                               "who may write in the backup's directory\n")
    finally:
        work.chmod(0o755)
        shutil.rmtree(work)
