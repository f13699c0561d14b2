"""The security sections of a profile: opt-in per layer, and the TLS endpoints the checks handshake with."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fixtures.parametrize import TABLE
from opsverify.profile import Profile

SECURITY_ROWS = ("tls_endpoint", "certificate_file", "secured_database", "secured_redis", "secured_host",
                 "manifest_set", "scanner_report", "lock_file", "bandit_run")


def profile(ca: Path, **extra: object) -> Profile:
    return Profile.model_validate({
        "name": "p",
        "services": [
            {"name": "api", "url": "https://api.example.com:8443", "ca_file": str(ca)},
            {"name": "plain", "url": "http://127.0.0.1:8000"},
        ],
        "databases": [
            {"name": "main", "host": "db.example.com", "dbname": "main", "user": "u", "sslmode": "verify-full",
             "sslrootcert": str(ca)},
            {"name": "same-server", "host": "db.example.com", "dbname": "other", "user": "u", "sslmode": "verify-ca"},
            {"name": "prefer", "host": "db2.example.com", "dbname": "x", "user": "u"},
        ],
        "redis": [{"name": "cache", "host": "redis.example.com", "port": 6380, "tls": True},
                  {"name": "plain", "host": "redis2.example.com"}],
        **extra,
    })


def test_without_a_tls_section_no_endpoint_is_checked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert profile(ca).tls_endpoints() == []


def test_tls_endpoints_are_the_declared_ones_then_https_verify_and_tls_redis_one_per_address(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    declared = {"name": "smtp", "host": "mail.example.com", "port": 465}
    found = profile(ca, tls={"endpoints": [declared]}).tls_endpoints()
    assert [(e.name, e.host, e.port, e.protocol, e.ca_file) for e in found] == [
        ("smtp", "mail.example.com", 465, "tls", None),
        ("api", "api.example.com", 8443, "https", ca),
        ("main", "db.example.com", 5432, "postgres", ca),  # same-server shares host and port: one handshake
        ("cache", "redis.example.com", 6380, "redis", None),
    ]


def test_security_policies_take_their_defaults_and_refuse_unknown_keys() -> None:
    loaded = Profile.model_validate({"name": "p", "databases": [
        {"name": "d", "dbname": "d", "user": "u", "security": {}}]})
    policy = loaded.databases[0].security
    assert policy is not None
    assert policy.superusers == ["postgres"]
    assert policy.data_checksums
    with pytest.raises(ValidationError, match="superuser"):
        Profile.model_validate({"name": "p", "databases": [
            {"name": "d", "dbname": "d", "user": "u", "security": {"superuser": ["x"]}}]})


@pytest.mark.parametrize("row", SECURITY_ROWS)
def test_an_undeclared_security_layer_gives_no_instances(row: str) -> None:
    assert list(TABLE[row].values(Profile(name="p"))) == []
    assert TABLE[row].absent  # the skip reason names what to declare
