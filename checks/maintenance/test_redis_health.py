"""Redis memory and performance: used memory under maxmemory, low fragmentation, no evictions, no expired-key
backlog, keys under the declared prefixes expiring, no rejected connections, clients under maxclients and no
slow commands in the slowlog.

One connection per server as the profile's user (INFO, CONFIG GET maxmemory/maxclients, SLOWLOG GET, a bounded
SCAN per ``maintenance.ttl_prefixes`` prefix; never KEYS, never a command's arguments). Thresholds:
``redis[].maintenance``. Runbook: PF-29 Redis memory management, PF-30 Redis performance monitoring.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import duration_text, format_duration
from opsverify.probes.redis import failure
from opsverify.probes.redishealth import RedisHealth
from opsverify.profile import RedisInstance

pytestmark = [pytest.mark.maintenance, pytest.mark.weekly]
HealthOf = Callable[[RedisInstance], RedisHealth]


def answering(redis_instance: RedisInstance, redis_health_of: HealthOf) -> RedisHealth:
    """The server's health facts, failing the check when it did not answer (naming the first failure) and skipping
    it, naming the grant, when the checking user may not run INFO."""
    __tracebackhide__ = True
    facts = redis_health_of(redis_instance)
    expect(facts.is_answering, f"redis {redis_instance.name} at {facts.address} {failure(facts.error)}")
    if facts.info_refused is not None:
        pytest.skip(f"redis {redis_instance.name} at {facts.address}: the checking user {facts.user} may not run "
                    f"INFO; grant it (ACL SETUSER {facts.user} {facts.info_refused})")
    return facts


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


@pytest.mark.runbook("PF-29")
def test_redis_memory_is_below_max_memory_percent(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-29: ``used_memory`` is below ``max_memory_percent`` of ``maxmemory``; of the machine's memory
    (``total_system_memory``) when no maxmemory is set."""
    facts = answering(redis_instance, redis_health_of)
    name, where, limit = redis_instance.name, facts.address, redis_instance.maintenance.max_memory_percent
    used, total = _int(facts.memory.get("used_memory")), _int(facts.memory.get("total_system_memory"))
    policy = facts.memory.get("maxmemory_policy")
    evidence.record(used_memory=used, maxmemory=facts.maxmemory, maxmemory_policy=policy, total_system_memory=total,
                    max_memory_percent=limit, config_refused=facts.config_refused)
    if facts.maxmemory is None:
        pytest.skip(f"redis {name} at {where}: neither CONFIG GET maxmemory ({facts.config_refused}) nor INFO memory "
                    f"gives maxmemory; grant it (ACL SETUSER {facts.user} +config|get)")
    if facts.maxmemory:
        share = _percent(used, facts.maxmemory)
        evidence.record(memory_percent=round(share, 1))
        expect(share < limit,
               f"redis {name} at {where} uses {human_size(used)} of maxmemory {human_size(facts.maxmemory)} "
               f"({share:.1f}%, expected below {limit}%): raise maxmemory or free memory (expire or delete keys), "
               f"and keep a maxmemory-policy that fits the data (now {policy})")
        return
    share = _percent(used, total)
    evidence.record(memory_percent=round(share, 1))
    expect(total > 0, f"redis {name} at {where} sets no maxmemory and reports no total_system_memory: cannot judge "
           "its memory; set maxmemory (and maxmemory-policy) in its redis.conf")
    expect(share < limit,
           f"redis {name} at {where} uses {human_size(used)} of the machine's {human_size(total)} "
           f"({share:.1f}%, expected below {limit}%; no maxmemory is set, so the machine's memory is the limit): set "
           "maxmemory and maxmemory-policy in its redis.conf, and free memory (expire or delete keys)")


@pytest.mark.runbook("PF-29")
def test_redis_fragmentation_is_at_most_max_ratio(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-29: ``mem_fragmentation_ratio`` is at most ``max_fragmentation_ratio`` once ``used_memory_rss`` is at least
    ``fragmentation_min_memory`` (a small server's ratio says nothing)."""
    facts = answering(redis_instance, redis_health_of)
    policy = redis_instance.maintenance
    rss, used = _int(facts.memory.get("used_memory_rss")), _int(facts.memory.get("used_memory"))
    ratio = facts.memory.get("mem_fragmentation_ratio")
    judged = rss >= policy.fragmentation_min_memory
    evidence.record(mem_fragmentation_ratio=ratio, used_memory_rss=rss, used_memory=used,
                    max_fragmentation_ratio=policy.max_fragmentation_ratio,
                    fragmentation_min_memory=int(policy.fragmentation_min_memory), judged=judged)
    if not judged or not isinstance(ratio, int | float):
        return
    expect(ratio <= policy.max_fragmentation_ratio,
           f"redis {redis_instance.name} at {facts.address} has mem_fragmentation_ratio {ratio:g} (used_memory_rss "
           f"{human_size(rss)} for used_memory {human_size(used)}; expected at most {policy.max_fragmentation_ratio:g})"
           ": switch on active defragmentation (CONFIG SET activedefrag yes, and in redis.conf) or restart it in a "
           "maintenance window")


@pytest.mark.runbook("PF-29")
def test_redis_evicted_at_most_max_evicted_keys(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-29: ``evicted_keys`` (since the server started or its stats were reset) is at most ``max_evicted_keys``."""
    limit = redis_instance.maintenance.max_evicted_keys
    if limit is None:
        pytest.skip(f"profile allows redis {redis_instance.name} any evictions (maintenance.max_evicted_keys: null)")
    facts = answering(redis_instance, redis_health_of)
    evicted, policy = _int(facts.stats.get("evicted_keys")), facts.memory.get("maxmemory_policy")
    evidence.record(evicted_keys=evicted, max_evicted_keys=limit, maxmemory_policy=policy)
    expect(evicted <= limit,
           f"redis {redis_instance.name} at {facts.address} evicted {_count(evicted, 'key')} (evicted_keys, "
           f"maxmemory-policy {policy}; expected at most {limit}): it ran out of maxmemory and dropped keys; raise "
           "maxmemory or shrink the data, set maxmemory-policy noeviction where keys must not be lost, then "
           "CONFIG RESETSTAT")


@pytest.mark.runbook("PF-29")
def test_redis_expired_key_backlog_is_at_most_max_stale_percent(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-29: ``expired_stale_perc`` (Redis's estimate of the keys past their TTL not yet reclaimed) is at most
    ``max_expired_stale_percent``."""
    facts = answering(redis_instance, redis_health_of)
    limit = redis_instance.maintenance.max_expired_stale_percent
    stale = facts.stats.get("expired_stale_perc")
    evidence.record(expired_stale_perc=stale, max_expired_stale_percent=limit,
                    expired_keys=facts.stats.get("expired_keys"), keyspace=str(facts.keyspace))
    expect(isinstance(stale, int | float),
           f"redis {redis_instance.name} at {facts.address} reports no expired_stale_perc in INFO stats (Redis 6.0 "
           "or later does): cannot judge its expired-key backlog; upgrade it")
    assert isinstance(stale, int | float)
    expect(stale <= limit,
           f"redis {redis_instance.name} at {facts.address} has an expired-key backlog of {stale:g}% "
           f"(expired_stale_perc; expected at most {limit}%): active expiry is falling behind and expired keys hold "
           "memory; check it is on (DEBUG SET-ACTIVE-EXPIRE 1) and raise hz or active-expire-effort in its redis.conf")


@pytest.mark.runbook("PF-29")
def test_redis_keys_under_ttl_prefixes_carry_a_ttl(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-29: every key under each ``maintenance.ttl_prefixes`` prefix has a TTL (a bounded SCAN: at most
    ``scan_max_keys`` keys and ``scan_time`` per prefix; a scan cut short judges the keys it read, and says so)."""
    policy = redis_instance.maintenance
    if not policy.ttl_prefixes:
        pytest.skip(f"profile declares no maintenance.ttl_prefixes for redis {redis_instance.name}")
    facts = answering(redis_instance, redis_health_of)
    name, where = redis_instance.name, facts.address
    if facts.scan_refused is not None and facts.scan_refused.startswith("+"):
        pytest.skip(f"redis {name} at {where}: the checking user {facts.user} may not scan keys and read their TTL; "
                    f"grant it (ACL SETUSER {facts.user} {facts.scan_refused})")
    expect(facts.scan_refused is None,
           f"redis {name} at {where} refused SCAN or TTL ({facts.scan_refused}): cannot tell whether the keys under "
           f"{', '.join(policy.ttl_prefixes)} expire; let {facts.user} run them (ACL SETUSER {facts.user} +scan +ttl; "
           "renamed away: deny them by ACL to the application users instead)")
    evidence.record(**{f"scan {s.prefix}": f"{s.scanned} keys read, {s.without_ttl} without TTL" + (
        "" if s.complete else f" (cut short by {s.cut_short})") + (
        f": {', '.join(sorted(s.examples))}" if s.examples else "") for s in facts.scans})
    bad = [s for s in facts.scans if s.without_ttl]
    if bad:
        found = "; ".join(
            f"{s.without_ttl} of {s.scanned} keys under {s.prefix} (e.g. {', '.join(sorted(s.examples))})"
            + ("" if s.complete else f", of a scan cut short by {s.cut_short}") for s in bad)
        fail(f"redis {name} at {where} holds keys without a TTL: {found} (expected every key under "
             f"{', '.join(policy.ttl_prefixes)} to expire): set one where they are written (SET … EX) and EXPIRE "
             "the ones there")


@pytest.mark.runbook("PF-30")
def test_redis_rejected_at_most_max_rejected_connections(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-30: ``rejected_connections`` (refused at maxclients, since the server started or its stats were reset) is
    at most ``max_rejected_connections``."""
    facts = answering(redis_instance, redis_health_of)
    limit = redis_instance.maintenance.max_rejected_connections
    rejected = _int(facts.stats.get("rejected_connections"))
    evidence.record(rejected_connections=rejected, max_rejected_connections=limit, maxclients=facts.maxclients)
    expect(rejected <= limit,
           f"redis {redis_instance.name} at {facts.address} rejected {_count(rejected, 'connection')} at maxclients "
           f"{facts.maxclients} (rejected_connections; expected at most {limit}): clients were turned away; raise "
           "maxclients (and the open-files limit) or find the clients holding connections (CLIENT LIST), then "
           "CONFIG RESETSTAT")


@pytest.mark.runbook("PF-30")
def test_redis_clients_are_below_max_clients_percent(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-30: ``connected_clients`` (this check's own connection included) is below ``max_clients_percent`` of
    ``maxclients``."""
    facts = answering(redis_instance, redis_health_of)
    name, where, limit = redis_instance.name, facts.address, redis_instance.maintenance.max_clients_percent
    connected = _int(facts.clients.get("connected_clients"))
    evidence.record(connected_clients=connected, maxclients=facts.maxclients, max_clients_percent=limit,
                    config_refused=facts.config_refused)
    if not facts.maxclients:
        pytest.skip(f"redis {name} at {where}: neither CONFIG GET maxclients ({facts.config_refused}) nor INFO clients "
                    f"(Redis 7.0 or later) gives maxclients; grant it (ACL SETUSER {facts.user} +config|get)")
    share = _percent(connected, facts.maxclients)
    evidence.record(clients_percent=round(share, 1))
    expect(share < limit,
           f"redis {name} at {where} has {connected} clients connected of maxclients {facts.maxclients} "
           f"({share:.1f}%, expected below {limit}%): new connections will soon be rejected; raise maxclients (and "
           "the open-files limit) or find the clients holding connections (CLIENT LIST)")


@pytest.mark.runbook("PF-30")
def test_redis_slowlog_has_at_most_max_slow_entries(
    redis_instance: RedisInstance, redis_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-30: at most ``max_slow_entries`` of the newest 128 slowlog entries are slower than ``slowlog_threshold``
    and ran within ``slowlog_window`` (by the server's clock); only command names are read, never arguments. The
    slowlog must record such commands: ``slowlog-log-slower-than`` (when CONFIG is readable) at most the threshold."""
    facts = answering(redis_instance, redis_health_of)
    policy = redis_instance.maintenance
    name, where = redis_instance.name, facts.address
    if facts.slowlog_refused is not None and facts.slowlog_refused.startswith("+"):
        pytest.skip(f"redis {name} at {where}: the checking user {facts.user} may not read the slowlog; grant it "
                    f"(ACL SETUSER {facts.user} {facts.slowlog_refused})")
    expect(facts.slowlog_refused is None,
           f"redis {name} at {where} refused SLOWLOG GET ({facts.slowlog_refused}): cannot judge slow commands; "
           f"let {facts.user} run it (ACL SETUSER {facts.user} +slowlog|get)")
    threshold_us = round(policy.slowlog_threshold.total_seconds() * 1_000_000)
    logs_from = facts.slowlog_slower_than
    evidence.record(slowlog_log_slower_than=logs_from)
    expect(logs_from is None or 0 <= logs_from <= threshold_us,
           f"redis {name} at {where} " + ("logs no command in its slowlog" if (logs_from or 0) < 0 else
           f"logs only commands slower than {format_duration(timedelta(microseconds=logs_from or 0))}") +
           f" (slowlog-log-slower-than {logs_from}; expected at most slowlog_threshold "
           f"{duration_text(policy.slowlog_threshold)}): slow commands go unseen; set slowlog-log-slower-than "
           f"{threshold_us} or less (CONFIG SET, and in redis.conf)")
    slow = facts.recent_slow(policy.slowlog_threshold, policy.slowlog_window)
    shown = ", ".join(f"{e.command} {format_duration(e.duration)} (id {e.id})" for e in slow[:5])
    threshold, window = duration_text(policy.slowlog_threshold), duration_text(policy.slowlog_window)
    evidence.record(slow_entries=len(slow), max_slow_entries=policy.max_slow_entries, slowlog_threshold=threshold,
                    slowlog_window=window, slowlog_read=len(facts.slow_entries), slowlog_length=facts.slowlog_length,
                    slowest=shown or None)
    expect(len(slow) <= policy.max_slow_entries,
           f"redis {name} at {where} logged {_count(len(slow), 'command')} slower than {threshold} in the last "
           f"{window} ({shown}{', …' if len(slow) > 5 else ''}; expected at most {policy.max_slow_entries}): find them "
           "(SLOWLOG GET 128) and replace them (KEYS, large ranges, long scripts) or split the work, then SLOWLOG "
           "RESET")
