"""Fixtures of the suite's own tests: the shared test sandbox and pytester runs of checks/."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

from opsverify.profile import Profile

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sandbox-dir",
        default=str(ROOT / ".sandbox-test"),
        help="state dir of the sandbox the self-tests use (started if it is not running)",
    )


@pytest.fixture(scope="session")
def sandbox_profile(pytestconfig: pytest.Config) -> Path:
    """The running test sandbox's generated profile (``up`` is idempotent; a lock guards xdist workers)."""
    from opsverify import sandbox

    state = Path(pytestconfig.getoption("sandbox_dir")).resolve()
    with FileLock(str(state) + ".lock", timeout=600):
        status = sandbox.up(state)
    return Path(status.profile_path)


@pytest.fixture(scope="session")
def sandbox(sandbox_profile: Path) -> Profile:
    """The running test sandbox's profile, loaded."""
    from opsverify.profile import load_profile

    return load_profile(sandbox_profile)


@pytest.fixture
def profile_variant(sandbox_profile: Path, tmp_path: Path) -> Callable[..., Path]:
    """``profile_variant(mutate)``: a copy of the sandbox profile changed by ``mutate(dict)``."""

    def make(mutate: Callable[[dict[str, Any]], object] | None = None, name: str = "variant.yaml") -> Path:
        data = yaml.safe_load(sandbox_profile.read_text())
        for host in data.get("hosts", []):
            host["cpu_max_percent"] = 100  # the test machine's load is not under test here
        if mutate is not None:
            mutate(data)
        _prune_references(data)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def _prune_references(data: dict[str, Any]) -> None:
    """Drop drills and replicas that name a database, Redis or backup the variant removed."""
    names = {key: {i["name"] for i in data.get(key, [])} for key in ("databases", "redis", "backups")}

    def kept(drill: dict[str, Any]) -> bool:
        refs = (("database", "databases"), ("redis", "redis"))
        return drill["backup"] in names["backups"] and all(k not in drill or drill[k] in names[s] for k, s in refs)

    data["drills"] = [d for d in data.get("drills", []) if kept(d)]
    data["replicas"] = [r for r in data.get("replicas", []) if r["primary"] in names["databases"]]


def _short(nodeid: str) -> str:
    """``checks/health/test_x.py::test_y[a:/]`` -> ``test_x.py::test_y[a:/]``."""
    path, _, rest = nodeid.partition("::")
    return f"{Path(path).name}::{rest}"


class ChecksRun:
    """The outcome of one pytester run of checks/: outcomes by test and one-line messages."""

    def __init__(self, result: pytest.RunResult, report_dir: Path, evidence: dict[str, Any]) -> None:
        self.result = result
        self.report_dir = report_dir
        self.evidence = evidence
        self.checks = {_short(c["id"]): c for c in evidence.get("checks", [])}

    def outcome(self, test: str) -> str:
        return str(self.checks[test]["outcome"])

    def message(self, test: str) -> str:
        return str(self.checks[test]["message"])

    def failed(self) -> set[str]:
        return {t for t, c in self.checks.items() if c["outcome"] in ("failed", "error")}


@pytest.fixture
def run_checks(pytester: pytest.Pytester) -> Callable[..., ChecksRun]:
    """``run_checks(profile, "health/test_http_health.py", ...)``: run checks/ in a subprocess."""

    def run(profile: Path, *targets: str, extra: tuple[str, ...] = ()) -> ChecksRun:
        report_dir = pytester.path / "report"
        args = [str(ROOT / "checks" / t) for t in targets] or [str(ROOT / "checks")]
        result = pytester.runpytest_subprocess(
            *args, "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
            "--profile", str(profile), "--report-dir", str(report_dir), "-p", "no:randomly", *extra,
            timeout=240,
        )
        evidence_file = report_dir / "evidence.json"
        evidence = json.loads(evidence_file.read_text()) if evidence_file.exists() else {}
        return ChecksRun(result, report_dir, evidence)

    return run


@pytest.fixture
def no_leftover() -> Iterator[list[Any]]:
    """Collects processes a test starts; they are stopped (and verified gone) afterwards."""
    started: list[Any] = []
    yield started
    from opsverify.sandbox.app import stop_process

    for proc in started:
        stop_process(proc, timeout=10)
