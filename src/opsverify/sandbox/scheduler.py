"""The sandbox's cron: one background process that runs each backup series' job at its cadence.

``sandbox up`` spawns it (``python -m opsverify.sandbox.scheduler --state-dir DIR``, a pidfile in
``run/``, output in ``logs/scheduler.log``) and waits for its first tick; ``sandbox down`` stops it
and verifies it is gone. Every ``TICK`` seconds it runs the job of each series whose newest backup
is due (a cadence old, less ``EARLY``: the freshness checks, RPO = cadence, never see it older),
writes the manifest, uploads the file to the sandbox S3 when the series has an offsite copy, then
applies each series' cleanup (``backups.cleanup``). After a ``down``, or a machine that slept, the
first tick catches up at once: one new backup per stale series (missed runs are not invented, so
the schedule check reports the gap, as it would on a real host). A job that fails is logged to
``logs/backup-jobs.log`` and retried at the next tick; nothing a job raises stops the loop. An
exclusive lock on ``run/scheduler.lock`` keeps a second scheduler off the same state dir.
Besides the backups it runs the team's other cron jobs: the daily bandit scan, the daily
``VACUUM (ANALYZE)`` of both databases (``upkeep``), the daily data cleanup (``datacleanup``) and,
each tick, logrotate over the sandbox's log files (``logfiles.upkeep``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import IO

from opsverify.errors import SandboxError
from opsverify.localserver.process import cmdline, pid_alive, stop_process
from opsverify.sandbox import datacleanup, logfiles, scanners, upkeep, workload
from opsverify.sandbox.app import app_env
from opsverify.sandbox.backups import SERIES, JobContext, Series, backups_of, cleanup, finish_backup, prepare, run_job
from opsverify.sandbox.state import Layout

TICK = 30.0
EARLY = 600.0  # a job is due this long before a full cadence has passed since the newest backup
NAME = "scheduler"
MODULE = "opsverify.sandbox.scheduler"
START_TIMEOUT = 300.0  # the first tick (a catch-up runs every job once) must end within this
BASE_BACKUP_EVERY = 6 * 86400.0  # weekly less a day: inside the profile's base_backup_max_age (7d, PF-20)
BASE_BACKUPS_KEPT = 2


@dataclass
class TickReport:
    """What one tick did: backups made, files the cleanup deleted, failures (one line each)."""

    made: dict[str, Path] = field(default_factory=dict)
    deleted: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def due(layout: Layout, now: float) -> list[Series]:
    """The series whose newest backup is a cadence old (less ``EARLY``), or that have none."""
    stale = []
    for series in SERIES:
        files = backups_of(layout, series)
        if not files or now - files[-1].stat().st_mtime >= series.every - EARLY:
            stale.append(series)
    return stale


def log_line(layout: Layout, text: str) -> None:
    """Append one time-stamped line to ``logs/backup-jobs.log``."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    with (layout.logs / "backup-jobs.log").open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(text.split())}\n")


class Uploader:
    """The S3 step of the offsite series' jobs (QP-18 ``aws s3 cp``): into the sandbox's S3 server."""

    def __init__(self, layout: Layout, port: int) -> None:
        from opsverify.backups.s3 import client
        from opsverify.sandbox.offsite import s3_access

        self.s3 = client(s3_access(layout, port), timedelta(seconds=5), timedelta(seconds=30))
        self.buckets: set[str] = set()

    def upload(self, series: Series, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from opsverify.backups.s3 import split_url

        bucket, prefix = split_url(series.offsite or "")
        try:
            if bucket not in self.buckets:
                self.s3.create_bucket(Bucket=bucket)  # moto keeps no state across restarts
                self.buckets.add(bucket)
            self.s3.upload_file(str(path), bucket, prefix + path.name)
        except (BotoCoreError, ClientError) as exc:
            raise SandboxError(f"upload of {path.name} to {series.offsite} failed ({exc})") from None


def tick(
    layout: Layout,
    now: float,
    context: Callable[[], JobContext],
    uploader: Callable[[], Uploader | None] = lambda: None,
    pending: dict[Path, Series] | None = None,
) -> TickReport:
    """Run every due job once (as at ``now``), upload, clean up; never raises for a job that fails.

    ``pending`` holds uploads that failed before: they are tried again (and kept there until done).
    """
    report = TickReport()
    pending = pending if pending is not None else {}
    stale = due(layout, now)
    ctx: JobContext | None = None
    s3: Uploader | None = None
    if stale:
        prepare(layout)
    for series in stale:
        try:
            ctx = ctx or context()
            path = run_job(ctx, series, now)
            finish_backup(ctx, series, path)
        except Exception as exc:  # noqa: BLE001 - one job's failure is logged and retried, never the loop's end
            report.failures.append(f"{series.name}: job failed: {exc}")
            continue
        report.made[series.name] = path
        log_line(layout, f"{series.name}: made {path.name}")
        if series.offsite:
            pending[path] = series
    for path, series in list(pending.items()):
        try:
            s3 = s3 or uploader()
            if s3 is not None and path.exists():
                s3.upload(series, path)
                log_line(layout, f"{series.name}: uploaded {path.name} to {series.offsite}")
            pending.pop(path)
        except Exception as exc:  # noqa: BLE001 - a failed upload is retried at the next tick
            report.failures.append(f"{series.name}: {exc}")
    try:
        ctx = base_backup(ctx or context(), now, report)
    except Exception as exc:  # noqa: BLE001 - logged and retried at the next tick
        report.failures.append(f"base backup: {exc}")
    for series in SERIES:
        try:
            deleted = cleanup(layout, series, now)
        except OSError as exc:
            report.failures.append(f"{series.name}: cleanup failed: {exc}")
            continue
        report.deleted += deleted
        if deleted:
            log_line(layout, f"{series.name}: cleanup deleted {', '.join(p.name for p in deleted)}")
    try:  # the daily bandit scan of the app, so its report stays fresh on a long-lived sandbox
        if scanners.bandit_due(layout, now):
            log_line(layout, f"bandit: wrote {scanners.run_bandit(layout).name}")
    except Exception as exc:  # noqa: BLE001 - logged and retried at the next tick
        report.failures.append(f"bandit scan: {exc}")
    try:  # the team's logrotate/cron: daily rotation, retention, job logs to the archive, stale quantum_* files
        for line in logfiles.upkeep(layout, now):
            log_line(layout, f"logrotate: {line}")
    except OSError as exc:
        report.failures.append(f"logrotate: {exc}")
    try:  # the daily VACUUM (ANALYZE) of both databases: the team's maintenance cron (PF-25, QP-10)
        ctx = ctx or context()
        if upkeep.vacuum_due(ctx.pg, now, EARLY):
            log_line(layout, f"vacuum: VACUUM (ANALYZE) of {', '.join(upkeep.vacuum_analyze(ctx.pg))}")
    except Exception as exc:  # noqa: BLE001 - logged and retried at the next tick
        report.failures.append(f"vacuum: {exc}")
    try:  # the application's daily reads (sandbox/workload.py): every index of the large tables stays in use
        if workload.workload_due(layout, now):
            ctx = ctx or context()
            log_line(layout, f"workload: ran {workload.run_workload(ctx.pg)} queries")
            workload.mark_workload(layout)
    except Exception as exc:  # noqa: BLE001 - logged and retried at the next tick
        report.failures.append(f"workload: {exc}")
    for failure in report.failures:
        log_line(layout, f"FAILED {failure} (retried at the next tick)")
    return report


def data_upkeep(layout: Layout, now: float, context: Callable[[], JobContext], report: TickReport) -> None:
    """The team's daily database cleanup (QP-23, QP-31, ``datacleanup``): finished jobs past 90 days archived,
    users inactive for a year deleted; a failure is logged and retried at the next tick."""
    try:
        if datacleanup.cleanup_due(layout, now):
            moved, removed = datacleanup.clean_data(layout, context().pg, now)
            log_line(layout, f"data cleanup: archived {moved} finished job(s), deleted {removed} inactive user(s)")
    except Exception as exc:  # noqa: BLE001 - logged and retried at the next tick
        report.failures.append(f"data cleanup: {exc}")
        log_line(layout, f"FAILED data cleanup: {exc} (retried at the next tick)")


def base_backup(ctx: JobContext, now: float, report: TickReport) -> JobContext:
    """PF-20's weekly ``pg_basebackup`` (what point-in-time recovery replays the WAL archive onto), when due;
    the oldest beyond ``BASE_BACKUPS_KEPT`` are deleted."""
    import shutil

    from opsverify.probes.replication import list_base_backups

    directory = ctx.pg.base_backups
    newest = list_base_backups(directory).taken if directory.is_dir() else None
    if newest is None or now - newest.timestamp() >= BASE_BACKUP_EVERY - EARLY:
        made = ctx.pg.take_base_backup()
        report.made["base-backup"] = made
        log_line(ctx.layout, f"base backup: made {made.name}")
        old = sorted(p for p in directory.iterdir() if p.is_dir())[:-BASE_BACKUPS_KEPT]
        for path in old:
            shutil.rmtree(path)
            report.deleted.append(path)
    return ctx


def _context(layout: Layout) -> JobContext:
    """The jobs' view of the running sandbox, read afresh (``up`` may have moved a port)."""
    from opsverify.localserver.redis import RedisServer, read_pid
    from opsverify.sandbox import control
    from opsverify.sandbox.state import ensure_secret, load_state

    state = load_state(layout)
    if state is None:
        raise SandboxError(f"{layout.state_file} is gone")
    pid = read_pid(layout.redis) or 0
    redis_server = RedisServer(layout.redis, state.ports["redis"], ensure_secret(layout, "redis"), pid)
    return JobContext(layout, control.postgres_of(layout, state), redis_server, dict(state.ports))


def _uploader(layout: Layout) -> Uploader:
    from opsverify.sandbox.state import load_state

    state = load_state(layout)
    if state is None:
        raise SandboxError(f"{layout.state_file} is gone")
    return Uploader(layout, state.ports["s3"])


def _heartbeat(layout: Layout, ticks: int, report: TickReport) -> None:
    beat = {"pid": os.getpid(), "ticks": ticks, "last_tick": time.time(), "failures": report.failures}
    tmp = layout.run / f"{NAME}.json.tmp"
    tmp.write_text(json.dumps(beat) + "\n")
    tmp.replace(layout.run / f"{NAME}.json")


def _lock(layout: Layout) -> IO[str]:
    """Hold ``run/scheduler.lock`` for this process's life, or raise naming who holds it."""
    layout.run.mkdir(parents=True, exist_ok=True)
    handle = (layout.run / f"{NAME}.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise SandboxError(f"another scheduler (pid {holder}) runs against {layout.root}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def main(argv: Sequence[str] | None = None) -> int:
    """Tick until SIGTERM or SIGINT; exit 3 when another scheduler holds the lock."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--tick", type=float, default=TICK)
    options = parser.parse_args(argv)
    layout = Layout(options.state_dir.resolve())
    try:
        lock = _lock(layout)
    except SandboxError as exc:
        print(f"scheduler: {exc}", file=sys.stderr, flush=True)
        return 3
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()  # the running job finishes; the loop ends before the next

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    (layout.run / f"{NAME}.pid").write_text(f"{os.getpid()}\n")
    print(f"scheduler for {layout.root}: a tick every {options.tick:g}s", file=sys.stderr, flush=True)
    pending: dict[Path, Series] = {}
    ticks = 0
    try:
        while not stopping.is_set():
            try:
                report = tick(layout, time.time(), lambda: _context(layout), lambda: _uploader(layout), pending)
                data_upkeep(layout, time.time(), lambda: _context(layout), report)
            except Exception as exc:  # noqa: BLE001 - a bug in the loop itself: say so, go on
                report = TickReport(failures=[f"tick failed: {exc!r}"])
                log_line(layout, f"FAILED {report.failures[0]}")
            ticks += 1
            _heartbeat(layout, ticks, report)
            stopping.wait(options.tick)
    finally:
        lock.close()
    return 0


def _pidfile(layout: Layout) -> Path:
    return layout.run / f"{NAME}.pid"


def scheduler_pid(layout: Layout) -> int | None:
    """The pid of this state dir's scheduler while it runs (checked against its command line)."""
    try:
        pid = int(_pidfile(layout).read_text().strip())
    except (OSError, ValueError):
        return None
    ours = f"-m {MODULE} --state-dir {layout.root}" in cmdline(pid)
    return pid if ours and pid_alive(pid) else None


def spawn_scheduler(layout: Layout, timeout: float = START_TIMEOUT) -> int:
    """Start the scheduler in a new session and wait for its first tick (the catch-up); its pid."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    log = layout.logs / f"{NAME}.log"
    argv = [sys.executable, "-m", MODULE, "--state-dir", str(layout.root)]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawn(argv[0], argv, app_env(), file_actions=actions, setsid=True)
    beat = layout.run / f"{NAME}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise SandboxError(f"the backup scheduler exited at start ({' '.join(tail) or 'no output'}): see {log}")
        try:
            if json.loads(beat.read_text()).get("pid") == pid:
                return pid
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    stop_process(pid, timeout=10)
    raise SandboxError(f"the backup scheduler's first tick took over {timeout:g}s: see {log}")


def stop_scheduler(layout: Layout, timeout: float = 10) -> int | None:
    """SIGTERM (it ends after the running job), SIGKILL after ``timeout`` s; the pid it had, if it ran."""
    pid = scheduler_pid(layout)
    if pid is not None:
        stop_process(pid, timeout)
    _pidfile(layout).unlink(missing_ok=True)
    return pid


if __name__ == "__main__":
    raise SystemExit(main())
