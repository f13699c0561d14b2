"""The profile loader: interpolation, durations, defaults, secrets, and every bad input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from opsverify.durations import format_duration, parse_duration
from opsverify.errors import OpsverifyError, ProfileError
from opsverify.profile import load_profile, profile_schema

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str | bytes, name: str = "profile.yaml") -> Path:
    """``text`` as the file ``name`` in ``tmp_path`` (bytes as they are: a file that is not UTF-8)."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load_profile(path, environ or {})
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("90s", 90), ("15m", 900), ("1h", 3600), ("30d", 2592000), ("1h30m", 5400)],
)
def test_durations_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10 parsecs", "h1", "1y", "-5m"])
def test_bad_durations_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="500ms, 90s, 15m, 1h or 30d"):
        parse_duration(text)


def test_durations_format_compactly() -> None:
    assert format_duration(timedelta(hours=31)) == "1d7h"
    assert format_duration(timedelta(milliseconds=850)) == "850ms"
    assert format_duration(timedelta(seconds=90)) == "1m30s"


def test_minimal_profile_gets_runbook_defaults(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, "name: x\nhosts: [{name: h}]\n"), {})
    assert profile.role == "staging"
    assert profile.hosts[0].cpu_max_percent == 80
    assert profile.hosts[0].disk_max_percent == 85
    table = {o.component: (o.rto, o.rpo) for o in profile.objectives}
    assert table["database"] == (timedelta(minutes=30), timedelta(hours=1))
    assert table["full-system"] == (timedelta(hours=2), timedelta(hours=4))


def test_variables_and_defaults_are_interpolated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\ndatabases:\n  - name: db\n    host: ${DB_HOST:-db.local}\n    port: ${DB_PORT}\n"
        "    dbname: app\n    user: u\n    password: ${DB_PASSWORD}\n",
    )
    db = load_profile(path, {"DB_PORT": "6543", "DB_PASSWORD": "s3cret"}).databases[0]
    assert (db.host, db.port, db.secret()) == ("db.local", 6543, "s3cret")
    assert "s3cret" not in repr(db)


def test_password_file_is_relative_to_the_profile(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    path = write(tmp_path, "name: x\nredis:\n  - name: cache\n    password_file: pw\n")
    assert load_profile(path, {}).redis[0].secret() == "from-file"


def test_profile_is_frozen(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, "name: x\n"), {})
    with pytest.raises(ValueError, match="frozen"):
        profile.name = "y"  # type: ignore[misc]


def test_every_problem_is_reported_with_its_yaml_path_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\nservices:\n  - name: api\n    url: ftp://nowhere\n    latency_budget: soon\n"
        "    colour: blue\ndatabases:\n  - name: db\n    dbname: d\n    user: u\n    port: 70000\n",
    )
    found = problems(path)
    assert "services[0].url (line 4): 'ftp://nowhere' is not an http:// or https:// URL" in found
    assert any(p.startswith("services[0].latency_budget (line 5): 'soon' is not a duration") for p in found)
    assert any(p.startswith("services[0].colour (line 6): unknown key") for p in found)
    assert any(p.startswith("databases[0].port (line 11):") for p in found)
    assert len(found) == 4


def test_literal_secret_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nredis:\n  - name: c\n    password: hunter2\n")
    assert problems(path) == [
        "redis[0].password (line 4): a secret must not be written in the profile: use ${VAR} or password_file"
    ]


def test_unset_variable_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndependencies:\n  - name: b\n    url: ${BACKEND_URL}\n")
    assert problems(path) == [
        "dependencies[0].url (line 4): environment variable BACKEND_URL is not set (or write ${BACKEND_URL:-default})"
    ]


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nhosts: [{name: a}, {name: a}]\n")
    assert problems(path) == ["hosts[1].name (line 2): name 'a' is used more than once (first at hosts[0])"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("name: [unclosed\n", "not valid YAML"), ("- a\n- b\n", "expected a mapping"), ("role: staging\n", "name")],
)
def test_malformed_files_give_one_clear_problem(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in " ".join(problems(write(tmp_path, text)))


def test_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    assert problems(tmp_path / "absent.yaml")[0].startswith("cannot read the file")


def test_shipped_profiles_validate_with_their_variables() -> None:
    env = {"DB_HOST": "db", "DB_PASSWORD": "x", "PF_DB_PASSWORD": "y"}
    for name in ("photonic-foundry", "quantum-planner"):
        profile = load_profile(ROOT / "environments" / f"{name}.yaml", env)
        assert profile.role == "production"
        assert profile.databases
        assert profile.backups


def test_schema_lists_sections_and_durations_as_strings() -> None:
    schema = profile_schema()
    assert {"services", "databases", "redis", "hosts", "backups", "objectives"} <= set(schema["properties"])
    assert schema["$defs"]["Timeouts"]["properties"]["connect"]["type"] == "string"


BACKUPS = (
    "backups: [{name: pf, kind: postgres, path: /b, pattern: 'x*'}]\ndatabases: [{name: pf, dbname: pf, user: u}]\n"
)


def test_drill_must_name_declared_backup_and_database(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n" + BACKUPS + "drills: [{name: d, backup: nope, database: pf}]\n")
    assert problems(path) == ["drills[0].backup (line 4): backup 'nope' is not declared (known: ['pf'])"]


def test_drill_of_a_table_scoped_series_is_refused(tmp_path: Path) -> None:
    tables = BACKUPS.replace("pattern: 'x*'}", "pattern: 'x*', scope: tables}")
    path = write(tmp_path, "name: x\n" + tables + "drills: [{name: d, backup: pf, database: pf}]\n")
    assert problems(path) == [
        "drills[0].backup (line 4): backup 'pf' has scope: tables (a pg_dump -t series), whose tables cannot be "
        "restored alone into an empty scratch database (their foreign keys and types name objects the dump lacks): "
        "drill a scope: full series of the same database instead"
    ]
    assert load_profile(write(tmp_path, "name: x\n" + BACKUPS + "drills: [{name: d, backup: pf, database: pf}]\n"))


def test_wal_archiving_without_a_database_objective_is_one_profile_problem(tmp_path: Path) -> None:
    text = "name: x\ndatabases: [{name: pf, dbname: pf, user: u, wal_archiving: true}]\n"
    path = write(tmp_path, text + "objectives: [{component: application, rto: 15m, rpo: 5m}]\n")
    assert problems(path) == [
        "objectives (line 3): database pf declares wal_archiving (databases[0]), so a `database` objective "
        "(its RPO) is needed: add one"
    ]


def test_lookups_return_what_the_profile_declares(tmp_path: Path) -> None:
    loaded = load_profile(write(tmp_path, "name: x\n" + BACKUPS))
    assert loaded.database("pf").dbname == "pf"
    assert loaded.backup("pf").kind == "postgres"
    assert loaded.objective("database").rpo == timedelta(hours=1)
    with pytest.raises(OpsverifyError, match=r"no host named 'h' is declared \(known: \[\]\)"):
        loaded.host("h")


def test_backup_names_a_declared_database(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nbackups: [{name: pf, kind: postgres, path: /b, database: nope}]\n")
    assert problems(path) == ["backups[0].database (line 2): database 'nope' is not a declared database"]


def test_drill_restores_either_a_database_or_redis(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n" + BACKUPS + "drills: [{name: d, backup: pf}]\n")
    assert problems(path) == [
        "drills[0] (line 4): a drill restores either a database (database: NAME) or a Redis RDB (redis: NAME)"
    ]


def test_offsite_url_and_s3_secret_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nbackups: [{name: b, kind: archive, path: /b,\n"
                 "  offsite: {url: 'http://bucket/x', secret_access_key: literal}}]\n")
    found = problems(path)
    assert any("backups[0].offsite.secret_access_key" in p and "must not be written in the profile" in p for p in found)
    assert any("backups[0].offsite.url" in p and "is not an s3://bucket/prefix URL" in p for p in found)


def test_shipped_profiles_declare_offsite_and_expected_content(tmp_path: Path) -> None:
    qp = load_profile(ROOT / "environments" / "quantum-planner.yaml", {"DB_HOST": "db", "DB_PASSWORD": "p"})
    daily = next(b for b in qp.backups if b.name == "database-daily")
    assert daily.offsite is not None
    assert daily.offsite.url == "s3://quantum-planner-backups/database/"
    assert daily.retention == timedelta(days=7)
    pf = load_profile(ROOT / "environments" / "photonic-foundry.yaml", {"PF_DB_PASSWORD": "p"})
    assert {b.name: b.kinds for b in pf.backups if b.kind == "config"}["k8s-secrets"] == ["Secret"]
