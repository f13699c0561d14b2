"""checks/maintenance/test_log_files.py with real faults: log directories, archives, temporary files and error logs
built in tmp_path (the profile's lifecycle file parts pointed at them), broken one way each, and the sandbox's own.

Each fault fails exactly its check with its one-line message; the healthy tree and the healthy sandbox pass.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.probes.logfiles import FileSource, LoggedFile, count_error_lines, line_time
from opsverify.profile.model import Timeouts

CHECKS = "maintenance/test_log_files.py"
T = "test_log_files.py::"
DAY = 86400.0
Run = Callable[..., Any]
Variant = Callable[..., Path]


def stamp(seconds_ago: float) -> str:
    return f"{datetime.now(UTC) - timedelta(seconds=seconds_ago):%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC"


def write(path: Path, text: str | bytes, days_old: float = 0.0, packed: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if packed else data)
    when = time.time() - days_old * DAY
    os.utime(path, (when, when))
    return path


@dataclass
class Tree:
    """A healthy lifecycle tree in tmp_path: what logrotate, the archive job and the tmp cleanup leave."""

    root: Path

    @property
    def app(self) -> Path:
        return self.root / "logs" / "app"

    @property
    def audit(self) -> Path:
        return self.root / "logs" / "audit"

    @property
    def jobs(self) -> Path:
        return self.root / "logs" / "jobs"

    @property
    def archive(self) -> Path:
        return self.root / "archive" / "jobs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def section(self, **changes: Any) -> dict[str, Any]:
        parts: dict[str, Any] = {
            "log_dirs": [
                {"name": "app-logs", "path": str(self.app), "pattern": "*.log*", "retention": "30d",
                 "max_size": "1MB", "delaycompress": True},
                {"name": "audit-logs", "path": str(self.audit), "pattern": "audit.log*", "retention": "30d",
                 "audit": True},
            ],
            "archives": [{"name": "job-logs", "live": str(self.jobs), "archive": str(self.archive),
                          "pattern": "job-*.log*", "max_age": "90d"}],
            "tmp_files": [{"name": "quantum-tmp", "pattern": str(self.tmp / "quantum_*"), "max_age": "1d"}],
            "error_logs": [{"name": "app-errors", "paths": [str(self.app / "*.log")], "window": "24h",
                            "max_lines": 2}],
        }
        for key, value in changes.items():
            part, _, field = key.partition("__")
            parts[part][0][field] = value
        return parts


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    t = Tree(tmp_path / "lifecycle")
    write(t.app / "app.log", f"{stamp(3600)} INFO served\n{stamp(1800)} ERROR backend timeout\n")
    write(t.app / "app.log.1", f"{stamp(DAY)} INFO served\n", days_old=1)  # delaycompress: .1 stays plain
    write(t.app / "app.log.2.gz", f"{stamp(2 * DAY)} INFO served\n", days_old=2, packed=True)
    write(t.audit / "audit.log", f"{stamp(60)} user=ops action=login\n")
    write(t.audit / "audit.log.1.gz", f"{stamp(DAY)} user=ops action=login\n", days_old=1, packed=True)
    write(t.jobs / "job-17.log", "job 17 finished\n", days_old=10)
    write(t.archive / "job-3.log.gz", "job 3 finished\n" * 100, days_old=120, packed=True)
    write(t.tmp / "quantum_fresh.tmp", "partial result\n")
    return t


def lifecycle(t: Tree, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data.setdefault("lifecycle", {}).update(t.section(**changes))

    return mutate


def test_the_healthy_tree_and_the_healthy_sandbox_pass(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    for variant in (profile_variant(lifecycle(tree)), profile_variant()):
        run = run_checks(variant, CHECKS)
        assert run.result.ret == 0, run.result.stdout.str()
        assert run.failed() == set()
        assert len(run.checks) == 10, sorted(run.checks)


def test_a_file_past_retention_fails_the_retention_check(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    write(tree.app / "app.log.9.gz", b"old\n", days_old=40, packed=True)
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_log_directory_holds_nothing_past_retention[app-logs]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"log directory app-logs ({tree.app}) holds 1 file(s) older than retention 30d; the oldest, app.log.9.gz, "
        "is 40d old: delete files past retention (logrotate's rotate/maxage) or raise lifecycle.log_dirs[].retention"
    )


def test_an_audit_log_past_30_days_fails_as_qp_22(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    write(tree.audit / "audit.log.31.gz", b"old\n", days_old=31, packed=True)
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_log_directory_holds_nothing_past_retention[audit-logs]"
    assert run.failed() == {test}
    assert run.checks[test]["runbook"] == ["QP-22"]


def test_an_uncompressed_rotated_file_fails_and_delaycompress_allows_exactly_the_first(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    write(tree.app / "app.log.3", "INFO served\n", days_old=3)
    write(tree.audit / "audit.log.2", "user=ops\n", days_old=2)
    write(tree.audit / "audit.log-20261101", "user=ops\n", days_old=3)
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    app, audit = (f"{T}test_rotated_log_files_are_compressed[{d}]" for d in ("app-logs", "audit-logs"))
    assert run.failed() == {app, audit}
    assert run.message(app) == (
        f"log directory app-logs ({tree.app}) holds 1 rotated file(s) not compressed (delaycompress allows each "
        "log's newest rotation only): app.log.3: enable compress in its logrotate rule and gzip them"
    )
    assert run.message(audit) == (
        f"log directory audit-logs ({tree.audit}) holds 2 rotated file(s) not compressed: audit.log-20261101, "
        "audit.log.2: enable compress in its logrotate rule and gzip them"
    )


def test_without_delaycompress_the_plain_first_rotation_fails(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    run = run_checks(profile_variant(lifecycle(tree, log_dirs__delaycompress=False)), CHECKS)
    test = f"{T}test_rotated_log_files_are_compressed[app-logs]"
    assert run.failed() == {test}
    assert run.message(test).endswith("holds 1 rotated file(s) not compressed: app.log.1: enable compress in its "
                                      "logrotate rule and gzip them")


def test_a_directory_over_max_size_fails_the_size_check(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    write(tree.app / "debug.log", os.urandom(1_200_000).hex()[:1_200_000])
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_log_directory_is_under_its_size_cap[app-logs]"
    assert run.failed() == {test}
    total = sum(p.stat().st_size for p in tree.app.iterdir())
    assert run.message(test) == (
        f"log directory app-logs ({tree.app}) holds {total / 1024 / 1024:.1f} MiB in 4 file(s), over max_size "
        "976.6 KiB; the largest is debug.log (1.1 MiB): rotate and compress more often, shorten retention or raise "
        "max_size"
    )


def test_a_job_log_past_90_days_in_the_live_location_fails(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    write(tree.jobs / "job-5.log", "job 5 finished\n", days_old=95)
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_live_location_holds_nothing_past_the_archive_age[job-logs]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 file(s) in {tree.jobs} (archive job-logs) are older than max_age 90d; the oldest, job-5.log, is 95d old: "
        f"move them compressed to {tree.archive}"
    )


def test_a_truncated_archive_fails_the_integrity_check(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    whole = gzip.compress(b"job 4 finished\n" * 1000)
    write(tree.archive / "job-4.log.gz", whole[: len(whole) // 2], days_old=100)
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_archives_are_intact[job-logs]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 of 2 archive(s) in {tree.archive} (archive job-logs) are not intact; job-4.log.gz: gzip stream truncated "
        f"after {len(whole) // 2:,} compressed bytes (no trailer): restore it from a backup or archive the original "
        "again"
    )


def test_twenty_thousand_files_are_all_judged_however_they_are_listed(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    bulk = tree.root / "logs" / "bulk"
    bulk.mkdir(parents=True)
    old = time.time() - 60 * DAY
    for n in range(20_000):
        path = bulk / f"req-{n:05d}.log"
        path.touch()
        if n % 2:  # half of them, spread over the whole directory: the last listed surely among them
            os.utime(path, (old - n, old - n))
    run = run_checks(profile_variant(lifecycle(tree, log_dirs__path=str(bulk))), CHECKS)
    test = f"{T}test_log_directory_holds_nothing_past_retention[app-logs]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"log directory app-logs ({bulk}) holds 10000 file(s) older than retention 30d; the oldest, req-19999.log, "
        "is 60d old: delete files past retention (logrotate's rotate/maxage) or raise lifecycle.log_dirs[].retention"
    )
    assert run.checks[test]["evidence"]["files"] == "20000"


def test_a_remote_listing_cut_by_its_bound_fails_and_never_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from opsverify.probes import logfiles
    from opsverify.profile.model import Host

    for n in range(3):
        write(tmp_path / f"app.log.{n}.gz", b"x", days_old=1, packed=True)
    # the "host" runs the real listing script here, then hangs as a slow find would, past its bound
    monkeypatch.setattr(logfiles, "ssh_command", lambda host, connect: ["sh", "-c", 'eval "$0"; sleep 30'])
    host = Host.model_validate({"name": "log-host", "uri": "ssh://ops@127.0.0.1:22"})
    source = FileSource(host, Timeouts(connect=timedelta(seconds=1), request=timedelta(milliseconds=300)))
    seen: list[str] = []
    started = time.monotonic()
    listing = source.list_files(f"{tmp_path}/*.gz", lambda f: seen.append(f.name))
    assert time.monotonic() - started < 10
    assert listing.error is None
    assert listing.incomplete is None  # the script itself ended the listing: complete, however slow ssh is after
    assert sorted(seen) == ["app.log.0.gz", "app.log.1.gz", "app.log.2.gz"]
    monkeypatch.setattr(logfiles, "ssh_command",
                        lambda host, connect: ["sh", "-c", 'eval "$(echo "$0" | sed "s/; echo END//")"; sleep 30'])
    listing = source.list_files(f"{tmp_path}/*.gz")
    assert listing.count == 3
    assert listing.incomplete == (
        f"the listing of log-host:{tmp_path}/*.gz stopped after 3 file(s): it did not finish within 2.8s "
        "(connect + 6 x the request timeout)"
    )


def test_a_stale_quantum_directory_and_symlink_fail_the_tmp_check(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    stale = time.time() - 3.5 * DAY
    work = tree.tmp / "quantum_run_77"
    write(work / "partial.dat", "x" * 100, days_old=5)
    os.utime(work, (stale, stale))
    link = tree.tmp / "quantum_latest"
    link.symlink_to(tree.root / "nowhere")  # dangling, as a cleaned target leaves it
    os.utime(link, (stale + 3600, stale + 3600), follow_symlinks=False)
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_no_stale_temporary_files[quantum-tmp]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"2 temporary file(s) matching {tree.tmp}/quantum_* are older than max_age 1d; the oldest, quantum_run_77 (a "
        "directory), is 3d old: delete them (the cleanup job of quantum-tmp did not run or missed them)"
    )
    assert run.checks[test]["evidence"]["first_stale"] == "quantum_run_77 (a directory), quantum_latest (a symlink)"


def test_a_stale_quantum_file_fails_the_tmp_check(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    write(tree.tmp / "quantum_solver_8812", "x" * 512, days_old=2.5)
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_no_stale_temporary_files[quantum-tmp]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 temporary file(s) matching {tree.tmp}/quantum_* are older than max_age 1d; the oldest, quantum_solver_8812,"
        " is 2d old: delete them (the cleanup job of quantum-tmp did not run or missed them)"
    )


def test_error_lines_over_the_threshold_in_the_window_fail_and_old_ones_do_not_count(
    run_checks: Run, profile_variant: Variant, tree: Tree
) -> None:
    write(tree.app / "worker.log", "".join((
        f"{stamp(30 * 3600)} ERROR yesterday's failure\n",
        "Traceback: ERROR in the old trace (inherits the old time)\n",
        f"{stamp(7200)} ERROR login for bob failed password=hunter2\n",
        "Traceback (most recent call last):\n",
        '  File "worker.py", line 42, in run\n',
        "RuntimeError: ERROR raised again in the trace\n",
        f"{stamp(60)} INFO recovered\n",
    )))
    run = run_checks(profile_variant(lifecycle(tree)), CHECKS)
    test = f"{T}test_error_lines_in_the_window_are_under_the_threshold[app-errors]"
    assert run.failed() == {test}
    # app.log's one ERROR line, worker.log's two in the window (the trace's inherits its time); not the old two
    assert run.message(test) == (
        f"error log app-errors: 3 line(s) matching \\bERROR\\b in the last 24h, over max_lines 2; the first, in "
        f"{tree.app}/app.log: '{stamp_of(tree.app / 'app.log', 1)} ERROR backend timeout': look into them (matching "
        f"lines are in {tree.app}/app.log, {tree.app}/worker.log)"
    )
    evidence = run.checks[test]["evidence"]
    assert "password=***" in evidence["first_lines"]
    assert "hunter2" not in evidence["first_lines"]


def stamp_of(path: Path, line: int) -> str:
    return path.read_text().splitlines()[line][:27]


def test_a_declared_log_file_that_is_missing_fails(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    missing = tree.app / "missing.log"
    gone = tree.root / "nowhere" / "x.log"
    paths = [str(tree.app / "*.log"), str(missing)]
    run = run_checks(profile_variant(lifecycle(tree, error_logs__paths=paths)), CHECKS)
    test = f"{T}test_error_lines_in_the_window_are_under_the_threshold[app-errors]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"error log app-errors: {missing} matches no file (it is declared, so the log must exist): correct "
        "lifecycle.error_logs[].paths or check the logging"
    )
    run = run_checks(profile_variant(lifecycle(tree, error_logs__paths=[str(gone)]), name="gone.yaml"), CHECKS)
    assert run.failed() == {test}
    assert run.message(test) == (
        f"cannot list error log app-errors: directory {gone.parent} does not exist: create it or correct "
        "lifecycle.error_logs[].paths"
    )


def test_a_missing_log_directory_fails_naming_it(run_checks: Run, profile_variant: Variant, tree: Tree) -> None:
    gone = tree.root / "logs" / "gone"
    run = run_checks(profile_variant(lifecycle(tree, log_dirs__path=str(gone))), CHECKS)
    tests = {f"{T}{name}[app-logs]" for name in (
        "test_log_directory_holds_nothing_past_retention", "test_rotated_log_files_are_compressed",
        "test_log_directory_is_under_its_size_cap")}
    assert run.failed() == tests
    assert {run.message(t) for t in tests} == {
        f"cannot list log directory app-logs: directory {gone} does not exist: create it or correct "
        "lifecycle.log_dirs[].path"
    }


def on_ssh_host(t: Tree, server: Any) -> Callable[[dict[str, Any]], None]:
    """The log directory, its archive and its error log read through the throwaway sshd as host ``log-host``."""

    def mutate(data: dict[str, Any]) -> None:
        user = os.environ.get("USER") or "root"
        data["hosts"] = [{
            "name": "log-host", "uri": f"ssh://{user}@127.0.0.1:{server.port}", "ssh_config": str(server.ssh_config),
            "ssh_identity_file": str(server.identity), "cpu_max_percent": 100,
        }]
        section = t.section()
        for part in ("log_dirs", "archives", "error_logs"):
            section[part][0]["host"] = "log-host"
        section["log_dirs"] = section["log_dirs"][:1]
        data.setdefault("lifecycle", {}).update(section)

    return mutate


def test_files_on_an_ssh_host_are_listed_and_streamed_there(
    run_checks: Run, profile_variant: Variant, tree: Tree, sshd: Any
) -> None:
    healthy = run_checks(profile_variant(on_ssh_host(tree, sshd)), CHECKS)
    assert healthy.failed() == set(), healthy.result.stdout.str()
    write(tree.app / "app.log.9.gz", b"old\n", days_old=40, packed=True)
    whole = gzip.compress(b"job 4 finished\n" * 1000)
    write(tree.archive / "job-4.log.gz", whole[:-4], days_old=100)
    write(tree.app / "worker.log", "".join(f"{stamp(60)} ERROR failure {i}\n" for i in range(3)))
    run = run_checks(profile_variant(on_ssh_host(tree, sshd), name="broken.yaml"), CHECKS)
    retention = f"{T}test_log_directory_holds_nothing_past_retention[app-logs]"
    archives = f"{T}test_archives_are_intact[job-logs]"
    errors = f"{T}test_error_lines_in_the_window_are_under_the_threshold[app-errors]"
    assert run.failed() == {retention, archives, errors}
    assert run.message(retention).startswith(f"log directory app-logs (log-host:{tree.app}) holds 1 file(s) older")
    assert run.message(archives) == (
        f"1 of 2 archive(s) in log-host:{tree.archive} (archive job-logs) are not intact; job-4.log.gz: gzip stream "
        f"truncated after {len(whole) - 4:,} compressed bytes (no trailer): restore it from a backup or archive the "
        "original again"
    )
    assert run.message(errors).startswith("error log app-errors: 4 line(s) matching \\bERROR\\b in the last 24h, over "
                                         f"max_lines 2; the first, in log-host:{tree.app}/app.log: ")


def test_an_unreachable_ssh_host_fails_naming_it(
    run_checks: Run, profile_variant: Variant, tree: Tree, sshd: Any
) -> None:
    sshd.stop()
    run = run_checks(profile_variant(on_ssh_host(tree, sshd)), CHECKS)
    test = f"{T}test_log_directory_holds_nothing_past_retention[app-logs]"
    user = os.environ.get("USER") or "root"
    assert run.message(test) == (
        f"cannot list log directory app-logs: cannot reach host log-host at ssh://{user}@127.0.0.1:{sshd.port}: "
        "connection refused: check the host's ssh access (hosts[].uri, ssh_config, ssh_identity_file)"
    )


# --- the probe on its own: timestamps and streaming ----------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    (b"2026-11-29 22:00:01.123 UTC [77] LOG:  checkpoint", datetime(2026, 11, 29, 22, 0, 1, 123000, UTC)),
    (b"2026-11-29T22:00:01Z ERROR x", datetime(2026, 11, 29, 22, 0, 1, tzinfo=UTC)),
    (b"2026-11-29T23:00:01+01:00 ERROR x", datetime(2026, 11, 29, 22, 0, 1, tzinfo=UTC)),
    (b"[2026-11-29 22:00:01,250] ERROR x", datetime(2026, 11, 29, 22, 0, 1, 250000).astimezone(UTC)),
    (b"Nov 29 22:00:01 host app[1]: ERROR x", datetime(2026, 11, 29, 22, 0, 1).astimezone(UTC)),
    (b"  File \"x.py\", line 1", None),
])
def test_leading_timestamps_are_read(line: bytes, expected: datetime | None) -> None:
    assert line_time(line, datetime(2026, 11, 30, tzinfo=UTC)) == expected


def test_a_file_without_timestamps_is_judged_by_its_mtime_and_gz_is_streamed(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    fresh = write(tmp_path / "fresh.log", "ERROR a\nok\nERROR b\n")
    old = write(tmp_path / "old.log.gz", "ERROR c\n", days_old=0.5, packed=True)
    files = [LoggedFile(str(p), p.stat().st_size, datetime.fromtimestamp(p.stat().st_mtime, UTC)) for p in (fresh, old)]
    source = FileSource(None, Timeouts())
    found = count_error_lines(source, files, r"\bERROR\b", now - timedelta(hours=1), now)
    assert (found.count, found.samples, found.files_read, found.files_skipped) == (2, ["ERROR a", "ERROR b"], 1, 1)
    found = count_error_lines(source, files, r"\bERROR\b", now - timedelta(days=1), now)
    assert (found.count, found.files_read) == (3, 2)


def test_the_sandbox_logrotate_keeps_its_files_within_the_declared_limits_for_months(tmp_path: Path) -> None:
    from opsverify.sandbox.lifecycle import lifecycle_dirs
    from opsverify.sandbox.logfiles import create_lifecycle_files, upkeep
    from opsverify.sandbox.state import Layout

    layout = Layout(tmp_path / "state")
    start = time.time() - 120 * DAY  # four months ago, then a tick every six hours until now
    create_lifecycle_files(layout, start)
    dirs = lifecycle_dirs(layout)
    job_logs = sorted(p.name for p in dirs["job_logs"].iterdir())
    now = start
    while now < time.time() - 3600:
        now += DAY / 4
        upkeep(layout, now)
    app = sorted(p.name for p in dirs["app_logs"].iterdir())
    assert app == ["app.log", "app.log.1", *(f"app.log.{n}.gz" for n in range(2, 8))]  # rotate 7, delaycompress
    audit = sorted(p.name for p in dirs["audit_logs"].iterdir())
    assert audit == ["audit.log", *(f"audit.log.{n}.gz" for n in range(1, 8))]
    for part in ("app_logs", "audit_logs"):
        assert all(now - p.stat().st_mtime <= 30 * DAY for p in dirs[part].iterdir()), part
    assert not list(dirs["job_logs"].iterdir())  # all four were past 90 days by now: archived, compressed
    archived = {p.name for p in dirs["job_archive"].iterdir()}
    assert len(archived) == 6
    assert {f"{n}.gz" for n in job_logs} <= archived
    assert not list(dirs["tmp"].iterdir())
