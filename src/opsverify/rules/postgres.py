"""PostgreSQL security rules (issue 10): one small function each over ``PgSecurityFacts`` and the policy.

Each rule is registered with an ID, a title stating what it expects, its CIS PostgreSQL benchmark
reference (the CIS PostgreSQL 16 section numbers as pgdsat uses them; "pgdsat N" where the check is
one of pgdsat's additions to the benchmark), the parts of the facts it needs (a part the checking
role may not read makes the rule unjudgeable: ``missing_grant``), and the runbook procedures it
verifies. A rule returns its findings: each one sentence after "database X at host:port/db: ",
naming what was measured, what is expected, the reference and the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from opsverify.durations import format_duration
from opsverify.probes.pgsecurity import HbaRule, PgSecurityFacts, RoleAttributes
from opsverify.profile.security import PostgresSecurity

Judge = Callable[[PgSecurityFacts, PostgresSecurity], list[str]]


@dataclass(frozen=True)
class Rule:
    """One PostgreSQL security rule."""

    id: str
    title: str
    cis: str
    needs: tuple[str, ...]  # parts of the facts (``settings``, ``password_hashes``, ``hba``) it reads
    judge: Judge
    runbook: tuple[str, ...] = ()

    def missing_grant(self, facts: PgSecurityFacts) -> str | None:
        """The grant the checking role lacks to judge this rule, if any."""
        return next((facts.missing[part] for part in self.needs if part in facts.missing), None)

    def findings(self, facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
        return self.judge(facts, policy)


RULES: dict[str, Rule] = {}


def rule(
    rule_id: str, title: str, cis: str, needs: tuple[str, ...] = (), runbook: tuple[str, ...] = ()
) -> Callable[[Judge], Judge]:
    """Register the decorated function as rule ``rule_id``."""

    def register(judge: Judge) -> Judge:
        RULES[rule_id] = Rule(rule_id, title, cis, needs, judge, runbook)
        return judge

    return register


def names(items: list[str]) -> str:
    return ", ".join(items)


def _setting(facts: PgSecurityFacts, name: str) -> str:
    return facts.settings.get(name, "(unset)")


@rule("PG-SSL", "the server has ssl = on", "CIS PostgreSQL 16 6.8", ("settings",))
def ssl_on(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    if not policy.require_ssl or _setting(facts, "ssl") == "on":
        return []
    return [f"ssl is {_setting(facts, 'ssl')}, expected on (CIS PostgreSQL 16 6.8): set ssl = on with a server "
            "certificate (ssl_cert_file, ssl_key_file) in postgresql.conf and reload"]


@rule("PG-PASSWORD-ENCRYPTION", "password_encryption is scram-sha-256", "pgdsat 5.9", ("settings",))
def scram_encryption(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    value = _setting(facts, "password_encryption")
    if value == "scram-sha-256":
        return []
    return [f"password_encryption is {value}, expected scram-sha-256 (pgdsat 5.9): ALTER SYSTEM SET "
            "password_encryption = 'scram-sha-256', reload, and set the md5 passwords again"]


@rule("PG-PASSWORD-HASHES", "no role has an md5 or plaintext password", "CIS PostgreSQL 16 5.2", ("password_hashes",))
def scram_hashes(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    weak = {kind: [n for n, k in facts.password_kinds.items() if k == kind] for kind in ("md5", "plaintext")}
    found = [f"{names(roles)} ({kind})" for kind, roles in weak.items() if roles]
    if not found:
        return []
    return [f"role passwords stored as md5 or plaintext: {'; '.join(found)}, expected SCRAM-SHA-256 "
            "(CIS PostgreSQL 16 5.2): with password_encryption = scram-sha-256, set each of these passwords again"]


def hba_address(line: HbaRule) -> str:
    """The rule's address as written (``0.0.0.0/0``), the keyword (``all``) or ``local``."""
    if line.address is None:
        return "local"
    if line.netmask:
        try:
            return str(ipaddress.ip_network(f"{line.address}/{line.netmask}", strict=False))
        except ValueError:
            return f"{line.address}/{line.netmask}"
    return line.address


def hba_text(line: HbaRule) -> str:
    """``line 7 (host all all 0.0.0.0/0 trust)``."""
    where = [hba_address(line)] if line.address is not None else []
    fields = [line.type, ",".join(line.databases), ",".join(line.users), *where, line.method]
    return f"line {line.line} ({' '.join(fields)})"


@rule("PG-HBA-METHOD", "no TCP rule of pg_hba.conf uses trust or password", "CIS PostgreSQL 16 5.2", ("hba",))
def hba_methods(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    weak = [line for line in facts.hba if line.type != "local" and line.method in ("trust", "password")]
    if not weak:
        return []
    return [f"pg_hba.conf {names([hba_text(line) for line in weak])} accepts TCP connections with "
            f"{names(sorted({line.method for line in weak}))}, expected scram-sha-256 (CIS PostgreSQL 16 5.2): "
            "change the method to scram-sha-256 and reload"]


def open_to_all(line: HbaRule) -> bool:
    """A TCP rule for every address: ``all``, ``0.0.0.0/0`` or ``::/0``."""
    if line.type == "local" or line.address is None:
        return False
    if line.address == "all":
        return True
    try:
        return ipaddress.ip_network(f"{line.address}/{line.netmask or line.address}", strict=False).prefixlen == 0
    except ValueError:
        return False


@rule("PG-HBA-OPEN", "no pg_hba.conf rule lets superusers or replication in from any address", "pgdsat 5.8", ("hba",))
def hba_open(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    supers = {r.name for r in facts.roles if r.superuser}
    privileged = [
        line for line in facts.hba
        if open_to_all(line) and ("replication" in line.databases or {"all", *supers} & set(line.users))
    ]
    if not privileged:
        return []
    return [f"pg_hba.conf {names([hba_text(line) for line in privileged])} lets superusers or replication connect "
            "from any address, expected a narrow address (pgdsat 5.8): restrict the address to the hosts that need "
            "it (and the user to the application's roles) and reload"]


def _outside(facts: PgSecurityFacts, has: Callable[[RoleAttributes], bool], allowed: list[str]) -> list[str]:
    return [r.name for r in facts.roles if has(r) and r.name not in allowed]


@rule("PG-SUPERUSERS", "superusers are within the allow-list", "CIS PostgreSQL 16 4.2", runbook=("PF-13",))
def superusers(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    extra = _outside(facts, lambda r: r.superuser, policy.superusers)
    if not extra:
        return []
    return [f"roles {names(extra)} are superusers outside the allow-list [{names(policy.superusers)}] "
            f"(CIS PostgreSQL 16 4.2): ALTER ROLE … NOSUPERUSER, or add them to security.superusers"]


def _attribute_rule(attribute: str, field: str, has: Callable[[RoleAttributes], bool]) -> Judge:
    def judge(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
        allowed: list[str] = getattr(policy, field)
        extra = _outside(facts, lambda r: has(r) and not r.superuser, allowed)
        if not extra:
            return []
        return [f"roles {names(extra)} have {attribute} outside the allow-list [{names(allowed)}] "
                f"(CIS PostgreSQL 16 4.2): ALTER ROLE … NO{attribute}, or add them to security.{field}"]

    return judge


rule("PG-CREATEROLE", "roles with CREATEROLE are within the allow-list", "CIS PostgreSQL 16 4.2",
     runbook=("PF-13",))(_attribute_rule("CREATEROLE", "createrole", lambda r: r.createrole))
rule("PG-BYPASSRLS", "roles with BYPASSRLS are within the allow-list", "CIS PostgreSQL 16 4.2",
     runbook=("PF-13",))(_attribute_rule("BYPASSRLS", "bypassrls", lambda r: r.bypassrls))
rule("PG-REPLICATION", "roles with REPLICATION are within the allow-list", "CIS PostgreSQL 16 7.1",
     runbook=("PF-13",))(_attribute_rule("REPLICATION", "replication", lambda r: r.replication))


@rule("PG-PUBLIC-CREATE", "PUBLIC cannot CREATE in schema public", "pgdsat 4.8")
def public_create(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    if not facts.public_create:
        return []
    return ["PUBLIC holds CREATE on schema public, expected no such grant (pgdsat 4.8): "
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC"]


def _on(setting: str, cis: str) -> Judge:
    def judge(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
        value = _setting(facts, setting)
        if not policy.log_connections or value == "on":
            return []
        return [f"{setting} is {value}, expected on ({cis}): set {setting} = on and reload"]

    return judge


rule("PG-LOG-CONNECTIONS", "log_connections is on", "CIS PostgreSQL 16 3.1.20", ("settings",))(
    _on("log_connections", "CIS PostgreSQL 16 3.1.20"))
rule("PG-LOG-DISCONNECTIONS", "log_disconnections is on", "CIS PostgreSQL 16 3.1.21", ("settings",))(
    _on("log_disconnections", "CIS PostgreSQL 16 3.1.21"))


def _ms(value: str) -> str:
    try:
        number = int(value)
    except ValueError:
        return value
    return "-1 (off)" if number < 0 else format_duration(timedelta(milliseconds=number))


@rule("PG-SLOW-QUERY-LOG", "log_min_duration_statement is as declared (QP-26)", "CIS PostgreSQL 16 3.1",
      ("settings",), runbook=("QP-26",))
def slow_query_log(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    value = _setting(facts, "log_min_duration_statement")
    declared = policy.log_min_duration_statement
    ref = "QP-26, CIS PostgreSQL 16 3.1"
    if declared is None:
        if value.lstrip("-").isdigit() and int(value) >= 0:
            return []
        return [f"log_min_duration_statement is {_ms(value)}, expected slow queries logged ({ref}): "
                "set log_min_duration_statement to the team's threshold and reload"]
    expected = int(declared.total_seconds() * 1000)
    if value == str(expected):
        return []
    return [f"log_min_duration_statement is {_ms(value)}, expected {format_duration(declared)} as declared ({ref}): "
            f"set log_min_duration_statement = {expected} and reload, or declare the threshold the team chose"]


@rule("PG-EXTENSIONS", "no installed extension outside the allow-list", "CIS PostgreSQL 16 1.5")
def extensions(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    extra = [name for name in facts.extensions if name not in policy.extensions]
    if not extra:
        return []
    return [f"extensions {names(extra)} are installed outside the allow-list [{names(policy.extensions)}] "
            "(CIS PostgreSQL 16 1.5): DROP EXTENSION the unused ones, or add them to security.extensions"]


@rule("PG-DATA-CHECKSUMS", "the cluster has data checksums on", "pgdsat 1.3.3", ("settings",))
def data_checksums(facts: PgSecurityFacts, policy: PostgresSecurity) -> list[str]:
    value = _setting(facts, "data_checksums")
    if not policy.data_checksums or value == "on":
        return []
    return [f"data_checksums is {value}, expected on (pgdsat 1.3.3): stop the server and run "
            "pg_checksums --enable on its data directory (or initdb --data-checksums a new cluster)"]


def evaluate(facts: PgSecurityFacts, policy: PostgresSecurity) -> dict[str, list[str] | str]:
    """Every rule's findings, or the grant it lacks (a string) — what the bench and a report call."""
    return {r.id: (r.missing_grant(facts) or r.findings(facts, policy)) for r in RULES.values()}
