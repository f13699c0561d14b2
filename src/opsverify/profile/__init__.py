"""Profile model and loader."""

from __future__ import annotations

from opsverify.profile.loader import choose_profile_path, load_profile, profile_schema
from opsverify.profile.model import (
    BackupSource,
    Database,
    Dependency,
    Host,
    HttpService,
    MetricsExpectation,
    Objective,
    Profile,
    RedisInstance,
)

__all__ = [
    "BackupSource",
    "Database",
    "Dependency",
    "Host",
    "HttpService",
    "MetricsExpectation",
    "Objective",
    "Profile",
    "RedisInstance",
    "choose_profile_path",
    "load_profile",
    "profile_schema",
]
