"""The sandbox's scanner evidence, as a team's CI leaves it: a real bandit report and a lock file of the app.

At the first ``up`` (and daily from the scheduler) bandit runs for real over the sandbox app's source
(``opsverify/sandbox/app.py``, what the three sandbox services run) and writes its JSON report into
``security-reports/bandit/``; the newest ``KEPT`` are kept. The lock file ``app/requirements.lock`` is
``pip freeze`` of this Python narrowed to the distributions the app imports. trivy, pip-audit and safety
need their vulnerability databases online: the sandbox writes no report of theirs and declares none.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from opsverify.errors import SandboxError
from opsverify.sandbox import app
from opsverify.sandbox.state import Layout

KEPT = 7
EVERY = 86400.0 - 3600.0  # daily, an hour early: the report's max_age (1d) is never reached
TIMEOUT = 120.0


def app_source() -> Path:
    """The sandbox app's code (one module serves photonic-foundry, quantum-planner and quantum-backend)."""
    return Path(app.__file__).resolve()


def bandit_dir(layout: Layout) -> Path:
    return layout.root / "security-reports" / "bandit"


def lock_file(layout: Layout) -> Path:
    return layout.app / "requirements.lock"


def run_bandit(layout: Layout) -> Path:
    """``python -m bandit -f json -o security-reports/bandit/bandit-STAMP.json APP``; older reports beyond KEPT go."""
    directory = bandit_dir(layout)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"bandit-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    command = [sys.executable, "-m", "bandit", "-q", "-f", "json", "-o", str(out), str(app_source())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SandboxError(f"bandit did not finish within {TIMEOUT:g}s on {app_source()}") from None
    if done.returncode not in (0, 1) or not out.is_file():  # 1: it found something (LOW findings are expected)
        raise SandboxError(f"bandit failed on {app_source()} ({done.stderr.strip()[-200:]}): run `make setup`")
    for old in sorted(directory.glob("bandit-*.json"))[:-KEPT]:
        old.unlink()
    return out


def bandit_due(layout: Layout, now: float) -> bool:
    """True when the newest bandit report is ``EVERY`` old or there is none."""
    reports = sorted(bandit_dir(layout).glob("bandit-*.json"))
    return not reports or now - reports[-1].stat().st_mtime >= EVERY


def _imported_distributions() -> set[str]:
    """The installed distributions whose top-level modules the app imports (opsverify itself aside)."""
    tree = ast.parse(app_source().read_text())
    tops = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    tops |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    owners = metadata.packages_distributions()
    return {d.lower() for top in tops - {"opsverify"} for d in owners.get(top, [])}


def _closure(names: set[str]) -> set[str]:
    """``names`` and, recursively, what they require (extras and markers aside)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        requires: Any = metadata.requires(name) or []
        todo += [r.split(";")[0].split("[")[0].split()[0].strip("<>=!~ ").lower() for r in requires if ";" not in r]
    return seen


def write_lock_file(layout: Layout) -> Path:
    """``pip freeze`` of this Python, narrowed to the app's imported distributions and their requirements."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True, text=True, timeout=TIMEOUT, check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise SandboxError(f"`pip freeze` failed ({exc}): run `make setup`") from None
    wanted = {n.replace("_", "-") for n in _closure(_imported_distributions())}
    pins = [line for line in done.stdout.splitlines() if line.split("==")[0].lower().replace("_", "-") in wanted]
    path = lock_file(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# `pip freeze` narrowed to what {app_source().name} imports (opsverify sandbox up)\n"
    path.write_text(header + "\n".join(sorted(pins)) + "\n")
    return path


def create_scanner_evidence(layout: Layout) -> None:
    """The lock file and a first bandit report (``sandbox up``)."""
    write_lock_file(layout)
    run_bandit(layout)


def scanners_section(layout: Layout) -> dict[str, Any] | None:
    """The profile's ``scanners``: the bandit reports, the lock file, a bandit run over the app; None before any."""
    if not lock_file(layout).is_file():
        return None  # a sandbox created before it had scanner evidence
    return {
        "reports": [{"name": "sandbox-app-bandit", "tool": "bandit", "path": str(bandit_dir(layout).resolve()),
                     "pattern": "bandit-*.json", "max_age": "1d", "fail_at": "HIGH"}],
        "lock_files": [{"name": "sandbox-app", "path": str(lock_file(layout).resolve()), "max_age": "92d"}],
        "bandit": [{"name": "sandbox-app", "source": str(app_source()), "fail_at": "HIGH"}],
    }
