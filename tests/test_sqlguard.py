"""The plain-SQL guard: dumps pass unchanged however they are chunked; lines leaving the scratch database stop it."""

from __future__ import annotations

import io

import pytest

from opsverify.errors import ActionRefused
from opsverify.restore.sqlguard import guarded

DUMP = (
    b"SET statement_timeout = 0;\n\\restrict abc\nCREATE TABLE public.t (a text);\n"
    b"COPY public.t (a) FROM stdin;\n\\N\na\\\\.\n\\\\! not a command: data\n\\.\n"
    b"COPY public.u FROM stdin;\n\\.\nCREATE INDEX i ON public.t (a);\n\\unrestrict abc\n"
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 64, 1 << 20])
def test_a_per_database_dump_passes_unchanged_in_any_chunking(chunk: int) -> None:
    assert b"".join(guarded(io.BytesIO(DUMP), chunk)) == DUMP


@pytest.mark.parametrize(
    ("line", "number"),
    [
        (b"\\connect other", 4),
        (b"\\! rm -rf /", 4),
        (b"CREATE DATABASE x;", 4),
        (b"drop database photonic_foundry;", 4),
        (b"ALTER ROLE app PASSWORD 'x';", 4),
        (b"COPY t TO PROGRAM 'sh';", 4),
        (b"SET ROLE postgres;", 4),
    ],
)
@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_lines_reaching_past_the_scratch_database_are_refused(line: bytes, number: int, chunk: int) -> None:
    dump = DUMP.replace(b"CREATE TABLE public.t (a text);\n", b"CREATE TABLE public.t (a text);\n" + line + b"\n")
    with pytest.raises(ActionRefused, match=rf"^line {number} \("):
        b"".join(guarded(io.BytesIO(dump), chunk))


def test_a_command_after_copy_data_is_refused() -> None:
    with pytest.raises(ActionRefused, match=r"^line 12 \('\\\\! after'\)"):
        b"".join(guarded(io.BytesIO(DUMP.replace(b"\\unrestrict abc", b"\\! after")), 3))
