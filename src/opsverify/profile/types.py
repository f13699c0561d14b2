"""The building blocks of every profile section: durations, names, files, the frozen base models."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from opsverify.durations import DURATION_PATTERN, duration_text, parse_duration

# A string with a unit (a bare number is refused), positive and at most 3650d; shown (JSON, schema
# defaults) in the profile's own syntax, so a default copied from the schema parses back equal.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(duration_text, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "15m", "1h", "30d"]}),
]
Percent = Annotated[float, Field(ge=0, le=100)]


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"{path} is not a readable file: create it or fix the path")
    return path


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path: write it from /")
    return value


AbsolutePath = Annotated[str, AfterValidator(_absolute)]  # a path (or glob) on a host that may not be this one
Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]


class Model(BaseModel):
    """Base of every profile section: frozen, unknown keys are errors, floats are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Named(Model):
    """A component with a name; its repr is just that, so reports show names and never settings."""

    name: Name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
