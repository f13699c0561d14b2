"""Load a profile: YAML -> ``${VAR}`` interpolation -> pydantic validation.

Every problem is reported with its YAML path (and line), all at once, as a ``ProfileError``.
This is the one module that reads the process environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from opsverify.errors import ProfileError
from opsverify.profile.environment import Profile

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = {"password", "token", "secret", "secret_key", "secret_access_key", "replication_password"}
_SECRET_KEYS |= {"backup_password"}  # a database's backup role (Database.backup_user)
_PATH_KEYS = {
    *("password_file", "ca_file", "ssh_config", "ssh_identity_file"),
    *("secret_access_key_file", "rdb_file", "scratch_dir", "replication_password_file"),
    "backup_password_file",
}
PathKey = tuple[str | int, ...]


def dotted(path: PathKey) -> str:
    """``("databases", 0, "port")`` -> ``databases[0].port``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_map(node: yaml.Node, path: PathKey = ()) -> dict[PathKey, int]:
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines.update(_line_map(value, (*path, str(key.value))))
            lines[(*path, str(key.value))] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            lines.update(_line_map(value, (*path, index)))
    return lines


class _Interpolator:
    def __init__(self, environ: Mapping[str, str], base: Path) -> None:
        self.environ = environ
        self.base = base
        self.problems: list[tuple[PathKey, str]] = []

    def walk(self, value: Any, path: PathKey) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        key = path[-1] if path else ""
        if key in _SECRET_KEYS and not _VAR.fullmatch(value.strip()):
            self.problems.append((path, "a secret must not be written in the profile: use ${VAR} or password_file"))
            return None
        text = _VAR.sub(lambda m: self._substitute(m, path), value)
        if key in _PATH_KEYS | _SECRET_KEYS and not text:
            return None  # `${VAR:-}` left empty: the optional setting is absent
        if key in _PATH_KEYS and not os.path.isabs(text):
            return str(self.base / text)
        return text

    def _substitute(self, match: re.Match[str], path: PathKey) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in self.environ:
            return self.environ[name]
        if default is not None:
            return default
        self.problems.append((path, f"environment variable {name} is not set (or write ${{{name}:-default}})"))
        return ""


def _pydantic_problems(err: ValidationError) -> list[tuple[PathKey, str]]:
    out = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `opsverify profile schema` lists the keys)"
        out.append((loc, message))
    return out


def load_profile(path: str | Path, environ: Mapping[str, str] | None = None) -> Profile:
    """Read, interpolate and validate the profile at ``path``; raise ``ProfileError`` listing every problem."""
    source = Path(path)
    try:
        text = source.read_text()
    except OSError as exc:
        raise ProfileError(str(source), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ProfileError(str(source), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(raw, dict):
        raise ProfileError(str(source), ["(top level): expected a mapping with at least `name:`"])
    lines = _line_map(node) if node is not None else {}
    interpolator = _Interpolator(os.environ if environ is None else environ, source.resolve().parent)
    data = interpolator.walk(raw, ())
    problems = list(interpolator.problems)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as err:
        reported = {path for path, _ in problems}
        problems.extend(p for p in _pydantic_problems(err) if p[0] not in reported)
        profile = None
    if problems or profile is None:
        raise ProfileError(str(source), [_describe(p, m, lines) for p, m in problems])
    return profile


def _describe(path: PathKey, message: str, lines: dict[PathKey, int]) -> str:
    line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
    return f"{dotted(path)}{f' (line {line})' if line else ''}: {message}"


def profile_schema() -> dict[str, Any]:
    """JSON Schema of the profile, for editors (``opsverify profile schema``)."""
    return Profile.model_json_schema(mode="validation")


def choose_profile_path(option: str | None, default: Path) -> Path:
    """``--profile`` wins, then ``$OPSVERIFY_PROFILE``, then the sandbox's generated profile."""
    chosen = option or os.environ.get("OPSVERIFY_PROFILE")
    return Path(chosen) if chosen else default
