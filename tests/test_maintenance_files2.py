"""Temporary entries, compressed archives and the file actions' messages, with real files (fixes of issue 11).

- ``cleaned_tmp`` (``CleanTmp``) removes every kind of stale entry the QP-24 check counts, judged by the same mtime
  (a directory's is the newest below it): a stale file, a stale directory with its contents (no symlink in it
  followed out, no other filesystem entered), a stale symlink (unlinked, its target kept); a directory something
  still writes into is kept. The check fails before and passes after.
- A truncated or corrupt ``.zst`` archive fails the archive check as a ``.gz`` one does (streamed through
  ``zstandard``); a ``.zst`` log's error lines are counted.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.actions import performed
from opsverify.actions.maintenance import CleanTmp
from opsverify.errors import CleanupError
from opsverify.probes.logfiles import FileSource, LoggedFile, count_error_lines, tree_mtime_ns
from opsverify.profile import load_profile
from opsverify.profile.maintenance import TmpFiles
from opsverify.profile.model import Host, Timeouts
from tests.test_maintenance_logfiles import Tree, lifecycle, stamp, tree, write

__all__ = ["tree"]  # the fixture, shared with the log-file self-tests

DAY = 86400.0
LOG_CHECKS = "maintenance/test_log_files.py"
TMP_CHECK = f"{LOG_CHECKS}::test_no_stale_temporary_files"
T = "test_log_files.py::"
Run = Callable[..., Any]
Variant = Callable[..., Path]


def aged(path: Path, days: float) -> Path:
    when = time.time() - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def put(path: Path, text: str = "data\n", days: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return aged(path, days)


def tmp_section(tmp: Path) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data.setdefault("lifecycle", {})["tmp_files"] = [
            {"name": "quantum-tmp", "pattern": str(tmp / "quantum_*"), "max_age": "1d"}
        ]

    return mutate


def tmp_files(variant: Path) -> TmpFiles:
    lifecycle = load_profile(variant).lifecycle
    assert lifecycle is not None
    return lifecycle.tmp_files[0]


def scratch(tmp_path: Path, name: str) -> Path:
    return tmp_path / "scratch" / f"opsverify_scratch_test_{name}"


@pytest.fixture
def stale_tree(tmp_path: Path) -> dict[str, Path]:
    """Stale: a file, a directory (files, a subdirectory, a symlink out of it), a symlink to a file outside. Kept: a
    fresh file, a directory holding an old file but written into just now (its own mtime old), a non-matching
    old file, and everything outside."""
    tmp, outside = tmp_path / "tmp", tmp_path / "outside"
    target = put(outside / "target.dat", days=10)
    kept_dir = outside / "dir"
    put(kept_dir / "keep.dat", days=10)
    put(tmp / "quantum_solver_1", "x" * 512, days=2)
    run = tmp / "quantum_run_7"
    put(run / "a.dat", days=3.2)
    put(run / "sub" / "b.dat", days=3.2)
    (run / "sub" / "escape").symlink_to(kept_dir)
    for path in (run / "sub" / "escape", run / "sub", run):
        aged(path, 3.2)
    link = tmp / "quantum_latest"
    link.symlink_to(target)
    aged(link, 2.5)
    busy = tmp / "quantum_busy"
    put(busy / "old.dat", days=5)
    put(busy / "new.dat")  # written just now
    aged(busy, 4)  # its own mtime is old: only what is inside says it is in use
    put(tmp / "quantum_fresh.tmp")
    put(tmp / "other_old", days=3)
    return {"tmp": tmp, "outside": outside, "run": run, "link": link, "busy": busy, "target": target,
            "solver": tmp / "quantum_solver_1"}


def test_cleaned_tmp_removes_exactly_what_the_check_flags_and_the_check_then_passes(
    run_checks: Run, profile_variant: Variant, stale_tree: dict[str, Path], tmp_path: Path
) -> None:
    tmp = stale_tree["tmp"]
    variant = profile_variant(tmp_section(tmp))
    run = run_checks(variant, TMP_CHECK)
    test = f"{T}test_no_stale_temporary_files[quantum-tmp]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"3 temporary file(s) matching {tmp}/quantum_* are older than max_age 1d; the oldest, quantum_run_7 (a "
        "directory), is 3d old: delete them (the cleanup job of quantum-tmp did not run or missed them)"
    )
    assert run.checks[test]["evidence"]["first_stale"] == (
        "quantum_run_7 (a directory), quantum_latest (a symlink), quantum_solver_1"
    )

    with performed(CleanTmp(tmp_files(variant), scratch(tmp_path, "files2"))) as done:
        put(stale_tree["busy"] / "newer.dat")  # the application keeps writing into its directory: still proven
    assert sorted(done.deleted) == sorted(str(stale_tree[k]) for k in ("run", "link", "solver"))
    assert sorted(p.name for p in tmp.iterdir()) == ["other_old", "quantum_busy", "quantum_fresh.tmp"]
    assert sorted(p.name for p in stale_tree["busy"].iterdir()) == ["new.dat", "newer.dat", "old.dat"]
    assert stale_tree["target"].read_text() == "data\n"  # the symlink's target is outside: kept
    assert (stale_tree["outside"] / "dir" / "keep.dat").exists()  # the symlink out of the directory: not followed

    run = run_checks(variant, TMP_CHECK)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    assert set(run.checks) == {test}


def tmpfs_at(point: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at ``point`` (created), unmounted afterwards; skips where mounting is not allowed."""
    point.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], capture_output=True,
                          timeout=30, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30, check=False)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted inside a stale directory (another filesystem), unmounted afterwards."""
    yield from tmpfs_at(tmp_path / "tmp" / "quantum_host" / "mnt")


def test_a_stale_directory_holding_another_filesystem_is_left_and_named(
    profile_variant: Variant, mounted: Path, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    host = mounted.parent
    put(mounted / "other-fs.dat", days=3)  # newer than the directory, but on another filesystem: not its content
    aged(mounted, 3)
    put(host / "a.dat", days=3)
    aged(host, 3)
    assert tree_mtime_ns(str(host)) == os.lstat(host).st_mtime_ns
    with pytest.raises(CleanupError) as caught, performed(CleanTmp(tmp_files(profile_variant(tmp_section(tmp))),
                                                                   scratch(tmp_path, "mnt"))) as done:
        assert done.deleted == (str(host),)
    assert str(caught.value) == (
        f"temporary file clean-up quantum-tmp left directory {host} (past retention) not fully removed: {mounted} is "
        "a mount point of another filesystem behind: remove it by hand"
    )
    assert not (host / "a.dat").exists()
    assert (mounted / "other-fs.dat").exists()


def test_a_remote_listing_ages_a_directory_by_the_newest_entry_below_it(
    monkeypatch: pytest.MonkeyPatch, stale_tree: dict[str, Path]
) -> None:
    from opsverify.probes import logfiles

    # the "host" runs the real listing script on this machine
    monkeypatch.setattr(logfiles, "ssh_command", lambda host, connect: ["sh", "-c", 'eval "$0"'])
    host = Host.model_validate({"name": "tmp-host", "uri": "ssh://ops@127.0.0.1:22"})
    timeouts = Timeouts(connect=timedelta(seconds=5), request=timedelta(seconds=5))
    pattern = f"{stale_tree['tmp']}/quantum_*"
    remote: dict[str, tuple[str, int]] = {}
    local: dict[str, tuple[str, int]] = {}
    for source, into in ((FileSource(host, timeouts), remote), (FileSource(None, timeouts), local)):
        listing = source.list_files(
            pattern, lambda f, seen=into: seen.update({f.name: (f.kind, int(f.mtime.timestamp()))}), any_kind=True
        )
        assert listing.error is None
        assert listing.incomplete is None
    assert remote == local
    assert local["quantum_busy"] == ("directory", int(os.stat(stale_tree["busy"] / "new.dat").st_mtime))
    assert local["quantum_run_7"] == ("directory", int(os.lstat(stale_tree["run"]).st_mtime))
    assert local["quantum_latest"] == ("symlink", int(os.lstat(stale_tree["link"]).st_mtime))


# ------------------------------------------------------------------------------------------- .zst archives


def zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def test_a_truncated_zst_archive_fails_the_integrity_check_as_a_gz_one_does(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    write(tree.archive / "job-6.log.zst", zst(b"job 6 finished\n" * 1000), days_old=100)
    whole = zst(b"job 4 finished\n" * 1000 + os.urandom(50_000))
    cut = write(tree.archive / "job-4.log.zst", whole[: len(whole) // 2], days_old=100)
    variant = profile_variant(lifecycle(tree))
    run = run_checks(variant, LOG_CHECKS)
    test = f"{T}test_archives_are_intact[job-logs]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 of 3 archive(s) in {tree.archive} (archive job-logs) are not intact; job-4.log.zst: zstd stream truncated "
        f"after {len(whole) // 2:,} compressed bytes (its last frame does not end): restore it from a backup or "
        "archive the original again"
    )
    corrupt = bytearray(whole)
    corrupt[-2] ^= 0xFF  # the frame's checksum no longer matches its content
    cut.write_bytes(bytes(corrupt))
    run = run_checks(variant, f"{LOG_CHECKS}::test_archives_are_intact")
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 of 3 archive(s) in {tree.archive} (archive job-logs) are not intact; job-4.log.zst: zstd stream corrupt "
        f"after {len(whole):,} compressed bytes (zstd decompress error: Restored data doesn't match checksum): "
        "restore it from a backup or archive the original again"
    )
    cut.write_bytes(whole)
    run = run_checks(variant, f"{LOG_CHECKS}::test_archives_are_intact")
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    assert run.checks[test]["evidence"]["verified"] == "3"


def test_error_lines_of_a_zst_log_are_counted(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    log = write(tmp_path / "app.log.1.zst", zst(f"{stamp(600)} ERROR solver crashed\n{stamp(300)} INFO ok\n".encode()))
    file = LoggedFile(str(log), log.stat().st_size, now)
    found = count_error_lines(FileSource(None, Timeouts()), [file], r"\bERROR\b", now - timedelta(hours=24), now)
    assert (found.count, found.errors, found.files_read) == (1, [], 1)
    log.write_bytes(log.read_bytes()[:-6])
    found = count_error_lines(FileSource(None, Timeouts()), [file], r"\bERROR\b", now - timedelta(hours=24), now)
    assert (found.errors, found.count) == ([], 0)  # its only block is cut: nothing readable to count
    assert found.corrupt == [f"{log}: zstd stream truncated after {log.stat().st_size:,} compressed bytes (its last "
                            "frame does not end)"]
