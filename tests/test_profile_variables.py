"""``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` in a profile mean what they mean in POSIX sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opsverify.errors import ProfileError
from opsverify.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
PF = ROOT / "environments" / "photonic-foundry.yaml"


def value(tmp_path: Path, form: str, environ: dict[str, str]) -> str:
    path = tmp_path / "profile.yaml"
    path.write_text(f"name: x\ndatabases:\n  - name: db\n    host: 'h{form}'\n    dbname: d\n    user: u\n")
    return load_profile(path, environ).databases[0].host.removeprefix("h")


@pytest.mark.parametrize("form", ["${V:-dflt}", "${V-dflt}", "${V}", "${V:-}", "${V-}"])
@pytest.mark.parametrize("environ", [{}, {"V": ""}, {"V": "set"}], ids=["unset", "empty", "set"])
def test_each_form_expands_as_the_shell_expands_it(tmp_path: Path, form: str, environ: dict[str, str]) -> None:
    shell = subprocess.run(["sh", "-c", f'printf %s "{form}"'], env=environ, capture_output=True, text=True,
                           check=True).stdout
    if form == "${V}" and not environ:
        with pytest.raises(ProfileError) as caught:
            value(tmp_path, form, environ)
        assert caught.value.problems == [
            "databases[0].host (line 4): environment variable V is not set (or write ${V:-default})"]
        return
    assert value(tmp_path, form, environ) == shell


def test_an_empty_variable_takes_the_default_only_with_the_colon(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text("name: x\ndatabases:\n  - name: a\n    port: ${A_PORT:-5433}\n    dbname: d\n    user: u\n"
                    "  - name: b\n    port: ${B_PORT-5434}\n    dbname: d\n    user: u\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path, {"A_PORT": "", "B_PORT": ""})
    assert caught.value.problems == [
        "databases[1].port (line 8): Input should be a valid integer, unable to parse string as an integer "
        '(the value "" of ${B_PORT})']
    assert [db.port for db in load_profile(path, {"A_PORT": ""}).databases] == [5433, 5434]


def test_shipped_profile_empty_variables_take_runbook_defaults_but_empty_archive_paths_declare_none() -> None:
    empty = load_profile(PF, {"PF_DB_PORT": "", "PF_DB_HOST": "", "PF_WAL_ARCHIVING": ""})
    db = empty.database("photonic_foundry")
    assert (db.host, db.port, db.wal_archiving) == ("postgres", 5432, True)
    assert (db.wal_archive, db.base_backups) == (Path("/backups/wal"), Path("/backups/base"))
    off = load_profile(PF, {"PF_WAL_ARCHIVING": "false", "PF_WAL_ARCHIVE": "", "PF_BASE_BACKUPS": ""})
    db = off.database("photonic_foundry")
    assert (db.wal_archiving, db.wal_archive, db.base_backups) == (False, None, None)
    with pytest.raises(ProfileError) as caught:  # archiving off, the archive still declared: one clear problem
        load_profile(PF, {"PF_WAL_ARCHIVING": "false"})
    assert [p.split(": ", 1)[1] for p in caught.value.problems] == [
        "wal_archive is checked only when the server archives WAL: set wal_archiving: true"]
