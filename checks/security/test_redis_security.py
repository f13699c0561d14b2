"""Redis is locked down: clients must authenticate, protected-mode is on, it listens on no wildcard address, the
application users cannot run dangerous commands and the ``default`` user is disabled or passworded.

Checked over the protocol as the profile's user (an unauthenticated PING besides), per Redis server declaring
``security``. No password is ever read back. Runbook: none. PF-13 (monthly security audit review) verifies
RBAC, service-account and superuser allow-lists; these rules hold Redis to fixed hardening defaults and
allow-list nobody, so they carry no ID (the NO_PROCEDURE exemption of tests/test_runbook_ids.py) and run
monthly, with that review.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.probes.redis import failure
from opsverify.probes.redissecurity import RedisSecurityFacts
from opsverify.profile import RedisInstance

pytestmark = [pytest.mark.security, pytest.mark.monthly]
FactsOf = Callable[[RedisInstance], RedisSecurityFacts]


def answering(secured_redis: RedisInstance, redis_security_of: FactsOf) -> RedisSecurityFacts:
    """The server's security facts, failing the check when it did not answer (naming the first failure) or refused
    the profile's credentials."""
    __tracebackhide__ = True
    facts = redis_security_of(secured_redis)
    expect(facts.is_answering, f"redis {secured_redis.name} at {facts.address} {failure(facts.error)}")
    return facts


def test_unauthenticated_clients_are_refused(
    secured_redis: RedisInstance, redis_security_of: FactsOf, evidence: Recorder
) -> None:
    """A connection that never authenticated gets NOAUTH to PING (requirepass, or a default user off/passworded)."""
    facts = redis_security_of(secured_redis)
    evidence.record(unauthenticated_reply=facts.unauthenticated_reply)
    expect(facts.unauthenticated_reply is not None,
           f"redis {secured_redis.name} at {facts.address} did not answer: {facts.error}")
    expect(
        facts.refuses_unauthenticated,
        f"redis {secured_redis.name} at {facts.address} answered an unauthenticated PING with "
        f"{facts.unauthenticated_reply!r} (expected NOAUTH): anyone reaching the port can use it; set a password "
        "(requirepass, or ACL SETUSER default off) and declare it in the profile (password_file)",
    )


def test_protected_mode_is_on(secured_redis: RedisInstance, redis_security_of: FactsOf, evidence: Recorder) -> None:
    """``CONFIG GET protected-mode`` is ``yes``."""
    facts = answering(secured_redis, redis_security_of)
    name, where = secured_redis.name, facts.address
    evidence.record(protected_mode=facts.config.get("protected-mode"), config_refused=facts.config_refused)
    if facts.config_unknown:
        fail(f"redis {name} at {where} does not know CONFIG ({facts.config_refused}): cannot read protected-mode; "
             f"CONFIG is renamed or disabled: deny it by ACL to the application users instead (ACL SETUSER <user> "
             f"-config) so that {facts.user} can read it")
    if facts.config_refused is not None:
        pytest.skip(f"redis {name} at {where}: the checking user {facts.user} may not read protected-mode; grant it "
                    f"(ACL SETUSER {facts.user} {facts.config_refused})")
    value = facts.config.get("protected-mode")
    expect(value == "yes", f"redis {name} at {where} runs with protected-mode {value} (expected yes): without a "
           "password it serves any address it listens on; set protected-mode yes in its redis.conf")


def test_not_bound_to_a_wildcard(
    secured_redis: RedisInstance, redis_security_of: FactsOf, evidence: Recorder
) -> None:
    """``CONFIG GET bind`` names no wildcard (``*``, ``0.0.0.0``, ``::``), unless ``security.wildcard_bind``."""
    assert secured_redis.security is not None
    if secured_redis.security.wildcard_bind:
        pytest.skip(f"profile allows redis {secured_redis.name} a wildcard bind (security.wildcard_bind: true)")
    facts = answering(secured_redis, redis_security_of)
    name, where = secured_redis.name, facts.address
    evidence.record(bind=facts.config.get("bind"), config_refused=facts.config_refused)
    if facts.config_unknown:
        fail(f"redis {name} at {where} does not know CONFIG ({facts.config_refused}): cannot read bind; CONFIG is "
             f"renamed or disabled: deny it by ACL to the application users instead (ACL SETUSER <user> -config) "
             f"so that {facts.user} can read it")
    if facts.config_refused is not None:
        pytest.skip(f"redis {name} at {where}: the checking user {facts.user} may not read bind; grant it "
                    f"(ACL SETUSER {facts.user} {facts.config_refused})")
    expect(
        not facts.wildcard_binds,
        f"redis {name} at {where} listens on every interface (bind {facts.config.get('bind')}): bind it to the "
        "addresses its clients use (bind 127.0.0.1 or a private address), or declare security.wildcard_bind: true",
    )


def test_app_users_cannot_run_dangerous_commands(
    secured_redis: RedisInstance, redis_security_of: FactsOf, evidence: Recorder
) -> None:
    """``ACL DRYRUN`` of each application user x denied command (each subcommand of CONFIG, SCRIPT, MODULE) is
    refused; a command the server does not run though it knows it (renamed away) counts as denied, one it knows
    under no name (a typo in security.denied_commands) fails naming the entry."""
    policy = secured_redis.security
    assert policy is not None
    if not policy.app_users:
        pytest.skip(f"profile declares no security.app_users for redis {secured_redis.name}")
    facts = answering(secured_redis, redis_security_of)
    name, where = secured_redis.name, facts.address
    allowed = facts.allowed_dryruns
    evidence.record(app_users=" ".join(policy.app_users), denied_commands=" ".join(policy.denied_commands),
                    allowed="; ".join(f"{d.user}: {d.command} ({' '.join(d.allowed)})" for d in allowed) or "none",
                    absent=" ".join(sorted({d.command for d in facts.dryruns if d.absent})) or "none",
                    missing_users=" ".join(facts.missing_users) or "none",
                    unknown_commands=" ".join(facts.unknown_commands) or "none", dryrun_refused=facts.dryrun_refused)
    if facts.dryrun_refused is not None:
        pytest.skip(f"redis {name} at {where}: the checking user {facts.user} may not dry-run the application users' "
                    f"commands; grant it (ACL SETUSER {facts.user} {facts.dryrun_refused})")
    expect(facts.dryrun_error is None,
           f"redis {name} at {where}: cannot dry-run the application users' commands: {facts.dryrun_error}")
    unknown = facts.unknown_commands
    expect(not unknown,
           f"redis {name} at {where} knows no command {', '.join(unknown)} (security.denied_commands entr"
           f"{'ies' if len(unknown) > 1 else 'y'}; not even renamed away): correct the entry to a command or "
           "command|subcommand the server lists (COMMAND INFO, ACL CAT), or remove it")
    expect(not facts.missing_users,
           f"redis {name} at {where} has no ACL user {', '.join(facts.missing_users)} (security.app_users): create "
           "it (ACL SETUSER) or correct security.app_users")
    if allowed:
        users = dict.fromkeys(d.user for d in allowed)
        found = "; ".join(
            f"{user} may run " + ", ".join(
                d.command if d.allowed == (d.command.lower(),) else f"{d.command} ({', '.join(d.allowed)})"
                for d in allowed if d.user == user)
            for user in users)
        fixes = "; ".join(
            f"ACL SETUSER {user} " + " ".join(f"-{d.command.lower()}" for d in allowed if d.user == user)
            for user in users)
        fail(f"redis {name} at {where}: {found} (ACL DRYRUN; expected all of {', '.join(policy.denied_commands)} "
             f"denied): deny them ({fixes}) and persist it in the ACL file or redis.conf")


def test_default_user_is_disabled_or_passworded(
    secured_redis: RedisInstance, redis_security_of: FactsOf, evidence: Recorder
) -> None:
    """``ACL GETUSER default`` has the flag ``off``, or lacks ``nopass`` (only the flags are read, never a hash)."""
    facts = answering(secured_redis, redis_security_of)
    name, where = secured_redis.name, facts.address
    evidence.record(default_flags=" ".join(facts.default_flags) if facts.default_flags is not None else None,
                    acl_unknown=facts.acl_unknown, default_refused=facts.default_refused)
    if facts.default_refused is not None:
        pytest.skip(f"redis {name} at {where}: the checking user {facts.user} may not read the default user's "
                    f"flags; grant it (ACL SETUSER {facts.user} {facts.default_refused})")
    flags = facts.default_flags
    measured = f"flags {' '.join(flags)}" if flags is not None else "no ACL command and no requirepass"
    expect(
        facts.default_user_open is False,
        f"redis {name} at {where}: the default user is on with nopass ({measured}), so every connection acts as it "
        "without a password; disable it (ACL SETUSER default off) or give it a password (requirepass)",
    )
