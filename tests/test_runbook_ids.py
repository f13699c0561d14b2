"""Runbook IDs are precise: every check carries procedures of its own component kind only, all from INVENTORY.md.

The allowed IDs per kind are derived from the shipped ``runbooks/INVENTORY.md`` (a copy of
``../shared/runbooks/INVENTORY.md``) by keywords of each row's procedure and check columns, and
through the rows it refers to ("as PF-07"). The suite is collected against the test sandbox,
which declares every kind, and each item's resolved IDs are compared with its kind's set.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from opsverify.reporting.inventory import Procedure, read_procedures

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "runbooks" / "INVENTORY.md"
SHARED_INVENTORY = ROOT.parent / "shared" / "runbooks" / "INVENTORY.md"
KEYWORDS = {
    "postgres": r"PostgreSQL|pg_|\bDB\b|database|\bWAL\b|VACUUM|ANALYZE|\bindex|quer(y|ies)|replica|standby|failover"
    r"|restore drill|dump|connection|\btables?\b|superuser|personal data",
    "redis": r"Redis|\bRDB\b|BGSAVE|cache",
    "config": r"config(uration)? backup|k8s YAML",
    "archive": r"\bmodel|results|tar\.gz",
    "http": r"/health|health check|/metrics|\bmetrics\b",
    "host": r"CPU|memory|disk|capacity|utili[sz]ation|security patch|world-writable",
    "dependency": r"dependenc|backend",
    "trivy": r"trivy",  # scanner reports, by tool (checks/security/test_scanner_reports.py)
    "bandit": r"bandit",
    "pip-audit": r"pip-audit|dependency audit",
    "safety": r"\bsafety\b|dependency audit",
    "lockfile": r"lock file",
    "k8s-workload": r"securityContext|NetworkPolic",  # Kubernetes rules over pods, policies, ConfigMaps (PF-45)
    "k8s-access": r"\bRBAC\b|cluster-admin|service-account",  # Kubernetes access rules (PF-44, PF-13)
    "tls": r"certificate|\bTLS\b|\bSSL\b",
    "logs": r"\blogs?\b|log rotation",  # log directories, archives, error lines (lifecycle)
    "audit-logs": r"audit logs",
    "tmpfiles": r"/tmp\b",
    "document": r"\bDR document",  # the disaster-recovery document (QP-16)
}
ANY_KIND = frozenset({"PF-10", "PF-14", "PF-46", "PF-47"})  # every backup kind; every component's RTO/RPO; full system
ARGUMENT_KINDS = {  # parametrized argument -> component kind, where the parameter itself has none
    "service": "http",
    "database": "postgres",
    "archived_database": "postgres",
    "wal_archive_database": "postgres",
    "base_backup_database": "postgres",
    "primary_database": "postgres",
    "replica": "postgres",
    "secured_database": "postgres",
    "redis_instance": "redis",
    "dependency": "dependency",
    "profile_host": "host",
    "disk": "host",
    "lock_file": "lockfile",
    "bandit_run": "bandit",
    "workload_rule": "k8s-workload",
    "access_rule": "k8s-access",
    "allowlist_rule": "k8s-access",
    "tls_endpoint": "tls",
    "certificate_file": "tls",
    "secured_host": "host",
    "key_query": "postgres",
    "hot_table": "postgres",
    "job_table": "postgres",
    "temp_tables": "postgres",
    "personal_data": "postgres",
    "archive_location": "logs",
    "error_log": "logs",
    "tmp_files": "tmpfiles",
}
CHECK_KINDS = {"test_dr_document_was_reviewed_within_max_age": "document"}  # unparametrized checks, by name
NO_PROCEDURE = {"backup_directory"}  # arguments of checks no runbook procedure asks for (strays in a backup dir)
NO_PROCEDURE |= {"secured_redis"}  # Redis hardening rules: PF-13 reviews allow-lists (RBAC, superusers), not these
NO_PROCEDURE |= {  # checks (by name) no runbook procedure asks for: host hardening rules (Lynis/CIS items)
    "test_suid_files_are_allowed", "test_sshd_refuses_root_and_password_logins", "test_listening_sockets_are_allowed",
    "test_app_processes_do_not_run_as_root", "test_secret_files_are_private",
}
NO_PROCEDURE |= {"test_no_session_waits_long_on_a_lock"}  # PostgreSQL lock waits: no INVENTORY row asks for them


def exempt(check: dict[str, Any]) -> bool:
    """Whether the check verifies no procedure: by a parametrized argument or by its own name."""
    return bool(NO_PROCEDURE & {*check["arguments"], check["id"].partition("::")[2].partition("[")[0]})
DUMP_PLUGIN = '''
import json


def pytest_collection_finish(session):
    from fixtures.markers import item_kind, runbook_ids

    rows = []
    for item in session.items:
        kind = item_kind(item)
        declared = [m.kwargs.get("by_kind", {}) for m in item.iter_markers("runbook")]
        callspec = getattr(item, "callspec", None)
        rows.append({
            "id": item.nodeid.partition("checks/")[2], "kind": kind, "runbook": runbook_ids(item),
            "arguments": sorted(callspec.params) if callspec else [],
            "empty_kinds": sorted({k for by_kind in declared for k, ids in by_kind.items() if not ids}),
        })
    with open("collected.json", "w") as out:
        json.dump(rows, out)
'''


@cache
def procedures() -> dict[str, Procedure]:
    """The rows of the shipped INVENTORY.md, by ID (read as the summary's coverage matrix reads them)."""
    return {p.id: p for p in read_procedures(INVENTORY)}


def kinds_of(procedure_id: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The component kinds a procedure belongs to: its own keywords, and those of the rows it names ("as PF-07")."""
    row = procedures()[procedure_id]
    text = f"{row.procedure} {row.verifies}"
    kinds = {kind for kind, words in KEYWORDS.items() if re.search(words, text)}
    for other in set(re.findall(r"\b(?:PF|QP)-\d\d\b", row.verifies)) - seen - {procedure_id}:
        kinds |= kinds_of(other, seen | {procedure_id})
    return kinds


def allowed(kind: str) -> set[str]:
    return {p for p in procedures() if kind in kinds_of(p)} | ANY_KIND


def component_kind(check: dict[str, Any]) -> str:
    """The check's parameter kind (backup source, drill), else its component by the parametrized argument."""
    if check["kind"]:
        return str(check["kind"])
    if (name := check["id"].partition("::")[2].partition("[")[0]) in CHECK_KINDS:
        return CHECK_KINDS[name]
    kinds = {ARGUMENT_KINDS[a] for a in check["arguments"] if a in ARGUMENT_KINDS}
    assert len(kinds) == 1, f"{check['id']}: cannot tell its component kind from {check['arguments']}"
    return kinds.pop()


@pytest.fixture(scope="module")
def collected(sandbox_profile: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every check collected against the test sandbox: its resolved runbook IDs and kind, by node id."""
    where = tmp_path_factory.mktemp("collect")
    (where / "runbook_dump.py").write_text(DUMP_PLUGIN)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "checks"), "--collect-only", "-q", "-p", "runbook_dump",
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), "--profile", str(sandbox_profile), "--no-reports"],
        cwd=where, capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {c["id"]: c for c in json.loads((where / "collected.json").read_text())}


def test_shipped_inventory_equals_the_shared_one() -> None:
    if not SHARED_INVENTORY.is_file():
        pytest.skip(f"no shared inventory at {SHARED_INVENTORY} to compare with")
    assert INVENTORY.read_text() == SHARED_INVENTORY.read_text(), "copy ../shared/runbooks/INVENTORY.md to runbooks/"


def test_inventory_rows_are_classified_by_component_kind() -> None:
    assert len(procedures()) == 48 + 3 + 31 + 1
    assert kinds_of("PF-04") == {"postgres"}
    assert kinds_of("PF-21") == {"redis"}
    assert kinds_of("PF-23") == {"config"}
    assert kinds_of("PF-24") == {"archive"}
    assert kinds_of("QP-01") == kinds_of("PF-01") == {"http"}
    assert kinds_of("QP-06") == {"host"}  # "as PF-07"
    assert kinds_of("QP-29") >= {"http", "postgres", "dependency", "host"}
    assert {"PF-04", "PF-16", "PF-17", "PF-19", "QP-18", "QP-19"} <= allowed("postgres")
    assert not {"PF-04", "PF-16", "PF-17", "PF-19", "QP-18", "QP-19"} & allowed("redis")
    assert all(not kinds_of(p) for p, row in procedures().items() if row.verifies == "human")


def test_every_check_carries_only_procedures_of_its_component_kind(collected: dict[str, dict[str, Any]]) -> None:
    problems = []
    for check_id, check in collected.items():
        if check_id.endswith("[none]") and not check["runbook"]:
            continue  # the sandbox declares no such component (S3 backup sources): a skipped placeholder, no kind
        if exempt(check):
            problems += [f"{check_id}: verifies no runbook procedure"] if check["runbook"] else []
            continue
        kind, ids = component_kind(check), check["runbook"]
        unknown = [i for i in ids if i not in procedures() or procedures()[i].verifies == "human"]
        foreign = sorted(set(ids) - allowed(kind) - set(unknown))
        if unknown:
            problems.append(f"{check_id}: {unknown} are no automatable row of INVENTORY.md")
        if foreign:
            problems.append(f"{check_id} ({kind}): {foreign} are procedures of another component kind")
        if not ids and kind not in check["empty_kinds"]:  # by_kind={kind: ()}: verifies no procedure
            problems.append(f"{check_id} ({kind}): carries no runbook ID")
    assert not problems, "\n".join(problems)
    kinds = {component_kind(c) for i, c in collected.items()
             if not i.endswith("[none]") and not exempt(c)}
    assert kinds == {"postgres", "redis", "config", "archive", "globals", "http", "host", "dependency"} | {
        "bandit", "lockfile",  # the sandbox's scanner evidence (no trivy, pip-audit or safety report offline)
        "k8s-workload", "k8s-access", "tls",
        "logs", "audit-logs", "tmpfiles",  # the maintenance fixtures' log directories and temporary files
        "document",  # the DR document (QP-16)
    }, (
        "sandbox lacks a kind"
    )


def test_redis_backup_freshness_carries_no_postgres_procedure(collected: dict[str, dict[str, Any]]) -> None:
    fresh = "backup/test_backup_freshness.py::test_newest_backup_is_younger_than_rpo"
    assert collected[f"{fresh}[redis-rdb]"]["runbook"] == ["PF-10"]
    assert collected[f"{fresh}[pf-postgres-daily]"]["runbook"] == ["PF-04", "PF-10", "PF-16", "QP-18"]
    assert collected[f"{fresh}[k8s-configmaps]"]["runbook"] == ["PF-10", "PF-23", "QP-20"]
    assert collected[f"{fresh}[models-archive]"]["runbook"] == ["PF-10", "PF-24", "QP-21"]
    intact = "backup/test_backup_integrity.py::test_recent_backup_is_intact"
    assert collected[f"{intact}[redis-rdb#1]"]["runbook"] == ["PF-10", "PF-21"]
    latency = "health/test_http_health.py::test_health_answers_within_latency_budget[photonic-foundry]"
    assert collected[latency]["runbook"] == ["PF-01", "QP-01"]


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('runbook(by_kind={"postgress": ("PF-04",)})', "by_kind must map kinds postgres, redis, config, archive*"),
        ('runbook(by_kind={"redis": "PF-21"})', "by_kind values are tuples of IDs*"),
        ('runbook("PF-4")', "'PF-4': runbook IDs must look like PF-04 or QP-18*"),
    ],
)
def test_a_malformed_runbook_marker_stops_the_run(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(test_typo=f"import pytest\n\n@pytest.mark.{marker}\ndef test_x():\n    pass\n")
    result = pytester.runpytest("-p", "fixtures.markers", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: test_typo.py::test_x: {message}"])
