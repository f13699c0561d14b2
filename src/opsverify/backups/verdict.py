"""What a backup verifier returns: a ``Verdict`` (a fact, never an assertion) and its ``Expectations``.

Verifiers stream in constant memory and never raise for a bad backup: a truncated, corrupt,
empty or unreadable file is ``Verdict(ok=False)`` with one phrase a person on call can act on.
The lower-level streaming functions raise ``CorruptBackup`` instead, whose text is that phrase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from opsverify.errors import OpsverifyError

SHOWN_NAMES = 5


class ByteStream(Protocol):
    """What the streaming verifiers read from: a file, a pipe (``Popen.stdout``), an S3 body."""

    def read(self, size: int = -1, /) -> bytes: ...


class CorruptBackup(OpsverifyError):
    """A backup stream is damaged (truncated, bad checksum, garbage); ``str(err)`` says how and where."""


@dataclass(frozen=True)
class Expectations:
    """What a backup must hold beyond being intact; the defaults ask for nothing but integrity."""

    tables: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    rdb_max_version: int = 12
    timeout: float = 600.0
    roles: bool = False  # a ``pg_dumpall --globals-only`` file: SQL text holding ``CREATE ROLE`` statements

    def missing_tables(self, found: Iterable[str]) -> tuple[str, ...]:
        """Expected tables not in ``found`` (``schema.table`` names); an unqualified name matches any schema."""
        qualified = set(found)
        bare = {name.partition(".")[2] for name in qualified}
        return tuple(t for t in self.tables if t not in qualified and not ("." not in t and t in bare))

    def missing_kinds(self, found: Iterable[str]) -> tuple[str, ...]:
        """Expected Kubernetes kinds not in ``found``."""
        present = set(found)
        return tuple(kind for kind in self.kinds if kind not in present)


INTEGRITY_ONLY = Expectations()


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one backup: intact or not, why, and what was measured."""

    path: str
    format: str
    ok: bool
    detail: str
    facts: Mapping[str, str] = field(default_factory=dict)


def passed(path: str, fmt: str, detail: str, facts: Mapping[str, str] | None = None) -> Verdict:
    """An intact backup."""
    return Verdict(path, fmt, True, detail, dict(facts or {}))


def failed(path: str, fmt: str, detail: str, facts: Mapping[str, str] | None = None) -> Verdict:
    """A backup that cannot be trusted, with the reason."""
    return Verdict(path, fmt, False, detail, dict(facts or {}))


def listing(names: Iterable[str], limit: int = SHOWN_NAMES) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    items = list(names)
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def missing_tables_detail(missing: Iterable[str], found: Iterable[str]) -> str:
    """``expected table(s) missing from the dump: x (it holds 2: public.a, public.b)``."""
    present = sorted(set(found))
    holds = f"{len(present)}: {listing(present)}" if present else "none"
    return f"expected table(s) missing from the dump: {', '.join(missing)} (it holds {holds})"


def shown_bytes(data: bytes) -> str:
    """Leading bytes of a file for a message: printable ASCII as is, the rest as ``\\xNN``."""
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in data)
