"""The first bytes that tell a backup's format, apart from the verifiers that read it whole.

``formats.detect_format`` needs only these, so a run that verifies one gzip dump does not import
the RDB, tar, YAML and pg_dump verifiers (and their libraries) at all.
"""

from __future__ import annotations

import re

PG_CUSTOM = b"PGDMP"  # pg_dump -Fc (and each -Fd toc.dat)
GZIP = b"\x1f\x8b"
RDB_HEADER_SIZE = 9
RDB_HEADER = re.compile(rb"^(?:(REDIS)(\d{4})|(VALKEY)(\d{3}))$")
