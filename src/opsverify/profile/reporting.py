"""What a run leaves behind beyond its reports: waivers, the history store, monitoring output (issue 12).

All of it is optional: a profile without ``reporting:`` keeps its history in ``reports/history.sqlite``
and writes no textfile, pushes nowhere and calls no webhook.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

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


class HistoryDatabase(Model):
    """A PostgreSQL database that keeps the run history (instead of the SQLite file next to the reports)."""

    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str
    user: str
    password: SecretStr | None = None
    password_file: ExistingFile | None = None
    sslmode: str = "prefer"
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
        "shipped with opsverify)",
    )
    runbook_url: str | None = Field(
        default=None,
        description="the link each check's Allure result carries per runbook procedure it verifies: a URL with "
        "{id}, e.g. https://git.example.com/ops/runbooks/-/blob/main/INVENTORY.md#{id} (default: the inventory "
        "file's file:// URL with #{id})",
    )
    history: History = History()
    textfile: Path | None = Field(
        default=None, description="write the run's metrics here for node-exporter's textfile collector (a .prom file)"
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
        return value


class DrDocument(Model):
    """The disaster-recovery document QP-16 keeps current (reviewed every quarter)."""

    file: Path = Field(description="the document, e.g. docs/disaster-recovery.md in a git checkout (a missing one "
                       "fails the check)")
    max_age: Duration = Field(default=timedelta(days=92), description="it must have been reviewed within this")
