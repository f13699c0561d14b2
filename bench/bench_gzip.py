"""Benchmark: ``verify_backup`` on a gzipped pg_dump against ``gzip -t`` and ``pigz -t``.

Run with ``.venv/bin/python bench/bench_gzip.py``. The dump (plain-SQL text of COPY rows, about
400 MB uncompressed, ``gzip -6``) is built once and cached in ``bench/.data/``. Each tool runs in a
fresh process from a warm page cache, best of 3 (round-robin); its peak RSS is its own VmHWM and its
CPU time (user + system) is printed too, the steadier figure on a shared machine. ``verify_backup``
runs with ISA-L's inflate (the default when ``isal`` is installed) and with the zlib fallback.
Targets (printed as met or not, never asserted): ``verify_backup`` throughput >= 2.0x ``pigz -t``
and >= 2.5x ``gzip -t``, its peak RSS < 32 MiB; CRC32 and ISIZE of every member are checked.
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
DUMP = DATA / "dump-400m.sql.gz"
TARGET_BYTES = 400_000_000
ROWS_PER_BATCH = 50_000
RUNS = 3
VERIFY = """
import sys
from pathlib import Path
from opsverify.backups import gzipstream
from opsverify.backups.formats import verify_backup
from opsverify.backups.verdict import Expectations
if sys.argv[2] == "zlib":
    gzipstream._chosen = gzipstream.STDLIB
if gzipstream.inflater().name != sys.argv[2]:
    sys.exit(f"asked for the {sys.argv[2]} inflate, got {gzipstream.inflater().name}: is isal installed?")
tables = tuple(sys.argv[3:])
verdict = verify_backup(Path(sys.argv[1]), Expectations(tables=tables))
sys.exit(0 if verdict.ok else verdict.detail)
"""
TARGETS = (("pigz -t", 2.0), ("gzip -t", 2.5))  # throughput of verify_backup (isal) at least this many times
RSS_TARGET_MIB = 32
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


def run_measured(args: list[str], quiet: bool = False) -> tuple[float, int, float]:
    """Wall time, peak RSS (KiB) and CPU time (user + system, all threads) of one child; exits when it fails.

    The peak is the child's own VmHWM, sampled every 2 ms until it exits. (``wait4``'s
    ``ru_maxrss`` would be wrong here: Linux carries the parent's peak across fork and exec; its
    CPU times are right.)
    """
    started = time.perf_counter()
    stdout = subprocess.DEVNULL if quiet else None
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout) as proc:
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, high_water_kib(proc.pid))
            time.sleep(0.002)
        proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed with exit code {proc.returncode}")
    return elapsed, peak, usage.ru_utime + usage.ru_stime


def best_of(args: list[str], quiet: bool = False) -> tuple[float, int, float]:
    """Best wall time, highest peak RSS (KiB) and least CPU time of RUNS runs."""
    runs = [run_measured(args, quiet) for _ in range(RUNS)]
    return min(t for t, _, _ in runs), max(rss for _, rss, _ in runs), min(cpu for _, _, cpu in runs)


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
    peers = {name: shutil.which(name.split()[0]) for name, _ in TARGETS}
    missing = [name for name, path in peers.items() if path is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: run `make setup` (apt-get install pigz gzip)")
    subprocess.run(["cat", str(DUMP)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    verify = [sys.executable, "-c", VERIFY, str(DUMP)]
    commands = {
        "gzip -t": [str(peers["gzip -t"]), "-t", str(DUMP)],
        "pigz -t": [str(peers["pigz -t"]), "-t", str(DUMP)],
        "verify_backup (isal)": [*verify, "isal"],
        "verify_backup (zlib fallback)": [*verify, "zlib"],
        "verify_backup (isal), tables=(simulations,)": [*verify, "isal", "simulations"],
    }
    runs: dict[str, list[tuple[float, int, float]]] = {name: [] for name in commands}
    for _ in range(RUNS):  # round-robin: a burst of load on a shared machine hits every tool alike
        for name, args in commands.items():
            runs[name].append(run_measured(args))
    rows = [
        (name, (min(t for t, _, _ in r), max(m for _, m, _ in r), min(c for _, _, c in r))) for name, r in runs.items()
    ]
    times = {name: seconds for name, (seconds, _, _) in rows}
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}")
    print(f"file:    {DUMP.name}: {size:,} bytes of SQL, {DUMP.stat().st_size:,} bytes gzip -6")
    print(
        f"{'tool':<46}{'best of 3':>10}{'MB/s (SQL)':>12}{'peak RSS':>13}{'vs gzip -t':>12}{'vs pigz -t':>12}"
        f"{'CPU time':>10}"
    )
    for name, (seconds, rss, cpu) in rows:
        print(
            f"{name:<46}{seconds:>9.2f}s{size / seconds / 1e6:>12.0f}{rss / 1024:>9.1f} MiB"
            f"{times['gzip -t'] / seconds:>11.2f}x{times['pigz -t'] / seconds:>11.2f}x{cpu:>9.2f}s"
        )
    ours, rss, _ = rows[2][1]
    verdicts = []
    for peer, target in TARGETS:
        ratio = times[peer] / ours
        verdicts.append(f"throughput >= {target:g}x {peer}: {ratio:.2f}x ({'met' if ratio >= target else 'NOT met'})")
    verdicts.append(
        f"peak RSS < {RSS_TARGET_MIB} MiB: {rss / 1024:.1f} MiB ({'met' if rss < RSS_TARGET_MIB * 1024 else 'NOT met'})"
    )
    print("targets: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
