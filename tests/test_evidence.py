"""evidence.json: the shipped, versioned schema; outcomes passed/failed/broken/skipped; no secret anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsverify.profile.loader import _SECRET_KEYS
from opsverify.reporting.evidence import EvidenceFormatError, evidence_schema, read_evidence

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "docs" / "evidence.schema.json"
Run = Callable[..., Any]


def opsverify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsverify", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_shipped_schema_is_the_one_the_code_writes() -> None:
    printed = opsverify("evidence", "schema")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == json.loads(SHIPPED.read_text()) == evidence_schema(), (
        "docs/evidence.schema.json is stale: regenerate it with `opsverify evidence schema > docs/evidence.schema.json`"
    )
    assert evidence_schema()["properties"]["schema_version"]["const"] == "1.0"


def test_a_real_run_under_xdist_follows_the_schema_once_per_check(run_checks: Run, sandbox_profile: Path) -> None:
    import jsonschema

    run = run_checks(sandbox_profile, "health/test_http_health.py", "backup/test_backup_freshness.py",
                     extra=("-n", "2", "-m", "daily"))
    assert run.result.ret == 0, run.result.stdout.str()
    document = json.loads((run.report_dir / "evidence.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SHIPPED.read_text())).validate(document)
    nodeids = [c["nodeid"] for c in document["checks"]]
    assert len(nodeids) == len(set(nodeids)) == sum(document["run"]["totals"].values())
    assert document["run"]["selection"] == {
        "markexpr": "daily", "keyword": "", "workers": 2,
        "args": [str(ROOT / "checks" / "health/test_http_health.py"),
                 str(ROOT / "checks" / "backup/test_backup_freshness.py")],
    }
    fresh = next(c for c in document["checks"]
                 if c["nodeid"].endswith("test_newest_backup_is_younger_than_rpo[pf-postgres-daily]"))
    assert (fresh["component"], fresh["severity"], fresh["markers"]) == ("pf-postgres-daily", "critical",
                                                                          ["daily", "backup"])
    assert fresh["thresholds"] == {"rpo": "1d"}
    assert set(fresh["measured"]) == {"newest", "age", "time_from"}
    assert fresh["metrics"]["backup_rpo_seconds"] == 86400.0
    assert 0 <= fresh["metrics"]["backup_age_seconds"] < 86400.0
    validated = opsverify("evidence", "validate", str(run.report_dir / "evidence.json"))
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith(f"{run.report_dir / 'evidence.json'}: evidence 1.0 of run ")
    folder = opsverify("evidence", "validate", str(run.report_dir))  # reports/latest works as well
    assert folder.stdout == validated.stdout


def test_a_file_of_another_format_is_refused_in_one_sentence(tmp_path: Path) -> None:
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema_version": "2.0", "run": {}, "checks": []}))
    with pytest.raises(EvidenceFormatError, match=r"is evidence format 2\.0; this opsverify .* reads 1\.0: upgrade"):
        read_evidence(newer)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema_version": "1.0", "run": {"id": "x"}, "checks": []}))
    refused = opsverify("evidence", "validate", str(broken))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"opsverify: {broken} does not follow the evidence schema 1.0: run.profile: "
                                     "Field required (")
    assert "Traceback" not in refused.stderr


TEAM_CHECKS = '''
import pytest
from opsverify.errors import OpsverifyError

def test_expectation_holds_not():
    assert 1 == 2, "the environment is wrong"

def test_fails_with_a_sentence():
    pytest.fail("backup is 31h old (RPO 24h)", pytrace=False)

def test_refused_by_opsverify():
    raise OpsverifyError("table jobs does not exist in quantum_planner: declare the right table")

def test_check_itself_is_wrong():
    return {}["missing"]

@pytest.fixture
def crashes():
    raise RuntimeError("the fixture could not start")

def test_with_a_broken_fixture(crashes):
    pass

def test_skipped():
    pytest.skip("nothing declared")

def test_passes():
    pass
'''


def test_outcomes_tell_failed_from_broken_as_allure_does(
    pytester: pytest.Pytester, team_conftest: Path, sandbox_profile: Path
) -> None:
    """An unmet expectation (assert, fail, an OpsverifyError's sentence) is failed; any other exception, in the
    check or its fixture, is broken: the check could not judge."""
    pytester.makepyfile(test_team=TEAM_CHECKS)
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess(
        "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), f"--profile={sandbox_profile}",
        f"--report-dir={report}", "-p", "no:randomly", "test_team.py", timeout=120,
    )
    assert result.ret == 1
    checks = {c["nodeid"].partition("::")[2]: (c["outcome"], c["message"])
              for c in json.loads((report / "evidence.json").read_text())["checks"]}
    assert checks == {
        "test_expectation_holds_not": ("failed", "AssertionError: the environment is wrong"),
        "test_fails_with_a_sentence": ("failed", "backup is 31h old (RPO 24h)"),
        "test_refused_by_opsverify": ("failed", "OpsverifyError: table jobs does not exist in quantum_planner: "
                                                "declare the right table"),
        "test_check_itself_is_wrong": ("broken", "KeyError: 'missing'"),
        "test_with_a_broken_fixture": ("broken", "RuntimeError: the fixture could not start"),
        "test_skipped": ("skipped", "nothing declared"),
        "test_passes": ("passed", ""),
    }
    allure = {json.loads(p.read_text())["name"]: json.loads(p.read_text())["status"]
              for p in (report / "allure-results").glob("*-result.json")}
    assert allure["test_check_itself_is_wrong"] == allure["test_with_a_broken_fixture"] == "broken"
    assert allure["test_fails_with_a_sentence"] == "failed"


class _Echo(BaseHTTPRequestHandler):
    """A service that quotes what it was sent in its error, as many do."""

    def do_GET(self) -> None:
        body = json.dumps({"status": f"down: upstream refused {self.path}", "error": self.path}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _plant(data: Any, planted: dict[str, str], files: Path, path: str = "") -> None:
    """Give every secret field of the profile its own planted (wrong) secret: ${VAR} or a file."""
    if isinstance(data, dict):
        for key in list(data):
            where = f"{path}.{key}"
            if key in _SECRET_KEYS or (key.endswith("_file") and key.removesuffix("_file") in _SECRET_KEYS):
                secret = f"Planted{len(planted)}Secret{os.getpid()}x"
                planted[where] = secret
                if key.endswith("_file"):
                    target = files / f"secret{len(planted)}"
                    target.write_text(secret + "\n")
                    data[key] = str(target)
                else:
                    variable = f"OPSVERIFY_PLANTED_{len(planted)}"
                    os.environ[variable] = secret
                    data[key] = f"${{{variable}}}"
            else:
                _plant(data[key], planted, files, where)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            _plant(item, planted, files, f"{path}[{index}]")


def test_no_planted_secret_reaches_any_report_or_output(
    run_checks: Run, profile_variant: Callable[..., Path], tmp_path: Path, echo_server: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every secret field holds a planted secret (so every login fails and every server answers with an error),
    a service echoes its URL's token in its error, and an error log quotes a password: no report, no output,
    holds any of them."""
    planted: dict[str, str] = {}
    token = f"EchoedToken{os.getpid()}"
    logs = tmp_path / "logs"
    logs.mkdir()
    logged = f"LoggedPassword{os.getpid()}"
    (logs / "app.log").write_text("".join(
        f"2026-01-01 ERROR connection to postgres://app:{logged}@db/app failed; password={logged}\n" for _ in range(30)
    ))
    for name in list(os.environ):
        if name.startswith("OPSVERIFY_PLANTED_"):
            monkeypatch.delenv(name)

    def mutate(data: dict[str, Any]) -> None:
        _plant(data, planted, tmp_path)  # sets OPSVERIFY_PLANTED_* variables the run inherits
        data["services"][0]["url"] = f"http://127.0.0.1:{echo_server}"
        data["services"][0]["health_path"] = f"/health?token={token}"
        data["lifecycle"]["error_logs"] = [{"name": "app-errors", "paths": [str(logs / "*.log")], "window": "3650d",
                                            "max_lines": 5}]

    try:
        profile = profile_variant(mutate)
        assert len(planted) >= 6, planted
        run = run_checks(profile, "health", "backup/test_backup_offsite.py", "security/test_redis_security.py",
                         "maintenance/test_log_files.py", extra=("-n", "2"))
    finally:
        for name in list(os.environ):
            if name.startswith("OPSVERIFY_PLANTED_"):
                del os.environ[name]
    assert run.result.ret == 1
    assert run.failed(), "every login failed: the run must show failures"
    secrets = {*planted.values(), token, logged}
    files = [p for p in run.report_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"evidence.json", "junit.xml", "report.html"}
    output = run.result.stdout.str() + run.result.stderr.str()
    for secret in secrets:
        assert secret not in output, f"a planted secret appears in the output: {secret}"
        for path in files:
            assert secret not in path.read_text(errors="replace"), f"a planted secret appears in {path}"


def test_profile_check_reads_the_declared_inventory_as_a_run_would(
    profile_variant: Callable[..., Path], tmp_path: Path
) -> None:
    """A malformed team table stops every pytest run at the start: `profile check` says so first, in one line."""
    table = tmp_path / "RUNBOOK.md"
    table.write_text("## Payments\n\n| ID | cadence | procedure | the check verifies |\n|---|---|---|---|\n"
                     "| OPS-01 | daily | ping the payments API | answers | extra |\n")
    profile = profile_variant(lambda d: d.setdefault("reporting", {}).update(inventory=str(table)))
    refused = opsverify("profile", "check", str(profile))
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"opsverify: profile {profile} is not valid: reporting.inventory: {table}:5: the row has 5 columns, its "
        "table's header 4: give it 4 cells (write a | inside a cell as \\|)"
    ]
    table.write_text("## Payments\n\n| ID | cadence | procedure | the check verifies |\n|---|---|---|---|\n"
                     "| OPS-01 | daily | ping the payments API | answers |\n")
    assert opsverify("profile", "check", str(profile)).returncode == 0
