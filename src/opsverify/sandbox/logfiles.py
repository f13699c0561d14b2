"""The sandbox's log files, archives and temporary files, and the team's daily logrotate/cron job (issue 11).

``create_lifecycle_files`` writes what a running deployment has after some weeks (the directories of
``lifecycle_dirs``): the application log with its rotated files (``app.log``, ``app.log.1`` uncompressed as
logrotate's ``delaycompress`` leaves it, ``app.log.2.gz`` …), the audit log rotated and compressed, job logs
younger than 90 days in the live directory and older ones gzipped in the archive, a fresh ``quantum_*``
temporary file, and a few time-stamped ERROR lines (under the profile's threshold). ``upkeep`` is what the
sandbox's scheduler runs at each tick: a daily rotation, deletion past retention, job logs past 90 days moved
to the archive compressed, stale ``quantum_*`` files deleted; so the sandbox stays green for days. No fault.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

from opsverify.sandbox.lifecycle import lifecycle_dirs
from opsverify.sandbox.state import Layout

DAY = 86400.0
RETENTION = 30 * DAY  # app and audit logs (lifecycle_section: retention 30d)
ARCHIVE_AFTER = 89 * DAY  # job logs move to the archive a day before they reach max_age 90d
TMP_MAX_AGE = 12 * 3600.0  # quantum_* files are deleted long before max_age 1d
ROTATED_KEPT = 7


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d} UTC"


def _app_lines(end: float, errors: int = 0) -> str:
    """A day of application log up to ``end``: INFO lines, ``errors`` ERROR lines, one with a stack trace."""
    lines = []
    for i in range(24):
        at = end - (24 - i) * 3600 + 60
        lines.append(f"{_stamp(at)} [photonic-foundry] INFO request served path=/health status=200 ms=3")
        if i >= 24 - errors:
            lines.append(f"{_stamp(at + 1)} [photonic-foundry] ERROR job {1000 + i} failed: backend timeout")
            if i == 23:
                lines += ["Traceback (most recent call last):", '  File "worker.py", line 42, in run',
                          "TimeoutError: quantum backend did not answer"]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mtime: float, compress: bool = False) -> None:
    if compress:
        with gzip.open(path, "wt") as out:
            out.write(text)
    else:
        path.write_text(text)
    os.utime(path, (mtime, mtime))


def create_lifecycle_files(layout: Layout, now: float | None = None) -> None:
    """Write the sandbox's logs, rotated logs, job logs, archives and a temporary file (mtimes as weeks of use)."""
    now = time.time() if now is None else now
    dirs = lifecycle_dirs(layout)
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    app, audit = dirs["app_logs"], dirs["audit_logs"]
    _write(app / "app.log", _app_lines(now, errors=3), now)
    _write(app / "app.log.1", _app_lines(now - DAY), now - DAY)
    for n in range(2, ROTATED_KEPT + 1):
        _write(app / f"app.log.{n}.gz", _app_lines(now - n * DAY), now - n * DAY, compress=True)
    audit_line = "{} user=operator action=login result=success\n"
    _write(audit / "audit.log", audit_line.format(_stamp(now - 60)), now - 60)
    for n in range(1, ROTATED_KEPT + 1):
        at = now - n * DAY
        _write(audit / f"audit.log.{n}.gz", audit_line.format(_stamp(at)), at, compress=True)
    for days in (1, 10, 45, 80):
        at = now - days * DAY
        _write(dirs["job_logs"] / f"job-{int(at)}.log", f"{_stamp(at)} INFO optimization job finished\n", at)
    for days in (100, 150):
        at = now - days * DAY
        text = f"{_stamp(at)} INFO optimization job finished\n"
        _write(dirs["job_archive"] / f"job-{int(at)}.log.gz", text, at, compress=True)
    _write(dirs["tmp"] / f"quantum_{int(now)}.tmp", "intermediate result\n", now)
    (layout.run).mkdir(parents=True, exist_ok=True)
    _write(_rotation_stamp(layout), "", now)


def _rotation_stamp(layout: Layout) -> Path:
    return layout.run / "logrotate.stamp"


def _rotate(directory: Path, name: str, delaycompress: bool, now: float) -> None:
    """logrotate's ``rotate N`` + ``compress`` (+ ``delaycompress``) of ``directory/name``."""
    live = directory / name
    if not live.exists():
        return
    for suffix in ("", ".gz"):  # rotate 7: the oldest goes
        (directory / f"{name}.{ROTATED_KEPT}{suffix}").unlink(missing_ok=True)
    for n in range(ROTATED_KEPT - 1, 0, -1):
        for suffix in ("", ".gz"):
            older = directory / f"{name}.{n}{suffix}"
            if older.exists():
                mtime = older.stat().st_mtime
                target = directory / f"{name}.{n + 1}.gz"
                if suffix:
                    older.replace(target)
                else:  # delaycompress's .1 is compressed when it becomes .2
                    with older.open("rb") as src, gzip.open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    older.unlink()
                os.utime(target, (mtime, mtime))
    mtime = live.stat().st_mtime
    if delaycompress:
        live.replace(directory / f"{name}.1")
    else:
        with live.open("rb") as src, gzip.open(directory / f"{name}.1.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.utime(directory / f"{name}.1.gz", (mtime, mtime))
        live.unlink()
    _write(live, f"{_stamp(now)} [photonic-foundry] INFO log rotated\n", now)


def upkeep(layout: Layout, now: float) -> list[str]:
    """One tick of the team's logrotate/cron: what it did, one line each (empty when nothing was due)."""
    dirs = lifecycle_dirs(layout)
    if not dirs["app_logs"].is_dir():  # a sandbox made before it had log files
        create_lifecycle_files(layout, now)
        return ["wrote the log files"]
    done: list[str] = []
    stamp = _rotation_stamp(layout)
    if not stamp.exists() or now - stamp.stat().st_mtime >= DAY:
        _rotate(dirs["app_logs"], "app.log", delaycompress=True, now=now)
        _rotate(dirs["audit_logs"], "audit.log", delaycompress=False, now=now)
        _write(stamp, "", now)
        done.append("rotated app.log and audit.log")
    for directory in (dirs["app_logs"], dirs["audit_logs"]):
        for path in sorted(directory.iterdir()):
            if path.is_file() and now - path.stat().st_mtime > RETENTION - DAY:
                path.unlink()
                done.append(f"deleted {path.name} (past retention)")
    for path in sorted(dirs["job_logs"].glob("job-*.log")):
        mtime = path.stat().st_mtime
        if now - mtime > ARCHIVE_AFTER:
            target = dirs["job_archive"] / f"{path.name}.gz"
            with path.open("rb") as src, gzip.open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.utime(target, (mtime, mtime))
            path.unlink()
            done.append(f"archived {path.name}")
    for path in sorted(dirs["tmp"].glob("quantum_*")):
        if path.is_file() and now - path.stat().st_mtime > TMP_MAX_AGE:
            path.unlink()
            done.append(f"deleted {path.name} (stale temporary file)")
    return done
