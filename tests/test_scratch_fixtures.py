"""The scratch fixtures for a team's own drills clean up for sure: after a failing test body, and
after a setup that fails half-way (a second server that does not start)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from opsverify.profile.environment import Profile

ROOT = Path(__file__).resolve().parents[1]


def own_drills(pytester: pytest.Pytester, rdb: Path) -> None:
    """A test module of a team's own, using opsverify's fixtures through its plugins."""
    pytester.makepyfile(test_own=f'''
from pathlib import Path

RDB = Path({str(rdb)!r})
OUT = Path({str(pytester.path)!r})


def test_database_body_fails(scratch_database):
    scratch_database.execute("CREATE TABLE t (x int)")
    (OUT / "databases.txt").write_text(scratch_database.info.dbname + "\\n")
    assert False, "the body fails"


def test_redis_body_fails(scratch_redis):
    client = scratch_redis(RDB)
    (OUT / "ports.txt").write_text(str(client.connection_pool.connection_kwargs["port"]) + "\\n")
    assert client.dbsize() > 1000
    assert False, "the body fails"


def test_redis_setup_fails_half_way(scratch_redis, tmp_path):
    first = scratch_redis(RDB)
    (OUT / "ports.txt").open("a").write(str(first.connection_pool.connection_kwargs["port"]) + "\\n")
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(b"REDIS0010" + b"garbage" * 10)
    scratch_redis(bad)
''')


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_scratch_database_and_redis_are_gone_after_failures(
    pytester: pytest.Pytester, sandbox_profile: Path, sandbox: Profile, team_conftest: Path
) -> None:
    from opsverify.actions.database import connect, exists

    rdb = max(Path(next(b for b in sandbox.backups if b.kind == "redis").path).glob("*.rdb"))
    own_drills(pytester, rdb)
    result = pytester.runpytest_subprocess(
        "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), "--profile", str(sandbox_profile),
        "--no-reports", "-p", "no:randomly", "test_own.py", timeout=120,
    )
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*redis-server did not load the RDB: *"])
    name = (pytester.path / "databases.txt").read_text().strip()
    assert name.startswith("opsverify_scratch_")
    assert sandbox.restore_target is not None
    with connect(sandbox.restore_target, None, sandbox.timeouts.connect) as conn:
        assert not exists(conn, name)
    ports = [int(p) for p in (pytester.path / "ports.txt").read_text().split()]
    assert len(ports) == 2
    assert all(refuses(port) for port in ports)
    assert sandbox.scratch_dir is not None
    assert not list(sandbox.scratch_dir.glob("opsverify_scratch_*redis"))
