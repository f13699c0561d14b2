"""Redis health checks (checks/maintenance/test_redis_health.py) against real faults on throwaway redis-servers.

Each test starts its own redis-server, makes the fault happen for real (memory filled towards a small maxmemory,
keys evicted under allkeys-lru, connections rejected at a small maxclients, clients held open near it, a slow
script in the slowlog, session keys written without a TTL, an expired-key backlog left by active expiry switched
off, memory fragmented by deleting most of many small keys), points a copy of the sandbox profile at it and
asserts exactly which check fails and its one-line message. The healthy sandbox passes every check.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.backups.directory import human_size
from opsverify.durations import format_duration
from opsverify.localserver.net import LOOPBACK, free_port
from opsverify.localserver.redis import RedisServer, start_redis

Run = Callable[..., Any]
Variant = Callable[..., Path]
Mutation = Callable[[dict[str, Any]], None]
CHECKS = "maintenance/test_redis_health.py"


def _test(name: str) -> str:
    return f"test_redis_health.py::{name}[cache]"


MEMORY = _test("test_redis_memory_is_below_max_memory_percent")
FRAGMENTATION = _test("test_redis_fragmentation_is_at_most_max_ratio")
EVICTED = _test("test_redis_evicted_at_most_max_evicted_keys")
BACKLOG = _test("test_redis_expired_key_backlog_is_at_most_max_stale_percent")
TTL = _test("test_redis_keys_under_ttl_prefixes_carry_a_ttl")
REJECTED = _test("test_redis_rejected_at_most_max_rejected_connections")
CLIENTS = _test("test_redis_clients_are_below_max_clients_percent")
SLOWLOG = _test("test_redis_slowlog_has_at_most_max_slow_entries")
ALL = {MEMORY, FRAGMENTATION, EVICTED, BACKLOG, TTL, REJECTED, CLIENTS, SLOWLOG}


def redis_at(server: RedisServer, **maintenance: Any) -> Mutation:
    """Keep only the sandbox's Redis (its maintenance block: ttl_prefixes session:), pointed at ``server``, with
    ``maintenance`` on top."""

    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "databases", "dependencies", "hosts"):
            data[key] = []
        data.pop("lifecycle", None)  # it names the sandbox's databases
        entry = data["redis"][0]
        entry.update(port=server.port, password=None, password_file=None)
        entry["maintenance"] = {**entry.get("maintenance", {}), **maintenance}
        data["redis"] = [entry]

    return mutate


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``throwaway(*redis_conf_lines)``: a redis-server of this test (no password) on a free port, stopped after."""
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = start_redis(tmp_path / f"redis{len(started)}", free_port(), None, extra=extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=10)


def info(server: RedisServer, section: str) -> dict[str, Any]:
    conn = server.client(timeout=30)
    try:
        return dict(conn.info(section))
    finally:
        conn.close()


def settled(server: RedisServer) -> None:
    """Forget the setup's own slow commands (a fill, a populate) and leave no client of the test connected."""
    conn = server.client(timeout=30)
    try:
        conn.slowlog_reset()
    finally:
        conn.close()


def where(server: RedisServer) -> str:
    return f"redis cache at 127.0.0.1:{server.port}"


def test_healthy_sandbox_passes_every_redis_health_check(run_checks: Run, profile_variant: Variant) -> None:
    run = run_checks(profile_variant(), CHECKS)
    assert run.failed() == set()
    assert {run.outcome(t) for t in ALL} == {"passed"}
    memory = run.checks[MEMORY]["evidence"]
    assert (memory["maxmemory"], memory["maxmemory_policy"]) == (str(256 * 1024 * 1024), "noeviction")
    assert run.checks[TTL]["evidence"]["scan session:"].endswith(" without TTL")
    assert " 0 without TTL" in run.checks[TTL]["evidence"]["scan session:"]


def test_redis_filled_towards_maxmemory_fails_the_memory_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway("maxmemory 8mb", "maxmemory-policy noeviction")
    conn = server.client()
    value, n = b"x" * 65536, 0
    while conn.info("memory")["used_memory"] < 0.88 * 8 * 1024 * 1024:
        conn.set(f"cache:blob:{n}", value)
        n += 1
    conn.close()
    settled(server)
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {MEMORY}
    ev = run.checks[MEMORY]["evidence"]
    used, maxmemory = int(ev["used_memory"]), int(ev["maxmemory"])
    assert maxmemory == 8 * 1024 * 1024
    assert used >= 0.85 * maxmemory
    assert run.message(MEMORY) == (
        f"{where(server)} uses {human_size(used)} of maxmemory 8.0 MiB ({100 * used / maxmemory:.1f}%, expected below "
        "85%): raise maxmemory or free memory (expire or delete keys), and keep a maxmemory-policy that fits the data "
        "(now noeviction)")


def test_redis_that_evicted_keys_fails_the_eviction_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway("maxmemory 2mb", "maxmemory-policy allkeys-lru")
    conn = server.client()
    for n in range(64):  # 4 MiB into a 2 MiB cache: LRU evicts the oldest
        conn.set(f"cache:blob:{n}", b"x" * 65536)
    conn.config_set("maxmemory", "64mb")  # raised afterwards: the evictions stay in INFO stats until CONFIG RESETSTAT
    conn.close()
    settled(server)
    evicted = info(server, "stats")["evicted_keys"]
    assert evicted > 0
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {EVICTED}
    assert run.message(EVICTED) == (
        f"{where(server)} evicted {evicted} keys (evicted_keys, maxmemory-policy allkeys-lru; expected at most 0): it "
        "ran out of maxmemory and dropped keys; raise maxmemory or shrink the data, set maxmemory-policy noeviction "
        "where keys must not be lost, then CONFIG RESETSTAT")
    run = run_checks(profile_variant(redis_at(server, max_evicted_keys=None)), CHECKS)
    assert run.failed() == set()
    assert run.outcome(EVICTED) == "skipped"
    assert run.message(EVICTED) == "profile allows redis cache any evictions (maintenance.max_evicted_keys: null)"


def quiet(server: RedisServer) -> None:
    """Wait (5 s at most) until no other client is connected: a closed connection leaves Redis asynchronously."""
    deadline = time.monotonic() + 5
    while info(server, "clients")["connected_clients"] > 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def ping(sock: socket.socket) -> bytes:
    sock.sendall(b"*1\r\n$4\r\nPING\r\n")
    return sock.recv(256)


def test_redis_that_rejected_connections_fails_the_rejection_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway("maxclients 3")
    quiet(server)
    socks = [socket.create_connection((LOOPBACK, server.port), timeout=5) for _ in range(6)]
    try:
        replies = [ping(s) for s in socks]
    finally:
        for sock in socks:
            sock.close()
    # The throwaway's own readiness connection may still be closing server-side when the six arrive, so the
    # split between accepted and rejected is 3/3 or 2/4; the check must report exactly what Redis counted.
    rejected = sum(r.startswith(b"-ERR max number of clients reached") for r in replies)
    assert rejected >= 3, replies
    assert replies.count(b"+PONG\r\n") == 6 - rejected, replies
    quiet(server)
    assert info(server, "stats")["rejected_connections"] == rejected
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {REJECTED}
    assert run.message(REJECTED) == (
        f"{where(server)} rejected {rejected} connections at maxclients 3 (rejected_connections; expected at most 0): "
        "clients were turned away; raise maxclients (and the open-files limit) or find the clients holding connections "
        "(CLIENT LIST), then CONFIG RESETSTAT")


def test_redis_with_clients_near_maxclients_fails_the_clients_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway("maxclients 10")
    quiet(server)
    socks = [socket.create_connection((LOOPBACK, server.port), timeout=5) for _ in range(8)]
    try:
        assert [ping(s) for s in socks] == [b"+PONG\r\n"] * 8
        run = run_checks(profile_variant(redis_at(server)), CHECKS)  # 8 held + the check's own connection
    finally:
        for sock in socks:
            sock.close()
    assert run.failed() == {CLIENTS}
    connected = int(run.checks[CLIENTS]["evidence"]["connected_clients"])
    assert connected in (9, 10)  # 8 held + the check's own (+ a closing one Redis has not yet let go)
    assert run.message(CLIENTS) == (
        f"{where(server)} has {connected} clients connected of maxclients 10 ({10 * connected:.1f}%, expected below "
        "80%): new connections will soon be rejected; raise maxclients (and the open-files limit) or find the clients "
        "holding connections (CLIENT LIST)")


BUSY_SCRIPT = """-- token hunter2-not-for-logs
local t = redis.call('TIME')
local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 300000
repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= stop
return 1"""


def test_slow_script_fails_the_slowlog_check_naming_only_the_command(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway()
    conn = server.client()
    conn.eval(BUSY_SCRIPT, 0, "secret-argument-value")  # 300 ms of busy loop, with a secret in its arguments
    entry = conn.slowlog_get(1)[0]
    conn.close()
    took = format_duration(timedelta(microseconds=entry["duration"]))
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {SLOWLOG}
    assert run.message(SLOWLOG) == (
        f"{where(server)} logged 1 command slower than 100ms in the last 1d (EVAL {took} (id {entry['id']}); expected "
        "at most 0): find them (SLOWLOG GET 128) and replace them (KEYS, large ranges, long scripts) or split the "
        "work, then SLOWLOG RESET")
    written = (run.report_dir / "evidence.json").read_text() + (run.report_dir / "junit.xml").read_text()
    assert "hunter2" not in written
    assert "secret-argument-value" not in written
    run = run_checks(profile_variant(redis_at(server, slowlog_threshold="1s")), CHECKS)  # 300 ms is not slower
    assert run.failed() == set()


def test_slowlog_that_cannot_record_slow_commands_fails_the_slowlog_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway("slowlog-log-slower-than 1000000")  # only commands over 1 s are logged
    conn = server.client()
    conn.eval(BUSY_SCRIPT, 0)  # 300 ms: slow by the profile, unseen by this slowlog
    assert conn.slowlog_len() == 0
    conn.close()
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {SLOWLOG}
    assert run.message(SLOWLOG) == (
        f"{where(server)} logs only commands slower than 1s (slowlog-log-slower-than 1000000; expected at most "
        "slowlog_threshold 100ms): slow commands go unseen; set slowlog-log-slower-than 100000 or less (CONFIG SET, "
        "and in redis.conf)")
    conn = server.client()
    conn.config_set("slowlog-log-slower-than", -1)  # the slowlog switched off
    conn.close()
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {SLOWLOG}
    assert run.message(SLOWLOG) == (
        f"{where(server)} logs no command in its slowlog (slowlog-log-slower-than -1; expected at most "
        "slowlog_threshold 100ms): slow commands go unseen; set slowlog-log-slower-than 100000 or less (CONFIG SET, "
        "and in redis.conf)")


def test_session_keys_without_ttl_fail_the_ttl_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway()
    conn = server.client()
    for n in range(50):
        conn.set(f"session:{n:03d}", "{}", ex=3600)
    for n in range(3):
        conn.set(f"session:leak:{n}", "{}")  # written without EX: never expires
    conn.set("cache:config", "{}")  # outside the declared prefix: may live forever
    conn.close()
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {TTL}
    assert run.message(TTL) == (
        f"{where(server)} holds keys without a TTL: 3 of 53 keys under session: (e.g. session:leak:0, session:leak:1, "
        "session:leak:2) (expected every key under session: to expire): set one where they are written (SET … EX) "
        "and EXPIRE the ones there")


def test_ttl_scan_cut_short_by_its_bounds_says_so_and_judges_what_it_read(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway()
    conn = server.client()
    for n in range(30):
        conn.set(f"session:{n:03d}", "{}")
    conn.close()
    run = run_checks(profile_variant(redis_at(server, scan_max_keys=10, scan_count=10)), CHECKS)
    assert run.failed() == {TTL}
    scanned = run.checks[TTL]["evidence"]["scan session:"]
    assert scanned.startswith("10 keys read, 10 without TTL (cut short by scan_max_keys 10): ")
    examples = scanned.rsplit(": ", 1)[1]
    assert len(examples.split(", ")) == 5
    assert run.message(TTL) == (
        f"{where(server)} holds keys without a TTL: 10 of 10 keys under session: (e.g. {examples}), of a scan cut "
        "short by scan_max_keys 10 (expected every key under session: to expire): set one where they are written "
        "(SET … EX) and EXPIRE the ones there")


def test_expired_key_backlog_fails_the_backlog_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    """Active expiry switched off over 100k keys past their TTL, switched on just long enough for Redis to measure
    the backlog (its expired_stale_perc), then off again: the backlog stays, and so does Redis's estimate of it."""
    server = throwaway("enable-debug-command yes")
    conn = server.client(timeout=30)
    conn.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    for batch in range(2):
        conn.eval("for i = ARGV[1], ARGV[2] do redis.call('SET', 'job:' .. i, 'x', 'PX', 1) end", 0,
                  batch * 50000, batch * 50000 + 49999)
    time.sleep(0.05)  # every key is past its TTL, none reclaimed
    conn.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "1")
    deadline = time.monotonic() + 10
    while conn.info("stats")["expired_stale_perc"] <= 40 and time.monotonic() < deadline:
        time.sleep(0.002)
    conn.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    conn.close()
    settled(server)
    stale, keys = info(server, "stats")["expired_stale_perc"], info(server, "keyspace")["db0"]["keys"]
    assert stale > 25, stale  # Redis measured a backlog,
    assert keys > 10_000, keys  # and the expired keys are still there
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {BACKLOG}
    assert run.message(BACKLOG) == (
        f"{where(server)} has an expired-key backlog of {stale:g}% (expired_stale_perc; expected at most 25%): active "
        "expiry is falling behind and expired keys hold memory; check it is on (DEBUG SET-ACTIVE-EXPIRE 1) and raise "
        "hz or active-expire-effort in its redis.conf")


def test_fragmented_memory_fails_the_fragmentation_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    """300k small values, then 4 of every 5 deleted: each memory page keeps a live value, so the process keeps its
    resident memory while used_memory drops (activedefrag is off by default)."""
    server = throwaway("enable-debug-command yes")
    conn = server.client(timeout=60)
    conn.execute_command("DEBUG", "POPULATE", "300000", "frag", "200")
    conn.eval("for i = 0, ARGV[1] - 1 do if i % 5 ~= 0 then redis.call('DEL', 'frag:' .. i) end end", 0, 300000)
    conn.close()
    settled(server)
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {FRAGMENTATION}
    ev = run.checks[FRAGMENTATION]["evidence"]
    rss, used, ratio = int(ev["used_memory_rss"]), int(ev["used_memory"]), float(ev["mem_fragmentation_ratio"])
    assert rss >= 64 * 1024 * 1024
    assert ratio > 1.5
    assert run.message(FRAGMENTATION) == (
        f"{where(server)} has mem_fragmentation_ratio {ratio:g} (used_memory_rss {human_size(rss)} for used_memory "
        f"{human_size(used)}; expected at most 1.5): switch on active defragmentation (CONFIG SET activedefrag yes, "
        "and in redis.conf) or restart it in a maintenance window")
    assert run.outcome(MEMORY) == "passed"  # no maxmemory: judged against the machine's memory, and far below it
    assert run.checks[MEMORY]["evidence"]["maxmemory"] == "0"


def test_stopped_redis_fails_every_check_naming_the_first_failure(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway()
    server.stop(timeout=10)
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == ALL
    assert run.message(MEMORY) == f"{where(server)} did not answer: connection refused"
    first = f"skipped probing: cache at 127.0.0.1:{server.port} did not answer at "
    for test in ALL - {MEMORY}:
        assert run.message(test).startswith(f"{where(server)} did not answer: {first}"), run.message(test)
        assert run.message(test).endswith(" (connection refused)")


def test_checking_user_without_config_and_slowlog_reads_info_and_skips_naming_the_grant(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway("maxmemory 64mb", "user checker on >checker-secret ~* +@all -config -slowlog -scan")
    secret = tmp_path / "checker.pass"
    secret.write_text("checker-secret\n")
    secret.chmod(0o600)

    def as_checker(data: dict[str, Any]) -> None:
        redis_at(server)(data)
        data["redis"][0].update(username="checker", password_file=str(secret))

    run = run_checks(profile_variant(as_checker), CHECKS)
    assert run.failed() == set()
    assert run.outcome(SLOWLOG) == "skipped"
    assert run.message(SLOWLOG) == (
        f"{where(server)}: the checking user checker may not read the slowlog; grant it (ACL SETUSER checker "
        "+slowlog|get)")
    assert run.outcome(TTL) == "skipped"
    assert run.message(TTL) == (
        f"{where(server)}: the checking user checker may not scan keys and read their TTL; grant it (ACL SETUSER "
        "checker +scan)")
    memory, clients = run.checks[MEMORY]["evidence"], run.checks[CLIENTS]["evidence"]
    assert (memory["maxmemory"], memory["config_refused"]) == (str(64 * 1024 * 1024), "+config|get")  # from INFO
    assert (run.outcome(CLIENTS), clients["maxclients"]) == ("passed", "10000")  # from INFO clients


def test_scan_renamed_away_fails_the_ttl_check_naming_the_reply(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer]
) -> None:
    server = throwaway('rename-command SCAN ""')
    run = run_checks(profile_variant(redis_at(server)), CHECKS)
    assert run.failed() == {TTL}
    assert run.message(TTL) == (
        f"{where(server)} refused SCAN or TTL (unknown command 'SCAN', with args beginning with: '0' 'MATCH' "
        "'session:*' 'COUNT' '1000'): cannot tell whether the keys under session: expire; let default run them (ACL "
        "SETUSER default +scan +ttl; renamed away: deny them by ACL to the application users instead)")
