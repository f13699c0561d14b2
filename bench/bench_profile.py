"""Benchmark: ``opsverify profile check`` of a generated 20,000-source profile, against bare YAML loads.

Run with ``.venv/bin/python bench/bench_profile.py``. The profile (about 4 MiB: one host, one database,
20,000 backup sources of ten keys each, 2,000 drills) is written to ``bench/.data/profile-20000.yaml``.
Each command runs in a fresh process, best of 3 (wall time, peak RSS, CPU time). Peers: PyYAML's libyaml
loader (``yaml.load(…, CSafeLoader)``: parse and construct, no validation, no line numbers, no bounds) and
PyYAML's pure-Python ``yaml.safe_load`` (what the loader used before issue 9).
Target: ``opsverify profile check`` under 5 s on the 2-core development machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench_gzip import best_of, machine

DATA = Path(__file__).resolve().parent / ".data"
SOURCES = 20_000
TARGET_SECONDS = 5.0


def big_profile(sources: int) -> str:
    """A valid profile with ``sources`` backup sources (and a drill for every tenth)."""
    out = ["name: big", "role: staging", "hosts: [{name: h}]", "databases: [{name: db, dbname: app, user: u}]",
           "backups:"]
    for i in range(sources):
        out.append(
            f"  - name: src-{i:05d}\n    kind: postgres\n    path: /backups/src-{i:05d}\n"
            f"    pattern: 'backup_*.sql.gz'\n    database: db\n    host: h\n    rpo: 24h\n    retention: 30d\n"
            f"    schedule: 1d\n    tables: [users, orders]"
        )
    out.append("drills:")
    out += [f"  - {{name: drill-{i:05d}, backup: src-{i:05d}, database: db}}" for i in range(0, sources, 10)]
    return "\n".join(out) + "\n"


def main() -> None:
    DATA.mkdir(exist_ok=True)
    profile = DATA / f"profile-{SOURCES}.yaml"
    profile.write_text(big_profile(SOURCES))
    load = "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=yaml.{})"
    commands = {
        "yaml.load(CSafeLoader)": [sys.executable, "-c", load.format("CSafeLoader"), str(profile)],
        "yaml.safe_load (pure Python)": [sys.executable, "-c", load.format("SafeLoader"), str(profile)],
        "opsverify profile check": [sys.executable, "-m", "opsverify", "profile", "check", str(profile)],
    }
    print(f"{machine()}\n{profile}: {profile.stat().st_size:,} bytes, {SOURCES:,} sources\n")
    results = {name: best_of(args, quiet=True) for name, args in commands.items()}
    peer = results["yaml.load(CSafeLoader)"][0]
    print("| command | best of 3 | peak RSS | CPU time | vs yaml.load(CSafeLoader) |\n|---|---:|---:|---:|---:|")
    for name, (wall, rss, cpu) in results.items():
        print(f"| {name} | {wall:.2f} s | {rss / 1024:.0f} MiB | {cpu:.2f} s | {wall / peer:.2f}x |")
    check = results["opsverify profile check"][0]
    verdict = "met" if check < TARGET_SECONDS else "MISSED"
    print(f"\ntarget: profile check < {TARGET_SECONDS:g} s: {check:.2f} s, {verdict}")


if __name__ == "__main__":
    main()
