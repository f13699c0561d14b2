"""PostgreSQL of the sandbox: a local cluster with the sandbox's settings and the ``opsverify`` role.

As root the server runs as the ``postgres`` user, so its data dir must be owned by it and
reachable; when ``postgres`` cannot traverse the state dir (say it is under ``/root``) the data
lives in ``/tmp/opsverify-pg-<hash of the state dir>/`` instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from opsverify.errors import SandboxError
from opsverify.localserver.postgres import SUPERUSER, Cluster
from opsverify.sandbox.state import Layout
from opsverify.sandbox.tls import TlsFiles

CHECK_ROLE = "opsverify"
REPLICATION_ROLE = "opsverify_replicator"
BACKUP_ROLE = "opsverify_backup"  # the backup jobs' role (Database.backup_user): reads every table and sequence
DATABASES = ("photonic_foundry", "quantum_planner")
ARCHIVE_DIR, BASE_BACKUPS_DIR = "wal-archive", "base-backups"  # under the cluster's base (PF-20)
INSTALL = "PostgreSQL is not installed: run `sudo apt-get install postgresql-15` (or `make setup`)"


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
class Postgres(Cluster):
    """The sandbox's cluster: WAL archiving into ``wal-archive/``, pg_stat_statements, slow-query logging."""

    @property
    def archive(self) -> Path:
        """Where ``archive_command`` copies finished WAL segments (PF-20)."""
        return self.base / ARCHIVE_DIR

    @property
    def base_backups(self) -> Path:
        """Where ``take_base_backup`` writes, one subdirectory per base backup (PF-20)."""
        return self.base / BASE_BACKUPS_DIR

    def take_base_backup(self) -> Path:
        """``pg_basebackup -Ft -z`` into ``base-backups/base_<UTC time>/`` as the superuser (password in the env)."""
        import time

        target = self.base_backups / time.strftime("base_%Y%m%dT%H%M%SZ", time.gmtime())
        self.make_dirs(self.base_backups)
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D", str(target)]
        tool = self.tool("pg_basebackup")
        options = ["-Ft", "-z", "-X", "fetch", "--checkpoint=fast", "--no-sync"]
        self.run_tool([tool, *args, *options], "pg_basebackup", 600, {"PGPASSWORD": self.password})
        return target

    def init(self, tls: TlsFiles | None, checksums: bool = True) -> None:
        """``initdb --data-checksums``, then the settings a careful team runs with: TLS with the sandbox CA's
        server certificate (copied into the data dir, the key mode 0600 and owned by the server's user),
        connections and disconnections logged, SCRAM only (initdb ``--auth``: no trust rule)."""
        self.make_dirs(self.archive)
        self.initdb(
            {
                "log_connections": "on",
                "log_disconnections": "on",
                "shared_preload_libraries": "'pg_stat_statements'",
                "pg_stat_statements.track": "all",
                "pg_stat_statements.track_utility": "off",  # the backup jobs' COPY is no slow application statement
                "log_min_duration_statement": "1000",
                "max_connections": "50",
                "wal_level": "replica",
                "archive_mode": "on",
                "archive_command": f"'test ! -f {self.archive}/%f && cp %p {self.archive}/%f'",
                "archive_timeout": "300",
                "max_wal_senders": "10",
                "hot_standby": "on",
            },
            checksums=checksums,
        )
        serve_sandbox_tls(self, tls)

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

    def grant_security_reads(self) -> None:
        """Let the monitoring role read what the security checks judge: ``pg_hba_file_rules`` (view and function,
        in each database it checks); the settings it reads through ``pg_monitor``. Not ``pg_authid``: the password
        hash rule is skipped here, naming the grant."""
        for name in DATABASES:
            with self.connect(name) as conn:
                conn.execute(f"GRANT SELECT ON pg_catalog.pg_hba_file_rules TO {CHECK_ROLE}")
                conn.execute(f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO {CHECK_ROLE}")

    def create_backup_role(self, password: str) -> None:
        """The ``opsverify_backup`` role the backup jobs run as: LOGIN with ``pg_read_all_data`` (pg_dump reads every
        table and sequence), nothing else."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute("SET pg_stat_statements.track_utility = off")  # keeps the password out of its table
            role = sql.Identifier(BACKUP_ROLE)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)))
            conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(role))


def remove_base(base: Path) -> None:
    """Delete a cluster's directory (it must be stopped)."""
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        raise SandboxError(f"cannot delete {base}: remove it by hand")


def sandbox_tls(ca_file: Path | None) -> TlsFiles | None:
    """The sandbox's TLS files beside its CA (a profile's ``sslrootcert``): a test cluster on 127.0.0.1 serves the
    same certificate, so the sandbox profile reaches it with ``verify-full`` by changing a port."""
    return TlsFiles.under(ca_file.parent) if ca_file is not None else None


def serve_sandbox_tls(cluster: Cluster, tls: TlsFiles | Path | None) -> None:
    """Let ``cluster`` (after initdb) serve the sandbox's server certificate; ``tls`` may be the CA file beside it."""
    files = sandbox_tls(tls) if isinstance(tls, Path) else tls
    if files is not None:
        cluster.serve_tls(files.cert, files.key)
