"""Durations as people write them in runbooks: ``500ms``, ``90s``, ``15m``, ``1h``, ``30d``.

A duration is always a string with a unit: a bare number (``20``, ``"20"``) is refused, since
``20`` could mean 20 seconds or 20 milliseconds. Every duration is positive and at most
``MAX_DURATION`` (3650 days), so that no profile value overflows ``timedelta``.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d|w)\s*)+$"
MAX_DURATION = timedelta(days=3650)
FORMS = "500ms, 90s, 15m, 1h or 30d"


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse ``1h30m`` style text; a bare number, zero, or more than ``MAX_DURATION`` is a ``ValueError``."""
    if isinstance(text, timedelta):
        return _bounded(text, str(text))
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise ValueError(_bare(text))
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as {FORMS}, got {text!r}")
    return _parse_text(text)


@functools.lru_cache(maxsize=256)
def _parse_text(text: str) -> timedelta:  # a big profile repeats `24h`, `30d`
    compact = text.replace(" ", "")
    if re.fullmatch(r"[+-]?\d+(\.\d+)?", compact):
        raise ValueError(_bare(compact))
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration: write it as {FORMS}")
    seconds = math.fsum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds <= MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than {duration_text(MAX_DURATION)}, the longest duration a profile takes")
    return _bounded(timedelta(seconds=seconds), repr(text))


def _bare(number: object) -> str:
    shown = str(number)
    if isinstance(number, float) and not math.isfinite(number):
        return f"{shown} is not a duration: write it with a unit, as {FORMS}"
    if shown.startswith("-") or float(shown) == 0:
        sign = "negative " if shown.startswith("-") else ""
        return f"{shown} is a bare {sign}number: a duration is positive and has a unit, as {FORMS}"
    return f"{shown} is a bare number: a duration needs a unit, so write {shown}s or {shown}ms (or 15m, 1h, 30d)"


def _bounded(value: timedelta, shown: str) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"{shown} is not a positive duration: write it as {FORMS}")
    if value > MAX_DURATION:
        raise ValueError(f"{shown} is longer than {duration_text(MAX_DURATION)}, the longest duration a profile takes")
    return value


def duration_text(value: timedelta) -> str:
    """Render a duration exactly in the profile's own syntax (``1d``, ``1h30m``, ``1500ms``): it parses back equal."""
    millis = round(value.total_seconds() * 1000)
    if millis <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def format_duration(value: timedelta) -> str:
    """Render a duration compactly for messages: ``31h``, ``2d4h``, ``850ms``."""
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    out = []
    rest = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            out.append(f"{count}{unit}")
        if len(out) == 2:
            break
    return "".join(out)
