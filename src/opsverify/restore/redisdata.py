"""What a Redis dataset holds, for comparing a restored RDB with its source (PF-22).

Keys with a TTL come and go by themselves, so the comparison is on persistent keys: their count
and the types of a deterministic sample of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

SAMPLE = 50


@dataclass
class RedisFacts:
    """Key counts and a sample of persistent keys with their types."""

    dbsize: int = 0
    persistent_keys: int = 0
    sample: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"redis": {"dbsize": self.dbsize, "persistent_keys": self.persistent_keys, "sample": self.sample}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RedisFacts:
        part = data["redis"]
        sample = {str(k): str(v) for k, v in part["sample"].items()}
        return cls(int(part["dbsize"]), int(part["persistent_keys"]), sample)


def redis_facts(conn: redis.Redis, sample: int = SAMPLE) -> RedisFacts:
    """SCAN every key once (pipelined TTL), count the persistent ones, type a sorted sample of them."""
    persistent: list[str] = []
    batch: list[Any] = []
    for key in conn.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            persistent += _persistent(conn, batch)
            batch = []
    persistent += _persistent(conn, batch)
    chosen = sorted(persistent)[:sample]
    with conn.pipeline(transaction=False) as pipe:
        for key in chosen:
            pipe.type(key)
        types = pipe.execute()
    return RedisFacts(int(conn.dbsize()), len(persistent), {k: _text(t) for k, t in zip(chosen, types, strict=True)})


def _persistent(conn: redis.Redis, keys: list[Any]) -> list[str]:
    if not keys:
        return []
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.ttl(key)
        ttls = pipe.execute()
    return [_text(k) for k, ttl in zip(keys, ttls, strict=True) if ttl == -1]


def _text(value: Any) -> str:
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else str(value)


def compare_redis(expected: RedisFacts, restored: RedisFacts) -> list[str]:
    """What differs: the persistent key count, and sampled keys missing or of another type."""
    problems = []
    if restored.persistent_keys != expected.persistent_keys:
        problems.append(f"{restored.persistent_keys} persistent keys restored, {expected.persistent_keys} expected")
    for key, kind in expected.sample.items():
        got = restored.sample.get(key, "missing")
        if got != kind:
            problems.append(f"key {key} is {got}, expected {kind}")
    return problems
