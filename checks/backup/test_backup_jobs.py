"""The backup jobs work now: a fresh ``pg_dump`` and a ``BGSAVE`` produce backups that verify.

These change state (a scratch dump file, a new RDB snapshot), so a production profile refuses
them unless the run passes ``--allow-maintenance``. Runbook: PF-17 manual backups (``pg_dump -Fc``),
PF-21 ``redis-cli BGSAVE`` then copy the RDB.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.actions.jobs import DumpJob
from opsverify.backups.jobs import Bgsave, FetchedRdb, RdbLocation
from opsverify.backups.verdict import Expectations
from opsverify.profile import Database, RedisInstance

pytestmark = [pytest.mark.backup, pytest.mark.maintenance, pytest.mark.weekly]
MTIME_SLACK = 2  # seconds: LASTSAVE and the file's mtime come from two clocks of one second resolution


@pytest.mark.runbook("PF-17")
def test_fresh_dump_is_complete(database: Database, fresh_pg_dump: DumpJob, evidence: Recorder) -> None:
    """PF-17: ``pg_dump -Fc`` runs now and its file passes the custom-format verification."""
    from opsverify.backups.formats import verify_backup

    expect(fresh_pg_dump.error is None, f"{fresh_pg_dump.error}")
    verdict = verify_backup(fresh_pg_dump.path, Expectations())
    evidence.record(size_bytes=fresh_pg_dump.path.stat().st_size, format=verdict.format, detail=verdict.detail)
    expect(verdict.ok, f"fresh pg_dump of {database.name} does not verify: {verdict.detail}")


@pytest.mark.runbook("PF-21")
def test_bgsave_completes_and_writes_a_valid_rdb(
    redis_instance: RedisInstance, redis_bgsave: Bgsave, bgsave_rdb: RdbLocation,
    rdb_fetch: Callable[[], FetchedRdb], evidence: Recorder,
) -> None:
    """PF-21: BGSAVE ends ok, LASTSAVE advances, and the RDB it wrote verifies: the profile's ``rdb_file``, else
    the file the server names (``CONFIG GET dir`` + ``dbfilename``) when it is readable here and written by that
    BGSAVE, else the server's snapshot fetched with ``redis-cli --rdb`` (SYNC, as a replica: Redis on another
    host). A declared ``rdb_file`` not readable here, or a SYNC the server refuses, is a failure."""
    from opsverify.backups.formats import verify_backup

    name = redis_instance.name
    evidence.record(status=redis_bgsave.status, lastsave_before=redis_bgsave.lastsave_before)
    evidence.record(lastsave_after=redis_bgsave.lastsave_after)
    hint = ": see the redis log (its dir must be writable, with free space)" if redis_bgsave.status == "err" else ""
    expect(redis_bgsave.status == "ok", f"BGSAVE on redis {name} ended {redis_bgsave.status}{hint}")
    expect(redis_bgsave.advanced, f"BGSAVE on redis {name} did not advance LASTSAVE")
    fix = "declare rdb_file in the profile with a path readable here, or run the checks where the RDB is readable"
    rdb, why = bgsave_rdb.path, None
    if rdb is None:
        why = f"CONFIG GET dir/dbfilename failed ({bgsave_rdb.error})"
    else:
        try:
            written = rdb.stat().st_mtime
            rdb.open("rb").close()
        except OSError as exc:
            why = f"{rdb} is not readable here ({exc.strerror or exc})"
        else:
            if written < redis_bgsave.lastsave_after - MTIME_SLACK:
                why = (f"{rdb} here was last written before that BGSAVE (it is another machine's file, or not the "
                       "server's)")
    if why is not None and redis_instance.rdb_file is not None:
        fail(f"cannot verify the RDB of redis {name} after BGSAVE: {why}: {fix}")
    evidence.record(rdb_file=rdb, rdb_from="profile rdb_file" if redis_instance.rdb_file else "CONFIG GET")
    if why is not None:
        fetched = rdb_fetch()
        evidence.record(rdb_file=fetched.path, rdb_from="redis-cli --rdb", rdb_local=why)
        if fetched.refused:
            user = redis_instance.username or "default"
            fail(f"cannot verify the RDB of redis {name} after BGSAVE: {why}, and user {user} may not fetch it over "
                 f"replication (redis-cli --rdb: {fetched.error}): allow SYNC (ACL SETUSER {user} +sync +psync), "
                 f"or {fix}")
        if fetched.error is not None:
            fail(f"cannot verify the RDB of redis {name} after BGSAVE: {why}, and redis-cli --rdb failed "
                 f"({fetched.error}): {fix}")
        rdb = fetched.path
    assert rdb is not None
    verdict = verify_backup(rdb, Expectations())
    evidence.record(detail=verdict.detail)
    expect(verdict.ok, f"RDB of redis {name} after BGSAVE is not valid: {verdict.detail}")
