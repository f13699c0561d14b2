"""Redis security checks (checks/security/test_redis_security.py) against real faults on throwaway redis-servers.

Each test starts its own redis-server (no password, an app user allowed FLUSHALL, protected-mode no, a real
bind on 0.0.0.0, a checking user without ACL permissions, TLS), points a copy of the sandbox profile at it and
asserts exactly which check fails (or skips) and its one-line message. The healthy sandbox passes every check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsverify.errors import LocalServerError
from opsverify.localserver.net import free_port
from opsverify.localserver.redis import RedisServer, start_redis

Run = Callable[..., Any]
Variant = Callable[..., Path]
Mutation = Callable[[dict[str, Any]], None]
CHECKS = "security/test_redis_security.py"
UNAUTH = "test_redis_security.py::test_unauthenticated_clients_are_refused[cache]"
PROTECTED = "test_redis_security.py::test_protected_mode_is_on[cache]"
BIND = "test_redis_security.py::test_not_bound_to_a_wildcard[cache]"
APP = "test_redis_security.py::test_app_users_cannot_run_dangerous_commands[cache]"
DEFAULT = "test_redis_security.py::test_default_user_is_disabled_or_passworded[cache]"
ALL = {UNAUTH, PROTECTED, BIND, APP, DEFAULT}
PASSWORD = "checker-test-secret"
SAFE_APP = "user app on >app-test-secret ~* &* +@all -@dangerous -keys -flushall -flushdb -config -debug -module " \
    "-shutdown -script"
DENIED = "FLUSHALL, FLUSHDB, CONFIG, DEBUG, KEYS, MODULE, SHUTDOWN, SCRIPT"


def redis_at(server: RedisServer, tmp_path: Path, **values: Any) -> Mutation:
    """Keep only the sandbox's Redis, pointed at ``server`` (its password in a file), with ``values`` on top."""

    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "databases", "dependencies", "hosts"):
            data[key] = []
        entry = data["redis"][0]
        entry.update(port=server.port, password=None, password_file=None, security={"app_users": ["app"]})
        if server.password is not None:
            secret = tmp_path / "redis.pass"
            secret.write_text(server.password + "\n")
            secret.chmod(0o600)
            entry["password_file"] = str(secret)
        entry.update(values)
        data["redis"] = [entry]

    return mutate


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``throwaway(password, *extra_lines)``: a redis-server of this test on a free port, stopped after it."""
    started: list[RedisServer] = []

    def start(password: str | None = PASSWORD, *extra: str, port: int | None = None) -> RedisServer:
        server = start_redis(tmp_path / f"redis{len(started)}", port or free_port(), password, extra=extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=10)


def test_healthy_sandbox_passes_every_redis_security_check(run_checks: Run, profile_variant: Variant) -> None:
    run = run_checks(profile_variant(), CHECKS)
    assert run.failed() == set()
    assert {run.outcome(t) for t in ALL} == {"passed"}
    assert run.checks[APP]["evidence"]["allowed"] == "none"
    assert run.checks[DEFAULT]["evidence"]["default_flags"] == "on"  # flags only: never a password hash
    assert "passwords" not in (run.report_dir / "evidence.json").read_text()


def test_redis_without_password_fails_the_authentication_checks(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(None, SAFE_APP)  # the app user is fine: only the missing password is the fault
    run = run_checks(profile_variant(redis_at(server, tmp_path)), CHECKS)
    where = f"redis cache at 127.0.0.1:{server.port}"
    # without requirepass the default user is nopass: an unauthenticated client is logged in as it (one fault, 2 rules)
    assert run.failed() == {UNAUTH, DEFAULT}
    assert run.message(UNAUTH) == (
        f"{where} answered an unauthenticated PING with 'PONG' (expected NOAUTH): anyone reaching the port can use "
        "it; set a password (requirepass, or ACL SETUSER default off) and declare it in the profile (password_file)")
    assert run.message(DEFAULT) == (
        f"{where}: the default user is on with nopass (flags on nopass), so every connection acts as it without a "
        "password; disable it (ACL SETUSER default off) or give it a password (requirepass)")


def test_app_user_allowed_flushall_fails_naming_it(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, "user app on >app-test-secret ~* &* +@all -keys -flushdb -config -debug -module "
                       "-shutdown -script")  # no -@dangerous, no -flushall: FLUSHALL is allowed
    run = run_checks(profile_variant(redis_at(server, tmp_path)), CHECKS)
    assert run.failed() == {APP}
    assert run.message(APP) == (
        f"redis cache at 127.0.0.1:{server.port}: app may run FLUSHALL (ACL DRYRUN; expected all of {DENIED} "
        "denied): deny them (ACL SETUSER app -flushall) and persist it in the ACL file or redis.conf")


def test_every_app_user_and_command_is_named(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, SAFE_APP, "user worker on >w ~* +@all -keys -flushdb -config -debug -module -script",
                       "user reader on >r ~* +@all -@dangerous -keys -script +config|get")
    run = run_checks(profile_variant(redis_at(server, tmp_path, security={"app_users": ["app", "ghost"]})), CHECKS)
    assert run.failed() == {APP}
    assert run.message(APP) == (
        f"redis cache at 127.0.0.1:{server.port} has no ACL user ghost (security.app_users): create it (ACL SETUSER) "
        "or correct security.app_users")
    run = run_checks(profile_variant(redis_at(server, tmp_path, security={"app_users": ["app", "worker", "reader"]})),
                     CHECKS)
    assert run.failed() == {APP}
    assert run.message(APP) == (
        f"redis cache at 127.0.0.1:{server.port}: worker may run FLUSHALL, SHUTDOWN; reader may run CONFIG "
        f"(config|get) (ACL DRYRUN; expected all of {DENIED} denied): deny them (ACL SETUSER worker -flushall "
        "-shutdown; ACL SETUSER reader -config) and persist it in the ACL file or redis.conf")


def test_protected_mode_off_fails_its_check(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, SAFE_APP, "protected-mode no")
    run = run_checks(profile_variant(redis_at(server, tmp_path)), CHECKS)
    assert run.failed() == {PROTECTED}
    assert run.message(PROTECTED) == (
        f"redis cache at 127.0.0.1:{server.port} runs with protected-mode no (expected yes): without a password it "
        "serves any address it listens on; set protected-mode yes in its redis.conf")


def test_wildcard_bind_fails_unless_declared(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, SAFE_APP, "bind 0.0.0.0")  # a real listen on every interface, password on
    run = run_checks(profile_variant(redis_at(server, tmp_path)), CHECKS)
    assert run.failed() == {BIND}
    assert run.message(BIND) == (
        f"redis cache at 127.0.0.1:{server.port} listens on every interface (bind 0.0.0.0): bind it to the addresses "
        "its clients use (bind 127.0.0.1 or a private address), or declare security.wildcard_bind: true")
    declared = {"app_users": ["app"], "wildcard_bind": True}
    run = run_checks(profile_variant(redis_at(server, tmp_path, security=declared)), CHECKS)
    assert run.failed() == set()
    assert run.outcome(BIND) == "skipped"
    assert run.message(BIND) == "profile allows redis cache a wildcard bind (security.wildcard_bind: true)"


def test_checking_user_without_acl_permissions_skips_naming_the_grant(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, SAFE_APP,
                       "user checker on >checker-pass ~* +@all -config|get -acl|dryrun -acl|getuser")
    secret = tmp_path / "checker.pass"
    secret.write_text("checker-pass\n")
    run = run_checks(profile_variant(redis_at(server, tmp_path, username="checker", password_file=str(secret))),
                     CHECKS)
    where = f"redis cache at 127.0.0.1:{server.port}: the checking user checker may not"
    assert run.failed() == set()
    assert run.outcome(UNAUTH) == "passed"
    assert {run.outcome(t) for t in ALL - {UNAUTH}} == {"skipped"}
    assert run.message(PROTECTED) == f"{where} read protected-mode; grant it (ACL SETUSER checker +config|get)"
    assert run.message(BIND) == f"{where} read bind; grant it (ACL SETUSER checker +config|get)"
    assert run.message(APP) == (
        f"{where} dry-run the application users' commands; grant it (ACL SETUSER checker +acl|dryrun)")
    assert run.message(DEFAULT) == f"{where} read the default user's flags; grant it (ACL SETUSER checker +acl|getuser)"


def test_stopped_redis_fails_every_check_naming_the_first_failure(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, SAFE_APP)
    server.stop(timeout=10)
    run = run_checks(profile_variant(redis_at(server, tmp_path)), CHECKS)
    where = f"redis cache at 127.0.0.1:{server.port} did not answer"
    assert run.failed() == ALL
    assert run.message(UNAUTH) == f"{where}: connection refused"
    first = f"skipped probing: cache at 127.0.0.1:{server.port} did not answer at "
    for test in ALL - {UNAUTH}:
        assert run.message(test).startswith(f"{where}: {first}"), run.message(test)
        assert run.message(test).endswith(" (connection refused)")


@pytest.fixture
def tls_redis(tmp_path: Path, throwaway: Callable[..., RedisServer]) -> tuple[RedisServer, Path]:
    """A redis-server speaking only TLS (``port 0``, ``tls-port``) with a CA-signed certificate for 127.0.0.1."""
    from opsverify.sandbox.tls import create_tls

    files = create_tls(tmp_path / "tls")
    port = free_port()
    lines = ("port 0", f"tls-port {port}", f"tls-cert-file {files.cert}", f"tls-key-file {files.key}",
             f"tls-ca-cert-file {files.ca}", "tls-auth-clients no")
    try:
        server = throwaway(PASSWORD, SAFE_APP, *lines, port=port)
    except LocalServerError as exc:
        log = (tmp_path / "redis0" / "redis.log").read_text(errors="replace")
        if "TLS" in log and ("not supported" in log or "Bad directive" in log):
            pytest.skip(f"this redis-server is built without TLS: {exc}")
        raise
    return server, files.ca


def test_redis_over_tls_is_checked_over_tls(
    run_checks: Run, profile_variant: Variant, tls_redis: tuple[RedisServer, Path], tmp_path: Path
) -> None:
    server, ca = tls_redis
    mutate = redis_at(server, tmp_path, tls=True, ca_file=str(ca))
    run = run_checks(profile_variant(mutate), CHECKS, "health/test_redis.py::test_redis_answers_ping_within_budget")
    assert run.failed() == set()
    assert {run.outcome(t) for t in ALL} == {"passed"}
    assert run.outcome("test_redis.py::test_redis_answers_ping_within_budget[cache]") == "passed"
    assert run.checks[UNAUTH]["evidence"]["unauthenticated_reply"] == "NOAUTH Authentication required."
    plain = run_checks(profile_variant(redis_at(server, tmp_path)), CHECKS)  # tls undeclared: no plain-text answer
    assert plain.failed() == ALL
    assert plain.message(UNAUTH) == (
        f"redis cache at 127.0.0.1:{server.port} did not answer: the server closed the connection without replying "
        "to PING (a TLS port? then declare tls: true and ca_file)")


def test_rdb_fetch_speaks_tls_when_declared(tls_redis: tuple[RedisServer, Path], tmp_path: Path) -> None:
    from datetime import timedelta

    from opsverify.backups.jobs import fetch_rdb
    from opsverify.profile.model import RedisInstance

    server, ca = tls_redis
    secret = tmp_path / "tls.pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    instance = RedisInstance(name="cache", port=server.port, tls=True, ca_file=ca, password_file=secret)
    fetched = fetch_rdb(instance, tmp_path / "fetched.rdb", timedelta(seconds=30))
    assert fetched.error is None
    assert fetched.path.read_bytes()[:5] == b"REDIS"
    plain = fetch_rdb(instance.model_copy(update={"tls": False}), tmp_path / "plain.rdb", timedelta(seconds=30))
    assert plain.error is not None


def test_denied_commands_must_be_command_names() -> None:
    from pydantic import ValidationError

    from opsverify.profile.security import RedisSecurity

    assert RedisSecurity(denied_commands=["flushall", "config|set"]).denied_commands == ["FLUSHALL", "CONFIG|SET"]
    with pytest.raises(ValidationError) as raised:
        RedisSecurity(denied_commands=["config set"])
    assert raised.value.errors()[0]["msg"] == (
        "Value error, 'config set': not a Redis command name: write a command (FLUSHALL) or command|subcommand "
        "(CONFIG|SET), of letters, digits, - and _")


def test_unknown_denied_command_fails_naming_the_entry(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, SAFE_APP)
    security = {"app_users": ["app"], "denied_commands": ["FLUSHAL", "config|nope", "flushall"]}
    run = run_checks(profile_variant(redis_at(server, tmp_path, security=security)), CHECKS)
    assert run.failed() == {APP}
    assert run.message(APP) == (
        f"redis cache at 127.0.0.1:{server.port} knows no command FLUSHAL, CONFIG|NOPE (security.denied_commands "
        "entries; not even renamed away): correct the entry to a command or command|subcommand the server lists "
        "(COMMAND INFO, ACL CAT), or remove it")


def test_subcommand_entry_is_dry_run_and_a_renamed_away_command_is_denied(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, "user app on >app-test-secret ~* &* +@all -@dangerous +config|set",
                       'rename-command flushall ""')
    security = {"app_users": ["app"], "denied_commands": ["config|set", "config|get", "FLUSHALL"]}
    run = run_checks(profile_variant(redis_at(server, tmp_path, security=security)), CHECKS)
    assert run.failed() == {APP}
    assert run.message(APP) == (
        f"redis cache at 127.0.0.1:{server.port}: app may run CONFIG|SET (ACL DRYRUN; expected all of CONFIG|SET, "
        "CONFIG|GET, FLUSHALL denied): deny them (ACL SETUSER app -config|set) and persist it in the ACL file or "
        "redis.conf")
    assert run.checks[APP]["evidence"]["absent"] == "FLUSHALL"
    assert run.checks[APP]["evidence"]["unknown_commands"] == "none"


def test_wrong_or_missing_password_is_named_as_refused_credentials(
    run_checks: Run, profile_variant: Variant, throwaway: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = throwaway(PASSWORD, SAFE_APP)
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    ping = "health/test_redis.py::test_redis_answers_ping_within_budget"
    ping_id = "test_redis.py::test_redis_answers_ping_within_budget[cache]"
    where = f"redis cache at 127.0.0.1:{server.port}"
    run = run_checks(profile_variant(redis_at(server, tmp_path, password_file=str(wrong))), CHECKS, ping)
    assert run.failed() == ALL - {UNAUTH} | {ping_id}  # the server answered the raw PING with NOAUTH
    for test in ALL - {UNAUTH} | {ping_id}:
        assert run.message(test) == (
            f"{where} refused the profile's credentials (invalid username-password pair or user is disabled): "
            "check password/password_file and username"), test
    run = run_checks(profile_variant(redis_at(server, tmp_path, password_file=None)), CHECKS, ping)
    assert run.failed() == ALL - {UNAUTH} | {ping_id}
    for test in ALL - {UNAUTH} | {ping_id}:
        assert run.message(test) == (
            f"{where} wants a password the profile does not give (NOAUTH): set password or password_file (and "
            "username for an ACL user)"), test
