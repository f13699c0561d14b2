"""The janitor of scratch directories: what a killed run left on this machine, stopped and removed.

Every scratch directory (a dump, a standby and its server, a scratch Redis and its server, a
download) carries a creator note; one whose creator is gone, or that is older than the maximum
age, is an orphan: its servers are stopped and it is deleted, and the janitor says what it did.
A directory without a note (an older opsverify's) counts as an orphan after a minute. Names of
this run (``own_prefix``) are never touched. ``sweep_scratch_databases`` does the same for the
restore target's scratch databases, and stops tools a killed run left working on them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from opsverify.localserver.scratch import (
    SCRATCH_PREFIX,
    orphan_reason,
    processes_naming,
    processes_using,
    read_note,
    remove_scratch_dir,
    servers_in,
    stop_pid,
)
from opsverify.profile import Profile, RestoreTarget

JOURNAL_PREFIX = "opsverify_journal_"  # maintenance journals (a flushed cache's dump): no older janitor matches it
MAX_AGE = timedelta(hours=6)
NO_NOTE_GRACE = 60.0  # seconds: a directory between its mkdir and its note


def sweep_directories(
    roots: Iterable[Path], own_prefix: str = "", max_age: timedelta = MAX_AGE, keep: Iterable[Path] = ()
) -> list[str]:
    """Stop and remove orphaned scratch directories under ``roots`` (except ``keep``); one sentence per thing done."""
    done: list[str] = []
    kept = {p.resolve() for p in keep}
    for root in sorted({r.resolve() for r in roots if r.is_dir()}):
        for path in sorted([*root.glob(SCRATCH_PREFIX + "*"), *root.glob(JOURNAL_PREFIX + "*")]):
            if not path.is_dir() or (own_prefix and path.name.startswith(own_prefix)) or path.resolve() in kept:
                continue
            reason = _reason(path, max_age, time.time())
            if reason is not None:
                done.append(_remove(path, reason))
    return done


def finish_maintenance(
    roots: Iterable[Path], profile: Profile, max_age: timedelta = MAX_AGE
) -> tuple[list[str], list[Path]]:
    """What killed runs' maintenance journals ask for, done before ``sweep_directories`` removes them: a flushed
    cache's keys restored, an interrupted transaction verified rolled back, an interrupted rotation's remaining
    files named. One sentence each; the directories to keep (a restore that failed keeps its dump file)."""
    from opsverify.actions.maintenance import KIND, finish_journal

    done: list[str] = []
    keep: list[Path] = []
    for root in sorted({r.resolve() for r in roots if r.is_dir()}):
        for path in sorted([*root.glob(SCRATCH_PREFIX + "*"), *root.glob(JOURNAL_PREFIX + "*")]):
            note = read_note(path) if path.is_dir() else None
            if note is None or note.get("kind") != KIND or _reason(path, max_age, time.time()) is None:
                continue
            said = finish_journal(path, list(profile.databases), list(profile.redis), profile.timeouts)
            if said is not None:
                done.append(said)
                if said.startswith("could not"):
                    keep.append(path)
    return done, keep


def _reason(path: Path, max_age: timedelta, now: float) -> str | None:
    note = read_note(path)
    if note is None:
        try:
            old = now - path.stat().st_mtime > NO_NOTE_GRACE
        except OSError:
            return None  # gone meanwhile
        return "it carries no creator note" if old else None
    return orphan_reason(note, max_age, now)


def _remove(path: Path, reason: str) -> str:
    kind = str((read_note(path) or {}).get("kind", "scratch directory"))
    servers = servers_in(path)
    others = [pid for pid in processes_using(path) if pid not in {s.pid for s in servers}]
    left = remove_scratch_dir(path, servers)
    stopped = ", ".join([*map(str, servers), *(f"pid {pid}" for pid in others)])
    stopped = f"; stopped {stopped}" if stopped else ""
    if left:
        return f"could not remove {kind} {path} ({reason}){stopped}: {', '.join(left)} remain, remove them by hand"
    return f"removed {kind} {path} ({reason}){stopped}"


def sweep_scratch_databases(target: RestoreTarget, timeout: timedelta) -> list[str]:
    """Orphaned scratch databases on the restore target dropped; one sentence each (or why it could not look)."""
    import psycopg

    from opsverify.actions.database import sweep_databases
    from opsverify.probes.postgres import first_line

    try:
        swept = sweep_databases(target, timeout)
    except (psycopg.Error, OSError) as exc:
        return [f"could not look for orphaned scratch databases on {target.host}:{target.port}: {first_line(exc)}"]
    done = []
    for orphan in (o for o in swept if o.reason):
        tools = processes_naming(orphan.name)  # pg_amcheck and the like, left working on it by the killed run
        for pid in tools:
            stop_pid(pid)
        stopped = f"; stopped {', '.join(f'pid {pid}' for pid in tools)}" if tools else ""
        done.append(f"dropped scratch database {orphan.name} on {target.host}:{target.port} ({orphan.reason}){stopped}")
    return done


