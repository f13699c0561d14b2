"""Redis health for the maintenance checks (PF-29 memory management, PF-30 performance monitoring).

One connection per instance, bounded by the profile's timeouts: ``INFO memory/stats/clients/keyspace``,
``CONFIG GET maxmemory/maxclients`` (INFO's own fields where CONFIG is refused or renamed away), ``SLOWLOG
GET 128`` (the command name of each entry only: its arguments may hold secrets) and, per declared prefix, a
bounded ``SCAN MATCH prefix*`` with the keys' ``TTL`` read in one pipeline per batch (never ``KEYS``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.probes.redis import client, refused_credentials, server_clock, unreachable
from opsverify.probes.redissecurity import missing_grant
from opsverify.profile.model import RedisInstance

if TYPE_CHECKING:
    import redis

SLOWLOG_ENTRIES = 128
EXAMPLES = 5  # key names without TTL named per prefix
_GLOB = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True)
class SlowEntry:
    """One slowlog entry: its id, when it ran (unix seconds), how long it took and the command's name (never its
    arguments)."""

    id: int
    time: float
    duration: timedelta
    command: str


@dataclass(frozen=True)
class PrefixScan:
    """Keys under one prefix read by a bounded SCAN: how many, those without a TTL, and whether the scan ended."""

    prefix: str
    scanned: int = 0
    without_ttl: int = 0
    examples: tuple[str, ...] = ()  # the first names without a TTL
    complete: bool = True
    cut_short: str | None = None  # which bound ended the scan: "scan_max_keys 100000", "scan_time 5s"


@dataclass(frozen=True)
class RedisHealth:
    """What one Redis server says about its memory, clients, slowlog and keys' TTLs, or why it did not answer."""

    address: str
    user: str  # the checking user: the profile's username, else "default"
    memory: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)
    keyspace: dict[str, Any] = field(default_factory=dict)
    info_refused: str | None = None  # NOPERM on INFO: the grant the checking user lacks
    maxmemory: int | None = None  # CONFIG GET maxmemory, else INFO memory's maxmemory; None: unknown
    maxclients: int | None = None  # CONFIG GET maxclients, else INFO clients' maxclients (Redis 7+); None: unknown
    config_refused: str | None = None  # why CONFIG GET was refused (NOPERM: the grant; renamed: the server's reply)
    slowlog_slower_than: int | None = None  # CONFIG GET slowlog-log-slower-than, microseconds (<0: logs nothing)
    slow_entries: tuple[SlowEntry, ...] = ()  # SLOWLOG GET 128, every entry (the check filters window/threshold)
    slowlog_length: int | None = None  # SLOWLOG LEN: entries the server holds (only the newest 128 are read)
    slowlog_refused: str | None = None  # NOPERM (the grant) or an unknown command
    server_time: float = 0.0  # the server's clock (TIME; this host's when refused), unix seconds
    scans: tuple[PrefixScan, ...] = ()
    scan_refused: str | None = None  # NOPERM on SCAN/TTL: the grant the checking user lacks; else the server's reply
    error: str | None = None
    unreachable: str | None = None

    @property
    def is_answering(self) -> bool:
        return self.error is None

    def recent_slow(self, threshold: timedelta, window: timedelta) -> list[SlowEntry]:
        """Entries slower than ``threshold`` that ran within ``window`` of the server's clock, newest first."""
        since = self.server_time - window.total_seconds()
        return [e for e in self.slow_entries if e.duration > threshold and e.time >= since]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0].strip() if str(exc).strip() else type(exc).__name__


def _refusal(exc: BaseException) -> str:
    """A NOPERM refusal as the grant it asks for (``+slowlog|get``); anything else (a renamed command) as it is."""
    import redis

    text = _first_line(exc)
    return missing_grant(text) if isinstance(exc, redis.exceptions.NoPermissionError) else text


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _number(value: Any) -> int | None:
    try:
        return int(_text(value))
    except ValueError:
        return None


def _pairs(reply: Any) -> dict[str, Any]:
    """A CONFIG GET reply (a flat list, or the dict redis-py makes of it) as name -> value."""
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    return {_text(k): v for k, v in zip(reply[::2], reply[1::2], strict=False)}


def _run(conn: redis.Redis, *args: Any) -> Any:
    """One command as the server spells it, its reply raw (redis-py's execute_command is untyped)."""
    return conn.execute_command(*args)  # type: ignore[no-untyped-call]


def _config(conn: redis.Redis, memory: dict[str, Any], clients: dict[str, Any]) -> dict[str, Any]:
    """maxmemory, maxclients and slowlog-log-slower-than from CONFIG GET; where it is refused or renamed away,
    the first two from INFO (maxmemory is in INFO memory, maxclients in INFO clients since Redis 7.0), and why
    CONFIG was refused."""
    import redis

    try:
        values: dict[str, Any] = {}
        for name in ("maxmemory", "maxclients", "slowlog-log-slower-than"):
            values.update(_pairs(_run(conn, "CONFIG", "GET", name)))
        return {"maxmemory": _number(values.get("maxmemory", "")), "maxclients": _number(values.get("maxclients", "")),
                "slowlog_slower_than": _number(values.get("slowlog-log-slower-than", ""))}
    except redis.ResponseError as exc:  # NOPERM (ACL), or CONFIG renamed away: the connection itself is fine
        refused = _refusal(exc)
    maxmemory, maxclients = memory.get("maxmemory"), clients.get("maxclients")
    return {"maxmemory": int(maxmemory) if isinstance(maxmemory, int) else None,
            "maxclients": int(maxclients) if isinstance(maxclients, int) else None, "config_refused": refused}


def _slowlog(conn: redis.Redis) -> tuple[list[SlowEntry], int | None, str | None]:
    """The newest 128 slowlog entries (name of the command only) and how many the server holds."""
    import redis

    try:
        reply = _run(conn, "SLOWLOG", "GET", SLOWLOG_ENTRIES)
        length = _number(_run(conn, "SLOWLOG", "LEN"))
    except redis.ResponseError as exc:
        return [], None, _refusal(exc)
    entries = []
    for entry in reply or []:
        args = entry[3] if len(entry) > 3 else []
        name = _text(args[0]).upper() if args else "?"  # the name only: arguments may be passwords or values
        entries.append(SlowEntry(int(entry[0]), float(entry[1]), timedelta(microseconds=int(entry[2])), name))
    return entries, length, None


def _scan(conn: redis.Redis, prefix: str, count: int, max_keys: int, limit: timedelta) -> PrefixScan:
    """``SCAN MATCH prefix* COUNT count`` until the cursor ends, ``max_keys`` keys were read or ``limit`` passed;
    ``TTL`` of each batch in one pipeline (-1: no TTL; -2: gone meanwhile, not counted)."""
    pattern = _GLOB.sub(r"\\\1", prefix).encode() + b"*"
    deadline = time.monotonic() + limit.total_seconds()
    cursor, scanned, without = 0, 0, 0
    examples: list[str] = []
    cut: str | None = None
    while True:
        cursor, keys = conn.scan(cursor, match=pattern, count=count)
        keys = keys[: max_keys - scanned]
        if keys:
            with conn.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.ttl(key)
                ttls = pipe.execute()
            for key, ttl in zip(keys, ttls, strict=True):
                if ttl == -2:
                    continue
                scanned += 1
                if ttl == -1:
                    without += 1
                    if len(examples) < EXAMPLES:
                        examples.append(_text(key))
        if int(cursor) == 0:
            break
        if scanned >= max_keys:
            cut = f"scan_max_keys {max_keys}"
            break
        if time.monotonic() >= deadline:
            cut = f"scan_time {limit.total_seconds():g}s"
            break
    return PrefixScan(prefix, scanned, without, tuple(examples), cut is None, cut)


def probe_redis_health(instance: RedisInstance, connect: timedelta, request: timedelta) -> RedisHealth:
    """INFO memory/stats/clients/keyspace, CONFIG GET maxmemory/maxclients/slowlog-log-slower-than, TIME, SLOWLOG
    GET 128 and a bounded SCAN per ``maintenance.ttl_prefixes`` prefix, over one connection as the profile's user."""
    import redis

    address = f"{instance.host}:{instance.port}"
    user = instance.username or "default"
    policy = instance.maintenance
    conn = client(instance, connect, request, decode_responses=False)  # key names need not be UTF-8
    facts: dict[str, Any] = {}
    try:
        conn.ping()
        try:
            for section in ("memory", "stats", "clients", "keyspace"):
                facts[section] = dict(conn.info(section))
        except redis.exceptions.NoPermissionError as exc:
            return RedisHealth(address, user, info_refused=_refusal(exc), server_time=time.time())
        facts.update(_config(conn, facts["memory"], facts["clients"]))
        facts["server_time"] = server_clock(conn)
        entries, facts["slowlog_length"], facts["slowlog_refused"] = _slowlog(conn)
        facts["slow_entries"] = tuple(entries)
        try:
            facts["scans"] = tuple(_scan(conn, p, policy.scan_count, policy.scan_max_keys, policy.scan_time)
                                   for p in policy.ttl_prefixes)
        except redis.ResponseError as exc:  # NOPERM: the grant; SCAN or TTL renamed away: the server's reply
            facts["scan_refused"] = _refusal(exc)
    except redis.RedisError as exc:
        cause = unreachable(exc, connect, request)
        return RedisHealth(address, user, error=cause or refused_credentials(exc) or _first_line(exc),
                           unreachable=cause)
    finally:
        conn.close()
    return RedisHealth(address, user, **facts)
