"""Maintenance thresholds and the data lifecycle (issue 11): what ``pytest -m maintenance`` judges.

Every database and Redis instance is checked with the defaults below (the runbooks' numbers);
a ``maintenance:`` block changes them. The ``lifecycle:`` section declares what the runbooks
clean up: job tables, temporary tables, personal data, log directories, archives, temporary
files and the log files whose ERROR lines are counted. Each part absent: its checks skip,
naming what to declare.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import ByteSize, Field, WithJsonSchema, field_validator, model_validator

from opsverify.profile.types import AbsolutePath, Duration, Model, Name, Named, Percent

SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"  # table or schema.table, unquoted
TableName = str  # validated by SQL_NAME where declared
MiB = 1024 * 1024
Bytes = Annotated[  # "10MB", "512MiB" or a number of bytes; bounded like every integer of a profile
    ByteSize,
    Field(ge=0, le=2**60),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "examples": ["10MB", "512MiB"]},
                {"type": "integer", "minimum": 0, "maximum": 2**60},
            ]
        }
    ),
]


def _sql_name(value: str) -> str:
    if not re.match(SQL_NAME, value):
        raise ValueError(f"{value!r} is not a table name (name or schema.name, letters, digits, _ and $)")
    return value


# A key query is one statement EXPLAIN accepts; its first word (after comments and parentheses) must be one of these.
EXPLAINABLE = ("SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE")
TRANSACTION_CONTROL = ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE", "SET")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def sql_outside_literals(sql: str) -> str:
    """``sql`` with every string literal, quoted identifier, comment and dollar-quoted body blanked to spaces
    (PostgreSQL's lexical rules: '' and E'\\'' escapes, "" in identifiers, nested /* */, $tag$…$tag$);
    an unterminated one raises ValueError."""
    out, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
        elif c == "/" and sql.startswith("/*", i):
            depth, end = 1, i + 2
            while depth and end < n:
                if sql.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif sql.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
            if depth:
                raise ValueError("a /* comment is not closed")
        elif c in "'\"":
            prefix = sql[max(0, i - 2) : i]  # E'…' (not the end of a name like "name'") takes backslash escapes
            escapes = c == "'" and prefix[-1:] in ("e", "E") and not (prefix[:-1].isalnum() or prefix[:-1] == "_")
            end = i + 1
            while True:
                if end >= n:
                    raise ValueError("a quoted string or identifier is not closed")
                if escapes and sql[end] == "\\":
                    end += 2
                elif sql[end] == c:
                    if sql.startswith(c * 2, end):
                        end += 2
                    else:
                        end += 1
                        break
                else:
                    end += 1
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and not (i and (sql[i - 1].isalnum() or sql[i - 1] in "_$")):
            close = sql.find(m.group(0), m.end())
            if close < 0:
                raise ValueError(f"a dollar-quoted string {m.group(0)} is not closed")
            end = close + len(m.group(0))
        else:
            out.append(c)
            i += 1
            continue
        out.append(" " * (end - i))
        i = end
    return "".join(out)


def single_statement(sql: str) -> str:
    """``sql`` when it is exactly one statement EXPLAIN accepts (no ``;`` but one trailing, outside literals and
    comments; no transaction control), else ValueError naming why."""
    bare = sql_outside_literals(sql)
    body = bare.rstrip()
    if body.endswith(";"):
        body = body[:-1]
    if ";" in body:
        raise ValueError("holds more than one statement (a ';' outside strings and comments): declare exactly one "
                         "statement, the key query opsverify plans")
    word = re.match(r"[\s(]*([A-Za-z_]+)", body)
    first = word.group(1).upper() if word else ""
    if first in TRANSACTION_CONTROL:
        raise ValueError(f"starts with {first}, transaction control: declare the one statement the application "
                         "runs, opsverify plans it in its own read-only transaction")
    if first not in EXPLAINABLE:
        raise ValueError(f"starts with {first or 'no keyword'}, expected a statement EXPLAIN accepts "
                         f"({', '.join(EXPLAINABLE)})")
    return sql


class KeyQuery(Named):
    """A query the application depends on (PF-37): planned with ``EXPLAIN (FORMAT JSON)``; a read-only query
    is also run with ``EXPLAIN (ANALYZE)`` inside a read-only transaction, a write never is. ``sql`` is exactly
    one statement (checked at load: ``single_statement``)."""

    sql: str = Field(min_length=1, description="the statement, as the application sends it (literal values)")
    budget: Duration = Field(default=timedelta(seconds=1), description="longest acceptable execution time")

    @field_validator("sql")
    @classmethod
    def _one_statement(cls, value: str) -> str:
        return single_statement(value)


class PostgresMaintenance(Model):
    """Thresholds of the PostgreSQL maintenance checks (PF-25..28, PF-37, PF-38, QP-07, QP-10, QP-11, QP-25)."""

    max_connections_percent: Percent = Field(default=80, description="sessions as a share of max_connections (PF-38)")
    max_idle_in_transaction: Duration = Field(
        default=timedelta(minutes=5), description="longest idle-in-transaction session"
    )
    max_transaction_age: Duration = Field(default=timedelta(minutes=5), description="longest open transaction")
    max_lock_wait: Duration = Field(
        default=timedelta(minutes=1), description="longest wait of a session blocked by a lock"
    )
    max_wraparound_percent: Percent = Field(
        default=50, description="oldest transaction ID age as a share of autovacuum_freeze_max_age"
    )
    large_table: Bytes = Field(
        default=ByteSize(10 * MiB),
        description="tables at least this big are judged for vacuum/analyze age, unused indexes and sequential scans",
    )
    max_vacuum_age: Duration = Field(
        default=timedelta(days=7), description="longest time since a large table's last (auto)vacuum (PF-25)"
    )
    max_analyze_age: Duration = Field(
        default=timedelta(days=7), description="longest time since a large table's last (auto)analyze (PF-25)"
    )
    max_dead_tuple_percent: Percent = Field(default=20, description="dead tuples as a share of a large table's tuples")
    max_database_size: Bytes | None = Field(default=None, description="largest allowed database size (PF-26)")
    max_table_size: Bytes | None = Field(
        default=None, description="largest allowed table size, indexes and TOAST included (PF-26)"
    )
    max_growth_percent: float = Field(
        default=25, ge=0, le=10_000, description="largest growth of the database's size per 30 days, as a share of "
        "its size at the start of growth_window (least squares over the recorded runs; PF-26, PF-39)",
    )
    growth_window: Duration = Field(
        default=timedelta(days=30), description="how far back the recorded sizes the growth is fitted over reach"
    )
    table_sizes: dict[str, Bytes] = Field(
        default_factory=dict, description="table name -> its own largest allowed size (overrides max_table_size)"
    )
    unused_index_min_size: Bytes = Field(
        default=ByteSize(MiB),
        description="an index at least this big with no scan since the statistics reset is unused (PF-28, QP-25)",
    )
    max_index_bloat_percent: Percent = Field(
        default=50, description="estimated bloat of an index at least unused_index_min_size big (PF-28)"
    )
    max_seq_scan_percent: Percent = Field(
        default=50,
        description="sequential scans as a share of all scans of a large table: a missing index (QP-25, PF-37)",
    )
    require_pg_stat_statements: bool = Field(
        default=True, description="the pg_stat_statements extension must be installed (PF-27, QP-07)"
    )
    slow_query_mean: Duration = Field(
        default=timedelta(seconds=1),
        description="largest mean execution time of a statement in pg_stat_statements (PF-27, QP-07)",
    )
    slow_query_min_calls: int = Field(
        default=1, ge=1, le=10**9, description="statements called fewer times are not judged"
    )
    key_queries: list[KeyQuery] = Field(default_factory=list, description="queries checked with EXPLAIN (PF-37)")
    hot_tables: list[TableName] = Field(
        default_factory=list,
        description="tables whose planner statistics must exist and be fresh (QP-11); the "
        "vacuum_analyzed fixture's default tables",
    )
    statistics_max_age: Duration = Field(
        default=timedelta(days=7), description="longest time since a hot table's last (auto)analyze (QP-11)"
    )

    @field_validator("hot_tables")
    @classmethod
    def _table_names(cls, value: list[str]) -> list[str]:
        return [_sql_name(v) for v in value]

    @field_validator("table_sizes")
    @classmethod
    def _table_size_names(cls, value: dict[str, Bytes]) -> dict[str, Bytes]:
        for name in value:
            _sql_name(name)
        return value

    @field_validator("key_queries")
    @classmethod
    def _unique_queries(cls, value: list[KeyQuery]) -> list[KeyQuery]:
        names = [q.name for q in value]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"key query name {dup!r} is used more than once")
        return value


class RedisMaintenance(Model):
    """Thresholds of the Redis maintenance checks (PF-29 memory, PF-30 performance)."""

    max_memory_percent: Percent = Field(
        default=85, description="used_memory as a share of maxmemory (of the machine's memory when maxmemory is 0)"
    )
    max_fragmentation_ratio: float = Field(default=1.5, gt=1, le=100, description="largest mem_fragmentation_ratio")
    fragmentation_min_memory: Bytes = Field(
        default=ByteSize(64 * MiB),
        description="the ratio is judged only when used_memory_rss is at least this big",
    )
    max_evicted_keys: int | None = Field(
        default=0, ge=0, le=10**12, description="evicted_keys since the server started (null: any)"
    )
    max_rejected_connections: int = Field(
        default=0, ge=0, le=10**12, description="rejected_connections since the server started"
    )
    max_clients_percent: Percent = Field(default=80, description="connected_clients as a share of maxclients")
    slowlog_threshold: Duration = Field(
        default=timedelta(milliseconds=100), description="a slowlog entry slower than this counts"
    )
    slowlog_window: Duration = Field(default=timedelta(hours=24), description="only slowlog entries this recent count")
    max_slow_entries: int = Field(default=0, ge=0, le=10**12, description="slow entries allowed in the window")
    ttl_prefixes: list[str] = Field(
        default_factory=list, description="key prefixes whose keys must all carry a TTL (sessions, caches)"
    )
    scan_count: int = Field(default=1000, ge=1, le=100_000, description="SCAN COUNT per call")
    scan_max_keys: int = Field(default=100_000, ge=1, le=10**8, description="most keys read per prefix")
    scan_time: Duration = Field(default=timedelta(seconds=5), description="longest time spent scanning per prefix")
    max_expired_stale_percent: Percent = Field(
        default=25,
        description="expired_stale_perc: keys logically expired but not yet reclaimed (the expired-key backlog)",
    )


class JobTable(Named):
    """A table of jobs whose finished rows must not outlive ``max_age`` (QP-23); ``archived_jobs`` moves them."""

    database: Name = Field(description="the profile database holding the table")
    table: TableName
    status_column: str = "status"
    finished: list[str] = Field(
        default_factory=lambda: ["completed", "failed"], min_length=1, description="status values of finished jobs"
    )
    time_column: str = Field(default="completed_at", description="when the job finished (timestamp or timestamptz)")
    max_age: Duration = timedelta(days=90)
    archive_table: TableName | None = Field(
        default=None, description="where archived_jobs moves old rows (same columns); empty: none"
    )
    side_tables: list[TableName] = Field(
        default_factory=list,
        description="tables a trigger or a foreign key's ON DELETE action writes when jobs are deleted (an audit log, "
        "child rows): archived_jobs may change them, and leaves them out of its proof that nothing else changed",
    )

    @field_validator("archive_table", mode="before")
    @classmethod
    def _no_archive(cls, value: object) -> object:
        return None if value == "" else value  # `${VAR:-}` left empty: no archive table declared

    @field_validator("table", "status_column", "time_column", "archive_table")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return value if value is None else _sql_name(value)

    @field_validator("side_tables")
    @classmethod
    def _side_names(cls, value: list[str]) -> list[str]:
        return [_sql_name(v) for v in value]

    @model_validator(mode="after")
    def _archive_is_another_table(self) -> JobTable:
        if self.archive_table is not None and same_table(self.archive_table, self.table):
            raise ValueError(
                f"archive_table {self.archive_table} is the job table {self.table} itself, so archived_jobs would "
                "move its old rows into the table it takes them from: name a separate table with the same columns, "
                "or leave archive_table empty"
            )
        return self


def same_table(a: str, b: str) -> bool:
    """Whether two declared (unquoted) table names name the same table: PostgreSQL folds them to lower case, and
    ``name`` is ``public.name`` on the default search path."""

    def qualified(name: str) -> str:
        name = name.lower()
        return name if "." in name else f"public.{name}"

    return qualified(a) == qualified(b)


class TempTables(Named):
    """Temporary tables nothing may leave behind (QP-23): their names match ``pattern`` (a glob)."""

    database: Name
    pattern: str = Field(
        default="temp_optimization_*",
        description="glob of table names (* and ?), in any schema, or schema.glob for one schema; 3 literal "
        "characters or more before a wildcard",
    )
    max_tables: int = Field(
        default=50, ge=1, le=10_000, description="dropped_temp_tables refuses to drop more matching tables than this"
    )

    @field_validator("pattern")
    @classmethod
    def _narrow(cls, value: str) -> str:
        problem = temp_pattern_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def temp_pattern_problem(pattern: str) -> str | None:
    """Why a temp_tables glob is too broad to drop by (fewer than 3 literal characters of the table name before its
    first wildcard, ``*`` or ``?`` alone; a wildcard in a ``schema.`` part); None when it is not."""
    schema, _, table = pattern.rpartition(".")
    if re.search(r"[*?\[]", schema):
        return (f"temp_tables pattern {pattern!r} has a wildcard in its schema part: name one schema "
                "(e.g. app.temp_optimization_*) or none (every schema)")
    if len(re.split(r"[*?\[]", table, maxsplit=1)[0]) < 3:
        return (
            f"temp_tables pattern {pattern!r} is too broad: it must start with at least 3 literal characters "
            "before its first wildcard (e.g. temp_optimization_*)"
        )
    return None


class PersonalData(Named):
    """Rows holding personal data, kept no longer than ``retention`` after ``column`` (QP-31)."""

    database: Name
    table: TableName
    column: str = Field(description="timestamp the retention counts from (e.g. last_login)")
    retention: Duration

    @field_validator("table", "column")
    @classmethod
    def _names(cls, value: str) -> str:
        return _sql_name(value)


class LogDirectory(Named):
    """A log directory (PF-02; ``audit: true`` is QP-22's audit logs): nothing past retention, rotated files
    compressed, the total under ``max_size``."""

    path: AbsolutePath = Field(description="absolute directory")
    host: Name | None = Field(default=None, description="the profile host it is on (ssh://); default: this machine")
    pattern: str = Field(default="*", description="glob of the log file names in it")
    retention: Duration = timedelta(days=30)
    max_size: Bytes | None = Field(default=None, description="largest total size of the matching files")
    compressed: list[str] = Field(
        default_factory=lambda: [".gz", ".xz", ".bz2", ".zst"], description="suffixes of compressed rotated files"
    )
    delaycompress: bool = Field(
        default=False, description="logrotate's delaycompress: the newest rotated file (.1) may be uncompressed"
    )
    audit: bool = Field(default=False, description="an audit log directory (QP-22)")

    @field_validator("pattern")
    @classmethod
    def _plain(cls, value: str) -> str:
        return _file_name_glob(value)


def _file_name_glob(value: str) -> str:
    if "/" in value or ".." in value:
        raise ValueError(f"pattern {value!r} must be a plain file-name glob (no '/' and no '..'), e.g. app.log*")
    return value


class ArchiveLocation(Named):
    """Files past ``max_age`` belong in ``archive``, not ``live`` (QP-12); archives must be intact."""

    live: AbsolutePath = Field(description="absolute directory the files are written to")
    archive: AbsolutePath = Field(description="absolute directory holding the compressed archives")
    host: Name | None = None
    pattern: str = "*"
    max_age: Duration = timedelta(days=90)

    @field_validator("pattern")
    @classmethod
    def _plain(cls, value: str) -> str:
        return _file_name_glob(value)


class TmpFiles(Named):
    """Temporary files nothing may leave past ``max_age`` (QP-24)."""

    pattern: AbsolutePath = Field(description="absolute glob, e.g. /tmp/quantum_*")
    host: Name | None = None
    max_age: Duration = timedelta(days=1)

    @field_validator("pattern")
    @classmethod
    def _narrow(cls, value: str) -> str:
        problem = tmp_glob_problem(str(value))
        if problem:
            raise ValueError(problem)
        return value


def tmp_glob_problem(pattern: str) -> str | None:
    """Why a tmp_files glob is too broad to delete by (``/*``, ``/tmp/*``, a last component of wildcards only, a
    ``..``); None when it is not."""
    last = pattern.rstrip("/").rsplit("/", 1)[-1]
    if ".." in pattern.split("/") or not last.strip("*?"):
        return (
            f"tmp_files pattern {pattern!r} is too broad: its last component must hold a literal part (e.g. "
            "/tmp/quantum_*), never only wildcards, and no '..'"
        )
    return None


class ErrorLog(Named):
    """Log files whose lines matching ``match`` in the last ``window`` must stay under ``max_lines`` (QP-03)."""

    paths: list[AbsolutePath] = Field(min_length=1, description="absolute files or globs")
    host: Name | None = None
    match: str = Field(default=r"\bERROR\b", description="regular expression of an error line")
    window: Duration = timedelta(hours=24)
    max_lines: int = Field(default=0, ge=0, le=10**9, description="error lines allowed in the window")

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"match {value!r} is not a regular expression: {err}") from None
        return value


class Lifecycle(Model):
    """What the runbooks clean up, declared so the checks can prove it was (``pytest -m maintenance``)."""

    job_tables: list[JobTable] = Field(default_factory=list)
    temp_tables: list[TempTables] = Field(default_factory=list)
    personal_data: list[PersonalData] = Field(default_factory=list)
    log_dirs: list[LogDirectory] = Field(default_factory=list)
    archives: list[ArchiveLocation] = Field(default_factory=list)
    tmp_files: list[TmpFiles] = Field(default_factory=list)
    error_logs: list[ErrorLog] = Field(default_factory=list)

    def hosts(self) -> set[str]:
        """The profile hosts the file parts name."""
        parts: list[LogDirectory | ArchiveLocation | TmpFiles | ErrorLog] = [
            *self.log_dirs,
            *self.archives,
            *self.tmp_files,
            *self.error_logs,
        ]
        return {p.host for p in parts if p.host is not None}

    def databases(self) -> set[str]:
        parts: list[JobTable | TempTables | PersonalData] = [*self.job_tables, *self.temp_tables, *self.personal_data]
        return {p.database for p in parts}


__all__ = [
    "ArchiveLocation",
    "ErrorLog",
    "JobTable",
    "KeyQuery",
    "Lifecycle",
    "LogDirectory",
    "PersonalData",
    "PostgresMaintenance",
    "RedisMaintenance",
    "TempTables",
    "TmpFiles",
    "temp_pattern_problem",
    "tmp_glob_problem",
]
