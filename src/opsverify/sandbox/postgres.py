"""PostgreSQL 15 of the sandbox: initdb, start and stop with pg_ctl, the ``opsverify`` role.

As root the server runs as the ``postgres`` user (``runuser -u postgres --``), so its data dir
must be owned by it and reachable; when ``postgres`` cannot traverse the state dir (say it is
under ``/root``) the data lives in ``/tmp/opsverify-pg-<hash of the state dir>/`` instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opsverify.errors import SandboxError
from opsverify.sandbox.net import LOOPBACK, wait_port_closed
from opsverify.sandbox.process import cmdline, pid_alive, run, wait_gone
from opsverify.sandbox.state import Layout

if TYPE_CHECKING:
    import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
CHECK_ROLE = "opsverify"
REPLICATION_ROLE = "opsverify_replicator"
DATABASES = ("photonic_foundry", "quantum_planner")
INSTALL = "PostgreSQL 15 is not installed: run `sudo apt-get install postgresql-15` (or `make setup`)"


def _binary(name: str) -> str:
    path = PG_BIN / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise SandboxError(INSTALL)
    return found


def choose_base(layout: Layout) -> tuple[Path, bool]:
    """Where PostgreSQL keeps data, socket and log, and whether it runs as the ``postgres`` user."""
    if os.geteuid() != 0:
        return layout.default_pg_base(), False
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise SandboxError(f"there is no `{SUPERUSER}` user to run PostgreSQL as: {INSTALL}") from None
    test = subprocess.run(
        ["runuser", "-u", SUPERUSER, "--", "test", "-x", str(layout.root)],
        timeout=10,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return (layout.default_pg_base() if test.returncode == 0 else layout.tmp_pg_base()), True


@dataclass(frozen=True)
class Postgres:
    """One sandbox cluster under ``base`` (``data/``, ``run/`` for the socket, ``postgres.log``)."""

    base: Path
    as_postgres: bool
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def archive(self) -> Path:
        """Where ``archive_command`` copies finished WAL segments (PF-20)."""
        return self.base / "wal-archive"

    def _run(self, args: list[str], what: str, timeout: float = 60, env: dict[str, str] | None = None) -> str:
        prefix = ["runuser", "-u", SUPERUSER, "--"] if self.as_postgres else []
        return run([*prefix, *args], what, timeout=timeout, cwd=self.base, env=env)

    def _own(self, *paths: Path) -> None:
        if self.as_postgres:
            user = pwd.getpwnam(SUPERUSER)
            for path in paths:
                os.chown(path, user.pw_uid, user.pw_gid)

    def init(self) -> None:
        """``initdb`` with SCRAM auth and the superuser password, then the sandbox's settings."""
        for sub in (self.base, self.base / "run", self.archive):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own(sub)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        try:
            self._run(
                [
                    _binary("initdb"),
                    "-D",
                    str(self.data),
                    "--auth=scram-sha-256",
                    f"--username={SUPERUSER}",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                "initdb",
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {
            "listen_addresses": f"'{LOOPBACK}'",
            "unix_socket_directories": f"'{self.base / 'run'}'",
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            "log_min_duration_statement": "1000",
            "max_connections": "50",
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'test ! -f {self.archive}/%f && cp %p {self.archive}/%f'",
            "archive_timeout": "300",
            "max_wal_senders": "10",
            "hot_standby": "on",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# opsverify sandbox\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

    @property
    def exists(self) -> bool:
        """Whether the cluster's data dir is there (a reboot may have emptied ``/tmp``)."""
        return (self.data / "PG_VERSION").is_file()

    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and "postgres" in cmdline(pid) else None

    def start(self) -> None:
        """``pg_ctl start -w -t 30`` on ``127.0.0.1:port``."""
        log = self.base / "postgres.log"
        self._run(
            [
                _binary("pg_ctl"),
                "start",
                "-D",
                str(self.data),
                "-l",
                str(log),
                "-w",
                "-t",
                "30",
                "-o",
                f"-p {self.port}",
            ],
            f"starting PostgreSQL (log: {log})",
            timeout=45,
        )

    def stop(self) -> None:
        """``pg_ctl stop -m fast -w -t 30``; then the postmaster and its port are verified gone."""
        pid = self.pid()
        if pid is not None:
            self._run(
                [_binary("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30"],
                "stopping PostgreSQL",
                timeout=45,
            )
            if not wait_gone(pid, 10):
                raise SandboxError(f"PostgreSQL (pid {pid}) is still running after pg_ctl stop: kill it by hand")
        if not wait_port_closed(LOOPBACK, self.port, 10):
            raise SandboxError(f"port {self.port} of PostgreSQL is still open after stop: see `ss -ltnp`")

    @contextmanager
    def connect(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """An autocommit superuser session over TCP."""
        import psycopg

        try:
            conn = psycopg.connect(
                host=LOOPBACK,
                port=self.port,
                user=SUPERUSER,
                password=self.password,
                dbname=dbname,
                connect_timeout=10,
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise SandboxError(
                f"cannot connect to the sandbox PostgreSQL ({exc}): check {self.base}/postgres.log"
            ) from None
        with conn:
            yield conn

    def create_role_and_databases(self, check_password: str, replication_password: str) -> None:
        """The read-only ``opsverify`` role, the replication role and the two empty databases."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute("SET pg_stat_statements.track_utility = off")  # keeps the password out of its table
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(CHECK_ROLE), sql.Literal(check_password)
                )
            )
            conn.execute(sql.SQL("GRANT pg_monitor, pg_read_all_data TO {}").format(sql.Identifier(CHECK_ROLE)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                    sql.Identifier(REPLICATION_ROLE), sql.Literal(replication_password)
                )
            )
            for name in DATABASES:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


    def basebackup_from(self, host: str, port: int, user: str, password: str, timeout: float = 1800) -> None:
        """Make this cluster a streaming standby: ``pg_basebackup -R -X stream`` from ``host:port`` (QP-15).

        The password travels in ``PGPASSWORD`` (never on a command line). The copied configuration is
        the primary's (an empty one when it keeps it elsewhere, as Debian does); this cluster's socket
        dir, loopback address and ``archive_mode = off`` are appended to ``postgresql.auto.conf``.
        """
        from psycopg.conninfo import make_conninfo

        for sub in (self.base, self.base / "run"):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own(sub)
        conninfo = make_conninfo(host=host, port=port, user=user, connect_timeout=10)
        options = ["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]
        self._run(
            [_binary("pg_basebackup"), "-d", conninfo, "-D", str(self.data), *options],
            "pg_basebackup of the standby",
            timeout=timeout,
            env={**os.environ, "PGPASSWORD": password},
        )
        conf = self.data / "postgresql.conf"
        if not conf.exists():
            conf.touch(mode=0o600)
            self._own(conf)
        local = {"unix_socket_directories": f"'{self.base / 'run'}'", "listen_addresses": f"'{LOOPBACK}'"}
        local["archive_mode"] = "off"
        auto = self.data / "postgresql.auto.conf"
        with auto.open("a") as out:
            out.write("".join(f"{key} = {value}\n" for key, value in local.items()))

    def promote(self) -> None:
        """``pg_ctl promote -w``: the standby leaves recovery and starts a new timeline."""
        self._run([_binary("pg_ctl"), "promote", "-D", str(self.data), "-w", "-t", "30"], "promoting", timeout=45)


def remove_base(base: Path) -> None:
    """Delete a cluster's directory (it must be stopped)."""
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        raise SandboxError(f"cannot delete {base}: remove it by hand")
