"""Restore strategies: plain and gzip SQL streamed through ``psql -v ON_ERROR_STOP=1`` (no temp copy),
custom and directory archives through ``pg_restore -j N --exit-on-error``, both without owner and
privilege statements (``--no-owner --no-privileges``; the SQL guard drops them from plain dumps), so a
restore role with CREATEDB only can restore dumps of objects other roles own. The comment of an extension
the scratch database already holds (copied from the restore target's ``template``) and the role does not
own is left out too (``must be owner of extension``): from plain SQL by the guard, from an archive by
restoring through a ``pg_restore -l`` list without that entry (``-L``).

A failed restore is reported with the first error line of the tool's log; a restore that outlives
its timeout is killed. Only the scratch database named by the caller is written to.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

from opsverify.backups.verdict import CorruptBackup
from opsverify.errors import ActionRefused
from opsverify.localserver.scratch import require_scratch_name
from opsverify.pgtools import Endpoint, MissingTool, first_error, pg_env, pg_tool
from opsverify.restore.sqlguard import extension_name, guarded

CHUNK = 1 << 20
_UNTRUSTED = re.compile(r'permission denied to create extension "([^"]+)"')
# a pg_restore -l line of an extension's comment: "3380; 0 0 COMMENT - EXTENSION pg_stat_statements owner"
_EXTENSION_COMMENT = re.compile(r'^\d+; \d+ \d+ COMMENT - EXTENSION (?P<name>"(?:[^"]|"")+"|[^\s"]+)(?: \S*)?\s*$')


@dataclass(frozen=True)
class RestoreRun:
    """One restore: how long it took and, when it failed, the first error line of its log."""

    backup: str
    database: str
    tool: str
    duration: timedelta
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def restore_backup(
    backup: Path,
    fmt: str,
    target: Endpoint,
    database: str,
    *,
    jobs: int,
    connect: timedelta,
    timeout: timedelta,
    present: frozenset[str] = frozenset(),
    template: str = "template0",
) -> RestoreRun:
    """Restore ``backup`` (format as ``formats.detect_format`` names it) into the scratch ``database``.

    ``present``: extensions the scratch database holds (from ``template``) and the restore role does not
    own: their ``COMMENT ON EXTENSION`` is left out. ``template`` is named when an extension cannot be created.
    """
    require_scratch_name(database)
    started = time.monotonic()
    env = pg_env(target, database, connect)
    try:
        if fmt in ("pg-custom", "pg-directory"):
            tool = "pg_restore"
            args = [pg_tool(tool), "--exit-on-error", "--no-owner", "--no-privileges", f"--jobs={jobs}", "-d", database]
            with _listed(backup, env, present, timeout) as (listing, problem):
                error = problem or _run([*args, *listing, str(backup)], env, None, timeout, tool)
        elif fmt in ("sql", "sql.gz"):
            tool = "psql"
            args = [pg_tool(tool), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-f", "-"]
            with _open_sql(backup, fmt) as source:
                error = _run(args, env, guarded(source, skip_extension_comments=present), timeout, tool)
        else:
            problem = f"cannot restore a {fmt} backup into PostgreSQL"
            return RestoreRun(str(backup), database, "-", timedelta(0), problem)
    except MissingTool as err:
        return RestoreRun(str(backup), database, "-", timedelta(0), str(err))
    error = _explained(error, template) if error is not None else None
    return RestoreRun(str(backup), database, tool, timedelta(seconds=time.monotonic() - started), error)


@contextlib.contextmanager
def _listed(
    backup: Path, env: dict[str, str], present: frozenset[str], timeout: timedelta
) -> Iterator[tuple[list[str], str | None]]:
    """``-L LIST`` arguments restoring every entry of the archive but the comments of the ``present`` extensions.

    No such comment in the archive (or nothing ``present``): no list, pg_restore restores the whole archive.
    Yields the arguments and, when ``pg_restore -l`` failed, its first error line.
    """
    if not present:
        yield [], None
        return
    tool = "pg_restore"
    try:
        done = subprocess.run(
            [pg_tool(tool), "-l", str(backup)], env=env, capture_output=True, timeout=timeout.total_seconds(),
            check=False, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        yield [], f"pg_restore -l did not finish within {timeout}: killed"
        return
    if done.returncode != 0:
        yield [], f"pg_restore -l: {first_error(done.stderr.decode(errors='replace'), tool)}"
        return
    lines = done.stdout.decode(errors="surrogateescape").splitlines(keepends=True)
    kept = [";" + line if _skipped_entry(line, present) else line for line in lines]
    if kept == lines:
        yield [], None
        return
    with tempfile.NamedTemporaryFile("w", prefix="opsverify_restore_list_", suffix=".txt",
                                     errors="surrogateescape") as listing:
        listing.writelines(kept)
        listing.flush()
        yield ["-L", listing.name], None


def _skipped_entry(line: str, present: frozenset[str]) -> bool:
    found = _EXTENSION_COMMENT.match(line)
    return found is not None and extension_name(found.group("name").encode()) in present


def _open_sql(backup: Path, fmt: str) -> io.BufferedIOBase:
    """The dump's SQL text as a byte stream, inflated on the fly for ``.sql.gz``."""
    if fmt == "sql.gz":
        return gzip.GzipFile(backup, "rb")
    return backup.open("rb")


def _run(
    args: list[str], env: dict[str, str], feed: Iterator[bytes] | None, timeout: timedelta, tool: str
) -> str | None:
    """Run the tool, streaming ``feed`` into its stdin; None on success, else its first error line.

    A timer kills the tool's process group at the deadline, so a tool that stops reading (a dead
    connection, a lock wait) cannot block the write into its stdin for ever.
    """
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _signal(proc)

        timer = threading.Timer(timeout.total_seconds(), expire)
        timer.start()
        try:
            if feed is not None and proc.stdin is not None:
                _pump(feed, proc.stdin)
            code = proc.wait()
        except (OSError, EOFError, zlib.error, CorruptBackup) as exc:  # the backup broke off mid-stream
            _kill(proc)
            return f"the backup could not be read to its end ({exc}): restore stopped"
        except ActionRefused as err:
            _kill(proc)
            return f"refused: {err}"
        except BaseException:
            _kill(proc)
            raise
        finally:
            timer.cancel()
        if expired.is_set():
            return f"{tool} did not finish within {timeout}: killed"
        log.seek(0)
        text = log.read().decode(errors="replace")
    if code != 0:
        return first_error(text, tool)
    return first_error(text, tool) if "ERROR:" in text else None


def _explained(error: str, template: str) -> str:
    """The tool's error, with the fix when it is a privilege only a superuser has (an untrusted extension)."""
    found = _UNTRUSTED.search(error)
    if found is None:
        return error
    name = found.group(1)
    if template == "template0":
        return (
            f"{error}: {name} is not a trusted extension, so only a superuser may create it: have a superuser create "
            "it once in a template database and name that database in restore_target's template (README, The "
            "staging (restore target) role), restore as a superuser role, or drill a backup of a database without it"
        )
    return (
        f"{error}: {name} is not a trusted extension, so only a superuser may create it, and restore_target's "
        f"template {template} lacks it: as a superuser, CREATE EXTENSION {name} in {template} (README, The staging "
        "(restore target) role), restore as a superuser role, or drill a backup of a database without it"
    )


def _pump(feed: Iterator[bytes], sink: IO[bytes]) -> None:
    """Copy ``feed`` into the tool's stdin; stop quietly when the tool exits early (or is killed)."""
    try:
        for chunk in feed:
            sink.write(chunk)
    except BrokenPipeError:
        pass  # the tool stopped on an error (its log says which) or the timer killed it
    finally:
        with contextlib.suppress(BrokenPipeError):
            sink.close()


def _signal(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    _signal(proc)
    proc.wait(timeout=10)
