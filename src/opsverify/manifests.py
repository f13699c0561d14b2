"""``opsverify manifest write|show|schema``: a manifest for any backup, written by a runbook's own script.

``write`` reads the facts a drill compares a restore with and binds them to the backup
(``facts.manifest.write_manifest``):

- from the backup itself (default): a plain or gzipped SQL dump is streamed and the rows of every
  ``COPY`` section (or ``INSERT``) counted; a ``pg_dump -Fc``/``-Fd`` archive is streamed through
  ``pg_restore --data-only -f -`` and counted the same way (both in constant memory, no checksums:
  those need a server); an RDB is loaded by a throwaway ``redis-server`` (the Redis drill's
  ``ScratchRedis``) and its persistent keys counted and sampled, exactly as the drill reads a restore;
- from the live source (``--from-source``): the profile's database of the backup source, read in one
  REPEATABLE READ, READ ONLY snapshot (rows and checksums) as its monitoring role, or its Redis.

Every failure is an ``OpsverifyError`` of one sentence with the fix.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import shlex
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsverify import __version__
from opsverify.durations import format_duration
from opsverify.errors import CleanupError, OpsverifyError
from opsverify.facts.manifest import (
    ManifestError,
    NewerManifest,
    binding,
    bound_file,
    load_manifest,
    manifest_data,
    manifest_path,
    manifest_text,
    recorded_binding,
    write_manifest_data,
)

if TYPE_CHECKING:
    from opsverify.profile import Profile
    from opsverify.profile.model import BackupSource

DATABASE_FORMATS = ("sql", "sql.gz", "pg-custom", "pg-directory")
READABLE = "a plain or gzipped SQL dump, a pg_dump custom (-Fc) or directory (-Fd) archive, or a Redis RDB"
READ_TIMEOUT = timedelta(hours=2)  # bound on streaming a dump through pg_restore, or loading an RDB
CHECKSUM_MAX_ROWS = 100_000  # a drill's default; --from-source takes the drill's own when one restores the source
WRITTEN_BY = f"opsverify {__version__} manifest write"
MAX_LAG = timedelta(minutes=15)  # --from-source: a cron line right after `pg_dump … && gzip …` (gzip keeps the mtime)


def _rewrite_hint(backup: Path) -> str:
    return f"opsverify manifest write {shlex.quote(str(backup))}"  # pasted into a shell: a space must not split it


def backup_format(backup: Path) -> str:
    """The backup's format, when a manifest can describe it; ``OpsverifyError`` naming the fix otherwise."""
    from opsverify.backups.formats import detect_format

    if not backup.exists():
        if str(backup).startswith(("s3:/", "ssh:/")):
            raise OpsverifyError(f"{backup} is not a local file: copy the backup here first (aws s3 cp, scp) and give "
                                 "the path of that copy")
        raise OpsverifyError(f"{backup} does not exist: give the path of the backup file (or pg_dump -Fd directory)")
    if backup.is_symlink():  # `latest.sql.gz -> backup_….sql.gz`: the drills look beside the file the series lists
        raise OpsverifyError(f"{backup} is a symbolic link to {os.path.realpath(backup)}: give that path, the backup "
                             "itself (a manifest is named after the file it describes)")
    if backup.name.endswith(".part"):
        raise OpsverifyError(f"{backup} is a partial file (.part, still being written or abandoned): give the "
                             "finished backup, after the job renamed it")
    if not backup.is_file() and not backup.is_dir():
        raise OpsverifyError(f"{backup} is not a regular file: give the path of the backup file itself")
    try:
        if backup.is_file():
            with backup.open("rb") as stream:
                stream.read(1)
        elif not os.access(backup / "toc.dat", os.R_OK) and (backup / "toc.dat").exists():
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise OpsverifyError(f"cannot read {backup} ({exc.strerror or exc}): run as a user who may read it") from None
    fmt = detect_format(backup)
    if fmt in ("sql", "sql.gz") and backup.is_file() and _not_a_dump(backup):
        inside = "its gzip holds" if fmt == "sql.gz" else "it is"
        raise OpsverifyError(f"{backup} is not a pg_dump SQL dump ({inside} text without pg_dump's `-- PostgreSQL "
                             f"database dump` header): give {READABLE}")
    if fmt not in (*DATABASE_FORMATS, "rdb"):
        found = "an empty file" if backup.is_file() and backup.stat().st_size == 0 else f"format {fmt}"
        raise OpsverifyError(f"{backup} is not a backup a manifest describes ({found}): give {READABLE}")
    return fmt


def _not_a_dump(backup: Path) -> bool:
    """Whether a file taken for a plain (or gzipped) dump shows something else in its first bytes."""
    from opsverify.backups.formats import SNIFF_SIZE, format_by_content

    with backup.open("rb") as stream:
        head = stream.read(SNIFF_SIZE)
    found = format_by_content(head)
    return bool(head) and (found == "gzip" or (found is None and not head.startswith(b"\x1f\x8b")))


# --- facts from the backup itself -------------------------------------------------------------------


def dump_facts(backup: Path, fmt: str, timeout: timedelta = READ_TIMEOUT) -> dict[str, Any]:
    """``{"tables": {schema.table: {"rows": n}}}`` counted from the dump's data, streamed in constant memory."""
    from opsverify.backups.sqldump import SqlContent
    from opsverify.backups.verdict import CorruptBackup

    try:
        if fmt in ("sql", "sql.gz"):
            content = _plain_content(backup, fmt == "sql.gz")
            tables = set(content.tables)
        else:
            from opsverify.backups.pgdump import read_archive

            tables = set(read_archive(backup).tables)
            content = SqlContent()
            _stream_pg_restore(backup, content, timeout)
    except CorruptBackup as err:
        raise OpsverifyError(f"cannot read the tables of {backup}: {err}: verify the backup or take it again") from None
    except OSError as exc:
        raise OpsverifyError(f"cannot read {backup} ({exc.strerror or exc}): run as a user who may read it") from None
    rows = dict(content.rows)
    if not tables and not rows:
        raise OpsverifyError(f"{backup} holds no table: it is not a database dump (pg_dump of a database), "
                             "or the dump is empty; take it again")
    return {"tables": {t: {"rows": rows.get(t, 0), "checksum": None} for t in sorted(tables | set(rows))}}


def _plain_content(backup: Path, gzipped: bool) -> Any:
    """``SqlContent`` of a plain dump, in one streamed pass that also requires pg_dump's dump-complete marker."""
    from opsverify.backups.gzipstream import READ_SIZE, GzipStream
    from opsverify.backups.sqldump import SqlContent, SqlScanner
    from opsverify.backups.verdict import CorruptBackup

    content, scanner = SqlContent(), SqlScanner(find_tables=False)
    with backup.open("rb") as stream:
        chunks = iter(GzipStream(stream)) if gzipped else iter(lambda: stream.read(READ_SIZE), b"")
        for chunk in chunks:
            content.feed(chunk)
            scanner.feed(chunk)
    if scanner.size == 0:
        raise CorruptBackup("it holds no SQL (0 bytes)")
    if (problem := scanner.completion_problem()) is not None:
        raise CorruptBackup(problem)
    return content


def _stream_pg_restore(backup: Path, content: Any, timeout: timedelta) -> None:
    """Feed ``pg_restore --data-only -f -`` of an archive to ``content`` (COPY sections); killed past ``timeout``."""
    from opsverify.backups.verdict import CorruptBackup
    from opsverify.pgtools import MissingTool, clean_env, first_error, pg_tool

    try:
        binary = pg_tool("pg_restore")
    except MissingTool as err:
        raise OpsverifyError(str(err)) from None
    with tempfile.TemporaryFile() as errors, subprocess.Popen(  # stderr to a file: a full pipe would block it
        [binary, "--data-only", "-f", "-", str(backup.absolute())],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=clean_env(),
    ) as proc:
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        watchdog = threading.Timer(timeout.total_seconds(), kill)  # also when it stalls without output
        watchdog.start()
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 20):
                content.feed(chunk)
            code = proc.wait()
        finally:
            watchdog.cancel()
        if killed.is_set():
            raise CorruptBackup(f"pg_restore did not finish within {format_duration(timeout)}: the archive is too "
                                "large for that, or its disk stalls")
        if code != 0:
            errors.seek(0)
            log = errors.read().decode(errors="replace")
            raise CorruptBackup(f"pg_restore cannot read its data: {first_error(log, 'pg_restore')}")


def rdb_facts(rdb: Path, timeout: timedelta = READ_TIMEOUT) -> dict[str, Any]:
    """The Redis drill's key facts of an RDB: loaded by a throwaway redis-server, which is gone after."""
    import redis

    from opsverify.actions.base import performed
    from opsverify.actions.redis import ScratchRedis
    from opsverify.facts.redis import redis_facts
    from opsverify.localserver.scratch import SCRATCH_PREFIX

    directory = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}manifest_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with performed(ScratchRedis(rdb, directory, timeout)) as server:
            return redis_facts(server.client(timeout=timeout.total_seconds())).to_json()
    except CleanupError:
        raise
    except (OpsverifyError, redis.RedisError) as err:
        raise OpsverifyError(f"cannot read the keys of {rdb}: {str(err).splitlines()[0]}: verify the RDB "
                             "(redis-check-rdb) or take it again") from None


# --- facts from the live source ---------------------------------------------------------------------


def source_of(profile_file: Path, name: str) -> tuple[Profile, BackupSource]:
    """The profile and its backup source ``name``; ``OpsverifyError`` (a ``ProfileError``) naming the fix."""
    from opsverify.profile import load_profile

    profile = load_profile(profile_file)
    source = next((b for b in profile.backups if b.name == name), None)
    if source is None:
        known = ", ".join(sorted(b.name for b in profile.backups)) or "none"
        raise OpsverifyError(f"profile {profile_file} declares no backup source named {name!r} (known: {known}): "
                             "pass --source with the name of the backup source this backup belongs to")
    return profile, source


def refuse_foreign(backup: Path, source: BackupSource) -> None:
    """``OpsverifyError`` unless ``backup`` is one of ``source``'s files: in its directory, matching its pattern
    (for an s3:// or ssh source, a local copy of one: its name matches the pattern)."""
    if source.is_s3 or source.host is not None:
        where = source.path if source.is_s3 else f"{source.path} on host {source.host}"
        if not fnmatch.fnmatch(backup.name, source.pattern):
            raise OpsverifyError(
                f"{backup.name} does not match the pattern {source.pattern} of backup source {source.name} ({where}): "
                "give a local copy of one of its backups under its own name (--source is only used to find the "
                "database or Redis it backs up), or pass --source with the source this backup belongs to"
            )
        return
    directory = Path(source.path)
    inside = Path(os.path.realpath(backup.absolute().parent)) == Path(os.path.realpath(directory))
    if not inside or not fnmatch.fnmatch(backup.name, source.pattern):
        raise OpsverifyError(
            f"{backup} is not a backup of source {source.name}, whose backups are {directory / source.pattern}: give "
            "one of them, or pass --source with the backup source this backup belongs to"
        )


def finished_at(backup: Path) -> datetime:
    """When the backup was finished: the mtime of its file (of ``toc.dat``, written last, for a -Fd directory)."""
    return datetime.fromtimestamp(bound_file(backup).stat().st_mtime, UTC)


def refuse_stale(backup: Path, max_lag: timedelta) -> None:
    """``OpsverifyError`` when the backup was finished more than ``max_lag`` ago: the live source has moved on."""
    finished = finished_at(backup)
    age = datetime.now(UTC) - finished
    if age > max_lag:
        when = finished.replace(microsecond=0).isoformat().replace("+00:00", "Z")
        if age >= timedelta(hours=1):  # 2d, not 2d1s: the seconds the command took say nothing
            age = timedelta(minutes=round(age.total_seconds() / 60))
        raise OpsverifyError(
            f"{backup} was finished {format_duration(age)} ago ({when}, its mtime), more than --max-lag "
            f"{format_duration(max_lag)}: its source has moved on since, so its facts now are not the backup's; "
            "write it from the backup itself (drop --from-source)"
        )


def live_facts(profile: Profile, source: BackupSource, fmt: str) -> dict[str, Any]:
    """Facts of the live database or Redis the backup source backs up, read now."""
    if fmt == "rdb":
        if source.kind != "redis":
            raise OpsverifyError(f"the backup is an RDB but backup source {source.name} is of kind {source.kind}: "
                                 "pass --source with the Redis backup source")
        return _redis_source_facts(profile, source)
    if source.kind != "postgres":
        raise OpsverifyError(f"the backup is a {fmt} dump but backup source {source.name} is of kind {source.kind}: "
                             "pass --source with the PostgreSQL backup source")
    return _database_source_facts(profile, source)


def _database_source_facts(profile: Profile, source: BackupSource) -> dict[str, Any]:
    import psycopg

    from opsverify.facts.database import FactsTimeout, source_facts
    from opsverify.probes.postgres import connect, first_line, unreachable
    from opsverify.profile.recovery import Drill

    if source.database is None:
        raise OpsverifyError(f"backup source {source.name} names no database: add `database: NAME` to it in the "
                             "profile, or write the manifest from the backup (without --from-source)")
    db = profile.database(source.database)
    drill = next((d for d in profile.drills if d.backup == source.name and d.database), None)
    rows = drill.checksum_max_rows if drill else CHECKSUM_MAX_ROWS
    within = drill.compare_timeout if drill else Drill.model_fields["compare_timeout"].default
    where = f"database {db.name} ({db.host}:{db.port}/{db.dbname}, role {db.user})"
    try:
        with connect(db, profile.timeouts.connect) as conn:
            return source_facts(conn, rows, within).to_json()
    except FactsTimeout as err:
        raise OpsverifyError(f"reading the rows and checksums of {where} {err}: raise compare_timeout of the drill "
                             f"of {source.name}, or lower its checksum_max_rows") from None
    except (psycopg.Error, OSError) as exc:
        cause = unreachable(exc, profile.timeouts.connect) or first_line(exc)
        raise OpsverifyError(f"cannot read {where}: {cause}: check that it is up and the profile's "
                             "connection and credentials") from None


def _redis_source_facts(profile: Profile, source: BackupSource) -> dict[str, Any]:
    import redis

    from opsverify.facts.redis import redis_facts
    from opsverify.probes.redis import client, unreachable

    drill = next((d for d in profile.drills if d.backup == source.name and d.redis), None)
    if drill is not None and drill.redis is not None:
        instance = next(r for r in profile.redis if r.name == drill.redis)
    elif len(profile.redis) == 1:
        instance = profile.redis[0]
    else:
        raise OpsverifyError(f"which Redis backup source {source.name} backs up is not declared: add a drill with "
                             f"`backup: {source.name}` and `redis: NAME` to the profile")
    t = profile.timeouts
    conn = client(instance, t.connect, t.request)
    try:
        return redis_facts(conn).to_json()
    except redis.RedisError as exc:
        cause = unreachable(exc, t.connect, t.request) or str(exc).splitlines()[0]
        raise OpsverifyError(f"cannot read Redis {instance.name} ({instance.host}:{instance.port}): {cause}: check "
                             "that it is up and the profile's address and credentials") from None
    finally:
        conn.close()


# --- the commands -----------------------------------------------------------------------------------


def _recorded(existing: dict[str, Any]) -> str:
    """What an existing manifest says of itself: ``written 2026-…Z, facts from the backup``."""
    origin = {"backup": "from the backup", "source": "from the live source"}.get(
        str(existing.get("facts_from")), "of an unrecorded origin")
    if existing.get("facts_from") == "source" and existing.get("source"):
        origin += f" {existing['source']}"
    return f"written {existing.get('written_at', 'at an unrecorded time')}, facts {origin}"


def refuse_overwrite(backup: Path) -> dict[str, Any] | None:
    """The manifest beside ``backup``, if any; ``OpsverifyError`` when it is another file's, or cannot be read."""
    target = manifest_path(backup)
    if not target.exists() and not target.is_symlink():
        return None
    force = f"pass --force to replace {target.name}"
    try:
        existing = load_manifest(backup)
        if existing is None:
            return None
        size, sha = recorded_binding(existing)
    except NewerManifest as err:
        raise OpsverifyError(f"manifest {target} already exists and {err}, or {force}") from None
    except ManifestError as err:
        raise OpsverifyError(f"manifest {target} already exists and {err}: {force}") from None
    now = binding(backup)
    if (size, sha) != (now["size"], now["sha256"]):
        raise OpsverifyError(
            f"manifest {target} already exists ({_recorded(existing)}) and describes another file ({size:,} bytes, "
            f"sha256 {sha[:12]}…; {backup.name} is {now['size']:,} bytes, sha256 {now['sha256'][:12]}…): the backup "
            f"was replaced after it was written, or it is another backup's; {force}"
        )
    return existing


def _same(existing: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing ``new`` would write the bytes already there, but for the time it was written."""
    return manifest_text({**existing, "written_at": None}) == manifest_text({**new, "written_at": None})


@dataclass(frozen=True)
class Written:
    path: Path
    summary: str


def write(
    backup: Path, *, from_source: bool = False, profile_file: Path | None = None, source: str | None = None,
    force: bool = False, max_lag: timedelta | None = None,
) -> Written:
    """Write ``<backup>.manifest.json``: facts from the backup (default) or from the profile's live source.

    An existing manifest is replaced only with ``force``, or left as it is when it already records the same
    facts; ``--from-source`` refuses a backup finished more than ``max_lag`` ago.
    """
    if from_source and (profile_file is None or source is None):
        raise OpsverifyError("--from-source reads the live source: also pass --profile FILE and --source NAME "
                             "(the backup source in the profile)")
    if not from_source and (profile_file is not None or source is not None):
        raise OpsverifyError("--profile and --source name the live source read with --from-source: add "
                             "--from-source, or drop them to read the facts from the backup")
    if not from_source and max_lag is not None:
        raise OpsverifyError("--max-lag bounds how old a backup --from-source describes: add --from-source, or drop "
                             "--max-lag (a manifest read from the backup itself may be written at any time)")
    fmt = backup_format(backup)
    before = _state(backup)
    existing = None if force else refuse_overwrite(backup)
    if from_source:
        assert profile_file is not None
        assert source is not None
        refuse_stale(backup, MAX_LAG if max_lag is None else max_lag)
        profile, backup_source = source_of(profile_file, source)
        refuse_foreign(backup, backup_source)
        facts = live_facts(profile, backup_source, fmt)
    else:
        facts = rdb_facts(backup) if fmt == "rdb" else dump_facts(backup, fmt)
    bound = binding(backup)
    if _state(backup) != before or bound["size"] != before[0]:
        raise OpsverifyError(f"{backup} changed while it was read (it is still being written): run this after the "
                             "backup job has finished writing it")
    data = manifest_data(backup, facts, written_by=WRITTEN_BY, facts_from="source" if from_source else "backup",
                         source=source, bound=bound)
    target = manifest_path(backup)
    if existing is not None:
        if _same(existing, data):
            return Written(target, f"{target} already records these facts ({_recorded(existing)}): left as it is")
        raise OpsverifyError(
            f"manifest {target} already exists ({_recorded(existing)}: {_facts_line(existing)}; now "
            f"{_facts_line(facts)} {'from the live source' if from_source else 'from the backup'}): pass --force "
            f"to replace {target.name}"
        )
    try:
        path = write_manifest_data(backup, data)
    except OSError as exc:
        raise OpsverifyError(f"cannot write {target} ({exc.strerror or exc}): run as a user who may "
                             "write in the backup's directory") from None
    return Written(path, f"wrote {path}: {_facts_line(facts)}")


def _state(backup: Path) -> tuple[int, int]:
    """(size, mtime in ns) of the file a manifest binds: a job still writing the backup changes them."""
    info = bound_file(backup).stat()
    return info.st_size, info.st_mtime_ns


def _facts_line(facts: dict[str, Any]) -> str:
    if "redis" in facts:
        part = facts["redis"]
        return f"{part.get('persistent_keys', 0):,} persistent keys, {len(part.get('sample', {}))} sampled"
    tables = facts.get("tables", {})
    rows = sum(int(t.get("rows", 0)) for t in tables.values() if isinstance(t, dict))
    sums = sum(1 for t in tables.values() if isinstance(t, dict) and t.get("checksum"))
    return f"{len(tables)} tables, {rows:,} rows" + (f", {sums} with checksums" if sums else "")


def show(backup: Path) -> tuple[str, bool]:
    """The manifest beside ``backup``, readable; and whether its binding matches the file."""
    target = manifest_path(backup)
    if not backup.exists():
        raise OpsverifyError(f"{backup} does not exist: give the path of the backup the manifest describes")
    try:
        data = load_manifest(backup)
        if data is None:
            raise OpsverifyError(f"no manifest beside {backup} ({target.name}): write one with "
                                 f"`{_rewrite_hint(backup)}`")
        size, sha = recorded_binding(data)
    except NewerManifest as err:
        raise OpsverifyError(f"manifest {target} {err}") from None  # its one fix is in it: upgrade
    except ManifestError as err:
        fix = f"write it again with `{_rewrite_hint(backup)} --force`"
        raise OpsverifyError(f"manifest {target} {err}: {fix}") from None
    try:
        now = binding(backup)
    except OSError as exc:
        raise OpsverifyError(f"cannot read {backup} ({exc.strerror or exc}): run as a user who may read it") from None
    matches = (size, sha) == (now["size"], now["sha256"])
    version = data.get("version", "1 (unversioned)")
    lines = [f"manifest {target} (opsverify-manifest version {version})"]
    bound = f"{size:,} bytes, sha256 {sha}"
    label = f"{backup.name}/toc.dat" if backup.is_dir() else backup.name
    if matches:
        lines.append(f"  backup       {label}: {bound}: matches the file")
    else:
        lines.append(f"  backup       {label}: {bound}: the backup changed since: the file is {now['size']:,} "
                     f"bytes, sha256 {now['sha256']}; write the manifest again right after the backup")
    origin = {"backup": "read from the backup", "source": "read from the live source"}.get(
        str(data.get("facts_from")), "origin not recorded")
    if data.get("source"):
        origin += f" {data['source']}"
    lines.append(f"  written      {data.get('written_at', 'time not recorded')} by "
                 f"{data.get('written_by', 'an unrecorded writer')}; facts {origin}")
    lines += _table_lines(data) + _redis_lines(data)
    return "\n".join(lines), matches


def _table_lines(data: dict[str, Any]) -> list[str]:
    tables = data.get("tables")
    if not isinstance(tables, dict):
        return []
    lines = [f"  tables       {_facts_line(data)} (checksums: {data.get('checksum_algorithm', 'none')})"]
    width = max((len(str(n)) for n in tables), default=0)
    for name, fact in sorted(tables.items()):
        fact = fact if isinstance(fact, dict) else {}
        checksum = f"  {fact['checksum']}" if fact.get("checksum") else ""
        lines.append(f"    {name:<{width}}  {int(fact.get('rows', 0)):>12,} rows{checksum}")
    return lines


def _redis_lines(data: dict[str, Any]) -> list[str]:
    part = data.get("redis")
    if not isinstance(part, dict):
        return []
    per_db = ", ".join(f"{db} {n:,}" for db, n in sorted((part.get("per_db") or {}).items()))
    sample = part.get("sample") or {}
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(Counter(sample.values()).items()))
    return [
        f"  redis        {int(part.get('persistent_keys', 0)):,} persistent keys (dbsize {part.get('dbsize', '?')})"
        + (f"; {per_db}" if per_db else ""),
        f"  sample       {len(sample)} keys ({part.get('sample_method', 'method not recorded')}): {kinds or 'none'}",
    ]
