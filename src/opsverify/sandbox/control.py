"""``up``, ``down`` and ``status`` of the embedded sandbox.

A sandbox whose data an older opsverify seeded (``state.seed`` below ``SEED_VERSION``) is recreated
by ``up``: the checks of this version read tables and files the old seed never made.

``down`` stops every server and keeps the data: the next ``up`` restarts them on the same ports
(a new port only when another program took the old one) without seeding again, in about a
second. ``down(purge=True)`` also deletes the state dir and PostgreSQL's ``/tmp`` data dir.
A first ``up`` that fails half-way stops what it started; the next ``up`` starts from scratch, as
it does when PostgreSQL's data dir has gone (``/tmp`` emptied by a reboot).
"""

from __future__ import annotations

import shutil
import time
from contextlib import suppress
from pathlib import Path

from opsverify.errors import LocalServerError, SandboxError
from opsverify.localserver.net import LOOPBACK, free_port, port_is_free, wait_port_closed
from opsverify.localserver.postgres import Primary
from opsverify.localserver.process import pid_alive
from opsverify.localserver.redis import RedisServer, read_pid, start_redis
from opsverify.sandbox import apps, scheduler, upkeep
from opsverify.sandbox.appfiles import create_app_files
from opsverify.sandbox.backups import make_backups
from opsverify.sandbox.drdocument import write_dr_document
from opsverify.sandbox.hostsecurity import secure_app_files
from opsverify.sandbox.logfiles import create_lifecycle_files
from opsverify.sandbox.manifests import write_manifests
from opsverify.sandbox.offsite import sync_offsite
from opsverify.sandbox.postgres import REPLICATION_ROLE, Postgres, choose_base, remove_base
from opsverify.sandbox.profile import write_profile
from opsverify.sandbox.redis import MEMORY_LIMIT, SAVE_RULES, app_user_config, bgsave, seed_redis
from opsverify.sandbox.scanners import create_scanner_evidence
from opsverify.sandbox.seed import seed_databases
from opsverify.sandbox.state import (
    COMPONENTS,
    SEED_VERSION,
    SPAWNED,
    Layout,
    State,
    ensure_secret,
    load_state,
    save_state,
)
from opsverify.sandbox.status import ComponentStatus, SandboxStatus
from opsverify.sandbox.tls import create_tls


def _postgres(layout: Layout, state: State) -> Postgres:
    return Postgres(
        Path(state.pg_base), state.pg_as_postgres, state.ports["postgres"], ensure_secret(layout, "pg_superuser")
    )


postgres_of = _postgres  # the scheduler's jobs reach PostgreSQL as ``up`` does


def _replica(layout: Layout, state: State) -> Postgres:
    """The streaming standby of the sandbox's PostgreSQL (QP-15), beside it under the same base."""
    base = Path(state.pg_base) / "replica"
    superuser, replicator = ensure_secret(layout, "pg_superuser"), ensure_secret(layout, "pg_replicator")
    return Postgres(base, state.pg_as_postgres, state.ports["replica"], superuser, standby_password=replicator)


def _start_replica(layout: Layout, state: State) -> None:
    replica = _replica(layout, state)
    if not replica.exists:
        password = ensure_secret(layout, "pg_replicator")
        primary = Primary(LOOPBACK, state.ports["postgres"], REPLICATION_ROLE, password)
        replica.basebackup_from(primary, wal_archive=_postgres(layout, state).archive)
    replica.start()


def _fresh_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    for name in COMPONENTS:
        while (port := free_port()) in ports.values():
            pass
        ports[name] = port
    return ports


def _pids(layout: Layout, state: State) -> dict[str, int | None]:
    pids: dict[str, int | None] = {
        "postgres": _postgres(layout, state).pid(),
        "replica": _replica(layout, state).pid(),
        "redis": read_pid(layout.redis),
    }
    pids.update({name: apps.app_pid(layout, name, state.ports[name]) for name in SPAWNED})
    return pids


def _start_redis(layout: Layout, state: State) -> RedisServer:
    """The sandbox Redis: the default user passworded (requirepass), an ACL application user, loopback only, a
    memory ceiling (maxmemory, noeviction)."""
    extra = app_user_config(ensure_secret(layout, "redis_app")) + MEMORY_LIMIT
    return start_redis(layout.redis, state.ports["redis"], ensure_secret(layout, "redis"), save=SAVE_RULES, extra=extra)


def _create(layout: Layout) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    base, as_postgres = choose_base(layout)
    state = State(ports=_fresh_ports(), pg_base=str(base), pg_as_postgres=as_postgres, created=time.time(),
                  seed=SEED_VERSION)
    stale = _postgres(layout, state)
    if (stale.data / "postmaster.pid").exists():
        stale.stop()
    remove_base(base)
    save_state(layout, state)
    try:
        pg = _postgres(layout, state)
        tls = create_tls(layout.tls)  # PostgreSQL serves its server certificate from the start
        pg.init(tls)
        pg.start()
        pg.create_role_and_databases(ensure_secret(layout, "pg_opsverify"), ensure_secret(layout, "pg_replicator"))
        pg.grant_security_reads()
        pg.create_backup_role(ensure_secret(layout, "pg_backup"))
        seed_databases(pg)
        upkeep.mark_vacuumed(pg)  # the seed's VACUUM (ANALYZE): the scheduler's daily one follows a day later
        server = _start_redis(layout, state)
        seed_redis(server)
        rdb = bgsave(server)
        create_app_files(layout, state.ports)
        secure_app_files(layout)
        make_backups(layout, pg, server, rdb, state.ports, time.time())
        pg.take_base_backup()  # PF-20: what point-in-time recovery replays the WAL archive onto
        _start_replica(layout, state)
        for name in SPAWNED:
            apps.spawn_app(layout, name, state.ports[name])
        sync_offsite(layout, state.ports["s3"], time.time())
        create_scanner_evidence(layout)  # the team's CI: a real bandit report and the app's lock file
        create_lifecycle_files(layout)  # logs, rotated logs, job logs and archives, a temporary file (issue 11)
        write_profile(layout, state.ports)
        scheduler.spawn_scheduler(layout)
    except BaseException:
        with suppress(LocalServerError):  # the first error is the one to report
            _stop(layout, state)
        raise
    state.ready = True
    save_state(layout, state)


def _restart(layout: Layout, state: State) -> None:
    pids = _pids(layout, state)
    for name in COMPONENTS:
        if pids[name] is None and not port_is_free(state.ports[name]):
            state.ports[name] = free_port()  # another program took the old port
    save_state(layout, state)
    if pids["postgres"] is None:
        _postgres(layout, state).start()
    if not _postgres(layout, state).base_backups.is_dir():  # a sandbox made before it took one
        _postgres(layout, state).take_base_backup()
    if pids["replica"] is None:
        _start_replica(layout, state)
    if pids["redis"] is None:
        _start_redis(layout, state)
    for name in SPAWNED:
        if pids[name] is None:
            apps.spawn_app(layout, name, state.ports[name])
    if pids["s3"] is None:  # the S3 server keeps objects in memory: upload the copies again
        sync_offsite(layout, state.ports["s3"], time.time())
    write_profile(layout, state.ports)
    if scheduler.scheduler_pid(layout) is None:
        scheduler.spawn_scheduler(layout)  # its first tick catches up what fell due while it was down


def up(state_dir: Path) -> SandboxStatus:
    """Start the sandbox: create, seed, back up and profile it the first time; restart what stopped."""
    layout = Layout(state_dir.resolve())
    state = load_state(layout)
    if state is not None and not (state.ready and _postgres(layout, state).exists):
        _teardown(layout, state, purge=True)  # a first `up` that did not finish, or data that is gone
        state = None
    if state is not None and state.seed < SEED_VERSION:  # data an older opsverify made: what checks read is missing
        _teardown(layout, state, purge=True)
        state = None
    if state is None:
        _create(layout)
    else:
        _restart(layout, state)
    write_manifests(layout)  # the Kubernetes manifests the security checks read (kubernetes.manifests)
    write_dr_document(layout)  # QP-16: the DR document, reviewed today
    return status(layout.root)


def _stop(layout: Layout, state: State) -> list[str]:
    """Stop every component; what is left behind (processes, open ports), as phrases."""
    problems: list[str] = []
    try:  # first, so no job starts against a server that is stopping
        cron = scheduler.stop_scheduler(layout)
    except LocalServerError as err:
        problems.append(str(err))
    else:
        if cron is not None and pid_alive(cron):
            problems.append(f"backup scheduler process {cron} still runs")
    pids = _pids(layout, state)
    for name in SPAWNED:
        try:
            apps.stop_app(layout, name, state.ports[name])
        except LocalServerError as err:
            problems.append(str(err))
    redis_pid = pids["redis"]
    try:
        if redis_pid is not None:
            RedisServer(layout.redis, state.ports["redis"], None, redis_pid).stop(timeout=10)
        _replica(layout, state).stop()
        _postgres(layout, state).stop()
    except LocalServerError as err:
        problems.append(str(err))
    for name, pid in pids.items():
        if pid is not None and pid_alive(pid):
            problems.append(f"{name} process {pid} still runs")
        if pid is not None and not wait_port_closed(LOOPBACK, state.ports[name], 5):
            problems.append(f"{name} port {state.ports[name]} is still open")
    return problems


def _teardown(layout: Layout, state: State, purge: bool) -> None:
    problems = _stop(layout, state)
    if problems:
        raise SandboxError(f"sandbox down left {'; '.join(problems)}: stop those by hand (see `ss -ltnp`)")
    if purge:
        base = Path(state.pg_base)
        if base.exists() and layout.root not in base.parents:
            remove_base(base)
        shutil.rmtree(layout.root, ignore_errors=True)
        if layout.root.exists():
            raise SandboxError(f"cannot delete {layout.root}: remove it by hand")


def down(state_dir: Path, purge: bool = False) -> None:
    """Stop every component and verify no process and no port is left; ``purge`` also deletes the data."""
    layout = Layout(state_dir.resolve())
    state = load_state(layout)
    if state is None:
        if purge and layout.root.exists():
            shutil.rmtree(layout.root, ignore_errors=True)
        return
    _teardown(layout, state, purge)


def status(state_dir: Path) -> SandboxStatus:
    """What runs where; a missing state dir is reported as not created."""
    layout = Layout(state_dir.resolve())
    state = load_state(layout)
    if state is None:
        return SandboxStatus(layout.root, layout.profile, created=False)
    pids = _pids(layout, state)
    ports = state.ports
    addresses = {name: f"{LOOPBACK}:{ports[name]}" for name in ("postgres", "replica", "redis")}
    addresses.update({name: apps.url(name, ports[name]) for name in SPAWNED})
    components = [ComponentStatus(name, pids[name] is not None, addresses[name], pids[name]) for name in COMPONENTS]
    cron = scheduler.scheduler_pid(layout)
    every = f"backup jobs, tick {scheduler.TICK:g}s: {layout.logs / 'backup-jobs.log'}"
    components.append(ComponentStatus(scheduler.NAME, cron is not None, every, cron))
    return SandboxStatus(layout.root, layout.profile, components)
