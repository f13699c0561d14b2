"""CPU use of a host over a window (QP-29): the median of several samples, the run's own processes left out.

One busy second says little on a shared machine, so the probe reads ``/proc`` ``samples + 1`` times
evenly over the window and reports the median busy share of the samples. The processes of the
verification run itself (given as ``exclude``: pids whose process trees are left out in every read)
are subtracted, their children included: a tool that started and ended inside one sample is
still counted through its parent's ``cutime + cstime``. The top consumers are the other processes,
summed per command name over the samples, as shares of the whole machine (all CPUs = 100 %).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

from opsverify.probes.host import command_output
from opsverify.probes.procstat import SNAPSHOT_COMMAND, Snapshot, parse_snapshot, tree

if TYPE_CHECKING:
    import testinfra.host

TOP = 3


@dataclass(frozen=True)
class Consumer:
    """A command name and its share of the whole machine's CPU over the window."""

    command: str
    percent: float


@dataclass(frozen=True)
class CpuUsage:
    """Median busy share of a host over ``window`` without the run's own processes, or why it is unknown."""

    percent: float | None
    window: timedelta
    samples: tuple[float, ...] = ()
    own_percent: float = 0.0
    top: tuple[Consumer, ...] = ()
    error: str | None = None


def read_snapshot(target: testinfra.host.Host) -> Snapshot:
    """One read of ``/proc/stat`` and every ``/proc/<pid>/stat`` through one command."""
    return parse_snapshot(command_output(target, SNAPSHOT_COMMAND))


def take_snapshots(target: testinfra.host.Host, window: timedelta, samples: int) -> list[Snapshot]:
    """``samples + 1`` reads spaced evenly over ``window`` (the spacing keeps to the clock, not to the reads)."""
    step = window.total_seconds() / samples
    start = time.monotonic()
    reads = [read_snapshot(target)]
    for index in range(1, samples + 1):
        time.sleep(max(0.0, start + index * step - time.monotonic()))
        reads.append(read_snapshot(target))
    return reads


def cpu_usage(
    target: testinfra.host.Host, window: timedelta, samples: int, exclude: Collection[int] = frozenset()
) -> CpuUsage:
    """Median busy share of ``target``'s CPUs over ``window`` in ``samples`` samples, ``exclude``'s trees left out."""
    try:
        return summarize(take_snapshots(target, window, samples), window, exclude)
    except Exception as exc:  # noqa: BLE001 - any backend failure is a fact, not a crash
        return CpuUsage(None, window, error=str(exc) or type(exc).__name__)


def summarize(snapshots: list[Snapshot], window: timedelta, exclude: Collection[int]) -> CpuUsage:
    """The facts of consecutive snapshots: per-sample busy shares, their median, own share, top consumers."""
    pairs = list(pairwise(snapshots))
    if not pairs:
        raise ValueError("one read of /proc is no sample: at least two are needed")
    first, last = snapshots[0], snapshots[-1]
    shares = tuple(busy_percent(a, b, exclude) for a, b in pairs)
    return CpuUsage(
        percent=statistics.median(shares),
        window=window,
        samples=shares,
        own_percent=_share(own_ticks(first, last, exclude), first, last),
        top=top_consumers(snapshots, exclude),
    )


def own_ticks(a: Snapshot, b: Snapshot, exclude: Collection[int]) -> int:
    """CPU ticks the trees of ``exclude`` used from ``a`` to ``b``, with the children they reaped meanwhile."""
    used = sum(b.processes[p].with_children for p in tree(b, exclude))
    return max(0, used - sum(a.processes[p].with_children for p in tree(a, exclude)))


def busy_percent(a: Snapshot, b: Snapshot, exclude: Collection[int]) -> float:
    """Busy share of all CPUs from ``a`` to ``b`` once the ``exclude`` trees' CPU is taken out, 0..100."""
    return min(100.0, max(0.0, _share(b.busy - a.busy - own_ticks(a, b, exclude), a, b)))


def used_by_command(a: Snapshot, b: Snapshot, exclude: Collection[int]) -> Counter[str]:
    """CPU ticks per command name from ``a`` to ``b`` of the processes alive at ``b``, outside the ``exclude`` trees."""
    ours, before = tree(b, exclude), {p.key: p.ticks for p in a.processes.values()}
    used: Counter[str] = Counter()
    for process in b.processes.values():
        if process.pid not in ours:
            used[process.comm] += process.ticks - before.get(process.key, 0)
    return used


def top_consumers(snapshots: list[Snapshot], exclude: Collection[int]) -> tuple[Consumer, ...]:
    """The ``TOP`` command names that used the most CPU over the snapshots, summed sample by sample
    (so a process that ended before the last read still counts for the samples it was seen in)."""
    used = sum((used_by_command(a, b, exclude) for a, b in pairwise(snapshots)), Counter[str]())
    shares = (Consumer(command, _share(ticks, snapshots[0], snapshots[-1])) for command, ticks in used.most_common(TOP))
    return tuple(c for c in shares if c.percent >= 0.5)


def _share(ticks: int, a: Snapshot, b: Snapshot) -> float:
    return 100.0 * ticks / max(b.total - a.total, 1)
