"""Which kind of backup a path holds, and ``verify_backup``: the one entry point for all of them.

The format comes from the content first (at most 4 KiB read; for gzip, the first inflated
bytes tell a SQL dump from a tar), then from the name (``.sql.gz``, ``.dump``, ``.rdb``, …), so a
damaged file still reaches the verifier that can say what is wrong with it. A ``.gz`` name wins
over content that is not gzip: the restore would gunzip it, so it is verified (and fails) as gzip. A directory with a
``toc.dat`` is a ``pg_dump -Fd`` dump. ``verify_backup`` never raises for a bad, empty, missing
or unreadable backup: the ``Verdict`` says so.
"""

from __future__ import annotations

import importlib
import re
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from opsverify.backups import magic
from opsverify.backups.verdict import INTEGRITY_ONLY, CorruptBackup, Expectations, Verdict, failed

FORMATS = ("sql", "sql.gz", "pg-custom", "pg-directory", "rdb", "tar", "tar.gz", "k8s-yaml", "gzip", "unknown")
SNIFF_SIZE = 4096
SNIFF_INFLATED = 1024
GZIP_NAMES = ("sql.gz", "tar.gz", "gzip")
SQL_DUMP = re.compile(rb"PostgreSQL database (?:cluster )?dump")
YAML_EXPORT = re.compile(rb"^(?:---|apiVersion:|kind:|items:)", re.MULTILINE)
SUFFIXES = (
    (".sql.gz", "sql.gz"),
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".sql", "sql"),
    (".dump", "pg-custom"),
    (".pgdump", "pg-custom"),
    (".backup", "pg-custom"),
    (".rdb", "rdb"),
    (".tar", "tar"),
    (".yaml", "k8s-yaml"),
    (".yml", "k8s-yaml"),
    (".gz", "gzip"),
)
VERIFIERS: Mapping[str, tuple[str, str]] = {  # format -> (module of opsverify.backups, function), imported on use
    "sql": ("sqldump", "verify_sql"),
    "sql.gz": ("sqldump", "verify_sql_gz"),
    "pg-custom": ("pgdump", "verify_custom"),
    "pg-directory": ("pgdump", "verify_directory"),
    "rdb": ("rdb", "verify_rdb"),
    "tar": ("archive", "verify_tar"),
    "tar.gz": ("archive", "verify_tar_gz"),
    "k8s-yaml": ("k8s", "verify_k8s_export"),
    "gzip": ("gzipstream", "verify_gzip"),
}


def verifier(fmt: str) -> Callable[[Path, Expectations], Verdict]:
    """The verifier of a format; its module is imported only now (a run of gzip dumps never loads PyYAML)."""
    module, function = VERIFIERS[fmt]
    found: Callable[[Path, Expectations], Verdict] = getattr(
        importlib.import_module(f"opsverify.backups.{module}"), function
    )
    return found


def format_by_name(path: Path) -> str:
    """The format a file name suggests, or ``unknown``."""
    name = path.name.lower()
    return next((fmt for suffix, fmt in SUFFIXES if name.endswith(suffix)), "unknown")


def format_by_content(head: bytes) -> str | None:
    """The format the first bytes of a file show, or None when they do not tell."""
    if head.startswith(magic.PG_CUSTOM):
        return "pg-custom"
    if magic.RDB_HEADER.match(head[: magic.RDB_HEADER_SIZE]):
        return "rdb"
    if head.startswith(magic.GZIP):
        return _inside_gzip(head) or "gzip"
    if head[257:262] == b"ustar":
        return "tar"
    if SQL_DUMP.search(head):
        return "sql"
    if YAML_EXPORT.search(head):
        return "k8s-yaml"
    return None


def _inside_gzip(head: bytes) -> str | None:
    """``sql.gz`` or ``tar.gz`` when the first inflated bytes show it."""
    try:
        inflated = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, SNIFF_INFLATED)
    except zlib.error:
        return None
    inner = format_by_content(inflated) if not inflated.startswith(magic.GZIP) else None
    return {"sql": "sql.gz", "tar": "tar.gz"}.get(inner or "")


def detect_format(path: Path) -> str:
    """One of ``FORMATS``: by magic bytes first (reads at most 4 KiB), then by name."""
    if path.is_dir():
        return "pg-directory" if (path / "toc.dat").is_file() else "unknown"
    named = format_by_name(path)
    if not path.is_file():  # missing, or a FIFO or device that must not be opened
        return named
    try:
        with path.open("rb") as stream:
            head = stream.read(SNIFF_SIZE)
    except OSError:
        return named
    found = format_by_content(head)
    if named in GZIP_NAMES and found not in ("sql.gz", "tar.gz"):
        return named  # not gzip inside a .gz name: a restore would gunzip it, so it is verified (and fails) as gzip
    return found or named


def _unrecognised(path: Path) -> str:
    if path.is_dir():
        return f"unrecognised backup format: {path.name} is a directory without toc.dat (not a pg_dump -Fd dump)"
    return (
        f"unrecognised backup format: {path.name} is neither gzip, a SQL dump, a pg_dump archive, "
        "an RDB, a tar archive nor a Kubernetes YAML export (by content and by name)"
    )


def _precheck(path: Path, fmt: str) -> str | None:
    """Why ``path`` cannot be verified at all (missing, special, empty, unrecognised), or None."""
    if not path.exists():
        return f"cannot read {path}: no such file or directory"
    if not path.is_dir() and not path.is_file():
        return f"cannot read {path}: not a regular file"
    if fmt == "unknown":
        return _unrecognised(path)
    if path.is_file() and path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


def verify_backup(path: Path, expect: Expectations = INTEGRITY_ONLY) -> Verdict:
    """Verify any backup by its detected format; a ``Verdict``, never an exception, for a bad backup."""
    fmt = "unknown"
    try:
        fmt = detect_format(path)
        problem = _precheck(path, fmt)
        if problem is not None:
            return failed(str(path), fmt, problem, {"bytes": "0"} if problem.startswith("empty") else {})
        return verifier(fmt)(path, expect)
    except CorruptBackup as exc:
        return failed(str(path), fmt, str(exc))
    except OSError as exc:
        return failed(str(path), fmt, f"cannot read {exc.filename or path}: {exc.strerror or exc}")
