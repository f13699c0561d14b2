"""The action base: guard, act, undo (also after a half-way failure), the proof by the live state,
scratch names made in one place, and the janitor of scratch directories."""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest

from opsverify.actions import Action, ScratchDirectory, ScratchNames, performed
from opsverify.actions.janitor import sweep_directories
from opsverify.errors import ActionRefused, CleanupError
from opsverify.localserver.scratch import NOTE, SCRATCH_PREFIX, creator, read_note, write_note


class TouchFile(ScratchDirectory[Path]):
    """A scratch directory holding one file; ``fail_after_mkdir`` makes the act fail half-way."""

    kind = "scratch test directory"

    def __init__(self, directory: Path, fail_after_mkdir: bool = False) -> None:
        super().__init__(directory)
        self.fail_after_mkdir = fail_after_mkdir

    def act(self) -> Path:
        self.make_dir()
        (self.directory / "data").write_text("x")
        if self.fail_after_mkdir:
            raise RuntimeError("the act failed half-way")
        return self.directory / "data"


def test_scratch_names_are_unique_per_call_and_carry_run_and_worker() -> None:
    names = ScratchNames("1a2b3c4d5e6f", "gw1")
    first, second = names("pf-replica"), names("pf-replica")
    assert first == "opsverify_scratch_1a2b3c4d_gw1_1_pf_replica"
    assert second == "opsverify_scratch_1a2b3c4d_gw1_2_pf_replica"
    assert names.is_own(first)
    assert not ScratchNames("ffff0000", "gw1").is_own(first)
    assert ScratchNames("1a2b3c4d", "master")("x") == "opsverify_scratch_1a2b3c4d_master_1_x"  # its own counter
    assert len(names("y" * 100)) == 63


def test_directory_action_is_undone_and_proven_gone(tmp_path: Path) -> None:
    action = TouchFile(tmp_path / f"{SCRATCH_PREFIX}t_1_ok")
    with performed(action) as data:
        assert data.read_text() == "x"
        assert read_note(action.directory) is not None
    assert not action.directory.exists()
    action.undo()  # idempotent
    assert action.leftovers(None) == []


def test_undo_runs_when_the_act_fails_half_way(tmp_path: Path) -> None:
    action = TouchFile(tmp_path / f"{SCRATCH_PREFIX}t_2_half", fail_after_mkdir=True)
    with pytest.raises(RuntimeError, match="half-way"), performed(action):
        pytest.fail("never reached")
    assert not action.directory.exists()


def test_undo_runs_when_the_body_fails(tmp_path: Path) -> None:
    action = TouchFile(tmp_path / f"{SCRATCH_PREFIX}t_3_body")
    with pytest.raises(ZeroDivisionError), performed(action):
        _ = 1 / 0
    assert not action.directory.exists()


def test_guard_refuses_names_without_the_scratch_prefix(tmp_path: Path) -> None:
    for name in ("backups", "opsverify_scratch_x; rm -rf", "opsverify_scratch_A"):
        action = TouchFile(tmp_path / name)
        refused = pytest.raises(ActionRefused, match=r"only opsverify_scratch_\* names are scratch")
        with refused, performed(action):
            pass
        assert not (tmp_path / name).exists()


def test_a_leftover_is_named_in_one_cleanup_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    action = TouchFile(tmp_path / f"{SCRATCH_PREFIX}t_4_stuck")
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # a filesystem that ignores deletes
    with pytest.raises(CleanupError) as caught, performed(action):
        pass
    assert str(caught.value) == (
        f"scratch test directory {action.name} left directory {action.directory} behind: remove it by hand"
    )


class BrokenUndo(Action[str]):
    kind = "scratch marker"

    def __init__(self, marker: Path) -> None:
        super().__init__(marker.name)
        self.marker = marker

    def act(self) -> str:
        self.marker.write_text("x")
        return self.name

    def undo(self) -> None:
        raise OSError("permission denied")

    def leftovers(self, before: object) -> list[str]:
        return [f"file {self.marker}"] if self.marker.exists() else []


def test_a_failing_undo_is_named_with_what_it_left(tmp_path: Path) -> None:
    marker = tmp_path / f"{SCRATCH_PREFIX}t_5_marker"
    named = pytest.raises(CleanupError, match=r"left file .* behind \(the undo failed: permission denied\)")
    with named, performed(BrokenUndo(marker)):
        pass


def test_janitor_removes_orphans_and_spares_live_and_own(tmp_path: Path) -> None:
    orphan = tmp_path / f"{SCRATCH_PREFIX}old_1_dump"
    live = tmp_path / f"{SCRATCH_PREFIX}live_1_dump"
    own = tmp_path / f"{SCRATCH_PREFIX}mine_1_dump"
    aged = tmp_path / f"{SCRATCH_PREFIX}aged_1_dump"
    legacy = tmp_path / f"{SCRATCH_PREFIX}legacy_1_replica"
    for path in (orphan, live, own, aged, legacy):
        path.mkdir()
        (path / "secret.dump").write_text("data")
    write_note(orphan, {**creator(kind="scratch dump"), "pid": _dead_pid()})
    write_note(live, creator(kind="scratch dump"))
    write_note(own, {**creator(), "pid": _dead_pid()})
    write_note(aged, {**creator(), "created": time.time() - 7 * 3600})
    os.utime(legacy, (time.time() - 600, time.time() - 600))
    done = sweep_directories([tmp_path], own_prefix=f"{SCRATCH_PREFIX}mine_")
    assert not orphan.exists()
    assert not aged.exists()
    assert not legacy.exists()
    assert live.exists()
    assert own.exists()
    assert f"removed scratch dump {orphan} (its creator (pid {_dead_pid()}) is gone)" in done
    assert f"removed scratch directory {legacy} (it carries no creator note)" in done
    assert any(line.startswith(f"removed scratch directory {aged} (it is 7.0h old") for line in done)
    assert (live / NOTE).exists()


def _dead_pid() -> int:
    """A pid no process has: past the kernel's maximum."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_janitor_max_age_is_a_duration() -> None:
    assert sweep_directories([], max_age=timedelta(minutes=1)) == []


TEAM_ACTION = '''
import pytest
from psycopg import sql
from opsverify.actions import Action


class TempTable(Action[str]):
    kind = "scratch table"

    def __init__(self, conn, name, sabotage=False):
        super().__init__(name)
        self.conn, self.sabotage = conn, sabotage

    def act(self):
        self.conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(self.name)))
        return self.name

    def undo(self):
        if not self.sabotage:
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.name)))

    def leftovers(self, before):
        found = self.conn.execute("SELECT to_regclass(%s)", (self.name,)).fetchone()
        return [f"table {self.name}"] if found and found[0] else []


@pytest.fixture(params=[False, True], ids=["kept", "sabotaged"])
def temp_table(request, perform, scratch_name, scratch_database):
    with perform(TempTable(scratch_database, scratch_name("t"), request.param)) as name:
        yield name


def test_uses_the_table(temp_table, scratch_database):
    scratch_database.execute(f'INSERT INTO "{temp_table}" VALUES (1)')
'''


def test_a_teams_own_action_is_undone_and_a_sabotaged_undo_is_named(
    pytester: pytest.Pytester, sandbox_profile: Path, team_conftest: Path
) -> None:
    pytester.makepyfile(test_team=TEAM_ACTION)
    result = pytester.runpytest_subprocess(
        "-c", str(Path(__file__).resolve().parents[1] / "pyproject.toml"), "--rootdir", str(pytester.path),
        f"--profile={sandbox_profile}", "--no-reports", "-p", "no:randomly", "-rA", "test_team.py", timeout=120,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_uses_the_table[[]sabotaged[]]*"])
    result.stdout.fnmatch_lines(["*CleanupError: scratch table opsverify_scratch_*_t left table opsverify_scratch_*_t "
                                 "behind: remove it by hand*"])


TEAM_VACUUM = """
def test_orders_are_vacuumed(database, vacuum_analyzed):
    vacuum_analyzed("no_such_orders")
"""


def test_an_opsverify_error_in_a_teams_own_check_is_one_sentence_not_a_traceback(
    pytester: pytest.Pytester, sandbox_profile: Path, team_conftest: Path
) -> None:
    pytester.makepyfile(test_team=TEAM_VACUUM)
    result = pytester.runpytest_subprocess(
        "-c", str(Path(__file__).resolve().parents[1] / "pyproject.toml"), "--rootdir", str(pytester.path),
        f"--profile={sandbox_profile}", "--no-reports", "-p", "no:randomly", "-m", "", "test_team.py", timeout=120,
    )
    result.assert_outcomes(failed=2)  # one per database of the profile
    result.stdout.fnmatch_lines([
        "NotApplicable: table no_such_orders does not exist in database quantum_planner (or is not on the "
        "maintenance_user's search_path): name it as schema.table, as the database has it",
    ], consecutive=False)
    assert "Traceback" not in result.stdout.str()
    assert "def test_orders_are_vacuumed" not in result.stdout.str()  # no source listing either


def test_janitor_stops_tools_still_writing_into_an_orphan(tmp_path: Path) -> None:
    """A killed run's pg_basebackup goes on writing into its directory: it is stopped before the delete."""
    import subprocess

    orphan = tmp_path / f"{SCRATCH_PREFIX}killed_1_pf_replica"
    orphan.mkdir()
    write_note(orphan, {**creator(kind="scratch standby"), "pid": _dead_pid()})
    writer = subprocess.Popen(["sh", "-c", 'while :; do echo x >> "$0/data"; sleep 0.05; done', str(orphan)])
    sitter = subprocess.Popen(["sleep", "60"], cwd=orphan)
    try:
        time.sleep(0.3)
        done = sweep_directories([tmp_path])
        writer.wait(timeout=10)  # they ended: stopped, not left running
        sitter.wait(timeout=10)
    finally:
        for proc in (writer, sitter):
            proc.kill()
            proc.wait()
    time.sleep(0.3)
    assert not orphan.exists()  # nothing wrote it back
    assert done == [f"removed scratch standby {orphan} (its creator (pid {_dead_pid()}) is gone); "
                    f"stopped pid {min(writer.pid, sitter.pid)}, pid {max(writer.pid, sitter.pid)}"]
