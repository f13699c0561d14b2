"""Benchmark: ``verify_backup`` on a >= 500 MB Redis RDB against ``redis-check-rdb``.

Run with ``.venv/bin/python bench/bench_rdb.py``. The RDB is made once by a throwaway
redis-server on a free loopback port (``DEBUG POPULATE``, then ``SAVE``; the server is stopped and
its directory removed) and cached in ``bench/.data/``. Each tool runs in a fresh process from a
warm page cache, best of 3, its peak RSS being its own VmHWM.
Targets: time <= 1.0x and peak RSS <= 0.1x of ``redis-check-rdb``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench_gzip import best_of, machine

from opsverify.localserver.net import LOOPBACK, free_port, wait_for_port
from opsverify.localserver.process import stop_process

DATA = Path(__file__).resolve().parent / ".data"
RDB = DATA / "redis-500mb.rdb"
KEYS = 2_000_000
VALUE_SIZE = 256
VERIFY = """
import sys
from pathlib import Path
from opsverify.backups.formats import verify_backup
verdict = verify_backup(Path(sys.argv[1]))
sys.exit(0 if verdict.ok else verdict.detail)
"""


def _config(work: Path, port: int) -> Path:
    conf = work / "redis.conf"
    settings = {
        "bind": LOOPBACK,
        "port": str(port),
        "dir": str(work),
        "dbfilename": "dump.rdb",
        "save": '""',
        "appendonly": "no",
        "rdbcompression": "no",  # DEBUG POPULATE values are mostly zeros: LZF would shrink them to nothing
        "enable-debug-command": "local",
        "logfile": str(work / "redis.log"),
    }
    conf.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
    return conf


def build_rdb() -> None:
    """DEBUG POPULATE a throwaway redis-server, SAVE, keep the RDB; the server is stopped and removed."""
    if RDB.exists():
        return
    import redis

    print(f"building {RDB} (once) ...", flush=True)
    work = DATA / "redis-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(["redis-server", str(_config(work, port))], stdin=subprocess.DEVNULL)
    try:
        wait_for_port(LOOPBACK, port, 10)
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=600)
        client.execute_command("DEBUG", "POPULATE", KEYS, "key", VALUE_SIZE)
        client.save()
        client.close()
        (work / "dump.rdb").replace(RDB)
    finally:
        stop_process(server, timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    if server.poll() is None:
        raise SystemExit(f"redis-server (pid {server.pid}) is still running")


def main() -> None:
    build_rdb()
    check_rdb = shutil.which("redis-check-rdb")
    if check_rdb is None:
        raise SystemExit("redis-check-rdb is not installed: run `make setup` (it comes with redis-server)")
    subprocess.run(["cat", str(RDB)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    theirs = best_of([check_rdb, str(RDB)], quiet=True)
    ours = best_of([sys.executable, "-c", VERIFY, str(RDB)])
    size = RDB.stat().st_size
    print(f"machine: {machine()}")
    print(f"file:    {RDB.name}: {size:,} bytes, {KEYS:,} keys of {VALUE_SIZE} bytes")
    print(f"{'tool':<20}{'best of 3':>11}{'MB/s':>8}{'peak RSS':>13}")
    for name, (seconds, rss, _) in (("redis-check-rdb", theirs), ("verify_backup", ours)):
        print(f"{name:<20}{seconds:>10.2f}s{size / seconds / 1e6:>8.0f}{rss / 1024:>9.1f} MiB")
    time_ratio, rss_ratio = ours[0] / theirs[0], ours[1] / theirs[1]
    print(
        f"targets: time <= 1.0x: {time_ratio:.3f}x ({'met' if time_ratio <= 1.0 else 'MISSED'}); "
        f"peak RSS <= 0.1x: {rss_ratio:.2f}x ({'met' if rss_ratio <= 0.1 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
