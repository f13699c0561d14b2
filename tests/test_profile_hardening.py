"""Issue 9, profiles: every problem in one pass, strict durations, schema defaults in the profile's own
syntax, hardened loading (FIFO, devices, size, encoding, nesting, aliases, duplicate keys, bounded numbers)
and clean CLI and pytest errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_profile import problems, write

from opsverify.durations import MAX_DURATION, duration_text, parse_duration
from opsverify.profile import load_profile, profile_schema
from opsverify.profile.loader import MAX_BYTES

ROOT = Path(__file__).resolve().parents[1]
FORMS = "500ms, 90s, 15m, 1h or 30d"




def opsverify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsverify", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


# 1. every problem in one pass -------------------------------------------------------------------------------


def test_cross_reference_and_field_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\n"
        "hosts: [{name: h, cpu_samples: 0}, {name: h}]\n"
        "databases: [{name: pf, dbname: pf, user: u, port: 0, wal_archiving: true}]\n"
        "backups:\n"
        "  - {name: b, kind: postgres, path: /b, host: elsewhere, database: nope, rpo: soon}\n"
        "drills: [{name: d, backup: nope, database: pf, objective: app}]\n"
        "replicas: [{name: r, primary: gone, dbname: pf, user: u}]\n"
        "objectives: [{component: application, rto: 15m, rpo: 5m}]\n",
    )
    assert problems(path) == [  # in the file's order
        "hosts[0].cpu_samples (line 2): Input should be greater than or equal to 1",
        "hosts[1].name (line 2): name 'h' is used more than once (first at hosts[0])",
        "databases[0].port (line 3): Input should be greater than or equal to 1",
        "backups[0].database (line 5): database 'nope' is not a declared database",
        "backups[0].host (line 5): host 'elsewhere' is not declared (known: ['h'])",
        "backups[0].rpo (line 5): 'soon' is not a duration: write it as 500ms, 90s, 15m, 1h or 30d",
        "drills[0].backup (line 6): backup 'nope' is not declared (known: ['b'])",
        "drills[0].objective (line 6): objective 'app' is not declared (known: ['application'])",
        "replicas[0].primary (line 7): primary 'gone' is not a declared database",
        "objectives (line 8): database pf declares wal_archiving (databases[0]), so a `database` objective (its RPO) "
        "is needed: add one",
    ]


def test_a_replica_without_max_lag_needs_a_database_objective(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\ndatabases: [{name: pf, dbname: pf, user: u}]\nreplicas: [{name: r, primary: pf, dbname: pf, "
        "user: u}]\nobjectives: [{component: application, rto: 15m, rpo: 5m}]\n",
    )
    assert problems(path) == [
        "objectives (line 4): replica r declares no max_lag (replicas[0]), so a `database` objective (its RPO) is "
        "needed: add one"
    ]


def test_a_profile_built_in_python_is_cross_checked_too() -> None:
    from opsverify.profile import Profile

    with pytest.raises(ValueError, match=r"drills\[0\]\.backup: backup 'b' is not declared \(known: \[\]\)"):
        Profile.model_validate({"name": "x", "drills": [{"name": "d", "backup": "b", "database": "db"}]})


# 2. durations are strings with a unit, positive and bounded ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20", "20 is a bare number: a duration needs a unit, so write 20s or 20ms (or 15m, 1h, 30d)"),
        ("'20'", "20 is a bare number: a duration needs a unit, so write 20s or 20ms (or 15m, 1h, 30d)"),
        ("2.5", "2.5 is a bare number: a duration needs a unit, so write 2.5s or 2.5ms (or 15m, 1h, 30d)"),
        ("-86400", f"-86400 is a bare negative number: a duration is positive and has a unit, as {FORMS}"),
        ("0", f"0 is a bare number: a duration is positive and has a unit, as {FORMS}"),
        ("-5m", f"'-5m' is not a duration: write it as {FORMS}"),
        ("0s", f"'0s' is not a positive duration: write it as {FORMS}"),
        ("0ms", f"'0ms' is not a positive duration: write it as {FORMS}"),
        ("99999999999999d", "'99999999999999d' is longer than 3650d, the longest duration a profile takes"),
        ("3651d", "'3651d' is longer than 3650d, the longest duration a profile takes"),
        ("9" * 400 + "s", f"'{'9' * 400}s' is longer than 3650d, the longest duration a profile takes"),
        (".inf", f"inf is not a duration: write it with a unit, as {FORMS}"),
        (".nan", f"nan is not a duration: write it with a unit, as {FORMS}"),
        ("true", f"expected a duration such as {FORMS}, got True"),
    ],
)
def test_a_duration_is_a_positive_bounded_string_with_a_unit(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, f"name: x\ntimeouts:\n  connect: {value}\n")
    assert problems(path) == [f"timeouts.connect (line 3): {message}"]


def test_bare_number_in_any_duration_field_names_the_unit_forms(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nredis: [{name: c, ping_budget: 20}]\n")
    assert problems(path) == [
        "redis[0].ping_budget (line 2): 20 is a bare number: a duration needs a unit, so write 20s or 20ms "
        "(or 15m, 1h, 30d)"
    ]


def test_longest_duration_is_accepted(tmp_path: Path) -> None:
    loaded = load_profile(write(tmp_path, "name: x\nbackups: [{name: b, kind: archive, path: /b, retention: 3650d}]\n"))
    assert loaded.backups[0].retention == MAX_DURATION


@pytest.mark.parametrize("seconds", [0.001, 0.5, 1, 59, 90, 3600, 5400, 86400, 90061.5, 3650 * 86400])
def test_duration_text_round_trips(seconds: float) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(duration_text(value)) == value
    assert duration_text(timedelta(days=1)) == "1d"
    assert duration_text(timedelta(seconds=90)) == "1m30s"


def test_shipped_and_documented_profiles_write_durations_with_units() -> None:
    env = {"DB_HOST": "db", "DB_PASSWORD": "x", "PF_DB_PASSWORD": "y"}
    for name in ("photonic-foundry", "quantum-planner"):
        assert load_profile(ROOT / "environments" / f"{name}.yaml", env).name


# 3. schema defaults in the profile's own syntax --------------------------------------------------------------


def _defaults(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for owner, definition in [("Profile", schema), *schema["$defs"].items()]:
        properties = definition.get("properties", {}).items()
        found += [(f"{owner}.{key}", prop) for key, prop in properties if "default" in prop]
    return found


def test_schema_defaults_are_written_as_in_a_profile_and_validate_against_the_schema() -> None:
    schema = profile_schema()
    defaults = _defaults(schema)
    assert len(defaults) > 50
    for where, prop in defaults:
        jsonschema.Draft202012Validator({**prop, "$defs": schema["$defs"]}).validate(prop["default"])
        if prop.get("pattern", "").endswith("(ms|s|m|h|d|w)\\s*)+$"):
            assert parse_duration(prop["default"]) > timedelta(0), where
    props = {where: prop for where, prop in defaults}
    assert props["BackupSource.schedule"]["default"] == "1d"
    assert props["Timeouts.connect"]["default"] == "5s"
    assert props["Profile.timeouts"]["default"] == {"connect": "5s", "request": "10s"}
    assert props["RedisInstance.ping_budget"]["default"] == "50ms"
    assert '"P1D"' not in opsverify("profile", "schema").stdout


def test_schema_bounds_every_integer() -> None:
    schema = profile_schema()
    unbounded = []
    for owner, definition in schema["$defs"].items():
        for key, prop in definition.get("properties", {}).items():
            for alternative in prop.get("anyOf", [prop]):
                if alternative.get("type") == "integer" and "maximum" not in alternative:
                    unbounded.append(f"{owner}.{key}")
    assert unbounded == []


# 4. hardened loading -----------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "profile.yaml"
    os.mkfifo(fifo)
    assert problems(fifo) == ["this is a FIFO, not a regular file: a profile is read only from a regular YAML file"]


@pytest.mark.timeout(10)
def test_device_and_directory_are_refused() -> None:
    assert problems(Path("/dev/zero")) == [
        "this is a device, not a regular file: a profile is read only from a regular YAML file"
    ]
    assert problems(ROOT / "environments") == ["this is a directory, not a file: name the profile's YAML file in it"]


def test_odd_paths_are_one_problem(tmp_path: Path) -> None:
    assert problems(tmp_path / "a\0b.yaml") == ["cannot read the file: its path holds a NUL byte"]
    assert problems(tmp_path / ("x" * 300)) == ["cannot read the file: File name too long"]


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as out:
        out.truncate(MAX_BYTES + 1)
    assert problems(path) == [f"the file is {MAX_BYTES + 1:,} bytes or more, over the 8 MiB a profile may have"]


def test_non_utf8_names_line_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: x\ndescription: caf\xe9\n")
    assert problems(path) == ["line 2: the file is not UTF-8 (byte 0xe9 at offset 24): save it as UTF-8"]


def test_control_character_is_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndescription: a\x00b\n")
    assert problems(path) == [
        "line 2: not valid YAML (the control character U+0000 is not allowed: remove it)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ntables: " + "[" * 500 + "]" * 500 + "\n",
         "not a usable profile: line 2: nested deeper than 32 levels: a profile is a few levels deep"),
        ("name: x\nhosts: &a [*a]\n",
         "not a usable profile: line 2: the alias *a is inside its own anchor &a (a loop)"),
        ("name: x\nhosts: *a\n", "not a usable profile: line 2: the alias *a names no anchor &a before it"),
        ("name: x\n" + "".join(
            f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 10) + "]\n" for i in range(9)),
         "not a usable profile: line 6: aliases expand to more than 100,000 values (an anchor bomb?)"),
        ("name: x\n---\nname: y\n", "not a usable profile: line 2: a profile is one YAML document: drop the `---`"),
        ("name: !!binary eA==\n",
         "not a usable profile: line 1: the tag tag:yaml.org,2002:binary is not supported in a profile: drop it"),
        ("name: !!python/object/apply:os.system [true]\n",
         "not a usable profile: line 1: the tag tag:yaml.org,2002:python/object/apply:os.system is not supported in "
         "a profile: drop it"),
        ("name: x\n? [a]\n: b\n",
         "not a usable profile: line 2: a mapping key must be a plain value, not a list or mapping"),
    ],
)
def test_yaml_bombs_and_oddities_are_one_problem(tmp_path: Path, text: str, message: str) -> None:
    assert problems(write(tmp_path, text)) == [message]


def test_duplicate_keys_are_refused_at_every_level_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nservices: []\nhosts:\n  - name: a\n    name: b\nservices: []\n")
    assert problems(path) == [
        "services (line 2): the key services appears twice (lines 2 and 6): keep one",
        "hosts[0].name (line 4): the key name appears twice (lines 4 and 5): keep one",
    ]


def test_merge_keys_and_anchors_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\ndatabases:\n  - &db {name: a, dbname: d, user: u, port: 5433}\n  - {<<: *db, name: b}\n",
    )
    assert [(d.name, d.port) for d in load_profile(path, {}).databases] == [("a", 5433), ("b", 5433)]


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("backups", "max_verify", "18446744073709551617", "Input should be less than or equal to 10000"),
        ("backups", "rdb_max_version", "1001", "Input should be less than or equal to 1000"),
        ("redis", "db", "100001", "Input should be less than or equal to 100000"),
        ("redis", "port", "65536", "Input should be less than or equal to 65535"),
        ("hosts", "cpu_samples", "101", "Input should be less than or equal to 100"),
        ("drills", "checksum_max_rows", "1000000000001", "Input should be less than or equal to 1000000000000"),
        ("redis", "port", "9" * 5000, "a 5000-digit integer is out of range"),
        ("redis", "port", "'" + "9" * 5000 + "'", "Unable to parse input string as an integer, exceeded maximum size"),
        ("redis", "port", "-" + "9" * 31, "a 31-digit integer is out of range"),
        ("hosts", "cpu_max_percent", ".nan", "Input should be a finite number"),
        ("hosts", "disk_max_percent", "-.inf", "Input should be a finite number"),
    ],
)
def test_every_number_is_bounded(tmp_path: Path, section: str, field: str, value: str, message: str) -> None:
    base = {
        "backups": "{name: b, kind: archive, path: /b",
        "redis": "{name: c",
        "hosts": "{name: h",
        "drills": "{name: d, backup: b, database: db",
    }[section]
    extra = "backups: [{name: b, kind: postgres, path: /b}]\ndatabases: [{name: db, dbname: d, user: u}]\n"
    text = f"name: x\n{section}: [{base}, {field}: {value}}}]\n"
    path = write(tmp_path, text + (extra if section == "drills" else ""))
    assert problems(path) == [f"{section}[0].{field} (line 2): {message}"]


def test_finite_metric_maximum(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nservices: [{name: s, url: 'http://a', metrics: {maximum: {m: .inf}}}]\n")
    assert problems(path) == ["services[0].metrics.maximum.m (line 2): Input should be a finite number"]


# 5. clean CLI and pytest errors ------------------------------------------------------------------------------


def test_schema_into_a_closed_pipe_ends_quietly_with_141() -> None:
    read, write_end = os.pipe()
    os.close(read)  # the reader is gone before the first byte, as with `| head -1` after its line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "opsverify", "profile", "schema"], stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=60, cwd=ROOT, check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_schema_piped_into_head_prints_no_traceback() -> None:
    done = subprocess.run(
        f"{sys.executable} -m opsverify profile schema | head -1", shell=True, capture_output=True, text=True,
        timeout=60, cwd=ROOT, check=False,
    )
    assert (done.stdout, done.stderr) == ("{\n", "")


@pytest.mark.timeout(30)
def test_profile_check_of_bad_files_is_one_line_each(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    write(tmp_path, b"name: \xff\n", "latin.yaml")
    cases = {
        tmp_path / "fifo.yaml": "this is a FIFO, not a regular file: a profile is read only from a regular YAML file",
        tmp_path / "latin.yaml": "line 1: the file is not UTF-8 (byte 0xff at offset 6): save it as UTF-8",
        tmp_path: "this is a directory, not a file: name the profile's YAML file in it",
        tmp_path / "absent.yaml": "cannot read the file: No such file or directory",
    }
    for path, problem in cases.items():
        done = opsverify("profile", "check", str(path))
        assert (done.returncode, done.stdout, done.stderr) == (
            1, "", f"opsverify: profile {path} is not valid: {problem}\n"
        )


def test_mistyped_profile_path_names_the_one_word_form(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = pytester.runpytest_subprocess(
        str(ROOT / "checks"), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
        f"--profile={tmp_path / 'absent.yaml'}", "--no-reports", timeout=60,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"ERROR: no profile at {tmp_path / 'absent.yaml'} (named by --profile): the file does not exist, check the path"
    ) in result.stderr.lines


# 6. an unset secret's hint never suggests a default password --------------------------------------------------


def test_unset_password_variable_suggests_setting_it_or_a_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\ndatabases: [{name: pf, dbname: pf, user: u, password: '${PF_DB_PASSWORD}', port: '${PF_PORT}'}]\n"
        "backups: [{name: b, kind: archive, path: /b, offsite: {url: 's3://b/p', secret_access_key: '${S3_KEY}'}}]\n",
    )
    assert problems(path) == [
        "databases[0].password (line 2): environment variable PF_DB_PASSWORD is not set: set PF_DB_PASSWORD, or use "
        "password_file",
        "databases[0].port (line 2): environment variable PF_PORT is not set (or write ${PF_PORT:-default})",
        "backups[0].offsite.secret_access_key (line 3): environment variable S3_KEY is not set: set S3_KEY, or use "
        "secret_access_key_file",
    ]


# 8. a 20,000-source profile loads (its time is a benchmark, bench/bench_profile.py, not asserted here) ----------


def test_a_20000_source_profile_loads(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_profile import big_profile
    finally:
        sys.path.remove(str(ROOT / "bench"))
    path = write(tmp_path, big_profile(20_000))
    assert path.stat().st_size < MAX_BYTES
    loaded = load_profile(path, {})
    assert (len(loaded.backups), len(loaded.drills)) == (20_000, 2_000)
    broken = write(tmp_path, big_profile(20_000).replace("backup: src-19990,", "backup: nope,"), "broken.yaml")
    first = ", ".join(f"'src-{i:05d}'" for i in range(10))
    assert problems(broken) == [
        f"drills[1999].backup (line 202006): backup 'nope' is not declared (known: [{first}, … (20000 declared)])"
    ]


def test_an_impossible_date_names_the_fix(tmp_path: Path) -> None:
    """A waiver's ``expires: 2026-02-30``: the YAML reader refuses the date; the problem says how to write one."""
    path = write(tmp_path, "name: p\nwaivers:\n  - check: checks/health/test_http_health.py::test_x\n"
                           "    reason: r\n    owner: o\n    ticket: T-1\n    expires: 2026-02-30\n")
    assert problems(path) == ["waivers[0].expires (line 7): '2026-02-30' is not a valid timestamp: write a real date "
                              "as YYYY-MM-DD (the day exists in that month)"]
