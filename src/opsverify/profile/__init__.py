"""Profile model and loader."""

from __future__ import annotations

from opsverify.profile.environment import Profile
from opsverify.profile.loader import choose_profile_path, load_profile, profile_schema
from opsverify.profile.model import (
    BackupSource,
    Database,
    Dependency,
    Host,
    HttpService,
    MetricsExpectation,
    Objective,
    RedisInstance,
    Timeouts,
)
from opsverify.profile.recovery import Drill, Replica, RestoreTarget

__all__ = [
    "BackupSource",
    "Database",
    "Dependency",
    "Drill",
    "Host",
    "HttpService",
    "MetricsExpectation",
    "Objective",
    "Profile",
    "RedisInstance",
    "Replica",
    "RestoreTarget",
    "Timeouts",
    "choose_profile_path",
    "load_profile",
    "profile_schema",
]
