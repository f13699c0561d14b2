"""PostgreSQL security configuration over SQL (issue 10): each rule of ``opsverify.rules.postgres`` is a check.

Per database that declares ``security:``, one read-only session (as the database's ``user``) reads
settings, roles, password hash kinds, ``pg_hba_file_rules``, the ACL of schema ``public`` and the
extensions; each rule then fails on its own with its CIS PostgreSQL reference in the message. A part
the role may not read skips the rules that need it, naming the grant. Runbook: PF-13 (superuser and
role allow-lists) and QP-26 (slow-query logging); the other rules verify no runbook procedure.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.probes.pgsecurity import PgSecurityFacts
from opsverify.profile import Database
from opsverify.rules.postgres import RULES, Rule

pytestmark = [pytest.mark.security, pytest.mark.monthly]
NO_PROCEDURE = pytest.mark.runbook(by_kind={"postgres": ()})
MAINTENANCE_RULES = {"PG-SLOW-QUERY-LOG"}  # log_min_duration_statement as declared (QP-26)


def _param(rule: Rule) -> object:
    mark = pytest.mark.runbook(*rule.runbook) if rule.runbook else NO_PROCEDURE
    if rule.id in MAINTENANCE_RULES:  # QP-26 is upkeep too: `pytest -m maintenance` runs it (issue 11)
        return pytest.param(rule, marks=[mark, pytest.mark.maintenance], id=rule.id)
    return pytest.param(rule, marks=mark, id=rule.id)


@pytest.mark.parametrize("pg_rule", [_param(r) for r in RULES.values()])
def test_postgres_meets_security_rule(
    secured_database: Database, pg_rule: Rule, pg_security_of: Callable[[Database], PgSecurityFacts],
    evidence: Recorder,
) -> None:
    """The server and database meet the rule (its title), judged against the database's ``security`` policy."""
    facts = pg_security_of(secured_database)
    where = f"database {secured_database.name} at {facts.address}"
    expect(facts.is_read, f"{where}: cannot read the security configuration as role {facts.role}: {facts.error}")
    assert secured_database.security is not None  # the parametrization row holds only databases with a policy
    evidence.record(rule=pg_rule.id, expects=pg_rule.title, cis=pg_rule.cis)
    grant = pg_rule.missing_grant(facts)
    if grant:
        pytest.skip(f"{where}: role {facts.role} cannot read what rule {pg_rule.id} needs: {grant}")
    findings = pg_rule.findings(facts, secured_database.security)
    evidence.record(findings=len(findings))
    if findings:
        fail(f"{where}: {findings[0]}")
