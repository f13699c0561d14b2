"""What a Redis dataset holds, for comparing a restored RDB with its source (PF-22).

Keys with a TTL come and go by themselves, so the comparison is on persistent keys: their count
in every database (``INFO keyspace``: keys minus keys with an expiry, constant time) and the types
of a deterministic sample of them (the keys of database 0 with the smallest CRC32, found in one
SCAN with memory for the sample only).
"""

from __future__ import annotations

import heapq
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

SAMPLE = 50
SAMPLE_METHOD = "db0-smallest-crc32"


@dataclass
class RedisFacts:
    """Persistent keys per database and a sample of them with their types."""

    dbsize: int = 0
    persistent_keys: int = 0
    per_db: dict[str, int] = field(default_factory=dict)
    sample: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        facts = {"dbsize": self.dbsize, "persistent_keys": self.persistent_keys, "per_db": self.per_db}
        return {"redis": {**facts, "sample_method": SAMPLE_METHOD, "sample": self.sample}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RedisFacts:
        part = data["redis"]
        same = part.get("sample_method") == SAMPLE_METHOD  # another method sampled other keys: not comparable
        sample = {str(k): str(v) for k, v in part["sample"].items()} if same else {}
        per_db = {str(k): int(v) for k, v in part.get("per_db", {}).items()}
        return cls(int(part["dbsize"]), int(part["persistent_keys"]), per_db, sample)


def redis_facts(conn: redis.Redis, sample: int = SAMPLE) -> RedisFacts:
    """Persistent key counts of every database, and the ``sample`` persistent keys of db 0 with the smallest CRC32."""
    keyspace = conn.info("keyspace")
    per_db = {str(db): int(v["keys"]) - int(v.get("expires", 0)) for db, v in keyspace.items() if isinstance(v, dict)}
    smallest: list[tuple[int, bytes]] = []  # a max-heap by negated CRC: the current sample
    for key in conn.scan_iter(count=1000):
        raw = key if isinstance(key, bytes) else str(key).encode()
        crc = zlib.crc32(raw)
        if len(smallest) < sample or -smallest[0][0] > crc:
            if conn.ttl(key) != -1:
                continue
            if len(smallest) < sample:
                heapq.heappush(smallest, (-crc, raw))
            else:
                heapq.heapreplace(smallest, (-crc, raw))
    chosen = sorted(raw for _, raw in smallest)
    with conn.pipeline(transaction=False) as pipe:
        for raw in chosen:
            pipe.type(raw)
        types = pipe.execute()
    keys = {_text(k): _text(t) for k, t in zip(chosen, types, strict=True)}
    return RedisFacts(int(conn.dbsize()), sum(per_db.values()), per_db, keys)


def _text(value: Any) -> str:
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else str(value)
