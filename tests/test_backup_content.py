"""checks/backup/test_backup_content.py against the real test sandbox: healthy passes; each fault fails one check.

Faults are real dumps made by ``pg_dump`` of the sandbox's own server (the other database, a
schema-only dump, a dump that leaves a table out, a dump of a scratch copy whose tables were
emptied), saved as the newest file of a copy of a sandbox series in tmp_path. The shared sandbox
itself is never changed: a scratch database is created and dropped by the test that needs it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsverify.pgtools import clean_env, pg_tool
from opsverify.profile import Profile

Run = Callable[..., Any]
Variant = Callable[..., Path]
CONTENT = "backup/test_backup_content.py"
MODULE = "test_backup_content.py"
OF_DATABASE = MODULE + "::test_newest_dump_is_of_its_database[{}]"
HOLDS_ROWS = MODULE + "::test_newest_dump_holds_rows_the_live_database_has[{}]"
EVERY_TABLE = MODULE + "::test_newest_full_dump_holds_every_live_table[{}]"
MANIFEST = MODULE + "::test_newest_manifest_matches_its_backup[{}]"


@dataclass
class SeriesCopy:
    """A copy of one sandbox backup series (its files only, mtimes kept) in a directory of the test's own."""

    source: dict[str, Any]
    directory: Path

    @property
    def name(self) -> str:
        return str(self.source["name"])

    @property
    def newest(self) -> Path:
        found = [p for p in self.directory.iterdir() if p.is_file() and not p.name.endswith(".manifest.json")]
        return max(found, key=lambda p: p.stat().st_mtime)

    def only(self, **overrides: Any) -> Callable[[dict[str, Any]], None]:
        """A profile mutation: this copy is the profile's only backup source."""

        def mutate(data: dict[str, Any]) -> None:
            data["backups"] = [{**self.source, "path": str(self.directory), **overrides}]

        return mutate


@pytest.fixture
def series(sandbox_profile: Path, tmp_path: Path) -> Callable[..., SeriesCopy]:
    """``series("pf-postgres-custom", manifests=False)``: copy that series (mtimes kept) into tmp_path."""

    def copy(name: str, manifests: bool = False) -> SeriesCopy:
        sources = yaml.safe_load(sandbox_profile.read_text())["backups"]
        source = next(s for s in sources if s["name"] == name)
        target = tmp_path / name
        target.mkdir()
        for path in Path(source["path"]).glob(source["pattern"]):
            shutil.copy2(path, target / path.name)
            manifest = path.with_name(path.name + ".manifest.json")
            if manifests and manifest.is_file():
                shutil.copy2(manifest, target / manifest.name)
        return SeriesCopy(source, target)

    return copy


@dataclass
class Dumper:
    """``pg_dump`` of the sandbox's server as its superuser (the runbooks' backup command)."""

    sandbox: Profile

    def _target(self) -> tuple[list[str], dict[str, str]]:
        target = self.sandbox.restore_target
        assert target is not None
        password = target.secret() or ""
        args = ["-h", target.host, "-p", str(target.port), "-U", target.user]
        return args, clean_env(PGPASSWORD=password, PGCONNECT_TIMEOUT="10")

    def run(self, tool: str, dbname: str, *extra: str, stdin: str | None = None) -> bytes:
        args, env = self._target()
        done = subprocess.run(
            [pg_tool(tool), *args, "-d", dbname, *extra], env=env, capture_output=True, timeout=120,
            check=False, input=stdin.encode() if stdin is not None else None,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def estimate(self, table: str) -> int:
        """The planner's row estimate of a photonic_foundry table (what the check reports as ``live ~R rows``)."""
        query = f"SELECT reltuples::bigint FROM pg_class WHERE oid = '{table}'::regclass"
        return int(self.run("psql", "photonic_foundry", "-Atc", query).decode().strip())

    def replace(self, path: Path, dbname: str, *extra: str) -> None:
        """Overwrite ``path`` with a real dump (gzipped when it ends in .gz), keeping its mtime: still the newest."""
        stat = path.stat()
        data = self.run("pg_dump", dbname, *extra)
        path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
        os.utime(path, (stat.st_atime, stat.st_mtime))


@pytest.fixture
def dumper(sandbox: Profile) -> Dumper:
    return Dumper(sandbox)


@pytest.fixture
def emptied_copy(dumper: Dumper) -> Iterator[str]:
    """A copy of photonic_foundry on the sandbox's server with every table emptied (dropped after).

    Not named ``opsverify_scratch_*``: a concurrent run's janitor drops such a database without a creator note.
    """
    name = f"content_fault_{uuid.uuid4().hex[:8]}"
    dumper.run("psql", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"')
    try:
        schema_and_data = dumper.run("pg_dump", "photonic_foundry").decode()
        dumper.run("psql", name, "-q", "-v", "ON_ERROR_STOP=1", stdin=schema_and_data)
        dumper.run("psql", name, "-v", "ON_ERROR_STOP=1", "-c", "TRUNCATE models, simulations, simulation_events")
        yield name
    finally:
        dumper.run("psql", "postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scratch_copy(dumper: Dumper) -> Iterator[Callable[..., str]]:
    """``scratch_copy("TRUNCATE simulations")``: a copy of photonic_foundry, then those statements (dropped after)."""
    made: list[str] = []

    def make(*statements: str) -> str:
        name = f"content_fault_{uuid.uuid4().hex[:8]}"
        made.append(name)
        dumper.run("psql", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"')
        schema_and_data = dumper.run("pg_dump", "photonic_foundry").decode()
        dumper.run("psql", name, "-q", "-v", "ON_ERROR_STOP=1", stdin=schema_and_data)
        for statement in statements:
            dumper.run("psql", name, "-v", "ON_ERROR_STOP=1", "-c", statement)
        return name

    try:
        yield make
    finally:
        for name in made:
            dumper.run("psql", "postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _live_database(dbname: str) -> Callable[[dict[str, Any]], None]:
    """A profile mutation: database photonic_foundry is read from ``dbname`` (a scratch copy)."""

    def mutate(data: dict[str, Any]) -> None:
        for db in data["databases"]:
            if db["name"] == "photonic_foundry":
                db["dbname"] = dbname

    return mutate


def _both(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(data)

    return mutate


def test_healthy_sandbox_passes_every_content_check(run_checks: Run, sandbox_profile: Path) -> None:
    run = run_checks(sandbox_profile, CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    assert run.outcome(OF_DATABASE.format("pf-postgres-custom")) == "passed"
    for name in ("pf-postgres-daily", "pf-simulations-table", "qp-database-daily"):  # plain SQL names no database
        assert run.outcome(OF_DATABASE.format(name)) == "skipped"


def test_custom_dump_of_the_other_database_fails_only_the_database_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper
) -> None:
    copy = series("pf-postgres-custom")
    newest = copy.newest
    dumper.replace(newest, "quantum_planner", "-Fc")
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = OF_DATABASE.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"newest dump {newest.name} of pf-postgres-custom holds database quantum_planner, not photonic_foundry "
        f"(profile database photonic_foundry): check the job's pg_dump -d ({newest})"
    )


def test_schema_only_custom_dump_fails_only_the_rows_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper
) -> None:
    copy = series("pf-postgres-custom")
    newest = copy.newest
    dumper.replace(newest, "photonic_foundry", "-Fc", "--schema-only")
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = HOLDS_ROWS.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"newest dump {newest.name} of pf-postgres-custom holds no rows for any of the 3 table(s) the live database "
        f"fills, first public.models (live ~{dumper.estimate('public.models')} rows; a schema-only dump or one of "
        f"emptied tables): {newest}"
    )


def test_dump_of_emptied_tables_fails_only_the_rows_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper, emptied_copy: str
) -> None:
    copy = series("pf-postgres-daily")
    newest = copy.newest
    dumper.replace(newest, emptied_copy)  # plain SQL, gzipped: COPY sections with no row
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = HOLDS_ROWS.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"newest dump {newest.name} of pf-postgres-daily holds no rows for any of the 3 table(s) the live database "
        f"fills, first public.models (live ~{dumper.estimate('public.models')} rows; a schema-only dump or one of "
        f"emptied tables): {newest}"
    )


def test_table_empty_at_dump_time_and_filled_since_passes(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper,
    scratch_copy: Callable[..., str],
) -> None:
    """Without a manifest, one table empty in the dump (a queue emptied then, refilled now) is no failure."""
    copy = series("pf-postgres-daily")
    dumper.replace(copy.newest, scratch_copy("TRUNCATE simulations"))
    run = run_checks(profile_variant(copy.only()), CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    assert run.outcome(HOLDS_ROWS.format(copy.name)) == "passed"
    assert run.checks[HOLDS_ROWS.format(copy.name)]["evidence"]["dump_tables_with_rows"] == "2"


def _rows_manifest(backup: Path, **rows: int) -> Path:
    """A bound manifest recording ``rows`` (``models=3``) per public table, as the backup job writes it."""
    from opsverify.facts.manifest import write_manifest

    tables = {f"public.{t}": {"rows": n} for t, n in rows.items()}
    return write_manifest(backup, {"checksum_algorithm": "sum-hash-64", "tables": tables})


def test_manifest_decides_per_table_which_tables_must_hold_rows(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper,
    scratch_copy: Callable[..., str],
) -> None:
    """With a manifest, a table it recorded rows for must hold rows in the dump; one it recorded empty need not."""
    copy = series("pf-postgres-daily")
    newest = copy.newest
    dumper.replace(newest, scratch_copy("TRUNCATE simulations"))
    _rows_manifest(newest, models=3, simulations=0)  # emptied at dump time, as the manifest says: passes
    run = run_checks(profile_variant(copy.only()), CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    assert run.outcome(HOLDS_ROWS.format(copy.name)) == "passed"
    _rows_manifest(newest, models=3, simulations=7)  # rows recorded at dump time, none in the dump: fails
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = HOLDS_ROWS.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"newest dump {newest.name} of pf-postgres-daily holds no rows for 1 table(s) its manifest recorded rows for "
        f"at dump time, first public.simulations (7 rows recorded): {newest}"
    )


def _taken(path: Path) -> str:
    """How the check prints the dump's time: its mtime (the series' names carry the same minute), local time."""
    from datetime import datetime

    return datetime.fromtimestamp(path.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def test_dump_leaving_a_table_out_fails_only_the_every_table_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper
) -> None:
    copy = series("pf-postgres-custom")
    newest = copy.newest
    dumper.replace(newest, "photonic_foundry", "-Fc", "-T", "models")
    run = run_checks(profile_variant(copy.only(tables=["simulations"])), CONTENT)  # tables: is not what is compared
    check = EVERY_TABLE.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"newest dump {newest.name} of pf-postgres-custom lacks 1 of the 3 table(s) database photonic_foundry holds "
        f"live, first public.models (dump taken {_taken(newest)}; older than the tables it holds, so not created "
        f"since: add it to the job's dump, or to exclude_tables when it is never dumped): {newest}"
    )


def test_excluded_table_may_be_left_out(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper
) -> None:
    copy = series("pf-postgres-custom")
    dumper.replace(copy.newest, "photonic_foundry", "-Fc", "-T", "models")
    run = run_checks(profile_variant(copy.only(tables=["simulations"], exclude_tables=["public.mod*"])), CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    assert run.outcome(EVERY_TABLE.format(copy.name)) == "passed"


def test_table_created_since_the_dump_passes_with_evidence(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper,
    scratch_copy: Callable[..., str],
) -> None:
    """A table created after the newest dump (its OID above every dumped table's) passes, custom and plain alike."""
    database = scratch_copy()
    custom, plain = series("pf-postgres-custom"), series("pf-postgres-daily")
    dumper.replace(custom.newest, database, "-Fc")
    dumper.replace(plain.newest, database)
    dumper.run("psql", database, "-v", "ON_ERROR_STOP=1", "-c", "CREATE TABLE queue_jobs (id int PRIMARY KEY)")

    def both(data: dict[str, Any]) -> None:
        plain.only()(data)
        first = data["backups"][0]
        custom.only()(data)
        data["backups"].insert(0, first)

    run = run_checks(profile_variant(_both(both, _live_database(database))), CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    for name in (custom.name, plain.name):
        check = EVERY_TABLE.format(name)
        assert run.outcome(check) == "passed"
        assert run.checks[check]["evidence"]["created_since_dump"] == "public.queue_jobs"
        assert run.checks[check]["evidence"]["missing"] == ""


def test_plain_dump_of_the_other_database_fails_the_every_table_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper
) -> None:
    copy = series("pf-postgres-daily")
    newest = copy.newest
    dumper.replace(newest, "quantum_planner")  # plain SQL names no database: its tables give it away
    run = run_checks(profile_variant(copy.only(tables=[])), CONTENT)
    check = EVERY_TABLE.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"newest dump {newest.name} of pf-postgres-daily lacks 3 of the 3 table(s) database photonic_foundry holds "
        f"live, first public.models (dump taken {_taken(newest)}; it holds none of the live tables: check the job's "
        f"pg_dump -d): {newest}"
    )


def test_single_table_series_is_not_compared_with_the_whole_schema(run_checks: Run, sandbox_profile: Path) -> None:
    run = run_checks(sandbox_profile, CONTENT)
    assert run.outcome(EVERY_TABLE.format("pf-simulations-table")) == "skipped"
    assert run.outcome(EVERY_TABLE.format("pf-postgres-daily")) == "passed"
    assert run.outcome(HOLDS_ROWS.format("pf-simulations-table")) == "passed"




def rewrite(manifest: Path) -> str:
    backup = manifest.with_name(manifest.name.removesuffix(".manifest.json"))
    return f"re-run the backup job, or write the manifest with `opsverify manifest write {backup}`"


def test_sandbox_manifests_are_bound_to_their_backups(run_checks: Run, sandbox_profile: Path) -> None:
    run = run_checks(sandbox_profile, CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    for name in ("pf-postgres-daily", "pf-postgres-custom", "qp-database-daily", "redis-rdb"):
        assert run.outcome(MANIFEST.format(name)) == "passed", name
    assert run.outcome(MANIFEST.format("pf-simulations-table")) == "skipped"  # the -t job writes no manifest


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_backup_replaced_under_its_manifest_fails_only_the_manifest_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy]
) -> None:
    copy = series("pf-postgres-daily", manifests=True)
    newest = copy.newest
    older = sorted(copy.directory.glob("backup_*.sql.gz"))[0]  # another real backup of the same database
    recorded_size, recorded_sha = newest.stat().st_size, _sha(newest)
    stat = newest.stat()
    shutil.copyfile(older, newest)
    os.utime(newest, (stat.st_atime, stat.st_mtime))
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = MANIFEST.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"manifest {newest.name}.manifest.json does not match backup {newest.name} of pf-postgres-daily: it records "
        f"{recorded_size:,} bytes sha256 {recorded_sha}, the file has {newest.stat().st_size:,} bytes sha256 "
        f"{_sha(newest)}: the backup was replaced after its manifest was written, or the manifest is another "
        f"backup's ({newest}.manifest.json)"
    )


def test_newest_backup_without_a_manifest_fails_when_older_ones_have_one(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy]
) -> None:
    copy = series("pf-postgres-custom", manifests=True)
    newest = copy.newest
    manifest = copy.directory / (newest.name + ".manifest.json")
    manifest.unlink()
    older = max((p for p in copy.directory.iterdir() if p.name.endswith(".dump") and p != newest),
                key=lambda p: p.stat().st_mtime)
    assert (copy.directory / (older.name + ".manifest.json")).is_file()
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = MANIFEST.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"newest backup {newest.name} of pf-postgres-custom has no manifest ({manifest.name}), though older backup "
        f"{older.name} has one: the job stopped writing manifests or failed before it; {rewrite(manifest)} ({manifest})"
    )


def test_empty_manifest_without_binding_fails_only_the_manifest_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy]
) -> None:
    copy = series("pf-postgres-custom", manifests=True)
    manifest = copy.directory / (copy.newest.name + ".manifest.json")
    manifest.write_text('{"tables": {}}\n')
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = MANIFEST.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"manifest {manifest.name} of pf-postgres-custom records no size and sha256 of its backup (backup.size, "
        f"backup.sha256): {rewrite(manifest)} ({manifest})"
    )


def test_bound_manifest_with_no_table_fails_only_the_manifest_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy]
) -> None:
    from opsverify.facts.manifest import write_manifest

    copy = series("pf-postgres-custom", manifests=True)
    manifest = write_manifest(copy.newest, {"checksum_algorithm": "sum-hash-64", "tables": {}})
    run = run_checks(profile_variant(copy.only()), CONTENT)
    check = MANIFEST.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"manifest {manifest.name} of pf-postgres-custom lists no table, but database photonic_foundry holds 3 "
        f"live: {rewrite(manifest)} ({manifest})"
    )


def test_truncated_manifest_fails_only_the_manifest_check(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy]
) -> None:
    copy = series("qp-database-daily", manifests=True)
    manifest = copy.directory / (copy.newest.name + ".manifest.json")
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    try:
        json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
    run = run_checks(profile_variant(copy.only(offsite=None)), CONTENT)
    check = MANIFEST.format(copy.name)
    assert run.failed() == {check}, run.result.stdout.str()
    assert run.message(check) == (
        f"manifest {manifest.name} of qp-database-daily is not valid JSON ({where}): {rewrite(manifest)} ({manifest})"
    )


def test_dump_with_insert_statements_passes(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy], dumper: Dumper
) -> None:
    """A healthy dump in another shape (``pg_dump --inserts``, plain and custom) is not mistaken for an empty one."""
    plain, custom = series("pf-postgres-daily"), series("pf-postgres-custom")
    dumper.replace(plain.newest, "photonic_foundry", "--inserts")
    dumper.replace(custom.newest, "photonic_foundry", "-Fc", "--inserts")

    def both(data: dict[str, Any]) -> None:
        plain.only()(data)
        first = data["backups"][0]
        custom.only()(data)
        data["backups"].insert(0, first)

    run = run_checks(profile_variant(both), CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    for name in (plain.name, custom.name):
        assert run.outcome(HOLDS_ROWS.format(name)) == "passed"
        assert run.outcome(EVERY_TABLE.format(name)) == "passed"


def test_archive_reader_reads_piped_and_directory_dumps(dumper: Dumper, emptied_copy: str, tmp_path: Path) -> None:
    """A dump written to a pipe has no data offsets (its blocks are walked); a directory dump has data files."""
    from opsverify.backups.toc import dump_content

    piped = tmp_path / "piped.dump"
    piped.write_bytes(dumper.run("pg_dump", "photonic_foundry", "-Fc"))  # stdout: not seekable
    directory = tmp_path / "emptied.d"
    dumper.run("pg_dump", emptied_copy, "-Fd", "-f", str(directory))
    full = dump_content(piped)
    assert (full.format, full.dbname) == ("pg-custom", "photonic_foundry")
    assert full.rows == {"public.models": 1, "public.simulations": 1, "public.simulation_events": 1}
    emptied = dump_content(directory)
    assert (emptied.format, emptied.dbname) == ("pg-directory", emptied_copy)
    assert emptied.tables == {"public.models", "public.simulations", "public.simulation_events"}
    assert emptied.rows == {"public.models": 0, "public.simulations": 0, "public.simulation_events": 0}


def test_unreachable_live_database_fails_the_content_checks(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy]
) -> None:
    """A declared database that refuses connections fails (never skips) every check that compares with it, once."""
    from opsverify.localserver.net import free_port

    copy = series("pf-postgres-custom")
    port = free_port()

    def mutate(data: dict[str, Any]) -> None:
        copy.only()(data)
        for db in data["databases"]:
            if db["name"] == "photonic_foundry":
                db["port"] = port

    run = run_checks(profile_variant(mutate), CONTENT)
    checks = {OF_DATABASE.format(copy.name), HOLDS_ROWS.format(copy.name), EVERY_TABLE.format(copy.name)}
    assert run.failed() == checks, run.result.stdout.str()
    assert run.message(OF_DATABASE.format(copy.name)) == (
        f"cannot read the live tables of database photonic_foundry (127.0.0.1:{port}/photonic_foundry): "
        "connection refused"
    )
    later = re.escape(
        f"cannot read the live tables of database photonic_foundry (127.0.0.1:{port}/photonic_foundry): "
        f"skipped probing: photonic_foundry at 127.0.0.1:{port} did not answer at "
    ) + r"\d\d:\d\d:\d\d \(connection refused\)"  # one outage, one root cause: named, not probed again
    for check in (HOLDS_ROWS.format(copy.name), EVERY_TABLE.format(copy.name)):
        assert re.fullmatch(later, run.message(check)), run.message(check)
    assert run.outcome(MANIFEST.format(copy.name)) == "skipped"  # the copy has no manifests


def test_source_without_database_is_skipped_with_the_reason(
    run_checks: Run, profile_variant: Variant, series: Callable[..., SeriesCopy]
) -> None:
    copy = series("pf-postgres-custom")

    def mutate(data: dict[str, Any]) -> None:
        copy.only()(data)
        data["backups"][0].pop("database")

    run = run_checks(profile_variant(mutate), CONTENT)
    assert run.failed() == set(), run.result.stdout.str()
    for check in (OF_DATABASE, HOLDS_ROWS, EVERY_TABLE):
        assert run.outcome(check.format(copy.name)) == "skipped"
        assert run.message(check.format(copy.name)) == (
            "pf-postgres-custom declares no database: its dumps are not compared with a live one"
        )


def _block(dump_id: int, payload: bytes) -> bytes:
    """One custom-archive data block as pg_dump writes it: type, dump id, then length-prefixed chunks ended by 0."""

    def integer(value: int) -> bytes:
        return b"\x00" + value.to_bytes(4, "little")

    return b"\x01" + integer(dump_id) + integer(len(payload)) + payload + integer(0)


def test_small_lz4_or_zstd_block_is_unknown_never_empty(tmp_path: Path) -> None:
    """A one-row lz4 frame (~35 bytes) is not taken for an empty table; a small gzip block is inflated and read."""
    import io
    import zlib

    from opsverify.backups.pgdump import _data_block, _data_file, _Reader
    from opsverify.backups.toc import DumpContent

    small = bytes(35)  # not inflated: only its size is looked at
    for method in ("lz4", "zstd"):
        block = _block(7, small)
        assert _data_block(_Reader(io.BytesIO(block), len(block)), method, frozenset()) == (7, 35, None)
        large = _block(7, bytes(200))
        assert _data_block(_Reader(io.BytesIO(large), len(large)), method, frozenset()) == (7, 200, True)
    for rows, expected in ((b"\\.\n", False), (b"1\tone\n\\.\n", True)):
        block = _block(8, zlib.compress(rows))
        assert _data_block(_Reader(io.BytesIO(block), len(block)), "gzip", frozenset())[2] is expected
    (tmp_path / "3007.dat.lz4").write_bytes(small)
    assert _data_file(tmp_path, "3007.dat", "public.jobs", False) == (35, None)
    content = DumpContent("x.dump", "pg-custom", "db", frozenset({"public.jobs", "public.t"}), {"public.t": 0},
                          frozenset({"public.jobs"}))
    assert (content.holds_rows("public.jobs"), content.holds_rows("public.t")) == (None, False)


def test_archive_database_may_be_the_live_sessions_current_database(sandbox: Profile) -> None:
    """Through a pooler the profile's dbname is an alias: the header's name matches ``current_database()``."""
    from typing import cast

    from fixtures.backups import NewestDump
    from opsverify.backups.toc import DumpContent
    from opsverify.facts.database import probe_live_tables

    db = sandbox.database("photonic_foundry")
    live = probe_live_tables(db, sandbox.timeouts.connect, sandbox.timeouts.request)
    assert live.error is None
    assert live.current_database == "photonic_foundry"
    assert set(live.oids) == {"public.models", "public.simulations", "public.simulation_events"}
    assert live.oids["public.models"] < live.oids["public.simulations"]  # created first: a smaller OID
    alias = db.model_copy(update={"dbname": "pf_pooled"})

    def dumped(dbname: str) -> NewestDump:
        content = DumpContent("x.dump", "pg-custom", dbname, frozenset(live.tables), {})
        return NewestDump(cast(Any, None), cast(Any, None), content, alias, live)

    assert not dumped("photonic_foundry").of_another_database  # the live session's database
    assert not dumped("pf_pooled").of_another_database  # the profile's dbname
    assert dumped("quantum_planner").of_another_database
