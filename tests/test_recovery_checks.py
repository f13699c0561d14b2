"""checks/recovery against real faults: a stopped or lagging standby, a failing WAL archiver, a refused target.

The lagging standby and the failing archiver are built for the test (a scratch standby of the
sandbox's primary; a throwaway cluster whose archive directory disappears), so the shared test
sandbox is never disturbed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.actions.base import performed
from opsverify.actions.standby import ScratchStandby
from opsverify.durations import parse_duration
from opsverify.errors import ActionRefused
from opsverify.localserver.net import free_port
from opsverify.localserver.scratch import SCRATCH_PREFIX, require_scratch_name
from opsverify.profile import RestoreTarget
from opsverify.profile.environment import Profile
from opsverify.restore.guard import require_other_server
from opsverify.sandbox.postgres import Postgres, sandbox_tls

Run = Callable[..., Any]
Variant = Callable[..., Path]
REPLICAS = "recovery/test_replicas.py"
OBJECTIVES = "recovery/test_objectives.py"
ARCHIVING = "recovery/test_wal_archiving.py"
T = timedelta(seconds=10)


def replica_at(port: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["replicas"][0].update(port=port, **changes)

    return mutate


def test_stopped_replica_fails_its_checks(run_checks: Run, profile_variant: Variant) -> None:
    port = free_port()
    run = run_checks(profile_variant(replica_at(port)), REPLICAS, extra=("-m", "daily"))
    stream = "test_replicas.py::test_replica_streams_from_its_primary[pf-replica]"
    later = {"test_replicas.py::test_replica_follows_its_declared_primary[pf-replica]",
             "test_replicas.py::test_replica_lag_is_within_rpo[pf-replica]"}
    assert run.failed() == {stream, *later}
    assert run.message(stream) == f"replica pf-replica at 127.0.0.1:{port} did not answer: connection refused"
    at = rf"pf-replica at 127\.0\.0\.1:{port} did not answer"
    for test in later:  # one outage, one root cause: not probed again, the first failure named with its time
        assert re.fullmatch(rf"replica {at}: skipped probing: {at} at \d\d:\d\d:\d\d \(connection refused\)",
                            run.message(test)), run.message(test)


def test_primary_declared_as_replica_fails_the_recovery_check(
    run_checks: Run, profile_variant: Variant, sandbox: Profile
) -> None:
    primary = sandbox.databases[0].port
    run = run_checks(profile_variant(replica_at(primary)), REPLICAS, extra=("-m", "daily"))
    stream = "test_replicas.py::test_replica_streams_from_its_primary[pf-replica]"
    assert run.message(stream) == f"replica pf-replica at 127.0.0.1:{primary} is not in recovery: it was promoted"


def old_series(sandbox: Profile, tmp_path: Path) -> Path:
    """A copy of pf-postgres-custom whose backups were all taken 30d12h ago (undated names: the mtime counts)."""
    source = sandbox.backup("pf-postgres-custom")
    old = tmp_path / "old-series"
    old.mkdir()
    aged = time.time() - timedelta(days=30, hours=12).total_seconds()  # "30d12h" for the next hour
    for n, dump in enumerate(sorted(Path(source.path).glob(source.pattern))):
        copy = old / f"backup_{'abc'[n]}.dump"
        shutil.copyfile(dump, copy)
        os.utime(copy, (aged - n, aged - n))
    return old


def only_pf_drill_from(series: Path, **database: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        next(b for b in data["backups"] if b["name"] == "pf-postgres-custom")["path"] = str(series)
        data["drills"] = [d for d in data["drills"] if d["name"] == "pf-database-custom"]
        data["databases"][0].update(database)
        data["databases"][0] = {k: v for k, v in data["databases"][0].items() if v is not None}

    return mutate


RPO = "test_objectives.py::test_recovery_point_is_within_rpo[pf-database-custom]"


def test_old_backups_fail_the_rpo_check_although_a_replica_is_caught_up(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    variant = only_pf_drill_from(old_series(sandbox, tmp_path), wal_archive=None)  # no point-in-time recovery
    run = run_checks(profile_variant(variant), REPLICAS, OBJECTIVES, extra=("-m", "daily"))
    assert run.failed() == {RPO}  # the replica streams and is caught up: its checks pass
    assert run.message(RPO) == (
        "drill pf-database-custom would lose 30d12h of data (best path: backup backup_a.dump; database RPO 1h; "
        "no point-in-time recovery: photonic_foundry declares no wal_archive)"
    )


def test_point_in_time_recovery_counts_only_with_its_archive_verified(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    series = old_series(sandbox, tmp_path)
    verified = run_checks(profile_variant(only_pf_drill_from(series)), OBJECTIVES)
    assert verified.failed() == set()  # old backups, but the WAL archive holds the last segment: nothing waits
    assert verified.checks[RPO]["evidence"]["recovery_path"].startswith("point-in-time recovery (base backup base_")
    empty = tmp_path / "empty-archive"
    empty.mkdir()
    broken = run_checks(profile_variant(only_pf_drill_from(series, wal_archive=str(empty))), OBJECTIVES)
    assert broken.failed() == {RPO}
    assert broken.message(RPO) == (
        "drill pf-database-custom would lose 30d12h of data (best path: backup backup_a.dump; database RPO 1h; "
        "no point-in-time recovery: the WAL archive of photonic_foundry does not hold the last segment reported "
        "archived)"
    )


@pytest.fixture
def paused_standby(sandbox: Profile) -> Iterator[int]:
    """A scratch standby of the sandbox primary whose replay is paused while the primary moves on."""
    import psycopg

    replica, primary = sandbox.replicas[0], sandbox.databases[0]
    target = sandbox.restore_target
    assert target is not None
    base = Path("/tmp") / f"{SCRATCH_PREFIX}test_{uuid.uuid4().hex[:8]}"
    with performed(ScratchStandby(replica, primary, base, T)) as standby:
        admin = {"host": "127.0.0.1", "user": "postgres", "password": target.secret(), "autocommit": True}
        with psycopg.connect(port=primary.port, dbname="postgres", **admin) as conn:
            conn.execute("SELECT txid_current()")  # a commit the standby replays
            time.sleep(1)
            with psycopg.connect(port=standby.port, dbname="postgres", **admin) as replica_conn:
                replica_conn.execute("SELECT pg_wal_replay_pause()")
            time.sleep(2)
            conn.execute("SELECT txid_current()")  # received, not replayed
            time.sleep(1)
        yield standby.port
    assert not base.exists()


def lag_message(run: Any, test: str, max_lag: str) -> str:
    """The lag check's message built from what it recorded (the measured lag and bytes vary by run)."""
    facts = run.checks[test]["evidence"]
    return (
        f"replica pf-replica lags {facts['lag']} behind photonic_foundry ({facts['behind_bytes']} bytes of WAL not "
        f"replayed; max {max_lag}): check its WAL receiver and pg_stat_replication on photonic_foundry"
    )


def test_lagging_replica_fails_the_lag_check(run_checks: Run, profile_variant: Variant, paused_standby: int) -> None:
    run = run_checks(profile_variant(replica_at(paused_standby, max_lag="1s")), REPLICAS, extra=("-m", "daily"))
    lag = "test_replicas.py::test_replica_lag_is_within_rpo[pf-replica]"
    assert run.failed() == {lag}
    assert run.message(lag) == lag_message(run, lag, "1s")
    assert int(run.checks[lag]["evidence"]["behind_bytes"]) > 0
    assert parse_duration(run.checks[lag]["evidence"]["lag"]) >= timedelta(seconds=2)


@pytest.fixture
def cut_off_standby(sandbox: Profile) -> Iterator[int]:
    """A scratch standby of the sandbox primary, disconnected from it (no WAL receiver) while the primary commits.

    It replayed everything it received, so a lag measured on the standby alone is zero.
    """
    import psycopg

    replica, primary = sandbox.replicas[0], sandbox.databases[0]
    target = sandbox.restore_target
    assert target is not None
    base = Path("/tmp") / f"{SCRATCH_PREFIX}test_{uuid.uuid4().hex[:8]}"
    with performed(ScratchStandby(replica, primary, base, T)) as standby:
        admin = {"host": "127.0.0.1", "user": "postgres", "password": target.secret(), "autocommit": True}
        with psycopg.connect(port=primary.port, dbname="postgres", **admin) as conn, \
                psycopg.connect(port=standby.port, dbname="postgres", **admin) as replica_conn:
            conn.execute("SELECT txid_current()")  # a commit the standby replays while it streams
            wait_for(replica_conn, "SELECT pg_last_xact_replay_timestamp() IS NOT NULL")
            replica_conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            replica_conn.execute("SELECT pg_reload_conf()")
            wait_for(replica_conn, "SELECT NOT EXISTS (SELECT FROM pg_stat_wal_receiver)")
            time.sleep(2)
            conn.execute("SELECT txid_current()")  # the primary moves on; the standby receives nothing
            received, replayed = replica_conn.execute(
                "SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()").fetchone() or (None, None)
            assert received == replayed  # on its own, the standby looks caught up
        yield standby.port
    assert not base.exists()


def wait_for(conn: Any, query: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (conn.execute(query).fetchone() or (False,))[0]:
        assert time.monotonic() < deadline, f"timed out waiting for: {query}"
        time.sleep(0.1)


def test_cut_off_replica_fails_the_lag_check_against_its_primary(
    run_checks: Run, profile_variant: Variant, cut_off_standby: int
) -> None:
    run = run_checks(profile_variant(replica_at(cut_off_standby, max_lag="1s")), REPLICAS, extra=("-m", "daily"))
    stream = "test_replicas.py::test_replica_streams_from_its_primary[pf-replica]"
    lag = "test_replicas.py::test_replica_lag_is_within_rpo[pf-replica]"
    assert run.failed() == {stream, lag}
    assert run.message(stream) == (
        f"replica pf-replica at 127.0.0.1:{cut_off_standby} is not streaming from photonic_foundry (WAL receiver: none)"
    )
    assert run.message(lag) == lag_message(run, lag, "1s")
    assert int(run.checks[lag]["evidence"]["behind_bytes"]) > 0
    assert parse_duration(run.checks[lag]["evidence"]["lag"]) >= timedelta(seconds=2)


@contextmanager
def throwaway_cluster(sandbox: Profile, **settings: str) -> Iterator[Postgres]:
    """A cluster of the test's own, configured like the sandbox's (plus ``settings``), with its roles; gone after.

    Its ``opsverify`` and replication roles have the sandbox's passwords, so the sandbox profile
    reaches it by changing a port.
    """
    base = Path("/tmp") / f"opsverify-test-cluster-{uuid.uuid4().hex[:8]}"
    cluster = Postgres(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.init(sandbox_tls(sandbox.databases[0].sslrootcert))
    if settings:
        cluster.append_settings("postgresql.conf", settings)
    try:
        cluster.start()
        check, replication = sandbox.databases[0].secret() or "", sandbox.replicas[0].replication_secret() or ""
        cluster.create_role_and_databases(check, replication)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists()


def system_identifier(port: int, password: str) -> int:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres") as conn:
        return int((conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone() or (0,))[0])


@pytest.fixture
def foreign_standby(sandbox: Profile) -> Iterator[tuple[int, int]]:
    """A streaming standby of another cluster (a throwaway one): its port and that cluster's system identifier."""
    replica, primary = sandbox.replicas[0], sandbox.databases[0]
    with throwaway_cluster(sandbox) as other:
        base = Path("/tmp") / f"{SCRATCH_PREFIX}test_{uuid.uuid4().hex[:8]}"
        elsewhere = primary.model_copy(update={"port": other.port})
        with performed(ScratchStandby(replica, elsewhere, base, T)) as standby:
            yield standby.port, system_identifier(other.port, other.password)
        assert not base.exists()


def test_replica_of_another_cluster_fails_the_follow_check(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, foreign_standby: tuple[int, int]
) -> None:
    port, foreign = foreign_standby
    target = sandbox.restore_target
    assert target is not None
    primary = sandbox.databases[0].port
    ours = system_identifier(primary, target.secret() or "")
    run = run_checks(profile_variant(replica_at(port)), REPLICAS, extra=("-m", "daily"))
    follows = "test_replicas.py::test_replica_follows_its_declared_primary[pf-replica]"
    lag = "test_replicas.py::test_replica_lag_is_within_rpo[pf-replica]"
    assert run.failed() == {follows, lag}  # it streams, from the wrong server
    assert run.message(follows) == (
        f"replica pf-replica at 127.0.0.1:{port} is a copy of database system {foreign}, not of photonic_foundry "
        f"(system {ours} at 127.0.0.1:{primary}): rebuild it from its primary, or fix its primary_conninfo or the "
        "profile's primary"
    )
    assert run.message(lag) == (
        "replica pf-replica is no copy of photonic_foundry: its lag behind it cannot be measured "
        "(see test_replica_follows_its_declared_primary)"
    )


@pytest.fixture
def failing_archiver(sandbox: Profile) -> Iterator[int]:
    """A throwaway cluster with WAL archiving whose archive directory is gone: every archive attempt fails."""
    import psycopg

    base = Path("/tmp") / f"opsverify-test-archive-{uuid.uuid4().hex[:8]}"
    cluster = Postgres(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.init(sandbox_tls(sandbox.databases[0].sslrootcert))
    cluster.start()
    try:
        check = sandbox.databases[0].secret() or ""
        cluster.create_role_and_databases(check, "unused-replication-secret")
        shutil.rmtree(cluster.archive)
        with cluster.connect() as conn:
            conn.execute("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS n")
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        with cluster.connect() as conn:
            while not (conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone() or (0,))[0]:
                assert time.monotonic() < deadline, "the archiver never failed"
                time.sleep(0.2)
        yield cluster.port
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists()
    del psycopg


def test_failing_wal_archiver_fails_its_check(run_checks: Run, profile_variant: Variant, failing_archiver: int) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["databases"] = [{**data["databases"][0], "port": failing_archiver}]

    run = run_checks(profile_variant(mutate), ARCHIVING)
    test = "test_wal_archiving.py::test_wal_archiving_is_not_failing[photonic_foundry]"
    assert run.failed() == {test}
    lag = "test_wal_archiving.py::test_wal_archive_lag_is_within_rpo[photonic_foundry]"
    objectives = [{"component": c, "rto": "30m", "rpo": "1ms"} for c in ("application", "database", "full-system")]
    strict = run_checks(profile_variant(lambda d: (mutate(d), d.update(objectives=objectives))), ARCHIVING)
    assert strict.failed() == {test, lag}
    assert strict.message(lag).startswith("WAL archiving of photonic_foundry lags ")
    assert "(database RPO 1ms): 1 finished WAL segment(s) wait, last archived nothing at " in strict.message(lag)
    assert run.message(test).startswith("WAL archiving of photonic_foundry has been failing for ")
    assert run.message(test).endswith(": check archive_command and the archive's free space")


@pytest.fixture
def lying_archiver(sandbox: Profile) -> Iterator[tuple[int, str]]:
    """A throwaway cluster whose ``archive_command = '/bin/true'`` reports success and copies nothing.

    Its port and the segment its archiver reports archived after ``pg_switch_wal()``.
    """
    with throwaway_cluster(sandbox, archive_command="'/bin/true'") as cluster, cluster.connect() as conn:
        conn.execute("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS n")
        conn.execute("SELECT pg_switch_wal()")
        wait_for(conn, "SELECT last_archived_wal IS NOT NULL FROM pg_stat_archiver")
        row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        assert row is not None
        yield cluster.port, str(row[0])


def test_archive_command_that_copies_nothing_fails_the_archive_check(
    run_checks: Run, profile_variant: Variant, lying_archiver: tuple[int, str], tmp_path: Path
) -> None:
    port, segment = lying_archiver
    empty = tmp_path / "wal-archive"
    empty.mkdir()

    def mutate(data: dict[str, Any]) -> None:
        data["databases"] = [{**data["databases"][0], "port": port, "wal_archive": str(empty)}]

    run = run_checks(profile_variant(mutate), ARCHIVING)
    test = "test_wal_archiving.py::test_last_archived_segment_is_in_the_archive[photonic_foundry]"
    assert run.failed() == {test}  # the archiver itself reports no failure and no waiting segment
    assert run.message(test) == (
        f"WAL segment {segment} that photonic_foundry (127.0.0.1:{port}) reports archived is not in {empty}: "
        "fix archive_command (PF-20) or the profile's wal_archive"
    )


@pytest.fixture
def gzipping_archiver(sandbox: Profile) -> Iterator[tuple[int, Path, str]]:
    """A throwaway cluster whose archive_command gzips each segment under its plain name (the PostgreSQL docs' example).

    Its port, its archive directory and the segment its archiver reports archived after ``pg_switch_wal()``.
    """
    with throwaway_cluster(sandbox) as cluster, cluster.connect() as conn:
        command = f"test ! -f {cluster.archive}/%f && gzip < %p > {cluster.archive}/%f"
        conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        conn.execute("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS n")
        conn.execute("SELECT pg_switch_wal()")
        wait_for(conn, "SELECT last_archived_wal IS NOT NULL FROM pg_stat_archiver")
        row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        assert row is not None
        yield cluster.port, cluster.archive, str(row[0])


def test_segments_gzipped_under_their_plain_name_pass_the_archive_check(
    run_checks: Run, profile_variant: Variant, gzipping_archiver: tuple[int, Path, str]
) -> None:
    port, archive, segment = gzipping_archiver
    copy = archive / segment
    assert copy.read_bytes()[:2] == b"\x1f\x8b"  # really gzipped, under the plain name
    assert copy.stat().st_size < 16 * 1024 * 1024

    def mutate(data: dict[str, Any]) -> None:
        data["databases"] = [{**data["databases"][0], "port": port, "wal_archive": str(archive)}]

    run = run_checks(profile_variant(mutate), ARCHIVING)
    test = "test_wal_archiving.py::test_last_archived_segment_is_in_the_archive[photonic_foundry]"
    assert run.failed() == set()
    assert run.checks[test]["evidence"]["found"] == str(copy)
    truncated = copy.read_bytes()[:-4] + (1234).to_bytes(4, "little")  # a gzip trailer that says 1234 bytes
    copy.write_bytes(truncated)
    broken = run_checks(profile_variant(mutate), ARCHIVING)
    assert broken.failed() == {test}
    assert broken.message(test) == (
        f"WAL segment {segment} that photonic_foundry (127.0.0.1:{port}) reports archived is not whole: {copy} "
        f"inflates to 1234 bytes, not {16 * 1024 * 1024}: fix archive_command (PF-20) or the profile's wal_archive"
    )


LEAST = "opsverify_least"  # LOGIN and nothing else: no pg_monitor, no pg_read_all_stats


@pytest.fixture
def least_privileged(sandbox: Profile, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """A throwaway cluster (archiving) with a role of the test's own (LOGIN, no grants) and a streaming
    standby of it: the cluster's port, the standby's port and the role's password file."""
    from psycopg import sql

    replica, primary = sandbox.replicas[0], sandbox.databases[0]
    password = uuid.uuid4().hex
    secret = tmp_path / "least.pass"
    secret.touch(mode=0o600)
    secret.write_text(password + "\n")
    with throwaway_cluster(sandbox) as cluster:
        with cluster.connect() as conn:
            create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(LEAST), sql.Literal(password))
            conn.execute(create)
        base = Path("/tmp") / f"{SCRATCH_PREFIX}test_{uuid.uuid4().hex[:8]}"
        elsewhere = primary.model_copy(update={"port": cluster.port})
        with performed(ScratchStandby(replica, elsewhere, base, T)) as standby:
            with psycopg_connect(standby.port, cluster.password) as replica_conn:
                wait_for(replica_conn, "SELECT status = 'streaming' FROM pg_stat_wal_receiver")
            yield cluster.port, standby.port, secret
        assert not base.exists()


@contextmanager
def psycopg_connect(port: int, password: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres",
                         autocommit=True) as conn:
        yield conn


def as_least(cluster: int, standby: int, secret: Path) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        role = {"user": LEAST, "password_file": str(secret)}
        data["databases"] = [{**data["databases"][0], "port": cluster, **role}]
        data["databases"][0].pop("wal_archive", None)
        data["databases"][0].pop("base_backups", None)
        data["replicas"][0].update(port=standby, **role)

    return mutate


def test_least_privileged_role_fails_only_where_it_lacks_a_grant(
    run_checks: Run, profile_variant: Variant, least_privileged: tuple[int, int, Path]
) -> None:
    cluster, standby, secret = least_privileged
    run = run_checks(profile_variant(as_least(cluster, standby, secret)), REPLICAS, ARCHIVING, extra=("-m", "daily"))
    stream = "test_replicas.py::test_replica_streams_from_its_primary[pf-replica]"
    follows = "test_replicas.py::test_replica_follows_its_declared_primary[pf-replica]"
    lag = "test_wal_archiving.py::test_wal_archive_lag_is_within_rpo[photonic_foundry]"
    assert run.failed() == {stream, follows, lag}  # the archiver's other checks and the replica lag work
    grant = f"role {LEAST} may not read pg_stat_wal_receiver's status and timeline: GRANT pg_read_all_stats TO {LEAST}"
    assert run.message(stream) == (
        f"cannot tell whether replica pf-replica at 127.0.0.1:{standby} streams from photonic_foundry: {grant}"
    )
    assert run.message(follows) == (
        f"cannot read the timeline replica pf-replica at 127.0.0.1:{standby} receives: {grant}"
    )
    assert run.message(lag) == (
        f"cannot measure the WAL archive lag of photonic_foundry at 127.0.0.1:{cluster}: role {LEAST} may not call "
        f"pg_ls_archive_statusdir() (the finished segments waiting): GRANT pg_monitor TO {LEAST}"
    )
    assert run.checks[stream]["evidence"]["receiver"] == "hidden"


UNREADABLE_ARCHIVE_PROBE = """
import os, sys
from pathlib import Path
from opsverify.probes.replication import check_archived_copy
os.setegid(65534)  # root reads anything: look as nobody, as opsverify run by a user the archive is closed to
os.seteuid(65534)
copy = check_archived_copy(Path(sys.argv[1]), sys.argv[2], 16 * 1024 * 1024)
print(f"{copy.problem}: {copy.fix}")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to look as another user")
def test_unreadable_wal_archive_names_the_path_and_the_read_permission(sandbox: Profile) -> None:
    """The archive check's message is ``{what} {copy.problem}: {copy.fix}``: the unreadable path and read permission.

    The checks run as root here, and root reads anything; so the probe looks as ``nobody`` at a real
    archive (a copy of a sandbox segment) closed to it, as the postgres-owned 0700 archive of a real
    server is closed to a monitoring user.
    """
    declared = sandbox.databases[0].wal_archive
    assert declared is not None
    segment = max(p for p in declared.iterdir() if re.fullmatch(r"[0-9A-F]{24}", p.name))
    archive = Path("/tmp") / f"opsverify-test-closed-archive-{uuid.uuid4().hex[:8]}"
    archive.mkdir(mode=0o700)
    try:
        shutil.copyfile(segment, archive / segment.name)

        def look() -> str:
            probe = subprocess.run([sys.executable, "-c", UNREADABLE_ARCHIVE_PROBE, str(archive), segment.name],
                                   capture_output=True, text=True, timeout=30, check=True)
            return probe.stdout.strip()

        assert look() == (
            f"cannot be read: {archive / segment.name}: Permission denied: give nobody, the user running opsverify, "
            f"read permission on {archive}"
        )
        archive.chmod(0o755)  # the directory open, the segment itself not
        (archive / segment.name).chmod(0o600)
        assert look() == (
            f"cannot be read: {archive / segment.name}: Permission denied: give nobody, the user running opsverify, "
            f"read permission on {archive / segment.name}"
        )
        (archive / segment.name).chmod(0o644)
        assert look() == "None: fix archive_command (PF-20) or the profile's wal_archive"  # readable and whole
    finally:
        shutil.rmtree(archive)


def test_old_base_backup_fails_the_base_backup_check(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    declared = sandbox.databases[0].base_backups
    assert declared is not None
    newest = max(declared.iterdir())
    old = tmp_path / "base-backups" / newest.name
    old.mkdir(parents=True)
    shutil.copyfile(newest / "backup_manifest", old / "backup_manifest")  # the manifest dates the backup
    aged = time.time() - timedelta(days=9, hours=5).total_seconds()
    os.utime(old / "backup_manifest", (aged, aged))

    def mutate(data: dict[str, Any]) -> None:
        data["databases"] = [{**data["databases"][0], "base_backups": str(old.parent)}]

    run = run_checks(profile_variant(mutate), "recovery/test_base_backups.py", ARCHIVING)
    test = "test_base_backups.py::test_newest_base_backup_is_recent[photonic_foundry]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"the newest base backup of photonic_foundry ({old}) is 9d5h old (max 7d): run pg_basebackup; "
        "point-in-time recovery replays every WAL segment since it"
    )


def test_killed_base_backup_does_not_count_as_the_newest(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    declared = sandbox.databases[0].base_backups
    assert declared is not None
    newest = max(declared.iterdir())
    backups = tmp_path / "base-backups"
    old = backups / "base_20261120T000000Z"
    shutil.copytree(newest, old)  # a real, complete base backup, finished 9d5h ago
    aged = time.time() - timedelta(days=9, hours=5).total_seconds()
    os.utime(old / "backup_manifest", (aged, aged))
    killed = backups / "base_20261129T000000Z"  # pg_basebackup killed halfway: half a tarball, no manifest
    killed.mkdir()
    tarball = (newest / "base.tar.gz").read_bytes()
    (killed / "base.tar.gz").write_bytes(tarball[: len(tarball) // 2])

    run = run_checks(profile_variant(only_pf_drill_from(old_series(sandbox, tmp_path), base_backups=str(backups))),
                     "recovery/test_base_backups.py", OBJECTIVES)
    test = "test_base_backups.py::test_newest_base_backup_is_recent[photonic_foundry]"
    assert run.failed() == {test, RPO}
    assert run.message(test) == (
        f"the newest base backup of photonic_foundry ({old}) is 9d5h old (max 7d) ({killed.name} incomplete: no "
        "backup_manifest): run pg_basebackup; point-in-time recovery replays every WAL segment since it"
    )
    assert run.checks[test]["evidence"]["incomplete"] == killed.name
    assert run.message(RPO) == (
        "drill pf-database-custom would lose 30d12h of data (best path: backup backup_a.dump; database RPO 1h; "
        "no point-in-time recovery: the newest complete base backup of photonic_foundry is 9d5h old (max 7d))"
    )


def test_guards_refuse_foreign_names_and_the_source_server(sandbox: Profile) -> None:
    for name in ("photonic_foundry", "opsverify_scratch_x; DROP DATABASE photonic_foundry", "postgres"):
        with pytest.raises(ActionRefused, match="only opsverify_scratch_\\* names are scratch"):
            require_scratch_name(name)
    require_scratch_name("opsverify_scratch_ab12_gw0_3_pf")
    assert sandbox.restore_target is not None
    strict = sandbox.restore_target.model_copy(update={"must_differ_from_source": True})
    with pytest.raises(ActionRefused, match="is the server of source database photonic_foundry"):
        require_other_server(strict, sandbox.databases)
    elsewhere = RestoreTarget(host="127.0.0.1", port=free_port(), user="x")
    require_other_server(elsewhere, sandbox.databases)
    replica = sandbox.replicas[0]  # another port, the same cluster: caught by its system_identifier
    behind = strict.model_copy(update={"port": replica.port})
    with pytest.raises(ActionRefused, match=f"restore target 127.0.0.1:{replica.port} is the server of source"):
        require_other_server(behind, sandbox.databases, T)
    require_other_server(behind, sandbox.databases)  # without asking the servers, the ports differ


DRILL_CHECKS = (
    "test_restore_completes_without_errors", "test_restored_schema_matches_the_dump",
    "test_restored_row_counts_match_the_backup", "test_restored_tables_match_their_checksums",
    "test_smoke_queries_return_rows", "test_restored_copy_passes_amcheck", "test_restore_time_is_within_rto",
)


def test_drill_against_the_source_server_is_refused_with_the_fix(
    run_checks: Run, profile_variant: Variant, sandbox: Profile
) -> None:
    run = run_checks(profile_variant(lambda d: d["restore_target"].update(must_differ_from_source=True)),
                     "restore/test_database_drill.py")
    drills = ("pf-database-custom", "qp-database-gzip")
    every = {f"test_database_drill.py::{check}[{drill}]" for check in DRILL_CHECKS for drill in drills}
    assert run.failed() == every  # the drill fixture refuses: no check of either drill runs
    assert {run.outcome(test) for test in every} == {"failed"}
    refused = (
        f"restore target 127.0.0.1:{sandbox.databases[0].port} is the server of source database photonic_foundry: "
        "point restore_target at staging, or set must_differ_from_source: false"
    )
    assert {run.message(test) for test in every} == {refused}


def test_promotion_drill_with_a_wrong_replication_password_fails(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    run = run_checks(profile_variant(replica_at_same(replication_password_file=str(wrong))), REPLICAS,
                     extra=("-m", "quarterly"))
    test = "test_replicas.py::test_promoted_copy_accepts_writes_on_a_new_timeline[pf-replica]"
    assert run.failed() == {test}
    assert run.message(test).startswith("promotion drill for pf-replica failed: pg_basebackup of the standby failed")
    assert "password authentication failed" in run.message(test)
    assert "not-the-password" not in run.result.stdout.str()


def replica_at_same(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["replicas"][0].update(changes)

    return mutate


@pytest.fixture
def abandoned_slot(sandbox: Profile) -> Iterator[int]:
    """A throwaway cluster (max_wal_size 32MB) with a physical slot nothing uses, holding back 3 switched segments."""
    with throwaway_cluster(sandbox, max_wal_size="32MB") as cluster, cluster.connect() as conn:
        conn.execute("SELECT pg_create_physical_replication_slot('forgotten_standby', true)")
        conn.execute("CREATE TABLE churn (n int)")
        for _ in range(3):
            conn.execute("INSERT INTO churn SELECT generate_series(1, 1000)")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")  # would recycle the segments, but for the slot
        yield cluster.port


def test_inactive_slot_holding_back_wal_fails_the_slot_check(
    run_checks: Run, profile_variant: Variant, abandoned_slot: int
) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["databases"] = [{**data["databases"][0], "port": abandoned_slot}]
        data["replicas"] = []

    run = run_checks(profile_variant(mutate), "recovery/test_replication_slots.py")
    test = "test_replication_slots.py::test_no_inactive_slot_retains_wal[photonic_foundry]"
    assert run.failed() == {test}
    held = run.checks[test]["evidence"]["inactive_slots"].removeprefix("forgotten_standby (").removesuffix(")")
    number, unit = held.split()
    assert unit == "MB"
    assert 32 < float(number) < 64, held  # from the slot's reservation over three switched segments
    assert run.message(test) == (
        f"inactive physical replication slot forgotten_standby on photonic_foundry (127.0.0.1:{abandoned_slot}) "
        f"holds back {held} of WAL (max 32 MB, the server's max_wal_size): if nothing will use it again, "
        "SELECT pg_drop_replication_slot('forgotten_standby')"
    )
