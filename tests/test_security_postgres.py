"""PostgreSQL security rules (checks/security/test_postgres_security.py) against real faults.

Every fault is made on a throwaway cluster of the test's own, configured like the sandbox's
(TLS with the sandbox CA's certificate, data checksums, connections logged, SCRAM only, the
``opsverify`` role with the sandbox's password and pg_monitor): the sandbox profile reaches it by
changing a port. Each fault is undone in a ``finally``; the data-checksums fault needs a cluster
initialised without them. The healthy sandbox and the healthy throwaway pass every rule.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import free_port
from opsverify.profile.environment import Profile
from opsverify.rules.postgres import RULES
from opsverify.sandbox.postgres import Postgres, sandbox_tls

Run = Callable[..., Any]
Variant = Callable[..., Path]
CHECKS = "security/test_postgres_security.py"
CHECK = "test_postgres_security.py::test_postgres_meets_security_rule[photonic_foundry-{}]"


def rule(rule_id: str) -> str:
    return CHECK.format(rule_id)


def make_cluster(sandbox: Profile, checksums: bool = True) -> Postgres:
    """A started cluster configured like the sandbox's, with its roles and the monitoring role's grants."""
    base = Path("/tmp") / f"opsverify-test-pgsec-{uuid.uuid4().hex[:8]}"
    cluster = Postgres(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.init(sandbox_tls(sandbox.databases[0].sslrootcert), checksums=checksums)
    try:
        cluster.start()
        check, replication = sandbox.databases[0].secret() or "", sandbox.replicas[0].replication_secret() or ""
        cluster.create_role_and_databases(check, replication)
        cluster.grant_security_reads()
    except BaseException:
        remove(cluster)
        raise
    return cluster


def remove(cluster: Postgres) -> None:
    cluster.stop()
    shutil.rmtree(cluster.base, ignore_errors=True)
    assert not cluster.base.exists()


@pytest.fixture(scope="module")
def cluster(sandbox: Profile) -> Iterator[Postgres]:
    made = make_cluster(sandbox)
    try:
        yield made
    finally:
        remove(made)


def on(port: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    """The variant: photonic_foundry alone, at ``port`` (with ``changes``)."""

    def mutate(data: dict[str, Any]) -> None:
        data["databases"] = [{**data["databases"][0], "port": port, **changes}]

    return mutate


def where(cluster: Postgres) -> str:
    return f"database photonic_foundry at 127.0.0.1:{cluster.port}/photonic_foundry"


def superuser_sql(cluster: Postgres, *statements: str, dbname: str = "postgres") -> None:
    with cluster.connect(dbname) as conn:
        for statement in statements:
            conn.execute(statement)


def reload_until(cluster: Postgres, setting: str, value: str) -> None:
    """``pg_reload_conf()``, then wait until a new session sees ``setting = value``."""
    superuser_sql(cluster, "SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with cluster.connect() as conn:
            row = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (setting,)).fetchone()
        if row and row[0] == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"{setting} did not become {value} after a reload")


def fails_exactly(run: Any, expected: dict[str, str]) -> None:
    assert run.failed() == {rule(r) for r in expected}, run.result.stdout.str()[-3000:]
    for rule_id, message in expected.items():
        assert run.message(rule(rule_id)) == message
    passed = {rule(r) for r in RULES} - {rule(r) for r in expected}
    assert {t for t in passed if run.outcome(t) != "passed"} == set()


def test_healthy_sandbox_passes_every_rule(run_checks: Run, sandbox_profile: Path, sandbox: Profile) -> None:
    run = run_checks(sandbox_profile, CHECKS)
    assert run.failed() == set()
    expected = {CHECK.replace("photonic_foundry", db.name).format(r) for db in sandbox.databases for r in RULES}
    assert {t for t in expected if run.outcome(t) == "passed"} == expected


def test_healthy_throwaway_cluster_passes_every_rule(run_checks: Run, profile_variant: Variant,
                                                    cluster: Postgres) -> None:
    fails_exactly(run_checks(profile_variant(on(cluster.port)), CHECKS), {})


def test_trust_rule_for_every_address_fails_the_method_and_the_open_rule(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    hba = cluster.data / "pg_hba.conf"
    healthy = hba.read_text()
    line = len(healthy.splitlines()) + 1
    try:
        hba.write_text(healthy + "host all all 0.0.0.0/0 trust\n")
        superuser_sql(cluster, "SELECT pg_reload_conf()")
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        hba.write_text(healthy)
        superuser_sql(cluster, "SELECT pg_reload_conf()")
    text = f"pg_hba.conf line {line} (host all all 0.0.0.0/0 trust)"
    fails_exactly(run, {
        "PG-HBA-METHOD": f"{where(cluster)}: {text} accepts TCP connections with trust, expected scram-sha-256 "
                         "(CIS PostgreSQL 16 5.2): change the method to scram-sha-256 and reload",
        "PG-HBA-OPEN": f"{where(cluster)}: {text} lets superusers or replication connect from any address, expected "
                       "a narrow address (pgdsat 5.8): restrict the address to the hosts that need it (and the user "
                       "to the application's roles) and reload",
    })


def test_second_superuser_fails_the_superuser_allow_list(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    try:
        superuser_sql(cluster, "CREATE ROLE opsverify_test_root SUPERUSER NOLOGIN")
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, "DROP ROLE IF EXISTS opsverify_test_root")
    fails_exactly(run, {
        "PG-SUPERUSERS": f"{where(cluster)}: roles opsverify_test_root are superusers outside the allow-list "
                         "[postgres] (CIS PostgreSQL 16 4.2): ALTER ROLE … NOSUPERUSER, or add them to "
                         "security.superusers",
    })


@pytest.mark.parametrize(("attribute", "field", "cis"), [
    ("CREATEROLE", "createrole", "4.2"), ("BYPASSRLS", "bypassrls", "4.2"), ("REPLICATION", "replication", "7.1"),
])
def test_role_attribute_outside_the_allow_list_fails_its_rule(
    run_checks: Run, profile_variant: Variant, cluster: Postgres, attribute: str, field: str, cis: str
) -> None:
    try:
        superuser_sql(cluster, f"CREATE ROLE opsverify_test_app {attribute} NOLOGIN")
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, "DROP ROLE IF EXISTS opsverify_test_app")
    allowed = "opsverify_replicator" if field == "replication" else ""
    fails_exactly(run, {
        f"PG-{attribute}": f"{where(cluster)}: roles opsverify_test_app have {attribute} outside the allow-list "
                           f"[{allowed}] (CIS PostgreSQL 16 4.2): ALTER ROLE … NO{attribute}, or add them to "
                           f"security.{field}",
    })


def test_md5_password_fails_the_password_hash_rule(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    try:
        superuser_sql(cluster, "SET password_encryption = md5",
                      "CREATE ROLE opsverify_test_md5 LOGIN PASSWORD 'md5-secret'")
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, "DROP ROLE IF EXISTS opsverify_test_md5")
    fails_exactly(run, {
        "PG-PASSWORD-HASHES": f"{where(cluster)}: role passwords stored as md5 or plaintext: opsverify_test_md5 (md5), "
                              "expected SCRAM-SHA-256 (CIS PostgreSQL 16 5.2): with password_encryption = "
                              "scram-sha-256, set each of these passwords again",
    })
    assert "md5-secret" not in run.result.stdout.str()


@pytest.mark.parametrize(("setting", "value", "rule_id", "message"), [
    ("password_encryption", "md5", "PG-PASSWORD-ENCRYPTION",
     "password_encryption is md5, expected scram-sha-256 (pgdsat 5.9): ALTER SYSTEM SET password_encryption = "
     "'scram-sha-256', reload, and set the md5 passwords again"),
    ("log_connections", "off", "PG-LOG-CONNECTIONS",
     "log_connections is off, expected on (CIS PostgreSQL 16 3.1.20): set log_connections = on and reload"),
    ("log_disconnections", "off", "PG-LOG-DISCONNECTIONS",
     "log_disconnections is off, expected on (CIS PostgreSQL 16 3.1.21): set log_disconnections = on and reload"),
    ("log_min_duration_statement", "500", "PG-SLOW-QUERY-LOG",
     "log_min_duration_statement is 500ms, expected 1s as declared (QP-26, CIS PostgreSQL 16 3.1): set "
     "log_min_duration_statement = 1000 and reload, or declare the threshold the team chose"),
    ("ssl", "off", "PG-SSL",
     "ssl is off, expected on (CIS PostgreSQL 16 6.8): set ssl = on with a server certificate (ssl_cert_file, "
     "ssl_key_file) in postgresql.conf and reload"),
])
def test_server_setting_changed_fails_its_rule(
    run_checks: Run, profile_variant: Variant, cluster: Postgres, setting: str, value: str, rule_id: str, message: str
) -> None:
    with cluster.connect() as conn:
        healthy = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (setting,)).fetchone()
    assert healthy is not None
    changes = {"sslmode": "prefer"} if setting == "ssl" else {}  # verify-full cannot reach a server without TLS
    try:
        superuser_sql(cluster, f"ALTER SYSTEM SET {setting} = '{value}'")
        reload_until(cluster, setting, value)
        run = run_checks(profile_variant(on(cluster.port, **changes)), CHECKS)
    finally:
        superuser_sql(cluster, f"ALTER SYSTEM RESET {setting}")
        reload_until(cluster, setting, str(healthy[0]))
    fails_exactly(run, {rule_id: f"{where(cluster)}: {message}"})


def test_create_on_public_for_public_fails_the_public_schema_rule(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    try:
        superuser_sql(cluster, "GRANT CREATE ON SCHEMA public TO PUBLIC", dbname="photonic_foundry")
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, "REVOKE CREATE ON SCHEMA public FROM PUBLIC", dbname="photonic_foundry")
    fails_exactly(run, {
        "PG-PUBLIC-CREATE": f"{where(cluster)}: PUBLIC holds CREATE on schema public, expected no such grant "
                            "(pgdsat 4.8): REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    })


def test_extension_outside_the_allow_list_fails_the_extension_rule(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    try:
        superuser_sql(cluster, "CREATE EXTENSION pgcrypto", dbname="photonic_foundry")
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, "DROP EXTENSION IF EXISTS pgcrypto", dbname="photonic_foundry")
    fails_exactly(run, {
        "PG-EXTENSIONS": f"{where(cluster)}: extensions pgcrypto are installed outside the allow-list "
                         "[plpgsql, pg_stat_statements] (CIS PostgreSQL 16 1.5): DROP EXTENSION the unused ones, "
                         "or add them to security.extensions",
    })


def test_cluster_without_data_checksums_fails_the_checksum_rule(
    run_checks: Run, profile_variant: Variant, sandbox: Profile
) -> None:
    plain = make_cluster(sandbox, checksums=False)
    try:
        run = run_checks(profile_variant(on(plain.port)), CHECKS)
    finally:
        remove(plain)
    fails_exactly(run, {
        "PG-DATA-CHECKSUMS": f"{where(plain)}: data_checksums is off, expected on (pgdsat 1.3.3): stop the server "
                             "and run pg_checksums --enable on its data directory (or initdb --data-checksums a new "
                             "cluster)",
    })


def test_role_without_the_grants_skips_the_rules_naming_the_grant(
    run_checks: Run, profile_variant: Variant, cluster: Postgres, tmp_path: Path
) -> None:
    secret = tmp_path / "plain.pass"
    secret.write_text("plain-secret\n")
    try:
        superuser_sql(cluster, "CREATE ROLE opsverify_plain LOGIN PASSWORD 'plain-secret'")
        run = run_checks(profile_variant(on(cluster.port, user="opsverify_plain", password_file=str(secret))), CHECKS)
    finally:
        superuser_sql(cluster, "DROP ROLE IF EXISTS opsverify_plain")
    assert run.failed() == set()
    at = f"{where(cluster)}: role opsverify_plain cannot read what rule"
    hba = ("GRANT SELECT ON pg_hba_file_rules TO opsverify_plain and GRANT EXECUTE ON FUNCTION pg_hba_file_rules() "
           "TO opsverify_plain")
    skipped = {
        "PG-HBA-METHOD": f"{at} PG-HBA-METHOD needs: {hba}",
        "PG-HBA-OPEN": f"{at} PG-HBA-OPEN needs: {hba}",
        "PG-PASSWORD-HASHES": f"{at} PG-PASSWORD-HASHES needs: GRANT pg_read_all_data TO opsverify_plain, or a "
                              "superuser role (only those read pg_authid, where the password kinds are)",
    }
    for rule_id, message in skipped.items():
        assert run.outcome(rule(rule_id)) == "skipped"
        assert run.message(rule(rule_id)) == message
    assert {r for r in RULES if run.outcome(rule(r)) == "passed"} == set(RULES) - set(skipped)


def test_unreachable_database_fails_every_rule(run_checks: Run, profile_variant: Variant) -> None:
    port = free_port()
    run = run_checks(profile_variant(on(port)), CHECKS)
    assert run.failed() == {rule(r) for r in RULES}
    assert run.message(rule("PG-SSL")).startswith(
        f"database photonic_foundry at 127.0.0.1:{port}/photonic_foundry: cannot read the security configuration "
        "as role opsverify: ")
