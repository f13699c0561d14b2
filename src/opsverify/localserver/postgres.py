"""A PostgreSQL cluster run here: initdb, start and stop with pg_ctl, a streaming standby, promotion.

Every program comes from ``pgtools`` (newest installed major for a new cluster, the data
directory's own major for an existing one, the primary's for a standby) and runs in
``pgtools.clean_env()``, so no inherited ``PG*`` variable reaches it. As root the server runs as
the ``postgres`` user (``runuser -u postgres --``); its directories must be reachable by that user.

A standby's replication password is never written to disk: ``primary_conninfo`` names no
password and the server gets it through ``PGPASSWORD`` in its environment, which dies with it.
"""

from __future__ import annotations

import os
import pwd
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from opsverify.errors import LocalServerError
from opsverify.localserver.net import LOOPBACK, wait_port_closed
from opsverify.localserver.process import cmdline, pid_alive, run, wait_gone
from opsverify.pgtools import clean_env, pg_tool

if TYPE_CHECKING:
    import psycopg

SUPERUSER = "postgres"


@dataclass(frozen=True)
class Cluster:
    """One cluster under ``base`` (``data/``, ``run/`` for the socket, ``postgres.log``) on ``127.0.0.1:port``."""

    base: Path
    as_postgres: bool
    port: int
    password: str = field(default="", repr=False)  # the superuser's ("" for a copy of another server)
    standby_password: str | None = field(default=None, repr=False)  # the walreceiver's, passed in its environment

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def exists(self) -> bool:
        """Whether the cluster's data dir is there (a reboot may have emptied ``/tmp``)."""
        return (self.data / "PG_VERSION").is_file()

    def major(self) -> int | None:
        """The data directory's major version (``PG_VERSION``), None before initdb."""
        try:
            return int((self.data / "PG_VERSION").read_text().strip())
        except (OSError, ValueError):
            return None

    def tool(self, name: str) -> str:
        return pg_tool(name, self.major())

    def run_tool(self, args: list[str], what: str, timeout: float = 60, env: Mapping[str, str] | None = None) -> str:
        """Run a PostgreSQL program (as ``postgres`` when root) in a clean environment plus ``env``."""
        prefix = ["runuser", "-u", SUPERUSER, "--"] if self.as_postgres else []
        return run([*prefix, *args], what, timeout=timeout, cwd=self.base, env=clean_env(**(env or {})))

    def own(self, *paths: Path) -> None:
        """Give ``paths`` to the ``postgres`` user when the server runs as it."""
        if self.as_postgres:
            user = pwd.getpwnam(SUPERUSER)
            for path in paths:
                os.chown(path, user.pw_uid, user.pw_gid)

    def make_dirs(self, *extra: Path) -> None:
        for sub in (self.base, self.base / "run", *extra):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.own(sub)

    def initdb(self, settings: Mapping[str, str], checksums: bool = False) -> None:
        """``initdb`` with SCRAM auth and the superuser password (through a file removed at once), then ``settings``.

        ``checksums``: ``--data-checksums`` (a page's corruption is detected when it is read)."""
        self.make_dirs()
        pwfile = self.base / "pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.password + "\n")
        self.own(pwfile)
        args = ["-D", str(self.data), "--auth=scram-sha-256", f"--username={SUPERUSER}", f"--pwfile={pwfile}"]
        args += ["--data-checksums"] if checksums else []
        try:
            self.run_tool([pg_tool("initdb"), *args, "--encoding=UTF8", "--no-locale", "--no-sync"], "initdb", 120)
        finally:
            pwfile.unlink(missing_ok=True)
        local = {"listen_addresses": f"'{LOOPBACK}'", "unix_socket_directories": f"'{self.base / 'run'}'"}
        self.append_settings("postgresql.conf", {**local, **settings})

    def serve_tls(self, cert: Path, key: Path) -> None:
        """Serve TLS with ``cert``/``key``: copied into the data dir (the key mode 0600, owned by the server's user,
        as PostgreSQL demands) and named by ``ssl_cert_file``/``ssl_key_file``, so a standby copy keeps them."""
        for source, name in ((cert, "server.crt"), (key, "server.key")):
            target = self.data / name
            target.touch(mode=0o600)
            target.write_bytes(source.read_bytes())
            self.own(target)
        self.append_settings("postgresql.conf", {"ssl": "on", "ssl_cert_file": "'server.crt'",
                                                 "ssl_key_file": "'server.key'"})

    def append_settings(self, conf: str, settings: Mapping[str, str]) -> None:
        path = self.data / conf
        if not path.exists():
            path.touch(mode=0o600)
            self.own(path)
        with path.open("a") as out:
            out.write("\n# opsverify\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))

    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and "postgres" in cmdline(pid) else None

    def start(self) -> None:
        """``pg_ctl start -w -t 30`` on ``127.0.0.1:port`` (a standby gets its password in its environment)."""
        log = self.base / "postgres.log"
        env = {"PGPASSWORD": self.standby_password} if self.standby_password else {}
        args = ["start", "-D", str(self.data), "-l", str(log), "-w", "-t", "30", "-o", f"-p {self.port}"]
        self.run_tool([self.tool("pg_ctl"), *args], f"starting PostgreSQL (log: {log})", timeout=45, env=env)

    def stop(self) -> None:
        """``pg_ctl stop -m fast -w -t 30``; then the postmaster and its port are verified gone."""
        pid = self.pid()
        if pid is not None:
            args = ["stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30"]
            self.run_tool([self.tool("pg_ctl"), *args], "stopping PostgreSQL", timeout=45)
            if not wait_gone(pid, 10):
                raise LocalServerError(f"PostgreSQL (pid {pid}) is still running after pg_ctl stop: kill it by hand")
        if not wait_port_closed(LOOPBACK, self.port, 10):
            raise LocalServerError(f"port {self.port} of PostgreSQL is still open after stop: see `ss -ltnp`")

    @contextmanager
    def connect(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """An autocommit superuser session over TCP."""
        import psycopg

        try:
            conn = psycopg.connect(
                host=LOOPBACK, port=self.port, user=SUPERUSER, password=self.password, dbname=dbname,
                connect_timeout=10, autocommit=True,
            )
        except psycopg.Error as exc:
            msg = f"cannot connect to PostgreSQL on {self.address} ({exc}): see {self.base}/postgres.log"
            raise LocalServerError(msg) from None
        with conn:
            yield conn

    def basebackup_from(self, primary: Primary, timeout: float = 1800, wal_archive: Path | None = None) -> None:
        """Make this cluster a streaming standby of ``primary``: ``pg_basebackup -X stream``, then ``standby.signal``.

        The password travels in ``PGPASSWORD`` (never on a command line, never in a file): the
        ``primary_conninfo`` written here names none, and ``start`` passes ``standby_password``.
        The copied configuration is the primary's (an empty one when it keeps it elsewhere, as
        Debian does); this cluster's socket dir, loopback address and ``archive_mode = off`` follow.
        ``wal_archive``: the primary's WAL archive, readable here: the standby's ``restore_command``
        copies a segment the primary has already recycled from it, so a standby that fell behind
        catches up instead of stopping at "requested WAL segment … has already been removed".
        """
        from psycopg.conninfo import make_conninfo

        self.make_dirs()
        conninfo = make_conninfo(host=primary.host, port=primary.port, user=primary.user, connect_timeout=10)
        options = ["-X", "stream", "--checkpoint=fast", "--no-sync"]
        tool = pg_tool("pg_basebackup", primary.major)
        env = {"PGPASSWORD": primary.password}
        what = "pg_basebackup of the standby"
        self.run_tool([tool, "-d", conninfo, "-D", str(self.data), *options], what, timeout, env)
        (self.data / "standby.signal").touch(mode=0o600)
        self.own(self.data / "standby.signal")
        standby = make_conninfo(conninfo, application_name="opsverify_standby")
        local = {"unix_socket_directories": f"'{self.base / 'run'}'", "listen_addresses": f"'{LOOPBACK}'"}
        self.append_settings("postgresql.conf", {})  # Debian keeps it in /etc: pg_ctl needs one here
        settings = {**local, "archive_mode": "off", "primary_conninfo": _quote(standby)}
        if wal_archive is not None:
            settings["restore_command"] = _quote(f"cp {shlex.quote(str(wal_archive))}/%f %p")
        self.append_settings("postgresql.auto.conf", settings)

    def promote(self) -> None:
        """``pg_ctl promote -w``: the standby leaves recovery and starts a new timeline."""
        self.run_tool([self.tool("pg_ctl"), "promote", "-D", str(self.data), "-w", "-t", "30"], "promoting", 45)


@dataclass(frozen=True)
class Primary:
    """Where a standby copies from and streams from: a REPLICATION role and its password."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    major: int | None = None  # the primary's major version: the copy needs binaries of the same one


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
