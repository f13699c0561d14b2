"""Kill drills at random points and prove the next run leaves nothing behind (issue: scratch leftovers).

    .venv/bin/python scripts/kill_trials.py --profile .sandbox-test/profile.yaml --trials 20

Each trial starts the drill set (``pytest -m dr``) against the profile, kills it after a random
delay with SIGTERM or SIGKILL, starts a short next run (its janitor runs first), and then looks
for anything of the killed run: a scratch database on the restore target, a scratch directory in
the temporary directory or ``scratch_dir``, a process started from one. Prints one line per trial
and exits non-zero when any trial left something behind. Run it while nothing else uses scratch.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest_run(profile: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pytest", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
               f"--profile={profile}", "--no-reports", "-q", "-p", "no:randomly", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def leftovers(profile_path: Path) -> list[str]:
    """Scratch databases, directories and server processes that exist now."""
    from opsverify.actions.database import connect
    from opsverify.profile import load_profile

    profile = load_profile(profile_path)
    found = []
    if profile.restore_target is not None:
        with connect(profile.restore_target, None, profile.timeouts.connect) as conn:
            rows = conn.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'opsverify\_scratch\_%'")
            found += [f"database {name}" for (name,) in rows.fetchall()]
    roots = {Path(tempfile.gettempdir()), *([profile.scratch_dir] if profile.scratch_dir else [])}
    found += [f"directory {p}" for root in roots for p in root.glob("opsverify_scratch_*")]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    found += [f"process {line.strip()}" for line in ps.splitlines() if "opsverify_scratch_" in line]
    return found


def trial(profile: Path, rng: random.Random) -> tuple[str, list[str]]:
    sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
    delay = rng.uniform(0.5, 9.0)
    proc = pytest_run(profile, "-m", "dr", str(ROOT / "checks"))
    try:
        proc.wait(timeout=delay)
        what = f"finished before {delay:.1f}s"
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        proc.wait(timeout=60)
        what = f"{sig.name} after {delay:.1f}s"
    after = pytest_run(profile, str(ROOT / "checks" / "health" / "test_postgres.py"))
    out = after.communicate(timeout=300)[0].decode(errors="replace")
    janitor = [line for line in out.splitlines() if line.startswith("opsverify janitor:")]
    return f"{what}; janitor: {len(janitor)} action(s)", leftovers(profile)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    dirty = 0
    for number in range(1, args.trials + 1):
        what, left = trial(args.profile.resolve(), rng)
        dirty += bool(left)
        print(f"trial {number:2}: {what}: {'clean' if not left else 'LEFT ' + '; '.join(left)}", flush=True)
    print(f"{args.trials - dirty} of {args.trials} trials left nothing behind")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
