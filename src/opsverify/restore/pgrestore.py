"""Restore strategies: plain and gzip SQL streamed through ``psql -v ON_ERROR_STOP=1`` (no temp copy),
custom and directory archives through ``pg_restore -j N --exit-on-error``.

A failed restore is reported with the first error line of the tool's log; a restore that outlives
its timeout is killed. Only the scratch database named by the caller is written to.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

from opsverify.pgtools import Endpoint, MissingTool, first_error, pg_env, pg_tool
from opsverify.restore.scratch import require_scratch_name

CHUNK = 1 << 20


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
    backup: Path, fmt: str, target: Endpoint, database: str, *, jobs: int, connect: timedelta, timeout: timedelta
) -> RestoreRun:
    """Restore ``backup`` (format as ``formats.detect_format`` names it) into the scratch ``database``."""
    require_scratch_name(database)
    started = time.monotonic()
    env = pg_env(target, database, connect)
    try:
        if fmt in ("pg-custom", "pg-directory"):
            tool = "pg_restore"
            args = [pg_tool(tool), "--exit-on-error", "--no-owner", "--no-privileges", f"--jobs={jobs}", "-d", database]
            error = _run([*args, str(backup)], env, None, timeout, tool)
        elif fmt in ("sql", "sql.gz"):
            tool = "psql"
            args = [pg_tool(tool), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-f", "-"]
            with _open_sql(backup, fmt) as source:
                error = _run(args, env, source, timeout, tool)
        else:
            problem = f"cannot restore a {fmt} backup into PostgreSQL"
            return RestoreRun(str(backup), database, "-", timedelta(0), problem)
    except MissingTool as err:
        return RestoreRun(str(backup), database, "-", timedelta(0), str(err))
    return RestoreRun(str(backup), database, tool, timedelta(seconds=time.monotonic() - started), error)


def _open_sql(backup: Path, fmt: str) -> io.BufferedIOBase:
    """The dump's SQL text as a byte stream, inflated on the fly for ``.sql.gz``."""
    if fmt == "sql.gz":
        return gzip.GzipFile(backup, "rb")
    return backup.open("rb")


def _run(
    args: list[str], env: dict[str, str], feed: io.BufferedIOBase | None, timeout: timedelta, tool: str
) -> str | None:
    """Run the tool, streaming ``feed`` into its stdin; None on success, else its first error line."""
    deadline = time.monotonic() + timeout.total_seconds()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        try:
            if feed is not None and proc.stdin is not None:
                _pump(feed, proc.stdin, deadline)
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, TimeoutError):
            _kill(proc)
            return f"{tool} did not finish within {timeout}: killed"
        except (OSError, EOFError, zlib.error) as exc:  # the backup itself broke off mid-stream
            _kill(proc)
            return f"the backup could not be read to its end ({exc}): restore stopped"
        except BaseException:
            _kill(proc)
            raise
        log.seek(0)
        text = log.read().decode(errors="replace")
    if code != 0:
        return first_error(text, tool)
    return first_error(text, tool) if "ERROR:" in text else None


def _pump(feed: io.BufferedIOBase, sink: IO[bytes], deadline: float) -> None:
    """Copy ``feed`` into the tool's stdin in chunks; stop quietly when the tool exits early."""
    try:
        while chunk := feed.read(CHUNK):
            if time.monotonic() > deadline:
                raise TimeoutError
            sink.write(chunk)
    except BrokenPipeError:
        pass  # the tool stopped on an error; its log says which
    finally:
        with contextlib.suppress(BrokenPipeError):
            sink.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait(timeout=10)
