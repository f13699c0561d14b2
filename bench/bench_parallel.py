"""Benchmark: verifying several big gzip dumps with ``pytest -n 2`` vs a sequential ``gzip -t`` loop.

Target (issue: backup integrity): the parallel run of the integrity check is at least 1.7x faster
than ``for f in *.sql.gz; do gzip -t "$f"; done`` on the same files. The files are hard links of
bench_gzip.py's 400 MB dump (built on first use), named as a daily series, so the page cache
holds them once. The opsverify side includes pytest's and xdist's start-up.

Run: ``.venv/bin/python bench/bench_parallel.py`` (or ``make bench``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from bench_gzip import DATA, DUMP, build_dump, machine

ROOT = Path(__file__).resolve().parents[1]
SERIES = DATA / "parallel"
FILES = 4
RUNS = 3


def build_series() -> list[Path]:
    """FILES hard links of the 400 MB dump, one a day, newest first, with matching mtimes."""
    build_dump()
    SERIES.mkdir(exist_ok=True)
    now = time.time()
    paths = []
    for day in range(FILES):
        when = now - 1800 - day * 86400
        path = SERIES / f"backup_{time.strftime('%Y%m%d_%H%M%S', time.localtime(when))}.sql.gz"
        for old in SERIES.glob(f"backup_{time.strftime('%Y%m%d', time.localtime(when))}_*.sql.gz"):
            old.unlink()
        os.link(DUMP, path)
        os.utime(path, (when, when))
        paths.append(path)
    return paths


def write_profile() -> Path:
    profile = SERIES / "profile.yaml"
    source = {"name": "bench-series", "kind": "postgres", "path": str(SERIES), "pattern": "backup_*.sql.gz"}
    source["max_verify"] = FILES
    profile.write_text(yaml.safe_dump({"name": "bench", "role": "sandbox", "backups": [source]}))
    return profile


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed with exit code {done.returncode}")
    return time.perf_counter() - started


def main() -> None:
    files = build_series()
    profile = write_profile()
    subprocess.run(["cat", str(DUMP)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    gzip_bin = shutil.which("gzip") or "gzip"
    loop = ["bash", "-c", f'for f in "$@"; do {gzip_bin} -t "$f" || exit 1; done', "loop", *map(str, files)]
    check = f"{ROOT}/checks/backup/test_backup_integrity.py::test_recent_backup_is_intact"
    pytest = [sys.executable, "-m", "pytest", check, "--profile", str(profile), "--no-reports", "-q", "-n", "2",
              "-p", "no:randomly"]
    sequential = min(timed(loop) for _ in range(RUNS))
    parallel = min(timed(pytest) for _ in range(RUNS))
    size = DUMP.stat().st_size
    print(f"machine: {machine()}")
    print(f"files:   {FILES} x {size:,} bytes gzip -6 (hard links of {DUMP.name})")
    print(f"sequential gzip -t loop:          {sequential:7.2f}s")
    print(f"pytest -n 2 test_recent_backup_is_intact: {parallel:7.2f}s (pytest and xdist start-up included)")
    ratio = sequential / parallel
    print(f"target: >= 1.7x the sequential loop: {ratio:.2f}x ({'met' if ratio >= 1.7 else 'MISSED'})")


if __name__ == "__main__":
    main()
