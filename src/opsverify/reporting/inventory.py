"""Runbook procedure tables: the rows of INVENTORY-style markdown files, which the coverage matrix is read from.

A procedure table is a markdown table whose header starts ``| ID | cadence | procedure |`` (any case); its
fourth column says what the check verifies, and a row whose last column is ``human`` is judgement work no
check can do. The heading above a table (``## Photonic Foundry``) is the group the matrix shows it under.
Every other table and line of the file is ignored. A malformed procedure table (a row with another number of
columns than its header, no delimiter row, an ID that is not ``ABC-01``-shaped, an ID listed twice) is an
``InventoryError`` naming the file, the line and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opsverify.errors import OpsverifyError

PROCEDURE_ID = re.compile(r"^[A-Z][A-Z0-9]*-[A-Z0-9]+$")
HEADER = ("id", "cadence", "procedure")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
DELIMITER = re.compile(r"^:?-+:?$")


class InventoryError(OpsverifyError):
    """A procedure table cannot be read; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Procedure:
    """One row of a procedure table."""

    id: str
    cadence: str
    procedure: str
    verifies: str
    group: str  # the heading above its table
    source: Path
    line: int
    human: bool  # judgement work: the row's last column is "human"


@dataclass(frozen=True)
class Inventory:
    """The procedures of every loaded file, in file and row order (an ID an earlier file lists is skipped later)."""

    files: tuple[Path, ...]
    procedures: tuple[Procedure, ...]

    def ids(self) -> set[str]:
        return {p.id for p in self.procedures}

    def groups(self) -> dict[str, list[Procedure]]:
        """The procedures by group, groups in the order they first appear."""
        grouped: dict[str, list[Procedure]] = {}
        for procedure in self.procedures:
            grouped.setdefault(procedure.group, []).append(procedure)
        return grouped

    def shown(self) -> str:
        return ", ".join(str(f) for f in self.files)


def cells(line: str) -> list[str]:
    """The cells of a markdown table row (``\\|`` is a literal bar inside a cell)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _is_header(line: str) -> bool:
    row = [c.lower() for c in cells(line)] if line.lstrip().startswith("|") else []
    return len(row) >= 4 and tuple(row[:3]) == HEADER


def read_procedures(path: Path) -> list[Procedure]:
    """Every row of every procedure table in ``path`` (``InventoryError`` on a malformed one)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"runbook inventory {path} cannot be read ({exc}): make it a readable UTF-8 file"
                             ) from None
    found: list[Procedure] = []
    seen: dict[str, int] = {}
    group, number = path.stem, 0
    while number < len(lines):
        line = lines[number]
        number += 1
        heading = HEADING.match(line)
        if heading:
            group = heading.group(1)
        if not _is_header(line):
            continue
        width = len(cells(line))
        if number >= len(lines) or not all(DELIMITER.match(c) for c in cells(lines[number])):
            raise InventoryError(f"{path}:{number}: the procedure table's header is not followed by a delimiter row: "
                                 f"add |{'---|' * width} on line {number + 1}")
        number += 1
        while number < len(lines) and lines[number].lstrip().startswith("|"):
            found.append(_row(path, number + 1, cells(lines[number]), width, group, seen))
            number += 1
    return found


def _row(path: Path, line: int, row: list[str], width: int, group: str, seen: dict[str, int]) -> Procedure:
    where = f"{path}:{line}"
    if len(row) != width:
        raise InventoryError(f"{where}: the row has {len(row)} columns, its table's header {width}: give it "
                             f"{width} cells (write a | inside a cell as \\|)")
    ident = row[0]
    if not PROCEDURE_ID.match(ident):
        raise InventoryError(f"{where}: {ident!r} is no procedure ID: write it as capitals, a dash and capitals or "
                             "digits, e.g. OPS-01")
    if ident in seen:
        raise InventoryError(f"{where}: {ident} is listed twice (first on line {seen[ident]}): give each procedure "
                             "its own ID")
    seen[ident] = line
    return Procedure(ident, row[1], row[2], row[3], group, path, line, row[-1].strip().lower() == "human")


def load_inventory(paths: Sequence[Path]) -> Inventory:
    """The procedures of ``paths`` (each file once, a team's own first); an ID an earlier file lists keeps that row."""
    files = tuple(dict.fromkeys(p.resolve() for p in paths))
    rows: dict[str, Procedure] = {}
    for path in files:
        for procedure in read_procedures(path):
            rows.setdefault(procedure.id, procedure)
    return Inventory(files, tuple(rows.values()))
