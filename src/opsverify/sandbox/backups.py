"""The runbooks' backup jobs, run for real: back-dated into a daily series at creation, then on schedule.

Each file is made by the runbook's own command (``pg_dump | gzip``, ``pg_dump -Fc``,
``pg_dump -t``, the RDB after BGSAVE, ``kubectl get ... -o yaml``-shaped Lists, ``tar -czf``).
At creation ``make_backups`` names and ``os.utime``-s each to the time it stands for: the newest
half an hour ago, one a day before that, so the series looks like cron ran it for 30 (or 7, or 3)
days. From then on the sandbox's scheduler (``scheduler.py``) runs each job at its cadence and
applies the runbook's cleanup, through ``run_job``, ``finish_backup`` and ``cleanup`` below. A new
series is one row of ``SERIES``. Roles and grants are backed up by ``pg_dumpall --globals-only``.
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
from pathlib import Path

import yaml

from opsverify.durations import parse_duration
from opsverify.errors import SandboxError
from opsverify.facts.database import data_facts
from opsverify.facts.manifest import manifest_path, write_manifest
from opsverify.facts.redis import redis_facts
from opsverify.localserver.postgres import SUPERUSER
from opsverify.localserver.redis import RedisServer
from opsverify.pgtools import clean_env, pg_tool
from opsverify.sandbox import appfiles
from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.redis import bgsave
from opsverify.sandbox.state import Layout

DAY = 86400.0
HOUR = 3600.0
NEWEST_AGE = 1800.0  # the newest of each series is half an hour old: inside the 1h database RPO
DUMP_TIMEOUT = 60.0
MANIFEST_CHECKSUM_ROWS = 100_000


Job = Callable[["JobContext", "Series", Path, float], None]


@dataclass(frozen=True)
class Series:
    """One backup series as the profile declares it, and the job that makes one backup of it.

    This table is the one source of truth: ``make_backups`` runs each job ``days`` times back-dated,
    the scheduler runs it every ``every`` seconds and applies the cleanup, the profile declares it.
    A series with a ``retention`` is cleaned as its runbook does (``find -mtime +N -delete``); one
    without keeps its newest ``days`` backups.
    """

    name: str
    kind: str
    subdir: str
    pattern: str  # its ``*`` is the job's date stamp (with the time when ``timed``)
    days: int
    database: str | None = None
    retention: str | None = None
    tables: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    offsite: str | None = None  # s3://bucket/prefix/ the job uploads each file to (QP-18, QP-21)
    job: Job | None = None
    every: float = DAY  # the job's cadence in seconds (cron: daily)
    timed: bool = False  # the name carries the time as well as the date
    manifest: bool = False  # the job writes what the backup holds beside it (rows and checksums, or Redis keys)
    members: tuple[str, ...] = ()  # what an archive job tars, relative to the app dir
    mode: int = 0o644
    scope: str = "full"  # "tables": a pg_dump -t series, not a whole-database dump
    on_demand: bool = False  # the runbook's manual dumps: declared on_demand (no rpo, no schedule)

    def target(self, directory: Path, when: float) -> Path:
        """Where the job run at ``when`` writes: the runbook's name, with the time too when that is taken."""
        path = directory / self.pattern.replace("*", _stamp(when, self.timed))
        if path.exists() or path.with_name(path.name + ".part").exists():
            path = directory / self.pattern.replace("*", _stamp(when, True))
        return path

    def keep_days(self) -> int | None:
        """N of the runbook's cleanup ``find -mtime +N -delete``; None when the series keeps a count."""
        return round(parse_duration(self.retention).total_seconds() / DAY) if self.retention else None


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
        """``pg_dump | gzip > target``, streamed in chunks (gzip's default level 6)."""
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
                    gzip.GzipFile(  # level 6: gzip's own default, as `pg_dump | gzip` writes
                        filename=target.stem, mode="wb", fileobj=raw, mtime=int(when), compresslevel=6
                    ) as out,
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


class JobContext:
    """What the jobs run against: the sandbox's servers, its app files, where the backups go."""

    def __init__(
        self, layout: Layout, pg: Postgres, redis_server: RedisServer, ports: dict[str, int], rdb: Path | None = None
    ) -> None:
        self.layout = layout
        self.pg = pg
        self.redis_server = redis_server
        self.ports = ports
        self.dump = Dumper(pg)
        self._rdb = rdb
        self._facts: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()

    def rdb(self) -> Path:
        """The RDB of one BGSAVE (the one given, else run now, once per context)."""
        with self._lock:
            if self._rdb is None:
                self._rdb = bgsave(self.redis_server)
            return self._rdb

    def facts(self, series: Series) -> dict[str, object]:
        """What a full backup of the series holds now (database rows and checksums, or Redis keys), once per context."""
        key = series.database or series.kind
        if key not in self._facts:
            if series.database:
                with self.pg.connect(series.database) as conn:
                    self._facts[key] = data_facts(conn, MANIFEST_CHECKSUM_ROWS).to_json()
            else:
                self._facts[key] = redis_facts(self.redis_server.client()).to_json()
        return self._facts[key]


def _dump_gzip(ctx: JobContext, series: Series, target: Path, when: float) -> None:
    ctx.dump.gzipped(target, when, str(series.database))


def _dump_custom(ctx: JobContext, series: Series, target: Path, when: float) -> None:
    ctx.dump.to_file(target, when, str(series.database), "-Fc")


def _dump_tables(ctx: JobContext, series: Series, target: Path, when: float) -> None:
    ctx.dump.to_file(target, when, str(series.database), *(a for t in series.tables for a in ("-t", t)))


def _rdb_copy(ctx: JobContext, series: Series, target: Path, when: float) -> None:
    tmp = target.with_name(target.name + ".part")
    shutil.copy2(ctx.rdb(), tmp)
    _finish(tmp, target, when, series.mode)


EXPORTS: dict[str, Callable[[dict[str, int]], object]] = {
    "ConfigMap": appfiles.configmaps,
    "Deployment": lambda ports: appfiles.deployments(),
    "Secret": lambda ports: appfiles.secrets_list(),
}


def _k8s_export(ctx: JobContext, series: Series, target: Path, when: float) -> None:
    _write_yaml(target, when, EXPORTS[series.kinds[0]](ctx.ports), series.mode)


def _archive(ctx: JobContext, series: Series, target: Path, when: float) -> None:
    _tar(target, when, ctx.layout.app / "photonic-foundry", list(series.members), series.mode)


def _globals(ctx: JobContext, series: Series, target: Path, when: float) -> None:
    ctx.dump.globals_only(target, when)


PF_TABLES = ("models", "simulations")
QP_TABLES = ("users", "optimization_jobs")
SERIES = (
    Series("pf-postgres-daily", "postgres", "postgres", "backup_*.sql.gz", 30, "photonic_foundry", "30d", PF_TABLES,
           job=_dump_gzip, timed=True, manifest=True),
    Series("pf-postgres-custom", "postgres", "postgres", "backup_*.dump", 3, "photonic_foundry", None, PF_TABLES,
           job=_dump_custom, manifest=True),
    Series("pf-simulations-table", "postgres", "postgres", "simulations_backup_*.sql", 3, "photonic_foundry",
           None, ("simulations",), job=_dump_tables, scope="tables", on_demand=True),
    Series("qp-database-daily", "postgres", "database", "quantum_planner_*.sql.gz", 7, "quantum_planner", "7d",
           QP_TABLES, offsite="s3://qp-backups/database/", job=_dump_gzip, timed=True, manifest=True),
    Series("pg-globals", "globals", "globals", "globals_*.sql", 3, "photonic_foundry", job=_globals, timed=True),
    # BGSAVE + copy (PF-21) hourly: the cache drill is measured against the full-system RPO (4h, PF-47)
    Series("redis-rdb", "redis", "redis", "redis_backup_*.rdb", 3, job=_rdb_copy, manifest=True, every=HOUR,
           timed=True),
    Series("k8s-configmaps", "config", "config", "configmaps_backup_*.yaml", 3, kinds=("ConfigMap",), job=_k8s_export),
    Series("k8s-deployments", "config", "config", "deployments_backup_*.yaml", 3, kinds=("Deployment",),
           job=_k8s_export),
    Series("k8s-secrets", "config", "config", "secrets_backup_*.yaml", 3, kinds=("Secret",), job=_k8s_export,
           mode=0o600),
    Series("models-archive", "archive", "archives", "models_backup_*.tar.gz", 3, offsite="s3://pf-backups/models/",
           job=_archive, members=("models",)),
    Series("results-archive", "archive", "archives", "results_backup_*.tar.gz", 3, offsite="s3://pf-backups/results/",
           job=_archive, members=("results",)),
    Series("env-archive", "config", "archives", "env_backup_*.tar.gz", 3, job=_archive,  # PF-23: tar of .env*
           members=(".env", "docker-compose.yml", "Dockerfile"), mode=0o600),  # .env holds secrets: owner-only
)


def prepare(layout: Layout) -> None:
    """The backup dirs (``config`` holds secret exports: 0750)."""
    for sub in {s.subdir for s in SERIES}:
        (layout.backups / sub).mkdir(parents=True, exist_ok=True)
    (layout.backups / "config").chmod(0o750)


def run_job(ctx: JobContext, series: Series, when: float) -> Path:
    """Run the series' job once, as at ``when`` (no manifest yet); the backup it wrote."""
    if series.job is None:
        raise SandboxError(f"series {series.name} has no job")
    target = series.target(ctx.layout.backups / series.subdir, when)
    series.job(ctx, series, target, when)
    return target


def finish_backup(ctx: JobContext, series: Series, path: Path) -> None:
    """The job's last step: the manifest of what the backup holds, where the series keeps one."""
    if series.manifest:
        write_manifest(path, ctx.facts(series))


def backups_of(layout: Layout, series: Series) -> list[Path]:
    """The series' finished backups, oldest first (by mtime, as ``find`` and ``ls -t`` see them)."""
    directory = layout.backups / series.subdir
    files = [p for p in directory.glob(series.pattern) if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_mtime)


def cleanup(layout: Layout, series: Series, now: float) -> list[Path]:
    """The runbook's cleanup: ``find -mtime +N -delete`` (whole days, as find counts), else keep the newest
    ``days``; with each backup its manifest, and a ``.part`` a killed job left over a day ago. What it deleted.
    """
    files = backups_of(layout, series)
    keep = series.keep_days()
    if keep is None:
        doomed = files[: max(0, len(files) - series.days)]
    else:
        doomed = [p for p in files if (now - p.stat().st_mtime) // DAY > keep]
    doomed += [
        p for p in (layout.backups / series.subdir).glob(series.pattern + ".part") if now - p.stat().st_mtime > DAY
    ]
    for path in doomed:
        path.unlink(missing_ok=True)
        manifest_path(path).unlink(missing_ok=True)
    return doomed


def make_backups(
    layout: Layout, pg: Postgres, redis_server: RedisServer, rdb: Path, ports: dict[str, int], now: float
) -> int:
    """Run every series' job for its days (four at a time), back-dated a day apart, the newest half an hour
    old, with manifests; the number of backups written."""
    prepare(layout)
    ctx = JobContext(layout, pg, redis_server, ports, rdb)
    runs = [(s, now - NEWEST_AGE - day * s.every) for s in SERIES for day in range(s.days)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [(series, pool.submit(run_job, ctx, series, when)) for series, when in runs]
        made = [(series, future.result(timeout=DUMP_TIMEOUT * 2)) for series, future in futures]
    for series, path in made:
        finish_backup(ctx, series, path)
    return len(made)
