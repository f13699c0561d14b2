"""Issue 9, review of profiles as a new user: secrets never as defaults, cross-reference gaps, values from
the environment named in errors, a mistyped --profile, the RPO warning per database, --connect output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opsverify.errors import ProfileError
from opsverify.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "profile.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load_profile(path, environ or {})
    return caught.value.problems


def opsverify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsverify", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env=env,
    )


# 1. a secret is never written in the profile, not even as a default ---------------------------------------------


def test_a_secret_written_as_a_default_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\n"
        "databases:\n"
        "  - {name: pf, dbname: pf, user: u, password: '${PF_DB_PASSWORD:-hunter2}'}\n"
        "  - {name: pg, dbname: pf, user: u, backup_user: b, backup_password: '${PF_BACKUP_PASSWORD-hunter2}'}\n"
        "redis: [{name: c, password: $$}]\n",
    )
    found = problems(path, {"PF_DB_PASSWORD": "s3cret"})
    assert found == [
        "databases[0].password (line 3): a secret must not be written in the profile, not even as the default of "
        "${PF_DB_PASSWORD}: write ${PF_DB_PASSWORD} (or ${PF_DB_PASSWORD:-} for none), or use password_file",
        "databases[1].backup_password (line 4): a secret must not be written in the profile, not even as the default "
        "of ${PF_BACKUP_PASSWORD}: write ${PF_BACKUP_PASSWORD} (or ${PF_BACKUP_PASSWORD:-} for none), or use "
        "backup_password_file",
        "redis[0].password (line 5): a secret must not be written in the profile: use ${VAR} or password_file",
    ]
    assert not any("hunter2" in p for p in found)


def test_a_secret_from_a_variable_or_an_empty_default_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\n"
        "databases:\n"
        "  - {name: pf, dbname: pf, user: u, password: '${PF_DB_PASSWORD}'}\n"
        "  - {name: pg, dbname: pf, user: u, password: '${PF_NONE:-}'}\n"
        "  - {name: ph, dbname: pf, user: u, password: '${PF_NONE-}'}\n",
    )
    profile = load_profile(path, {"PF_DB_PASSWORD": "s3cret"})
    assert [d.secret() for d in profile.databases] == ["s3cret", None, None]
