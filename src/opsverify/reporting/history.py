"""The run history: every run's evidence appended to a store (SQLite by default, PostgreSQL when declared).

Tables (``table_prefix`` first on PostgreSQL): ``runs`` (one row per run), ``checks`` (one per check of a
run), ``metrics`` (one per numeric measurement) and ``schema`` (the layout's version: a newer one than
this code knows is refused). An append is one transaction, then the retention (``keep``, ``max_runs``)
deletes old runs with their rows. Every statement is bounded: SQLite by its busy timeout and a progress
deadline, PostgreSQL by ``statement_timeout``. The summary's charts, ``opsverify history`` and the growth
checks read ``series``; the controller appends once per run.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opsverify.errors import OpsverifyError
from opsverify.profile.reporting import History, HistoryDatabase
from opsverify.redact import redact_text
from opsverify.reporting.evidence import EvidenceDoc

if TYPE_CHECKING:
    import psycopg

SCHEMA = 1  # the table layout this code reads and writes
TABLES = (
    "CREATE TABLE IF NOT EXISTS {p}schema (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {p}runs (id TEXT PRIMARY KEY, profile TEXT NOT NULL, role TEXT NOT NULL, "
    "started {ts} NOT NULL, finished {ts} NOT NULL, host TEXT NOT NULL, selection TEXT NOT NULL, "
    "exit_status INTEGER, totals TEXT NOT NULL, opsverify TEXT NOT NULL, schema_version TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS {p}runs_started ON {p}runs (profile, started)",
    "CREATE TABLE IF NOT EXISTS {p}checks (run_id TEXT NOT NULL, nodeid TEXT NOT NULL, component TEXT, "
    "outcome TEXT NOT NULL, duration DOUBLE PRECISION NOT NULL, message TEXT NOT NULL, runbook TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS {p}checks_run ON {p}checks (run_id)",
    "CREATE TABLE IF NOT EXISTS {p}metrics (run_id TEXT NOT NULL, nodeid TEXT NOT NULL, component TEXT, "
    "name TEXT NOT NULL, value DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS {p}metrics_name ON {p}metrics (name, run_id)",
)


class HistoryError(OpsverifyError):
    """The store could not be opened, read or written; ``str(err)`` names where, why and the fix."""

    def __init__(self, where: str, reason: str, fix: str) -> None:
        self.where, self.reason, self.fix = where, reason, fix
        super().__init__(f"{where}: {reason}; fix: {fix}")


@dataclass(frozen=True)
class Point:
    """One recorded value of a metric: which run, when (the run's start), which check and component."""

    run_id: str
    time: datetime
    value: float
    nodeid: str
    component: str | None


@dataclass(frozen=True)
class RunRow:
    """One recorded run, as ``opsverify history`` lists it."""

    run_id: str
    started: datetime
    finished: datetime
    profile: str
    role: str
    selection: str
    exit_status: int | None
    totals: dict[str, int] = field(default_factory=dict)


class HistoryStore(Protocol):
    """What every store offers."""

    where: str  # shown to people: the SQLite path, or user@host:port/dbname (never a password)

    def append(self, doc: EvidenceDoc) -> None:
        """Add one run (its checks and metrics), then apply the retention."""

    def runs(self, limit: int = 20, profile: str | None = None) -> list[RunRow]:
        """The newest runs first."""

    def series(
        self, metric: str, *, profile: str | None = None, since: datetime | None = None
    ) -> list[Point]:
        """Every recorded value of ``metric`` (oldest first), over all checks and components."""

    def close(self) -> None: ...


def default_sqlite(reports_root: Path) -> Path:
    """Where the SQLite history lives when the profile names none: beside the run folders."""
    return reports_root / "history.sqlite"


def open_history(
    history: History, reports_root: Path, timeout_s: float, *, connect_timeout_s: float | None = None,
    create: bool = True,
) -> HistoryStore:
    """The declared store (created on first use), bounded by ``timeout_s`` for every statement
    (``connect_timeout_s``, default ``timeout_s``, for reaching a PostgreSQL server); with ``create=False`` a
    missing SQLite file is read as an empty history and not made."""
    if history.postgres is not None:
        return PostgresHistory(history, timeout_s, connect_timeout_s or timeout_s)
    path = history.sqlite or default_sqlite(reports_root)
    if not create and not path.exists():
        return EmptyHistory(str(path))
    return SqliteHistory(path, history, timeout_s)


@dataclass
class EmptyHistory:
    """A SQLite history no run has made yet, read without creating it: nothing is recorded."""

    where: str

    def append(self, doc: EvidenceDoc) -> None:
        raise HistoryError(self.where, "it was opened for reading only", "open it with create=True")

    def runs(self, limit: int = 20, profile: str | None = None) -> list[RunRow]:
        return []

    def series(
        self, metric: str, *, profile: str | None = None, since: datetime | None = None
    ) -> list[Point]:
        return []

    def close(self) -> None:
        pass


def selection_text(doc: EvidenceDoc) -> str:
    """The run's selection as one line: ``-m daily -k x checks/health`` (``(all)`` when nothing was chosen)."""
    s = doc.run.selection
    words = [*(["-m", s.markexpr] if s.markexpr else []), *(["-k", s.keyword] if s.keyword else []), *s.args]
    words += [f"-n {s.workers}"] if s.workers else []
    return " ".join(words) or "(all)"


def _utc(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class _SqlStore:
    """The statements both stores run; subclasses say how a timestamp is stored and how a transaction starts."""

    where: str
    prefix = ""
    mark = "?"

    def __init__(self, history: History) -> None:
        self.keep, self.max_runs = history.keep, history.max_runs

    def _sql(self, text: str) -> str:
        return text.replace("{p}", self.prefix).replace("?", self.mark)

    def _stamp(self, moment: datetime) -> Any:
        return moment.astimezone(UTC).isoformat(timespec="microseconds")

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _transaction(self) -> Any:
        raise NotImplementedError

    def _check_schema(self) -> None:
        found = self._execute("SELECT max(version) FROM {p}schema")[0][0]
        if found is None:
            self._execute("INSERT INTO {p}schema (version) VALUES (?)", (SCHEMA,))
        elif int(found) > SCHEMA:
            from opsverify import __version__

            raise HistoryError(self.where, f"its schema version is {found}, newer than version {SCHEMA} that "
                               f"opsverify {__version__} knows", "upgrade opsverify to the version that wrote it, "
                               "or point reporting.history at another store")

    def append(self, doc: EvidenceDoc) -> None:
        run = doc.run
        with self._transaction():
            self._execute(
                "INSERT INTO {p}runs (id, profile, role, started, finished, host, selection, exit_status, totals, "
                "opsverify, schema_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.id, run.profile, run.role, self._stamp(run.started), self._stamp(run.finished), run.host,
                 selection_text(doc), run.exit_status, json.dumps(run.totals, sort_keys=True), run.opsverify,
                 doc.schema_version),
            )
            self._executemany(
                "INSERT INTO {p}checks (run_id, nodeid, component, outcome, duration, message, runbook) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run.id, c.nodeid, c.component, c.outcome, c.duration_s, c.message, " ".join(c.runbook))
                 for c in doc.checks],
            )
            self._executemany(
                "INSERT INTO {p}metrics (run_id, nodeid, component, name, value) VALUES (?, ?, ?, ?, ?)",
                [(run.id, c.nodeid, c.component, name, value) for c in doc.checks for name, value in c.metrics.items()],
            )
            self._retain(datetime.now(UTC) - self.keep)

    def _retain(self, oldest: datetime) -> None:
        doomed = self._execute("SELECT id FROM {p}runs WHERE started < ?", (self._stamp(oldest),))
        doomed += self._execute("SELECT id FROM {p}runs ORDER BY started DESC, id DESC LIMIT -1 OFFSET ?",
                                (self.max_runs,))  # PostgreSQL: without the LIMIT
        ids = [(i,) for i in sorted({row[0] for row in doomed})]
        for table in ("metrics", "checks"):
            self._executemany(f"DELETE FROM {{p}}{table} WHERE run_id = ?", ids)
        self._executemany("DELETE FROM {p}runs WHERE id = ?", ids)

    def runs(self, limit: int = 20, profile: str | None = None) -> list[RunRow]:
        rows = self._execute(
            "SELECT id, started, finished, profile, role, selection, exit_status, totals FROM {p}runs "
            "WHERE (CAST(? AS TEXT) IS NULL OR profile = ?) ORDER BY started DESC, id DESC LIMIT ?",
            (profile, profile, limit),
        )
        return [RunRow(r[0], _utc(r[1]), _utc(r[2]), r[3], r[4], r[5], r[6], json.loads(r[7])) for r in rows]

    def series(
        self, metric: str, *, profile: str | None = None, since: datetime | None = None
    ) -> list[Point]:
        rows = self._execute(
            "SELECT r.id, r.started, m.value, m.nodeid, m.component FROM {p}metrics m JOIN {p}runs r "
            "ON r.id = m.run_id WHERE m.name = ? AND (CAST(? AS TEXT) IS NULL OR r.profile = ?) AND r.started >= ? "
            "ORDER BY r.started, r.id, m.nodeid",
            (metric, profile, profile, self._stamp(since or datetime(1970, 1, 1, tzinfo=UTC))),
        )
        return [Point(r[0], _utc(r[1]), float(r[2]), r[3], r[4]) for r in rows]


class SqliteHistory(_SqlStore):
    """The history in one SQLite file: a writer waits up to the timeout for another one (busy timeout)."""

    def __init__(self, path: Path, history: History, timeout_s: float) -> None:
        super().__init__(history)
        self.path, self.where, self.timeout_s = path, str(path), timeout_s
        self.deadline = 0.0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
            self.db.set_progress_handler(self._past_deadline, 10_000)
            with self._transaction():
                for statement in TABLES:
                    self._execute(statement.replace("{ts}", "TEXT"))
                self._check_schema()
        except (OSError, sqlite3.Error) as err:
            raise self._error(err) from None

    def _past_deadline(self) -> int:
        return int(time.monotonic() > self.deadline)

    def _error(self, err: BaseException) -> HistoryError:
        reason = f"took longer than its {self.timeout_s:g} s timeout" if "interrupted" in str(err) else (
            str(err) or type(err).__name__)
        if isinstance(err, sqlite3.DatabaseError) and "not a database" in str(err):
            fix = "it is some other file: name a new file in reporting.history.sqlite (or move this one away)"
        elif Path(self.where).is_dir():
            fix = "it is a directory: name a file in it, e.g. history.sqlite, in reporting.history.sqlite"
        else:
            fix = "make the file and its folder writable by this user, or name another file in reporting.history.sqlite"
        return HistoryError(self.where, reason, fix)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.deadline = time.monotonic() + self.timeout_s
        try:
            return self.db.execute(self._sql(sql), params).fetchall()
        except sqlite3.Error as err:
            raise self._error(err) from None

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.deadline = time.monotonic() + self.timeout_s
        try:
            self.db.executemany(self._sql(sql), rows)
        except sqlite3.Error as err:
            raise self._error(err) from None

    def _transaction(self) -> _Transaction:
        return _Transaction(lambda: self._execute("BEGIN IMMEDIATE"), lambda: self._execute("COMMIT"),
                            lambda: self.db.execute("ROLLBACK") if self.db.in_transaction else None)

    def close(self) -> None:
        self.db.close()


class _Transaction:
    def __init__(self, begin: Any, commit: Any, rollback: Any) -> None:
        self.begin, self.commit, self.rollback = begin, commit, rollback

    def __enter__(self) -> None:
        self.begin()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.rollback()


class PostgresHistory(_SqlStore):
    """The history in a PostgreSQL database: connect timeout, ``statement_timeout``, TCP keepalives as every
    opsverify session; appends take an advisory lock so two runs finishing at once both land."""

    mark = "%s"

    def __init__(self, history: History, timeout_s: float, connect_timeout_s: float) -> None:
        super().__init__(history)
        declared = history.postgres
        assert declared is not None
        self.declared, self.prefix = declared, declared.table_prefix
        self.where = f"{declared.user}@{declared.host}:{declared.port}/{declared.dbname}"
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.db = self._connect()
        with self._transaction():
            for statement in TABLES:
                self._execute(statement.replace("{ts}", "TIMESTAMPTZ"))
            self._check_schema()

    def _connect(self) -> psycopg.Connection:
        import psycopg
        from psycopg.conninfo import make_conninfo

        from opsverify.probes.postgres import first_line, tcp_options

        declared: HistoryDatabase = self.declared
        timeout, query = timedelta(seconds=self.connect_timeout_s), timedelta(seconds=self.timeout_s)
        try:
            return psycopg.connect(
                host=declared.host, port=declared.port, dbname=declared.dbname, user=declared.user,
                password=declared.secret(), sslmode=declared.sslmode,
                sslrootcert=str(declared.sslrootcert) if declared.sslrootcert else None,
                connect_timeout=max(1, int(timeout.total_seconds())),
                options=f"-c statement_timeout={int(self.timeout_s * 1000)}", application_name="opsverify history",
                autocommit=True, conninfo=make_conninfo("", **tcp_options(timeout, query)),
            )
        except psycopg.Error as err:
            raise HistoryError(self.where, redact_text(first_line(err)), "check that the server runs and that "
                               "reporting.history.postgres (host, port, dbname, user, password) is right") from None

    def _stamp(self, moment: datetime) -> Any:
        return moment

    def _failed(self, err: BaseException) -> HistoryError:
        import psycopg

        from opsverify.probes.postgres import first_line

        fix = (f"grant {self.declared.user} CREATE on the database's schema and write on the {self.prefix}* tables"
               if isinstance(err, psycopg.errors.InsufficientPrivilege) else
               "check the server's log and that reporting.history.postgres names the right database")
        return HistoryError(self.where, redact_text(first_line(err)), fix)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            cursor = self.db.execute(self._sql(sql).replace("LIMIT -1 ", ""), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []
        except psycopg.Error as err:
            raise self._failed(err) from None

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        import psycopg

        if not rows:
            return
        try:
            with self.db.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)  # type: ignore[arg-type]
        except psycopg.Error as err:
            raise self._failed(err) from None

    def _transaction(self) -> _Transaction:
        def begin() -> None:
            self._execute("BEGIN")
            self._execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"opsverify history {self.prefix}",))

        return _Transaction(begin, lambda: self._execute("COMMIT"), self._rollback)

    def _rollback(self) -> None:
        import psycopg

        with contextlib.suppress(psycopg.Error):  # the session is gone: the server rolled back
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()
