"""``opsverify profile check FILE --connect``: try every declared component once and say what answered.

Each component is opened with the existing probes and clients (``probes/*``, ``backups/catalog``,
``backups/s3``), bounded by the profile's timeouts, several at a time: a database or a replica
connects, authenticates and reads its version (a database with a `backup_user` once more as that role,
the one backup jobs use, and with a `maintenance_user` once more as that one, the maintenance
fixtures'); the restore target also whether its role may create databases; Redis authenticates,
answers PING and ``INFO server``; an HTTP service answers its health path; a dependency is
reachable as its check wants it; a host runs ``hostname`` through testinfra; a backup source lists
its directory (here, over ssh, or the S3 prefix) and counts the files matching its pattern; an
offsite copy lists its prefix. Addresses are shown redacted and no secret is printed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from opsverify.durations import format_duration
from opsverify.probes.outage import REFUSED, UNRESOLVED, UNROUTABLE
from opsverify.profile import BackupSource, Database, Dependency, Host, HttpService, Profile, RedisInstance
from opsverify.profile.model import Offsite
from opsverify.profile.recovery import Replica, RestoreTarget
from opsverify.redact import redact_url, redact_urls

WORKERS = 8


@dataclass(frozen=True)
class Reached:
    """One component tried once: ok with the fact it read, or the one-line error with its fix."""

    component: str
    kind: str
    address: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class _Attempt:
    component: str
    kind: str
    address: str
    run: Callable[[], tuple[bool, str]]


FIXES = (  # words in an error -> what to do about it
    ("password authentication failed", "check the user and its password (or password_file)"),
    ("WRONGPASS", "check the username and password (or password_file)"),
    ("invalid username-password", "check the username and password (or password_file)"),
    ("NOAUTH", "the server wants a password: set password or password_file"),
    ("no password supplied", "set password or password_file"),
    ("no pg_hba.conf entry", "allow this client in the server's pg_hba.conf, or fix host, user or sslmode"),
    ("does not exist", "check the name in the profile"),
    (REFUSED, "check host and port: nothing listens there"),
    ("timeout", "check host, port and firewall"),
    (UNRESOLVED, "check the host name"),
    (UNROUTABLE, "check the host name and the network"),
    ("certificate", "check ca_file (or sslmode) against the server's certificate"),
    ("SSL", "check sslmode and the server's TLS set-up"),
    ("Permission denied", "give the user running opsverify read access, or fix the path"),
    ("InvalidAccessKeyId", "check the S3 credentials (access_key_id / secret_access_key)"),
    ("SignatureDoesNotMatch", "check the S3 secret key"),
    ("NoSuchBucket", "check the bucket in the s3:// URL"),
    ("AccessDenied", "give the S3 credentials s3:ListBucket on the prefix"),
)


def with_fix(error: str) -> str:
    """``error`` with what to do about it, where the error says enough to tell."""
    lowered = error.lower()
    for words, fix in FIXES:
        if words.lower() in lowered:
            return f"{error}: {fix}"
    return error


def _pg_fact(db: Database, profile: Profile, query: str) -> tuple[bool, tuple[object, ...] | str]:
    from opsverify.probes.postgres import Unread, read_only

    t = profile.timeouts
    row = read_only(db, t.connect, t.request, lambda conn: conn.execute(query).fetchone())
    if isinstance(row, Unread):
        return False, with_fix(row.error)
    if row is None:
        return False, "the server returned no row"
    return True, tuple(row)


def _short(version: object) -> str:
    """``15.18 (Debian 15.18-0+deb12u1)`` -> ``15.18``."""
    return str(version).split()[0] if str(version).split() else str(version)


def _database(db: Database, profile: Profile) -> tuple[bool, str]:
    ok, row = _pg_fact(db, profile, "SELECT current_setting('server_version'), current_user, pg_is_in_recovery()")
    if not ok or isinstance(row, str):
        return False, str(row)
    version, user, standby = row
    return True, f"PostgreSQL {_short(version)} as {user}{' (a standby)' if standby else ''}"


def _replica(replica: Replica, profile: Profile) -> tuple[bool, str]:
    ok, row = _pg_fact(replica, profile, "SELECT current_setting('server_version'), current_user, pg_is_in_recovery()")
    if not ok or isinstance(row, str):
        return False, str(row)
    version, user, standby = row
    if not standby:
        return False, (f"PostgreSQL {_short(version)} answers as {user} but is not in recovery, so it is no standby: "
                       "check host and port")
    return True, f"PostgreSQL {_short(version)} as {user}, in recovery (a standby)"


RESTORE_ROLE = (
    "SELECT current_setting('server_version'), current_user, r.rolcreatedb, r.rolsuper "
    "FROM pg_roles r WHERE r.rolname = current_user"
)


def _restore_target(target: RestoreTarget, profile: Profile) -> tuple[bool, str]:
    fields = {k: getattr(target, k) for k in ("name", "host", "port", "dbname", "user", "password", "password_file",
                                              "sslmode", "sslrootcert")}
    ok, row = _pg_fact(Database.model_construct(**fields), profile, RESTORE_ROLE)
    if not ok or isinstance(row, str):
        return False, str(row)
    version, user, createdb, superuser = row
    if not (createdb or superuser):
        return False, (f"PostgreSQL {_short(version)} as {user}, which may not create databases: "
                       f"ALTER ROLE {user} CREATEDB")
    return True, f"PostgreSQL {_short(version)} as {user} ({'superuser' if superuser else 'CREATEDB'})"


def _redis(instance: RedisInstance, profile: Profile) -> tuple[bool, str]:
    import redis

    from opsverify.probes.redis import client, unreachable

    t = profile.timeouts
    conn = client(instance, t.connect, t.request)
    try:
        conn.ping()
        try:
            version = f"Redis {conn.info('server').get('redis_version', '?')}"
        except redis.exceptions.NoPermissionError:
            version = "Redis (INFO refused by its ACL)"
    except redis.RedisError as exc:
        cause = unreachable(exc, t.connect, t.request)
        return False, with_fix(cause or str(exc).splitlines()[0] or type(exc).__name__)
    finally:
        conn.close()
    return True, f"{version}, PING answered"


def _service(service: HttpService, profile: Profile) -> tuple[bool, str]:
    from opsverify.probes.http import probe_health

    health = probe_health(service, profile.timeouts.connect, profile.timeouts.request)
    reply = health.reply
    if not reply.is_answered:
        return False, with_fix(reply.error or "no answer")
    status = f", status {health.body_status}" if health.body_status else ""
    if not reply.is_success:
        return False, f"{service.health_path} answered HTTP {reply.status_code}{status}"
    return True, f"{service.health_path} answered HTTP {reply.status_code}{status}"


def _dependency(dependency: Dependency, profile: Profile) -> tuple[bool, str]:
    from opsverify.probes.network import probe_reachability

    timeout = min(dependency.budget * 5, profile.timeouts.request)
    found = probe_reachability(dependency.url, timeout, dependency.accept_status)
    if not found.is_reachable:
        return False, with_fix(found.error or "unreachable")
    answer = f"HTTP {found.status_code}" if found.status_code is not None else "connected"
    return True, f"{answer} in {format_duration(found.latency)}"


def _host(host: Host, profile: Profile) -> tuple[bool, str]:
    from opsverify.probes.host import command_output, connect, ssh_address
    from opsverify.probes.network import ssh_greeting

    t = profile.timeouts
    sshd = ssh_address(host)
    if sshd is not None:
        greeting = ssh_greeting(sshd[0], sshd[1], t.connect, t.request)
        if not greeting.is_reachable:
            return False, with_fix(f"sshd at {greeting.address}: {greeting.error}")
    try:
        name = command_output(connect(host, t.connect), "hostname").strip()
    except Exception as exc:  # noqa: BLE001 - any backend failure (ssh refused a key, no shell) is the answer
        return False, with_fix(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return True, f"runs commands: hostname {name}"


def _backups(source: BackupSource, profile: Profile) -> tuple[bool, str]:
    from opsverify.backups.catalog import list_backups

    host = next((h for h in profile.hosts if h.name == source.host), None)
    catalog = list_backups(source, profile.timeouts, host)
    if catalog.error is not None:
        return False, with_fix(redact_urls(catalog.error))
    if not catalog.files:
        return False, f"no file matches {source.pattern!r}: check path and pattern"
    newest = catalog.files[0]
    count = len(catalog.files)
    return True, f"{count} {'file matches' if count == 1 else 'files match'} {source.pattern}, newest {newest.name}"


def _offsite(offsite: Offsite, profile: Profile) -> tuple[bool, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    from opsverify.backups.s3 import client, describe_error, list_objects

    t = profile.timeouts
    try:
        count = sum(1 for _ in list_objects(client(offsite, t.connect, t.request), offsite.url))
    except (BotoCoreError, ClientError) as exc:
        return False, with_fix(describe_error(exc, t))
    return True, f"{count} object{'s' if count != 1 else ''} listed"


def _backup_role(db: Database, profile: Profile) -> tuple[bool, str]:
    """Log in as the database's ``backup_user`` (the role backup jobs use, ``backups.jobs.BackupRole``)."""
    return _role_login(db, profile, "backup")


def _maintenance_role(db: Database, profile: Profile) -> tuple[bool, str]:
    """Log in as the database's ``maintenance_user`` (the role the maintenance fixtures and write key queries use)."""
    return _role_login(db, profile, "maintenance")


def _role_login(db: Database, profile: Profile, role_kind: str) -> tuple[bool, str]:
    """Log in as the database's ``<role_kind>_user`` with its own secret; a failure names those fields."""
    user = getattr(db, f"{role_kind}_user")
    role = Database.model_construct(name=db.name, host=db.host, port=db.port, dbname=db.dbname, user=user,
                                    password=getattr(db, f"{role_kind}_password"),
                                    password_file=getattr(db, f"{role_kind}_password_file"),
                                    sslmode=db.sslmode, sslrootcert=db.sslrootcert)
    ok, row = _pg_fact(role, profile, "SELECT current_setting('server_version'), current_user")
    if not ok or isinstance(row, str):
        error = str(row).replace(
            "check the user and its password (or password_file)",
            f"check {role_kind}_user and its {role_kind}_password (or {role_kind}_password_file)",
        ).replace("set password or password_file", f"set {role_kind}_password or {role_kind}_password_file")
        return False, f"as role {user} (the {role_kind} user): {error}"
    version, found = row
    return True, f"PostgreSQL {_short(version)} as {found} (the {role_kind} user)"


def _pg_address(db: Database | RestoreTarget) -> str:
    return f"{db.user}@{db.host}:{db.port}/{db.dbname}"


def _s3_address(url: str, endpoint: str | None) -> str:
    return f"{url} at {redact_url(endpoint)}" if endpoint else url


def attempts(profile: Profile) -> list[_Attempt]:
    """Every declared component, in the profile's order: what to try and where it is."""
    p = profile
    out = [_Attempt(s.name, "service", redact_url(s.url + s.health_path), partial(_service, s, p))
           for s in p.services]
    for d in p.databases:
        out.append(_Attempt(d.name, "database", _pg_address(d), partial(_database, d, p)))
        if d.backup_user is not None:
            where = f"{d.backup_user}@{d.host}:{d.port}/{d.dbname}"
            out.append(_Attempt(d.name, "backup role", where, partial(_backup_role, d, p)))
        if d.maintenance_user is not None:
            where = f"{d.maintenance_user}@{d.host}:{d.port}/{d.dbname}"
            out.append(_Attempt(d.name, "maintenance role", where, partial(_maintenance_role, d, p)))
    out += [_Attempt(r.name, "replica", _pg_address(r), partial(_replica, r, p)) for r in p.replicas]
    if p.restore_target is not None:
        target = p.restore_target
        out.append(_Attempt(target.name, "restore target", _pg_address(target), partial(_restore_target, target, p)))
    out += [_Attempt(r.name, "redis", f"{r.host}:{r.port}/{r.db}", partial(_redis, r, p)) for r in p.redis]
    out += [_Attempt(d.name, "dependency", redact_url(d.url), partial(_dependency, d, p)) for d in p.dependencies]
    out += [_Attempt(h.name, "host", redact_url(h.uri) if "@" in h.uri else h.uri, partial(_host, h, p))
            for h in p.hosts]
    for b in p.backups:
        where = _s3_address(b.path, b.s3.endpoint_url if b.s3 else None) if b.is_s3 else (
            f"{b.host}:{b.path}" if b.host else b.path)
        out.append(_Attempt(b.name, "backups", where, partial(_backups, b, p)))
        if b.offsite is not None:
            off = b.offsite
            shown = _s3_address(off.url, off.endpoint_url)
            out.append(_Attempt(b.name, "offsite", shown, partial(_offsite, off, p)))
    return out


def attempt_bound(profile: Profile) -> timedelta:
    """How long one attempt may take at most: a connect and a few requests (an ssh greeting, then a command)."""
    return profile.timeouts.connect * 2 + profile.timeouts.request * 3


def reach_all(profile: Profile, workers: int = WORKERS) -> list[Reached]:
    """Try every declared component once, ``workers`` at a time; an attempt that outlives its bound fails.

    The workers are daemon threads: a call stuck beyond every timeout is reported, never waited for.
    """
    todo = attempts(profile)
    results: dict[int, tuple[bool, str]] = {}
    lock = threading.Lock()
    jobs: queue.Queue[int] = queue.Queue()
    for index in range(len(todo)):
        jobs.put(index)
    started: dict[int, float] = {}

    def work() -> None:
        while True:
            try:
                index = jobs.get_nowait()
            except queue.Empty:
                return
            with lock:
                started[index] = time.monotonic()
            try:
                outcome = todo[index].run()
            except Exception as exc:  # noqa: BLE001 - a client's surprise is this component's answer, not a crash
                outcome = (False, redact_urls(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
            with lock:
                results.setdefault(index, outcome)

    threads = [threading.Thread(target=work, daemon=True, name=f"opsverify-connect-{n}")
               for n in range(max(1, min(workers, len(todo))))]
    for thread in threads:
        thread.start()
    bound = attempt_bound(profile).total_seconds()
    deadline = time.monotonic() + bound * (len(todo) // len(threads) + 2)
    while True:
        with lock:
            done = len(results) == len(todo)
            now = time.monotonic()
            overdue = [i for i, at in started.items() if i not in results and now - at > bound]
            for index in overdue:
                results[index] = (False, f"no answer within {format_duration(attempt_bound(profile))} "
                                         "(the profile's timeouts): check the address")
            stuck = not done and (time.monotonic() > deadline or all(not t.is_alive() for t in threads))
        if done or stuck:
            break
        time.sleep(0.05)
    rows = []
    for index, item in enumerate(todo):
        ok, detail = results.get(index, (False, "not tried: every worker was stuck on an earlier component"))
        rows.append(Reached(item.component, item.kind, item.address, ok, detail))
    return rows


def render(rows: list[Reached]) -> str:
    """The table: component, kind, address, result (``ok: fact`` or ``FAILED: error: fix``)."""
    header = ("COMPONENT", "KIND", "ADDRESS", "RESULT")
    lines = [(r.component, r.kind, r.address, f"{'ok' if r.ok else 'FAILED'}: {r.detail}") for r in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(3)]
    out = []
    for row in [header, *lines]:
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    return "\n".join(line.rstrip() for line in out)
