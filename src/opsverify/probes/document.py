"""When a document was last reviewed (QP-16's disaster-recovery document), in this order of trust:

1. a line of the document itself: ``Last reviewed: 2026-11-02`` (or ``Last updated:``, ``Reviewed:``; markdown
   emphasis, list and quote marks around it are allowed); the first such line counts;
2. when the file is in a git work tree, the committer date of the last commit that touched it
   (``git log -1 --format=%cI -- FILE``, bounded by a timeout): a fresh clone resets every mtime, a commit is kept;
3. the file's mtime, which a checkout, a copy or a restore resets.

The probe measures; the check judges. The probe never raises for a missing or unreadable file: it says so.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

REVIEW_LINE = re.compile(
    r"^[\s>*_#+-]*(last reviewed|last updated|reviewed)[\s*_]*:[\s*_]*(\d{4}-\d{2}-\d{2})\b", re.IGNORECASE
)
MAX_READ = 1024 * 1024  # a review line sits near the top; a document is not read past its first MiB


@dataclass(frozen=True)
class Review:
    """The document's last review: when, and what says so."""

    path: Path
    exists: bool
    when: datetime | None = None
    day: date | None = None  # the date a review line names (a date, no time)
    source: str = ""  # "review line", "git commit", "mtime"
    detail: str = ""  # the evidence, as a message quotes it
    error: str | None = None


def review_line(text: str) -> tuple[int, str, str] | None:
    """(line number, the line as written, its date) of the first review line, if any."""
    for number, line in enumerate(text.splitlines(), start=1):
        found = REVIEW_LINE.match(line)
        if found:
            return number, line.strip(), found.group(2)
    return None


def last_commit(path: Path, timeout: float) -> tuple[datetime, str] | None:
    """(committer date, short hash) of the last commit that touched ``path``; None outside a git work tree, for a
    file never committed, or when git is missing or does not answer within ``timeout``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # this file's repository, no other
    try:
        done = subprocess.run(
            ["git", "-C", str(path.parent), "log", "-1", "--format=%cI %h", "--", path.name],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    stamp, _, short = done.stdout.strip().partition(" ")
    return datetime.fromisoformat(stamp).astimezone(UTC), short


def last_review(path: Path, timeout: float) -> Review:
    """When ``path`` was last reviewed (see the module's order of trust)."""
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_READ).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return Review(path, exists=False)
    except OSError as err:
        return Review(path, exists=True, error=f"cannot read it: {err.strerror or err}")
    line = review_line(text)
    if line is not None:
        number, written, stamp = line
        try:
            day = date.fromisoformat(stamp)
        except ValueError:
            return Review(path, exists=True, error=f"line {number} ({written!r}) names no valid date")
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return Review(path, True, when, day, "review line", f"its line {number}, {written!r}")
    commit = last_commit(path, timeout)
    if commit is not None:
        when, short = commit
        return Review(path, True, when, None, "git commit", f"the last git commit that changed it, {short}")
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return Review(path, True, mtime, None, "mtime", "its mtime, which a checkout resets")
