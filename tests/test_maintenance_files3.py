"""The file clean-ups and the compressed-log checks against real faults (fixes of issue 11).

- ``cleaned_tmp`` never enters a matched entry that is itself a mount point of another filesystem (the reference
  device is its parent directory's); the leftover says to unmount it, not to remove it by hand.
- One file that cannot be deleted (``chattr +i``: EPERM even for root) does not stop ``rotated_logs`` /
  ``cleaned_tmp``: every other entry is still deleted, the leftover names the reason, and the journal is finished
  (a later run's janitor reports no interrupted clean-up).
- A ``zstd --long=30`` archive verifies; a frame declaring a window above 2 GiB is "could not be verified", not
  corrupt.
- A truncated ``.zst``/``.gz`` error log is called corrupt (restore or remove it), and the ERROR lines of what is
  readable still count, so an over-threshold finding is not hidden.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsverify.actions import performed
from opsverify.actions.maintenance import CleanTmp, RotateLogs
from opsverify.errors import CleanupError
from opsverify.profile.maintenance import LogDirectory, TmpFiles
from tests.test_maintenance_files2 import aged, put, scratch, tmpfs_at
from tests.test_maintenance_logfiles import Tree, lifecycle, stamp, tree, write

__all__ = ["tree"]  # the fixture, shared with the log-file self-tests
Run = Callable[..., Any]
Variant = Callable[..., Path]


def tmp_files(tmp: Path) -> TmpFiles:
    return TmpFiles.model_validate({"name": "quantum-tmp", "pattern": str(tmp / "quantum_*"), "max_age": "1d"})


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted ON a matched temporary directory (``quantum_mnt``), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield from tmpfs_at(tmp_path / "tmp" / "quantum_mnt")


def test_a_matched_mount_point_is_never_entered_and_named_for_unmounting(mounted: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    put(mounted / "other-fs.dat", days=3)
    aged(mounted, 3)
    put(tmp / "quantum_old", days=3)
    put(tmp / "quantum_new")
    with pytest.raises(CleanupError) as caught, performed(CleanTmp(tmp_files(tmp), scratch(tmp_path, "mnt"))):
        pass
    assert str(caught.value) == (
        f"temporary file clean-up quantum-tmp: directory {mounted} (past retention) is a mount point of another "
        "filesystem, left in place: unmount it if it is stale"
    )
    assert (mounted / "other-fs.dat").read_text() == "data\n"  # the other filesystem's file survives
    assert sorted(p.name for p in tmp.iterdir()) == ["quantum_mnt", "quantum_new"]
    assert not scratch(tmp_path, "mnt").exists()

    subprocess.run(["umount", str(mounted)], capture_output=True, timeout=30, check=True)
    aged(mounted, 3)
    with performed(CleanTmp(tmp_files(tmp), scratch(tmp_path, "mnt2"))) as done:
        assert done.deleted == (str(mounted),)
    assert sorted(p.name for p in tmp.iterdir()) == ["quantum_new"]


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], Path]]:
    """``chattr +i`` on a file (its unlink fails with EPERM, even for root), cleared afterwards."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make a file immutable here (chattr +i): {done.stderr.decode().strip()}")
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in made:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True, timeout=30, check=False)


def test_an_undeletable_rotated_log_is_named_and_the_others_are_still_deleted(
    immutable: Callable[[Path], Path], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    put(logs / "app.log")
    put(logs / "app.log.1", days=40)
    stuck = immutable(put(logs / "app.log.2.gz", days=41))
    put(logs / "app.log.3.gz", days=42)
    put(logs / "app.log.4.gz", days=2)
    entry = LogDirectory.model_validate({"name": "app-logs", "path": str(logs), "retention": "30d"})
    directory = scratch(tmp_path, "rot")
    with pytest.raises(CleanupError) as caught, performed(RotateLogs(entry, directory)):
        pass
    assert str(caught.value) == (
        f"log rotation app-logs left {stuck} (past retention) still there: Operation not permitted behind: remove "
        "it by hand"
    )
    assert sorted(p.name for p in logs.iterdir()) == ["app.log", "app.log.2.gz", "app.log.4.gz"]
    assert not directory.exists()  # the journal is finished: nothing for a later run's janitor to report

    tmp = tmp_path / "tmp"
    put(tmp / "quantum_a", days=3)
    held = immutable(put(tmp / "quantum_b", days=3))
    put(tmp / "quantum_c", days=3)
    with pytest.raises(CleanupError) as caught, performed(CleanTmp(tmp_files(tmp), scratch(tmp_path, "tmp"))):
        pass
    assert str(caught.value) == (
        f"temporary file clean-up quantum-tmp left {held} (past retention) still there: Operation not permitted "
        "behind: remove it by hand"
    )
    assert sorted(p.name for p in tmp.iterdir()) == ["quantum_b"]
    assert not scratch(tmp_path, "tmp").exists()


# ------------------------------------------------------------------------------------------- .zst windows

LOG_CHECKS = "maintenance/test_log_files.py"
ARCHIVES = f"{LOG_CHECKS}::test_archives_are_intact"
T = "test_log_files.py::"


def long_zst(data: bytes, window_log: int) -> bytes:
    """``zstd --long=N`` of a stream (no size known in advance: the frame declares the whole 2^N window)."""
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed (apt-get install -y zstd)")
    done = subprocess.run(["zstd", f"--long={window_log}", "-q", "-c"], input=data, capture_output=True, timeout=60,
                          check=True)
    return done.stdout


def test_a_large_window_zst_archive_is_intact_and_a_too_large_one_is_not_called_corrupt(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    data = b"job 6 finished\n" * 5000
    whole = long_zst(data, 30)
    assert whole[4:6] == b"\x04\xa0"  # no content size, no single segment; window descriptor 2^30 (1 GiB)
    archived = write(tree.archive / "job-6.log.zst", whole, days_old=100)
    variant = profile_variant(lifecycle(tree))
    run = run_checks(variant, ARCHIVES)
    test = f"{T}test_archives_are_intact[job-logs]"
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    assert run.checks[test]["evidence"]["verified"] == "2"

    wider = bytearray(long_zst(data, 31))
    assert wider[5] == (31 - 10) << 3
    wider[5] = (32 - 10) << 3  # a 4 GiB window: more than this machine decodes, not damage
    archived.write_bytes(bytes(wider))
    run = run_checks(variant, ARCHIVES)
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 of 2 archive(s) in {tree.archive} (archive job-logs) could not be verified; job-6.log.zst: zstd window "
        "too large to verify (4,096 MiB, above 2,048 MiB): test it by hand where that much memory is available, or "
        "compress the archives with a window of 2 GiB at most (zstd --long=31)"
    )
    assert run.checks[test]["evidence"]["unverified"] == "1"


# ------------------------------------------------------------------------------------------- corrupt error logs

ERRORS = f"{T}test_error_lines_in_the_window_are_under_the_threshold[app-errors]"
ERRORS_CHECK = f"{LOG_CHECKS}::test_error_lines_in_the_window_are_under_the_threshold"


def error_section(logs: Path, max_lines: int) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data.setdefault("lifecycle", {})["error_logs"] = [
            {"name": "app-errors", "paths": [str(logs / "app.log*")], "window": "24h", "max_lines": max_lines}
        ]

    return mutate


def busy_log(errors: int) -> bytes:
    """A log of about 2 MB whose first lines hold ``errors`` ERROR lines (in the window), the rest INFO lines."""
    lines = [f"{stamp(3000 - i)} ERROR solver crashed ({i})\n" for i in range(errors)]
    lines += [f"{stamp(2000)} INFO served {os.urandom(24).hex()}\n" for _ in range(25_000)]
    return "".join(lines).encode()


@pytest.mark.parametrize("suffix", [".zst", ".gz"])
def test_a_truncated_compressed_error_log_is_called_corrupt_and_its_prefix_still_counted(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, suffix: str
) -> None:
    import gzip

    logs = tmp_path / "errlogs"
    first = f"{stamp(600)} ERROR backend timeout"
    write(logs / "app.log", first + "\n")
    data = busy_log(3)
    whole = gzip.compress(data) if suffix == ".gz" else long_zst(data, 27)
    rotated = write(logs / f"app.log.1{suffix}", whole[: len(whole) // 2])
    cut = f"{len(whole) // 2:,}"
    why = (f"zstd stream truncated after {cut} compressed bytes (its last frame does not end)" if suffix == ".zst"
           else f"gzip stream truncated after {cut} compressed bytes (no trailer)")

    run = run_checks(profile_variant(error_section(logs, 2)), ERRORS_CHECK)
    assert run.failed() == {ERRORS}
    assert run.message(ERRORS) == (
        f"error log app-errors: 4 line(s) matching \\bERROR\\b in the last 24h, over max_lines 2; the first, in "
        f"{logs / 'app.log'}: {first!r}: look into them (matching lines are in "
        f"{logs / 'app.log'}, {rotated}); besides, 1 compressed log(s) are corrupt or truncated; the first, "
        f"{rotated}: {why}: restore it from a backup or remove it (its readable part is counted)"
    )
    assert run.checks[ERRORS]["evidence"]["corrupt_files"] == "1"

    run = run_checks(profile_variant(error_section(logs, 10), name="ten.yaml"),
                     ERRORS_CHECK)
    assert run.failed() == {ERRORS}
    assert run.message(ERRORS) == (
        f"error log app-errors: 1 compressed log(s) are corrupt or truncated; the first, {rotated}: {why}: restore it "
        "from a backup or remove it (4 line(s) matching \\bERROR\\b counted in the last 24h of what is readable, "
        "max_lines 10)"
    )

    rotated.write_bytes(whole)
    run = run_checks(profile_variant(error_section(logs, 10), name="whole.yaml"),
                     ERRORS_CHECK)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    assert run.checks[ERRORS]["evidence"]["error_lines"] == "4"
