"""``/proc`` text as facts: the machine's CPU time and every process's, from one read.

One ``cat /proc/stat /proc/[0-9]*/stat`` gives both, here or over ssh, so a sample costs one
command. Times are in clock ticks (USER_HZ), the unit of both files. A process is known by its
pid and start time together, so a pid reused between two reads is not taken for the same process.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

SNAPSHOT_COMMAND = "cat /proc/stat /proc/[0-9]*/stat 2>/dev/null || true"


@dataclass(frozen=True)
class Process:
    """One line of ``/proc/<pid>/stat``: who it is, its parent and the CPU it has used."""

    pid: int
    ppid: int
    comm: str
    start: int
    ticks: int
    reaped: int

    @property
    def key(self) -> tuple[int, int]:
        """Pid and start time: the same process in two reads."""
        return self.pid, self.start

    @property
    def with_children(self) -> int:
        """Its own CPU plus that of the children it has waited for (``cutime + cstime``)."""
        return self.ticks + self.reaped


@dataclass(frozen=True)
class Snapshot:
    """The machine's CPU time (all CPUs: total and idle) and every process at one moment."""

    total: int
    idle: int
    processes: Mapping[int, Process]

    @property
    def busy(self) -> int:
        return self.total - self.idle


def parse_process(line: str) -> Process | None:
    """A ``/proc/<pid>/stat`` line; ``comm`` may hold spaces and parentheses, so split at the last ``)``."""
    head, paren, tail = line.rpartition(")")
    pid, opened, comm = head.partition(" (")
    fields = tail.split()
    if not (paren and opened and pid.strip().isdigit() and len(fields) >= 20):
        return None
    try:
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        return Process(int(pid), int(fields[1]), comm, int(fields[19]), utime + stime, cutime + cstime)
    except ValueError:
        return None


def _cpu_times(line: str) -> tuple[int, int]:
    """The aggregate ``cpu`` line: total of user..steal (guest is inside user), idle + iowait."""
    fields = [int(v) for v in line.split()[1:9]]
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)


def parse_snapshot(text: str) -> Snapshot:
    """``/proc/stat`` followed by any number of ``/proc/<pid>/stat`` lines; ValueError without a ``cpu`` line."""
    cpu = next((line for line in text.splitlines() if line.startswith("cpu ")), None)
    if cpu is None:
        raise ValueError("no aggregate `cpu` line in /proc/stat")
    total, idle = _cpu_times(cpu)
    processes = {p.pid: p for p in map(parse_process, _process_lines(text)) if p is not None}
    return Snapshot(total, idle, MappingProxyType(processes))


def _process_lines(text: str) -> Iterator[str]:
    return (line for line in text.splitlines() if line[:1].isdigit())


def tree(snapshot: Snapshot, roots: Collection[int]) -> frozenset[int]:
    """``roots`` present in ``snapshot`` and all their descendants in it."""
    children: dict[int, list[int]] = {}
    for process in snapshot.processes.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found = {pid for pid in roots if pid in snapshot.processes}
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return frozenset(found)


def local_snapshot(proc: Path = Path("/proc")) -> Snapshot:
    """This machine's snapshot, read directly (no command): for finding a process tree here."""
    texts = [(proc / "stat").read_text()]
    for name in os.listdir(proc):
        if name.isdigit():
            try:
                texts.append((proc / name / "stat").read_text())
            except OSError:
                continue  # the process ended between the listing and the read
    return parse_snapshot("\n".join(texts))
