"""Load a profile: read (hardened) -> YAML (bounded) -> ``${VAR}`` interpolation -> pydantic validation.

Every problem is reported with its YAML path (and line), all at once, as a ``ProfileError``; no input ends
in a traceback, a hang or a MemoryError:

- only a regular file of at most ``MAX_BYTES`` is read (a FIFO, device or directory is refused before it
  is opened, and it is opened non-blocking), and it must be UTF-8;
- YAML is read event by event (libyaml's parser, no recursive composer): nesting deeper than
  ``MAX_DEPTH``, more than ``MAX_NODES`` values, aliases expanding to more than ``MAX_ALIAS_NODES``
  values (anchor bombs), an alias inside its own anchor, a duplicated key (at any level), an integer of
  more than ``MAX_INT_DIGITS`` digits and an unknown tag are refused;
- references between sections are checked on the raw data, so they are reported together with field
  problems (``cross_reference_problems``).

This is the one module that reads the process environment.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.json_schema import GenerateJsonSchema

from opsverify.durations import duration_text
from opsverify.errors import ProfileError
from opsverify.profile.environment import PathKey, Profile, cross_reference_problems, dotted

__all__ = ["MAX_BYTES", "PathKey", "choose_profile_path", "dotted", "load_profile", "profile_schema"]

MAX_BYTES = 8 * 1024 * 1024  # a generated 20,000-source profile is about 3 MiB
MAX_DEPTH = 32  # the deepest real path is services[0].metrics.maximum.NAME: 5
MAX_NODES = 1_000_000  # values in the document, aliases expanded (a 20,000-source profile has 474,023)
MAX_ALIAS_NODES = 100_000  # values that aliases add by expansion
MAX_INT_DIGITS = 30

# `${VAR}`, `${VAR:-default}` (unset or empty: default) and `${VAR-default}` (unset only: default), as in POSIX sh
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}")
_SECRET_KEYS = {"password", "token", "secret", "secret_key", "secret_access_key", "replication_password"}
_SECRET_KEYS |= {"backup_password", "maintenance_password"}  # a database's backup and maintenance roles
_PATH_KEYS = {
    *("password_file", "ca_file", "ssh_config", "ssh_identity_file"),
    *("secret_access_key_file", "rdb_file", "scratch_dir", "replication_password_file"),
    "backup_password_file", "maintenance_password_file",
    *("inventory", "textfile", "sqlite", "file", "token_file"),  # reporting: and dr_document:
}
_TAG = "tag:yaml.org,2002:"
_STR = f"{_TAG}str"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}


class _Refused(Exception):
    """A YAML problem that stops reading at once (with its line)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


def _read_text(source: Path) -> str:
    """The file's text: a regular UTF-8 file of at most MAX_BYTES, checked before it is opened (no FIFO hangs)."""
    try:
        info = os.stat(source)
    except OSError as exc:
        raise ProfileError(str(source), [f"cannot read the file: {exc.strerror or exc}"]) from None
    except ValueError:  # a NUL byte in the path
        raise ProfileError(repr(str(source)), ["cannot read the file: its path holds a NUL byte"]) from None
    kind = _not_regular(info.st_mode)
    if kind:
        raise ProfileError(str(source), [kind])
    if info.st_size > MAX_BYTES:
        raise ProfileError(str(source), [_too_big(info.st_size)])
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ProfileError(str(source), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        kind = _not_regular(os.fstat(fd).st_mode)  # replaced between stat and open
        if kind:
            raise ProfileError(str(source), [kind])
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ProfileError(str(source), [f"cannot read the file: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise ProfileError(str(source), [_too_big(size)])
    data = b"".join(chunks)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ProfileError(str(source), [
            f"line {line}: the file is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
            "save it as UTF-8"
        ]) from None


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "this is a directory, not a file: name the profile's YAML file in it"
    what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"this is {what}, not a regular file: a profile is read only from a regular YAML file"


def _too_big(size: int) -> str:
    return f"the file is {size:,} bytes or more, over the {MAX_BYTES // (1024 * 1024)} MiB a profile may have"


Lines = dict[str | int, tuple[int, "Lines | None"]]  # key or index -> (line, the lines of what is under it)


class _Frame:
    __slots__ = ("anchor", "container", "is_map", "key", "key_line", "line", "merges", "path", "size", "table")

    def __init__(self, container: dict[Any, Any] | list[Any], path: PathKey, line: int, anchor: str | None) -> None:
        self.container = container
        self.is_map = isinstance(container, dict)
        self.path = path
        self.line = line
        self.anchor = anchor
        self.size = 1
        self.key: Any = _Frame  # _Frame: no key pending
        self.key_line = 0
        self.table: Lines = {}
        self.merges: list[tuple[Any, int]] = []


class _Builder:
    """Python data and a tree of lines from libyaml's events, with explicit bounds (see the module docstring).

    One pass over the events, no recursion; a scalar in a collection (most events) takes the inlined path."""

    def __init__(self, text: str) -> None:
        self.loader = yaml.CSafeLoader(text)
        self.problems: list[tuple[PathKey, str]] = []
        self.anchors: dict[str, tuple[Any, int, Lines | None] | None] = {}  # None: still being read
        self.nodes = 0
        self.alias_nodes = 0
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.root_line = 0
        self.tree: Lines | None = None
        self._resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = yaml.CSafeLoader.yaml_implicit_resolvers

    def build(self) -> Any:
        get_event = self.loader.get_event
        stack = self.stack
        scalar_event = yaml.ScalarEvent
        documents = 0
        try:
            while (event := get_event()) is not None:
                kind = type(event)
                if kind is scalar_event and stack and event.anchor is None:  # type: ignore[attr-defined]
                    assert isinstance(event, yaml.ScalarEvent)  # the common case, inlined
                    self.nodes += 1
                    line = event.start_mark.line + 1 if event.start_mark is not None else 0
                    if self.nodes > MAX_NODES:
                        self._count(0, line)
                    value = event.value if event.tag is None and not event.implicit[0] else self._scalar(event, line)
                    top = stack[-1]
                    top.size += 1
                    if not top.is_map:
                        top.table[len(top.container)] = (line, None)
                        top.container.append(value)  # type: ignore[union-attr]
                    elif top.key is _Frame:
                        top.key, top.key_line = value, line
                    else:
                        self._put(top, value, None)
                elif kind is yaml.DocumentStartEvent:
                    documents += 1
                    if documents > 1:
                        raise _Refused(_line_of(event), "a profile is one YAML document: drop the `---`")
                elif kind not in (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent):
                    self._event(event)
        finally:
            self.loader.dispose()
        return self.root

    def _event(self, event: yaml.Event) -> None:
        line = _line_of(event)
        kind = type(event)
        if kind is yaml.ScalarEvent:
            assert isinstance(event, yaml.ScalarEvent)
            self._count(1, line)
            self._add(self._scalar(event, line), 1, line, event.anchor, None)
        elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
            assert isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
            self._count(1, line)
            if len(self.stack) >= MAX_DEPTH:
                raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels: a profile is a few levels deep")
            tag = event.tag
            is_map = kind is yaml.MappingStartEvent
            if tag not in (None, "!", f"{_TAG}{'map' if is_map else 'seq'}"):
                raise _Refused(line, f"the tag {tag} is not supported in a profile: drop it")
            if event.anchor is not None:
                self.anchors[event.anchor] = None
            self.stack.append(_Frame({} if is_map else [], self._child_path(), line, event.anchor))
        elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
            frame = self.stack.pop()
            if frame.merges:
                self._merge(frame)
            self._add(frame.container, frame.size, frame.line, frame.anchor, frame.table)
        elif kind is yaml.AliasEvent:
            assert isinstance(event, yaml.AliasEvent)
            name = str(event.anchor)
            if name not in self.anchors:
                raise _Refused(line, f"the alias *{name} names no anchor &{name} before it")
            found = self.anchors[name]
            if found is None:
                raise _Refused(line, f"the alias *{name} is inside its own anchor &{name} (a loop)")
            value, size, table = found
            self.alias_nodes += size
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise _Refused(line, f"aliases expand to more than {MAX_ALIAS_NODES:,} values (an anchor bomb?)")
            self._count(size, line)
            self._add(value, size, line, None, table)

    def _count(self, size: int, line: int) -> None:
        self.nodes += size
        if self.nodes > MAX_NODES:
            raise _Refused(line, f"more than {MAX_NODES:,} values: a profile is smaller")

    def _child_path(self) -> PathKey:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if not top.is_map:
            return (*top.path, len(top.container))
        return (*top.path, str(top.key)) if top.key is not _Frame else top.path

    def _scalar(self, event: yaml.ScalarEvent, line: int) -> Any:
        tag, value = event.tag, event.value
        if tag is None:
            if not event.implicit[0]:  # quoted or block text: a string
                return value
            tag = _STR
            for candidate, pattern in self._resolvers.get(value[:1], ()):  # Resolver.resolve, without its overhead
                if pattern.match(value):
                    tag = candidate
                    break
            if tag == _STR:
                return value
        elif tag == "!":
            return value
        if tag == f"{_TAG}merge":
            return _Merge
        if tag not in _SCALAR_TAGS:
            raise _Refused(line, f"the tag {tag} is not supported in a profile: drop it")
        if tag == f"{_TAG}int":
            digits = sum(c.isdigit() for c in value)
            if digits > MAX_INT_DIGITS:
                self.problems.append((self._child_path(), f"a {digits}-digit integer is out of range"))
                return None
        node = yaml.ScalarNode(tag, value, style=event.style)
        try:
            constructed = self.loader.yaml_constructors[tag](self.loader, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            kind = tag.removeprefix(_TAG)
            fix = ": write a real date as YYYY-MM-DD (the day exists in that month)" if kind == "timestamp" else ""
            self.problems.append((self._child_path(), f"{value[:40]!r} is not a valid {kind}{fix}"))
            return None
        if type(constructed) is int and abs(constructed) >= 10**MAX_INT_DIGITS:
            self.problems.append((self._child_path(), "the integer is out of range"))
            return None
        return constructed

    def _add(self, value: Any, size: int, line: int, anchor: str | None, table: Lines | None) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, size, table)
        if not self.stack:
            self.root, self.root_line, self.tree = value, line, table
            return
        top = self.stack[-1]
        top.size += size
        if not top.is_map:
            top.table[len(top.container)] = (line, table)
            top.container.append(value)  # type: ignore[union-attr]
        elif top.key is _Frame:  # a key
            if isinstance(value, (dict, list)):
                raise _Refused(line, "a mapping key must be a plain value, not a list or mapping")
            top.key, top.key_line = value, line
        else:
            self._put(top, value, table)

    def _put(self, top: _Frame, value: Any, table: Lines | None) -> None:
        key, top.key = top.key, _Frame
        if key is _Merge:
            top.merges.append((value, top.key_line))
            return
        name = key if type(key) is str else str(key)
        container = top.container
        assert isinstance(container, dict)
        if key in container:
            first = top.table[name][0]
            self.problems.append(((*top.path, name), f"the key {key} appears twice (lines {first} and "
                                  f"{top.key_line}): keep one"))
            return
        top.table[name] = (top.key_line, table)
        container[key] = value

    def _merge(self, frame: _Frame) -> None:
        assert isinstance(frame.container, dict)
        merged: dict[Any, Any] = {}
        for value, line in frame.merges:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise _Refused(line, "`<<` merges a mapping or a list of mappings")
            for source in reversed(sources):
                merged.update(source)
        frame.container.update({k: v for k, v in merged.items() if k not in frame.container})


def _line_of(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 0


class _Merge:
    """The ``<<`` merge key."""


class _LineMap:
    """The line of a YAML path: of the deepest part of it that is in the file."""

    def __init__(self, root_line: int, tree: Lines | None) -> None:
        self.root_line = root_line
        self.tree = tree

    def line(self, path: PathKey) -> int:
        line, table = self.root_line, self.tree
        for part in path:
            if table is None or part not in table:
                break
            line, table = table[part]
        return line


def _parse_yaml(source: Path, text: str) -> tuple[Any, _LineMap, list[tuple[PathKey, str]]]:
    builder = _Builder(text)
    try:
        raw = builder.build()
    except _Refused as exc:
        raise ProfileError(str(source), [f"not a usable profile: {exc}"]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        raise ProfileError(str(source), [f"line {line}: not valid YAML (the control character U+{code:04X} is not "
                                         "allowed: remove it)"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ProfileError(str(source), [f"{where}not valid YAML ({problem})"]) from None
    return raw, _LineMap(builder.root_line, builder.tree), builder.problems


class _Interpolator:
    def __init__(self, environ: Mapping[str, str], base: Path) -> None:
        self.environ = environ
        self.base = base
        self.problems: list[tuple[PathKey, str]] = []
        self.sources: dict[PathKey, list[tuple[str, str | None]]] = {}  # path -> (variable, value; None: a secret)

    def walk(self, value: Any, path: PathKey) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        key = path[-1] if path else ""
        if "$" not in value and key not in _SECRET_KEYS and key not in _PATH_KEYS:
            return value
        if key in _SECRET_KEYS:
            secret = _VAR.fullmatch(value.strip())
            file_key = f"{key}_file" if f"{key}_file" in _PATH_KEYS else "password_file"
            if secret is None or secret.group(1) is None:
                self.problems.append((path, f"a secret must not be written in the profile: use ${{VAR}} or {file_key}"))
                return None
            if secret.group(3):  # `${VAR:-hunter2}`: the default is a secret written in the profile (not shown)
                name = secret.group(1)
                self.problems.append((path, f"a secret must not be written in the profile, not even as the default "
                                      f"of ${{{name}}}: write ${{{name}}} (or ${{{name}:-}} for none), or use "
                                      f"{file_key}"))
                return None
        text = _VAR.sub(lambda m: self._substitute(m, path), value) if "$" in value else value
        if key in _PATH_KEYS | _SECRET_KEYS and not text:
            return None  # `${VAR:-}` or `${VAR-}` left empty: the optional setting is absent
        if key in _PATH_KEYS and not os.path.isabs(text):
            return str(self.base / text)
        return text

    def _substitute(self, match: re.Match[str], path: PathKey) -> str:
        if match.group(0) == "$$":
            return "$"
        name, colon, default = match.group(1), match.group(2), match.group(3)
        value = self.environ.get(name)
        if default is not None and (value is None or (colon and not value)):
            return default  # `${VAR-x}`: VAR unset; `${VAR:-x}`: VAR unset or empty (POSIX sh)
        key = path[-1] if path else ""
        if value is not None:
            self.sources.setdefault(path, []).append((name, None if key in _SECRET_KEYS else value))
            return value
        if key in _SECRET_KEYS:  # never suggest a default password
            file_key = f"{key}_file" if f"{key}_file" in _PATH_KEYS else "password_file"
            self.problems.append((path, f"environment variable {name} is not set: set {name}, or use {file_key}"))
        else:
            self.problems.append((path, f"environment variable {name} is not set (or write ${{{name}:-default}})"))
        return ""


def _pydantic_problems(err: ValidationError) -> list[tuple[PathKey, str]]:
    out = []
    for item in err.errors(include_url=False, include_input=False):
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `opsverify profile schema` lists the keys)"
        out.append((loc, message))
    return out


def load_profile(path: str | Path, environ: Mapping[str, str] | None = None) -> Profile:
    """Read, interpolate and validate the profile at ``path``; raise ``ProfileError`` listing every problem."""
    source = Path(path)
    text = _read_text(source)
    raw, lines, problems = _parse_yaml(source, text)
    if not isinstance(raw, dict):
        raise ProfileError(str(source), ["(top level): expected a mapping with at least `name:`"])
    interpolator = _Interpolator(os.environ if environ is None else environ, source.resolve().parent)
    data = interpolator.walk(raw, ())
    problems += interpolator.problems
    problems += cross_reference_problems(data)
    try:
        profile = Profile.model_validate(data, context={"cross_referenced": True})
    except ValidationError as err:
        reported = {path for path, _ in problems}
        problems.extend(p for p in _pydantic_problems(err) if p[0] not in reported)
        profile = None
    except (RecursionError, MemoryError, OverflowError, ValueError) as exc:  # a last guard: bounds make it rare
        problems.append(((), f"cannot be validated ({type(exc).__name__}): simplify the file"))
        profile = None
    if problems or profile is None:
        described = sorted(  # in the file's order
            (_line(p, lines), _describe(p, m + _origin(interpolator.sources.get(p)), lines)) for p, m in problems
        )
        raise ProfileError(str(source), [text for _, text in described])
    return profile


def _origin(sources: list[tuple[str, str | None]] | None) -> str:
    """Where a value came from: ``(the value "abc" of ${PF_DB_PORT})``; a secret's value is never shown."""
    if not sources:
        return ""
    parts = []
    for name, value in sources:
        if value is None:
            parts.append(f"${{{name}}}")
        else:
            shown = value if len(value) <= 60 else value[:60] + "…"
            parts.append(f'the value "{shown}" of ${{{name}}}')
    if all(value is None for _, value in sources):
        return f" (from {', '.join(parts)})"
    return f" ({', '.join(parts)})"


def _line(path: PathKey, lines: _LineMap) -> int:
    return lines.line(path)


def _describe(path: PathKey, message: str, lines: _LineMap) -> str:
    line = _line(path, lines)
    return f"{dotted(path)}{f' (line {line})' if line else ''}: {message}"


class _ProfileSyntax(GenerateJsonSchema):
    """Defaults in the profile's own syntax: a duration default is ``1d``, not ISO 8601 ``P1D``."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return duration_text(dft)
        if isinstance(dft, (date, datetime)):
            return dft.isoformat()
        return super().encode_default(dft)


def profile_schema() -> dict[str, Any]:
    """JSON Schema of the profile, for editors (``opsverify profile schema``)."""
    return Profile.model_json_schema(mode="validation", schema_generator=_ProfileSyntax)


def choose_profile_path(option: str | None, default: Path) -> Path:
    """``--profile`` wins, then ``$OPSVERIFY_PROFILE``, then the sandbox's generated profile."""
    chosen = option or os.environ.get("OPSVERIFY_PROFILE")
    return Path(chosen) if chosen else default


def secret_values(model: object) -> frozenset[str]:
    """Every secret a loaded profile holds, so that reports can mask one wherever a server quotes it back:
    ``SecretStr`` fields, the first line of each secret file, and the secret parts of its http(s) URLs and paths
    (a password or token in the userinfo, query values: ``/health?api_key=…``; at least 6 characters)."""
    from pydantic import BaseModel, SecretStr

    from opsverify.redact import secrets_of

    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
        elif isinstance(value, str) and (value.startswith(("http://", "https://")) or "?" in value):
            url = value if "://" in value else f"http://host/{value.lstrip('/')}"
            found.update(s for s in secrets_of(url) if len(s) >= 6)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                item = getattr(value, name)
                if name.endswith("_file") and name.removesuffix("_file") in _SECRET_KEYS | {"password"} and item:
                    try:
                        lines = Path(item).read_text().splitlines()
                    except (OSError, UnicodeDecodeError):
                        continue
                    found.update(line.strip() for line in lines[:1])
                else:
                    walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(model)
    return frozenset(s for s in found if s)
