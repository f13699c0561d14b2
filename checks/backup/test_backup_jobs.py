"""The backup jobs work now: a fresh ``pg_dump`` and a ``BGSAVE`` produce backups that verify.

These change state (a scratch dump file, a new RDB snapshot), so a production profile refuses
them unless the run passes ``--allow-maintenance``. Runbook: PF-17 manual backups (``pg_dump -Fc``),
PF-21 ``redis-cli BGSAVE`` then copy the RDB.
"""

from __future__ import annotations

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.actions.jobs import DumpJob
from opsverify.backups.jobs import Bgsave
from opsverify.backups.verdict import Expectations
from opsverify.profile import Database, RedisInstance

pytestmark = [pytest.mark.backup, pytest.mark.maintenance, pytest.mark.weekly]


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
    redis_instance: RedisInstance, redis_bgsave: Bgsave, evidence: Recorder
) -> None:
    """PF-21: BGSAVE ends ok, LASTSAVE advances, and the server's RDB (when readable here) verifies."""
    from opsverify.backups.formats import verify_backup

    evidence.record(status=redis_bgsave.status, lastsave_before=redis_bgsave.lastsave_before)
    evidence.record(lastsave_after=redis_bgsave.lastsave_after)
    expect(redis_bgsave.status == "ok", f"BGSAVE on redis {redis_instance.name} ended {redis_bgsave.status}")
    expect(redis_bgsave.advanced, f"BGSAVE on redis {redis_instance.name} did not advance LASTSAVE")
    if redis_instance.rdb_file is None:
        return
    verdict = verify_backup(redis_instance.rdb_file, Expectations())
    evidence.record(rdb_file=redis_instance.rdb_file, detail=verdict.detail)
    expect(verdict.ok, f"RDB of redis {redis_instance.name} after BGSAVE is not valid: {verdict.detail}")
