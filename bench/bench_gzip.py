"""Benchmark: ``verify_backup`` on a >= 1 GiB gzipped pg_dump against ``gzip -t``.

Run with ``.venv/bin/python bench/bench_gzip.py``. The dump (plain-SQL text of COPY rows, about
1.1 GiB uncompressed, ``gzip -6``) is built once and cached in ``bench/.data/``. Each tool runs in a
fresh process from a warm page cache, best of 3; its peak RSS is its own VmHWM.
Targets: throughput >= 0.95x of ``gzip -t``, peak RSS of the verifier < 64 MiB.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"
DUMP = DATA / "dump-1g.sql.gz"
TARGET_BYTES = 1_200_000_000
ROWS_PER_BATCH = 50_000
RUNS = 3
VERIFY = """
import sys
from pathlib import Path
from opsverify.backups.formats import verify_backup
from opsverify.backups.verdict import Expectations
tables = tuple(sys.argv[2:])
verdict = verify_backup(Path(sys.argv[1]), Expectations(tables=tables))
sys.exit(0 if verdict.ok else verdict.detail)
"""
HEADER = """--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET client_encoding = 'UTF8';

--
-- Name: simulations; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.simulations (id bigint, name text, wavelength_nm numeric, transmission double precision,
    loss_db double precision, created_at timestamp with time zone, params jsonb);

--
-- Data for Name: simulations; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY public.simulations (id, name, wavelength_nm, transmission, loss_db, created_at, params) FROM stdin;
"""
FOOTER = """\\.


--
-- PostgreSQL database dump complete
--

"""


def sql_batches() -> Iterator[bytes]:
    """A pg_dump-like text, batch by batch, until TARGET_BYTES: varied COPY rows, then the marker."""
    yield HEADER.encode()
    written, row = len(HEADER), 0
    while written < TARGET_BYTES:
        rows = [
            f"{i}\tsim-{i * 7919 % 1000003:07d}\t{1500 + i % 120}.{i % 97:02d}\t{(i * 2654435761 % 10**6) / 1e6:.6f}"
            f"\t{(i % 311) / 100:.2f}\t2025-{1 + i % 12:02d}-{1 + i % 28:02d}"
            f" {i % 24:02d}:{i % 60:02d}:{i * 7 % 60:02d}+00"
            f'\t{{"mode": "{"te" if i % 3 else "tm"}", "layers": {i % 9}, "seed": {i * 31 % 65521}}}\n'
            for i in range(row, row + ROWS_PER_BATCH)
        ]
        chunk = "".join(rows).encode()
        written, row = written + len(chunk), row + ROWS_PER_BATCH
        yield chunk
    yield FOOTER.encode()


def build_dump() -> int:
    """Write the gzip -6 dump once (through the gzip binary); its uncompressed size."""
    DATA.mkdir(exist_ok=True)
    if DUMP.exists():
        return uncompressed_size(DUMP)
    print(f"building {DUMP} (once) ...", flush=True)
    part = DUMP.with_name(DUMP.name + ".part")
    size = 0
    with part.open("wb") as out, subprocess.Popen(["gzip", "-6", "-c"], stdin=subprocess.PIPE, stdout=out) as gz:
        assert gz.stdin is not None
        for chunk in sql_batches():
            gz.stdin.write(chunk)
            size += len(chunk)
        gz.stdin.close()
        if gz.wait() != 0:
            raise SystemExit("gzip failed while building the benchmark dump")
    part.replace(DUMP)
    return size


def uncompressed_size(path: Path) -> int:
    """ISIZE of the single gzip member, from its last 4 bytes (exact: the dump is below 4 GiB)."""
    with path.open("rb") as stream:
        stream.seek(-4, os.SEEK_END)
        return int.from_bytes(stream.read(4), "little")


def high_water_kib(pid: int) -> int:
    """VmHWM (peak RSS) of a running process in KiB, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def run_measured(args: list[str], quiet: bool = False) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one child process; exits when it fails.

    The peak is the child's own VmHWM, sampled every 2 ms until it exits. (``wait4``'s
    ``ru_maxrss`` would be wrong here: Linux carries the parent's peak across fork and exec.)
    """
    started = time.perf_counter()
    stdout = subprocess.DEVNULL if quiet else None
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout) as proc:
        peak = 0
        while proc.poll() is None:
            peak = max(peak, high_water_kib(proc.pid))
            time.sleep(0.002)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed with exit code {proc.returncode}")
    return elapsed, peak


def best_of(args: list[str], quiet: bool = False) -> tuple[float, int]:
    """Best wall time and highest peak RSS (KiB) of RUNS runs."""
    runs = [run_measured(args, quiet) for _ in range(RUNS)]
    return min(t for t, _ in runs), max(rss for _, rss in runs)


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    return (
        f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    )


def main() -> None:
    size = build_dump()
    gzip_bin = shutil.which("gzip") or "gzip"
    subprocess.run(["cat", str(DUMP)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    rows = [
        ("gzip -t", best_of([gzip_bin, "-t", str(DUMP)])),
        ("verify_backup", best_of([sys.executable, "-c", VERIFY, str(DUMP)])),
        ("verify_backup, tables=(simulations,)", best_of([sys.executable, "-c", VERIFY, str(DUMP), "simulations"])),
    ]
    print(f"machine: {machine()}")
    print(f"file:    {DUMP.name}: {size:,} bytes of SQL, {DUMP.stat().st_size:,} bytes gzip -6")
    print(f"{'tool':<40}{'best of 3':>11}{'MB/s (SQL)':>12}{'peak RSS':>12}{'speed vs gzip -t':>18}")
    base = rows[0][1][0]
    for name, (seconds, rss) in rows:
        print(f"{name:<40}{seconds:>10.2f}s{size / seconds / 1e6:>12.0f}{rss / 1024:>9.1f} MiB{base / seconds:>17.2f}x")
    verify_time, verify_rss = rows[1][1]
    print(
        f"targets: throughput >= 0.95x gzip -t: {base / verify_time:.2f}x "
        f"({'met' if base / verify_time >= 0.95 else 'MISSED'}); "
        f"peak RSS < 64 MiB: {verify_rss / 1024:.1f} MiB ({'met' if verify_rss < 64 * 1024 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
