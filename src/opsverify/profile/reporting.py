"""What a run leaves behind beyond its reports: waivers, the history store, monitoring output (issue 12).

All of it is optional: a profile without ``reporting:`` keeps its history in ``reports/history.sqlite``
and writes no textfile, pushes nowhere and calls no webhook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from opsverify.durations import duration_text, parse_duration
from opsverify.profile.model import read_secret
from opsverify.profile.types import Duration, ExistingFile, Model, Name


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError(f"{parts.scheme}://…@{parts.hostname}: credentials do not belong in the URL; use the "
                         "password or token field (${VAR} or its _file)")
    return value.rstrip("/")


class Waiver(Model):
    """An accepted failure of one check (or of every check a glob matches) until a date, with who and why."""

    check: str = Field(min_length=1, description="a node id (checks/…/test_x.py::test_y[param]) or a glob of them")
    reason: str = Field(min_length=1, description="why the failure is accepted")
    owner: str = Field(min_length=1, description="who accepted it (a person or team address)")
    ticket: str = Field(min_length=1, description="the ticket that tracks the fix")
    expires: date = Field(description="the last day the waiver holds (YYYY-MM-DD); at most waiver_max_ahead ahead")


WAIVER_FIELDS = {
    "check": "the node id pytest prints (checks/…/test_x.py::test_y[param]) or a glob of them",
    "reason": "why the failure is accepted",
    "owner": "who accepted it (a person or team address)",
    "ticket": "the ticket that tracks the fix",
    "expires": "the last day the waiver holds, as YYYY-MM-DD",
}
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def waiver_problems(data: object, today: date | None = None) -> list[tuple[tuple[str | int, ...], str]]:
    """Every problem of the ``waivers:`` section, with its path: a missing or empty field, an ``expires`` that is
    not a YYYY-MM-DD date or lies more than ``reporting.waiver_max_ahead`` after ``today`` (UTC), a ``check`` that
    is neither a node id nor a glob. ``data`` is the raw profile mapping or a ``Profile``; an expired waiver is no
    problem here (``opsverify profile check`` and the run warn about it)."""
    today = today or datetime.now(UTC).date()
    ahead = _max_ahead(_field(_field(data, "reporting"), "waiver_max_ahead"))
    problems: list[tuple[tuple[str | int, ...], str]] = []
    waivers = _field(data, "waivers")
    for index, waiver in enumerate(waivers if isinstance(waivers, (list, tuple)) else ()):
        if not isinstance(waiver, (Mapping, Waiver)):
            continue
        for key, what in WAIVER_FIELDS.items():
            value = _field(waiver, key, _MISSING)
            if value is _MISSING:
                limit = f", at most {duration_text(ahead)} ahead" if key == "expires" else ""
                problems.append((("waivers", index, key), f"{key} is required: {what}{limit}"))
            elif isinstance(value, str) and not value.strip():
                problems.append((("waivers", index, key), f"{key} is empty: {what}"))
        check = _field(waiver, "check")
        if isinstance(check, str) and check.strip() and (why := _check_problem(check)):
            problems.append((("waivers", index, "check"), f"{check[:120]!r} {why}: name the test file and let a glob "
                             "stand only in the test name and parameter, e.g. checks/health/test_http_health.py::*"
                             "[photonic-foundry]"))
        problems += _expiry_problems(index, _field(waiver, "expires"), today, ahead)
    return problems


def _check_problem(check: str) -> str | None:
    """Why a waiver's ``check`` names no test file, or None. The part before ``::`` must be a path ending in ``.py``
    whose file name is more than wildcards (``test_`` and ``.py`` aside): ``*``, ``checks/*`` or
    ``checks/health/*.py::*`` would waive every check of the suite or of a directory, including ones added later
    that nobody has looked at, so a catch-all is refused rather than trusted."""
    if "::" not in check:
        return "names no test file (a node id is checks/…/test_x.py::test_y[param])"
    path = check.split("::", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if not path.endswith(".py"):
        return f"names no test file ({path[:80]!r} before :: does not end in .py)"
    if not name.removesuffix(".py").removeprefix("test_").strip("*?"):
        return (f"names no test file ({name!r} is wildcards only, test_ and .py aside), so it would waive every "
                "check of a directory, new ones too, unseen")
    return None


def _expiry_problems(index: int, value: object, today: date, ahead: timedelta) -> list[tuple[tuple[str | int,
                                                                                                   ...], str]]:
    path: tuple[str | int, ...] = ("waivers", index, "expires")
    day = _day(value)
    if day is None:
        if value is None or value is _MISSING or (isinstance(value, str) and not value.strip()):
            return []  # reported as missing or empty, or by the YAML reader
        return [(path, f"{str(value)[:40]!r} is not a date: write the last day the waiver holds as YYYY-MM-DD")]
    latest = today + ahead
    if day > latest:
        return [(path, f"{day} is more than {duration_text(ahead)} ahead (reporting.waiver_max_ahead): the latest "
                 f"allowed today is {latest}; set expires to {latest} or earlier and renew the waiver then")]
    return []


def _day(value: object) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DAY.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _max_ahead(value: object) -> timedelta:
    try:
        return parse_duration(value) if isinstance(value, (str, timedelta)) else timedelta(days=90)
    except ValueError:  # reported by field validation
        return timedelta(days=90)


_MISSING = object()


def _field(item: object, key: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default) if isinstance(item, Model) else default


class HistoryDatabase(Model):
    """A PostgreSQL database that keeps the run history (instead of the SQLite file next to the reports)."""

    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str
    user: str
    password: SecretStr | None = None
    password_file: ExistingFile | None = None
    sslmode: str = "prefer"
    sslrootcert: ExistingFile | None = Field(default=None, description="CA file for sslmode verify-ca/verify-full")
    table_prefix: Name = Field(default="opsverify_", description="prefix of the history tables it creates")

    def secret(self) -> str | None:
        """The password, from the environment or its file."""
        return read_secret(self.password, self.password_file)


class History(Model):
    """Where each run's evidence is appended, and for how long it is kept."""

    sqlite: Path | None = Field(
        default=None, description="the SQLite file (default: history.sqlite in the reports root, beside the runs)"
    )
    postgres: HistoryDatabase | None = Field(default=None, description="keep the history in PostgreSQL instead")
    keep: Duration = Field(default=timedelta(days=400), description="runs older than this are deleted at each append")
    max_runs: int = Field(default=5000, ge=10, le=1_000_000, description="at most this many runs are kept")

    @model_validator(mode="after")
    def _one_store(self) -> History:
        if self.sqlite is not None and self.postgres is not None:
            raise ValueError("declare either sqlite or postgres, not both")
        return self


class Pushgateway(Model):
    """A Prometheus Pushgateway the run's metrics are pushed to, once per run."""

    url: str = Field(description="base URL, e.g. http://pushgateway:9091")
    job: Name = "opsverify"
    timeout: Duration = timedelta(seconds=10)
    ca_file: ExistingFile | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: ExistingFile | None = None

    def secret(self) -> str | None:
        """The basic-auth password, from the environment or its file."""
        return read_secret(self.password, self.password_file)

    _url = field_validator("url")(_http_url)


class Webhook(Model):
    """A JSON POST of the run's outcome (failures first), with a timeout and retries."""

    url: str
    on: Literal["failure", "always"] = Field(
        default="failure", description="post after a run with a failure, or always"
    )
    timeout: Duration = timedelta(seconds=10)
    retries: int = Field(
        default=3, ge=0, le=10, description="further attempts after a failed one (1 s, 2 s, 4 s … apart)"
    )
    ca_file: ExistingFile | None = None
    token: SecretStr | None = Field(default=None, description="sent as `Authorization: Bearer …`: ${VAR} only")
    token_file: ExistingFile | None = None

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        """YAML 1.1 reads an unquoted ``on:`` key as the boolean true: take that key as ``on``."""
        if isinstance(data, Mapping) and True in data and "on" not in data:
            return {("on" if key is True else key): value for key, value in data.items()}
        return data

    def secret(self) -> str | None:
        """The bearer token, from the environment or its file."""
        return read_secret(self.token, self.token_file)

    _url = field_validator("url")(_http_url)


class Reporting(Model):
    """Coverage table, history, monitoring output and the waiver policy."""

    inventory: ExistingFile | None = Field(
        default=None,
        description="an INVENTORY-style markdown file: tables whose rows start | ID | cadence | procedure | what "
        "the check verifies |; the summary's coverage matrix is read from it (default: the runbooks/INVENTORY.md "
        "shipped with opsverify), shown before the shipped one, which is read too (the suite's own checks carry its "
        "PF/QP IDs); a team's checks may carry only IDs one of them lists",
    )
    runbook_url: str | None = Field(
        default=None,
        description="the link each check's Allure result carries per runbook procedure it verifies: a URL with "
        "{id}, e.g. https://git.example.com/ops/runbooks/-/blob/main/INVENTORY.md#{id} (default: the inventory "
        "file's file:// URL with #{id})",
    )
    history: History = History()
    textfile: Path | None = Field(
        default=None,
        description="write the run's metrics here for node-exporter's textfile collector (a .prom file); "
        "{selection} in it stands for the run's -m selection (daily, weekly, daily_or_dr; all without -m), e.g. "
        "/var/lib/node_exporter/textfile/opsverify-{selection}.prom: recommended, since without it each run "
        "overwrites the one file (a -m weekly run replaces the daily run's failures)",
    )
    pushgateway: Pushgateway | None = None
    webhook: Webhook | None = None
    waiver_max_ahead: Duration = Field(
        default=timedelta(days=90), description="a waiver may expire at most this far after the day of the run"
    )

    @field_validator("runbook_url")
    @classmethod
    def _runbook_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "{id}" not in value:
            raise ValueError(f"{value!r} has no {{id}}: write where a procedure's ID goes, e.g. …/INVENTORY.md#{{id}}")
        try:
            value.format(id="PF-01")
        except (KeyError, IndexError, ValueError):
            problem = f"{value!r}: only {{id}} may stand in braces (write a literal brace as {{{{ or }}}})"
            raise ValueError(problem) from None
        return value

    @field_validator("textfile")
    @classmethod
    def _prom(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".prom":
            raise ValueError(f"{value}: node-exporter's textfile collector reads only *.prom files")
        if value is not None:
            try:
                str(value).format(selection="daily")
            except (KeyError, IndexError, ValueError):
                raise ValueError(f"{value}: only {{selection}} may stand in braces (write a literal brace as {{{{ or "
                                 "}})") from None
        return value


class DrDocument(Model):
    """The disaster-recovery document QP-16 keeps current (reviewed every quarter)."""

    file: Path = Field(description="the document, e.g. docs/disaster-recovery.md in a git checkout (a missing one "
                       "fails the check)")
    max_age: Duration = Field(default=timedelta(days=92), description="it must have been reviewed within this")
