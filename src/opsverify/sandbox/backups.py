"""The runbooks' backup jobs, run for real and back-dated into a daily series.

Each file is made now by the runbook's own command (``pg_dump | gzip``, ``pg_dump -Fc``,
``pg_dump -t``, the RDB after BGSAVE, ``kubectl get ... -o yaml``-shaped Lists, ``tar -czf``) or,
for roles and grants, by ``pg_dumpall --globals-only``, then named by and ``os.utime``-d to the
time it stands for: the newest one hour ago, one a day before that. So the series looks like cron
ran it for 30 (or 7, or 3) days.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml

from opsverify.errors import SandboxError
from opsverify.facts.database import data_facts
from opsverify.facts.manifest import write_manifest
from opsverify.facts.redis import redis_facts
from opsverify.localserver.postgres import SUPERUSER
from opsverify.localserver.redis import RedisServer
from opsverify.pgtools import clean_env, pg_tool
from opsverify.sandbox import appfiles
from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.state import Layout

DAY = 86400.0
NEWEST_AGE = 1800.0  # the newest of each series is half an hour old: inside the 1h database RPO
DUMP_TIMEOUT = 60.0
MANIFEST_CHECKSUM_ROWS = 100_000


@dataclass(frozen=True)
class Series:
    """One backup series as the profile declares it."""

    name: str
    kind: str
    subdir: str
    pattern: str
    days: int
    database: str | None = None
    retention: str | None = None
    tables: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    offsite: str | None = None  # s3://bucket/prefix/ the job uploads each file to (QP-18, QP-21)


PF_TABLES = ("models", "simulations")
QP_TABLES = ("users", "optimization_jobs")
SERIES = (
    Series("pf-postgres-daily", "postgres", "postgres", "backup_*.sql.gz", 30, "photonic_foundry", "30d", PF_TABLES),
    Series("pf-postgres-custom", "postgres", "postgres", "backup_*.dump", 3, "photonic_foundry", None, PF_TABLES),
    Series("pf-simulations-table", "postgres", "postgres", "simulations_backup_*.sql", 3, "photonic_foundry",
           None, ("simulations",)),
    Series("qp-database-daily", "postgres", "database", "quantum_planner_*.sql.gz", 7, "quantum_planner", "7d",
           QP_TABLES, offsite="s3://qp-backups/database/"),
    Series("pg-globals", "globals", "globals", "globals_*.sql", 3, "photonic_foundry"),
    Series("redis-rdb", "redis", "redis", "redis_backup_*.rdb", 3),
    Series("k8s-configmaps", "config", "config", "configmaps_backup_*.yaml", 3, kinds=("ConfigMap",)),
    Series("k8s-deployments", "config", "config", "deployments_backup_*.yaml", 3, kinds=("Deployment",)),
    Series("k8s-secrets", "config", "config", "secrets_backup_*.yaml", 3, kinds=("Secret",)),
    Series("models-archive", "archive", "archives", "models_backup_*.tar.gz", 3, offsite="s3://pf-backups/models/"),
    Series("results-archive", "archive", "archives", "results_backup_*.tar.gz", 3, offsite="s3://pf-backups/results/"),
    Series("env-archive", "config", "archives", "env_backup_*.tar.gz", 3),  # PF-23: `tar -czf env_backup… .env* …`
)


def _stamp(when: float, with_time: bool) -> str:
    return time.strftime("%Y%m%d_%H%M%S" if with_time else "%Y%m%d", time.localtime(when))


def _finish(tmp: Path, target: Path, when: float, mode: int = 0o644) -> None:
    tmp.chmod(mode)
    tmp.replace(target)
    os.utime(target, (when, when))


class Dumper:
    """``pg_dump`` over TCP as the superuser, the password in ``PGPASSWORD``."""

    def __init__(self, pg: Postgres) -> None:
        self.binary = pg_tool("pg_dump", pg.major())
        self.pg = pg
        self.env = clean_env(PGPASSWORD=pg.password, PGCONNECT_TIMEOUT="10")

    def args(self, dbname: str, *extra: str) -> list[str]:
        return [self.binary, "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", SUPERUSER, "-d", dbname, *extra]

    def to_file(self, target: Path, when: float, dbname: str, *extra: str) -> None:
        """``pg_dump [extra] -f target``."""
        tmp = target.with_name(target.name + ".part")
        try:
            done = subprocess.run(
                [*self.args(dbname, *extra), "-f", str(tmp)],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=DUMP_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise SandboxError("pg_dump is not installed: run `sudo apt-get install postgresql-client-15`") from None
        except subprocess.TimeoutExpired:
            raise SandboxError(f"pg_dump of {dbname} took over {DUMP_TIMEOUT:g}s: see the PostgreSQL log") from None
        if done.returncode != 0:
            raise SandboxError(f"pg_dump of {dbname} failed ({done.stderr.strip()}): see the PostgreSQL log")
        _finish(tmp, target, when)

    def globals_only(self, target: Path, when: float) -> None:
        """``pg_dumpall --globals-only -f target``: roles (with their password hashes, so 0600) and tablespaces."""
        tmp = target.with_name(target.name + ".part")
        args = [pg_tool("pg_dumpall", self.pg.major()), "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", SUPERUSER]
        try:
            done = subprocess.run(
                [*args, "--globals-only", "-f", str(tmp)], env=self.env, capture_output=True, text=True,
                timeout=DUMP_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(f"pg_dumpall took over {DUMP_TIMEOUT:g}s: see the PostgreSQL log") from None
        if done.returncode != 0:
            raise SandboxError(f"pg_dumpall --globals-only failed ({done.stderr.strip()}): see the PostgreSQL log")
        _finish(tmp, target, when, mode=0o600)

    def gzipped(self, target: Path, when: float, dbname: str) -> None:
        """``pg_dump | gzip > target``, streamed in chunks."""
        tmp = target.with_name(target.name + ".part")
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                self.args(dbname), env=self.env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
            )
            timer = threading.Timer(DUMP_TIMEOUT, proc.kill)
            timer.start()
            try:
                assert proc.stdout is not None
                with (
                    tmp.open("wb") as raw,
                    gzip.GzipFile(filename=target.stem, mode="wb", fileobj=raw, mtime=int(when)) as out,
                ):
                    while chunk := proc.stdout.read(1 << 16):
                        out.write(chunk)
                code = proc.wait(timeout=DUMP_TIMEOUT)
            finally:
                timer.cancel()
            err.seek(0)
            if code != 0:
                tmp.unlink(missing_ok=True)
                detail = err.read().decode(errors="replace").strip() or f"killed after {DUMP_TIMEOUT:g}s"
                raise SandboxError(f"pg_dump of {dbname} failed ({detail}): see the PostgreSQL log")
        _finish(tmp, target, when)


def _write_yaml(target: Path, when: float, data: object, mode: int = 0o644) -> None:
    tmp = target.with_name(target.name + ".part")
    tmp.touch(mode=0o600)
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    _finish(tmp, target, when, mode)


def _tar(target: Path, when: float, root: Path, members: list[str], mode: int = 0o644) -> None:
    tmp = target.with_name(target.name + ".part")
    tmp.touch(mode=0o600)
    with tarfile.open(tmp, "w:gz") as tar:
        for member in members:
            tar.add(root / member, arcname=member)
    _finish(tmp, target, when, mode)


def _write_manifests(pg: Postgres, redis_server: RedisServer, root: Path) -> None:
    """What each full dump and RDB holds, as the job saw it (row counts, checksums; Redis keys)."""
    dumps = {
        "photonic_foundry": [*(root / "postgres").glob("backup_*.sql.gz"), *(root / "postgres").glob("backup_*.dump")],
        "quantum_planner": list((root / "database").glob("quantum_planner_*.sql.gz")),
    }
    for dbname, files in dumps.items():
        with pg.connect(dbname) as conn:
            facts = data_facts(conn, MANIFEST_CHECKSUM_ROWS)
        for path in files:
            write_manifest(path, facts)
    keys = redis_facts(redis_server.client())
    for path in (root / "redis").glob("redis_backup_*.rdb"):
        write_manifest(path, keys.to_json())


def make_backups(
    layout: Layout, pg: Postgres, redis_server: RedisServer, rdb: Path, ports: dict[str, int], now: float
) -> int:
    """Run every series' job for its days (dumps four at a time), with manifests; the number of backups written."""
    root = layout.backups
    for sub in {s.subdir for s in SERIES}:
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "config").chmod(0o750)
    dump = Dumper(pg)
    pf = layout.app / "photonic-foundry"
    jobs: list[Callable[[], None]] = []

    def at(day: int) -> float:
        return now - NEWEST_AGE - day * DAY

    for w in map(at, range(30)):
        jobs.append(
            partial(dump.gzipped, root / "postgres" / f"backup_{_stamp(w, True)}.sql.gz", w, "photonic_foundry")
        )
    for w in map(at, range(7)):
        target = root / "database" / f"quantum_planner_{_stamp(w, True)}.sql.gz"
        jobs.append(partial(dump.gzipped, target, w, "quantum_planner"))
    for w in map(at, range(3)):
        jobs.append(
            partial(dump.to_file, root / "postgres" / f"backup_{_stamp(w, False)}.dump", w, "photonic_foundry", "-Fc")
        )
    for w in map(at, range(3)):
        jobs.append(partial(dump.globals_only, root / "globals" / f"globals_{_stamp(w, True)}.sql", w))
    for w in map(at, range(3)):
        target = root / "postgres" / f"simulations_backup_{_stamp(w, False)}.sql"
        jobs.append(partial(dump.to_file, target, w, "photonic_foundry", "-t", "simulations"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result(timeout=DUMP_TIMEOUT * 2)
    for day in range(3):
        w, date = at(day), _stamp(at(day), False)
        rdb_copy = root / "redis" / f"redis_backup_{date}.rdb"
        shutil.copy2(rdb, rdb_copy)
        os.utime(rdb_copy, (w, w))
        _write_yaml(root / "config" / f"configmaps_backup_{date}.yaml", w, appfiles.configmaps(ports))
        _write_yaml(root / "config" / f"deployments_backup_{date}.yaml", w, appfiles.deployments())
        _write_yaml(root / "config" / f"secrets_backup_{date}.yaml", w, appfiles.secrets_list(), mode=0o600)
        _tar(root / "archives" / f"models_backup_{date}.tar.gz", w, pf, ["models"])
        _tar(root / "archives" / f"results_backup_{date}.tar.gz", w, pf, ["results"])
        env = [".env", "docker-compose.yml", "Dockerfile"]  # .env holds secrets: owner-only, like the Secret export
        _tar(root / "archives" / f"env_backup_{date}.tar.gz", w, pf, env, mode=0o600)
    _write_manifests(pg, redis_server, root)
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.endswith(".manifest.json"))
