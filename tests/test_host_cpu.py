"""The CPU check: the median over a window, without the run's own processes, naming the top consumers.

Canned ``/proc`` text pins the arithmetic; real CPU hogs (in sessions of their own, started by this
test and so outside the tree of the checks run it starts) make the check fail through pytester.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from opsverify.errors import ProfileError
from opsverify.probes.cpu import summarize, take_snapshots
from opsverify.probes.procstat import parse_process, parse_snapshot, tree
from opsverify.profile import load_profile

CPU = "health/test_host_resources.py::test_cpu_usage_is_under_limit"
TEST = "test_host_resources.py::test_cpu_usage_is_under_limit[local]"
BURN = (  # PR_SET_NAME (15) gives the hog the name argv[1] in /proc; it ends by itself after 120 s
    "import ctypes, sys, time\nctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
    "end = time.monotonic() + 120\nwhile time.monotonic() < end: pass\n"
)


def stat(pid: int, comm: str, ppid: int, ticks: int, reaped: int = 0, start: int = 0) -> str:
    """A ``/proc/<pid>/stat`` line (utime = ticks, cutime = reaped)."""
    fields = ["S", ppid, pid, pid, 0, -1, 4194304, 0, 0, 0, 0, ticks, 0, reaped, 0, 20, 0, 1, 0, start or pid, 9, 9]
    return f"{pid} ({comm}) " + " ".join(map(str, fields))


def snapshot(busy: int, idle: int, *processes: str) -> str:
    """``/proc/stat`` (two CPUs) then the process lines, as ``cat /proc/stat /proc/[0-9]*/stat`` prints them."""
    return "\n".join([f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0", f"cpu0 {busy} 0 0 {idle} 0 0 0 0 0 0",
                      "intr 1 2 3", "ctxt 42", "btime 1700000000", "procs_running 3", *processes])


# 2 CPUs at 100 Hz, 1 s samples = 200 ticks each. Run: pytest 100 > worker 101 > pg_dump 102.
SNAPSHOTS = [
    snapshot(1000, 1000, stat(1, "systemd", 0, 500), stat(100, "pytest", 1, 100), stat(101, "python3", 100, 50),
             stat(200, "my (weird) proc", 1, 0), stat(300, "postgres", 1, 0)),
    # others 100 + 30, own 40 + a new child's 10: busy 180 of 200, without the run 130 -> 65 %
    snapshot(1180, 1020, stat(1, "systemd", 0, 500), stat(100, "pytest", 1, 100), stat(101, "python3", 100, 90),
             stat(102, "pg_dump", 101, 10), stat(200, "my (weird) proc", 1, 100), stat(300, "postgres", 1, 30)),
    # pg_dump used 5 more, ended and was reaped (15 in the worker's cutime); others 60 + 40, own 25 -> 50 %
    snapshot(1305, 1095, stat(1, "systemd", 0, 500), stat(100, "pytest", 1, 100),
             stat(101, "python3", 100, 110, reaped=15), stat(200, "my (weird) proc", 1, 160),
             stat(300, "postgres", 1, 70)),
]


def test_comm_with_spaces_and_parentheses_is_split_at_the_last_parenthesis() -> None:
    process = parse_process(stat(4242, "a) b (c", 7, 30, reaped=12, start=555))
    assert process is not None
    assert (process.pid, process.comm, process.ppid, process.ticks, process.reaped, process.start) == (
        4242, "a) b (c", 7, 30, 12, 555)
    assert parse_process("4242 (cut off") is None


def test_text_without_the_cpu_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no aggregate `cpu` line"):
        parse_snapshot(stat(1, "init", 0, 5))


def test_median_leaves_out_the_run_tree_and_its_reaped_children() -> None:
    usage = summarize([parse_snapshot(text) for text in SNAPSHOTS], timedelta(seconds=2), {100})
    assert usage.samples == (65.0, 50.0)
    assert usage.percent == 57.5
    assert usage.own_percent == 75 / 400 * 100
    assert [(c.command, c.percent) for c in usage.top] == [("my (weird) proc", 40.0), ("postgres", 17.5)]


def test_without_exclusion_the_run_counts_and_is_named() -> None:
    usage = summarize([parse_snapshot(text) for text in SNAPSHOTS], timedelta(seconds=2), ())
    assert usage.samples == (90.0, 62.5)
    assert usage.own_percent == 0
    assert [c.command for c in usage.top] == ["my (weird) proc", "postgres", "python3"]


def test_tree_follows_parents_and_a_reused_pid_is_a_new_process() -> None:
    first = parse_snapshot(snapshot(0, 0, stat(100, "pytest", 1, 0), stat(400, "old", 1, 900, start=5)))
    second = parse_snapshot(snapshot(200, 0, stat(100, "pytest", 1, 0), stat(101, "xdist", 100, 0),
                                     stat(102, "psql", 101, 0), stat(400, "new", 1, 80, start=99)))
    assert tree(second, [100]) == {100, 101, 102}
    assert tree(second, [7]) == frozenset()
    assert [(c.command, c.percent) for c in summarize([first, second], timedelta(seconds=1), ()).top] == [
        ("new", 40.0)]


def test_a_process_that_ended_counts_for_the_samples_it_was_seen_in() -> None:
    reads = [snapshot(0, 400), snapshot(150, 450, stat(500, "gzip", 1, 150)), snapshot(160, 640)]
    usage = summarize([parse_snapshot(text) for text in reads], timedelta(seconds=2), ())
    assert usage.samples == (75.0, 5.0)
    assert [(c.command, c.percent) for c in usage.top] == [("gzip", 37.5)]


def test_the_run_is_rooted_at_the_xdist_controller_or_at_pytest_itself() -> None:
    from fixtures.components import run_root

    assert run_root(SimpleNamespace(workerinput={})) == os.getppid()  # type: ignore[arg-type]
    assert run_root(SimpleNamespace()) == os.getpid()  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings", "problem"), [
    ({"cpu_sample": "1s"}, "cpu_sample was replaced by cpu_window (default 5s) and cpu_samples (default 5)"),
    ({"cpu_window": "1s", "cpu_samples": 20}, "cpu_window / cpu_samples is under 100ms"),
])
def test_profile_rejects_old_or_too_short_cpu_samples(tmp_path: Path, settings: dict[str, Any], problem: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "hosts": [{"name": "h", **settings}]}))
    with pytest.raises(ProfileError, match=re.escape(problem)):
        load_profile(path, {})


def wait_for_names(processes: list[subprocess.Popen[bytes]], name: str) -> None:
    deadline = time.monotonic() + 10
    while not all(Path(f"/proc/{p.pid}/comm").read_text().strip() == name for p in processes):
        assert time.monotonic() < deadline, f"the hogs did not take the name {name}"
        time.sleep(0.05)


@pytest.fixture
def hog() -> Iterator[str]:
    """A CPU hog per core, each in a session of its own, all called by the name yielded (unique to this
    worker); stopped and waited for after the test."""
    name = f"ovhog-{os.getpid()}"
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(os.cpu_count() or 2):
            started.append(subprocess.Popen([sys.executable, "-c", BURN, name], start_new_session=True))
        wait_for_names(started, name)
        yield name
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=10)


def test_probe_leaves_out_the_tree_it_is_given(hog: str) -> None:
    import testinfra

    snapshots = take_snapshots(testinfra.get_host("local://"), timedelta(seconds=2), 2)
    named = summarize(snapshots, timedelta(seconds=2), ())
    ours = summarize(snapshots, timedelta(seconds=2), {os.getpid()})  # the hogs are this process's children
    assert hog in [c.command for c in named.top]
    assert hog not in [c.command for c in ours.top]
    assert ours.own_percent > 10
    assert (ours.percent or 0) < (named.percent or 0)


def limit_cpu(percent: float) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["hosts"][0]["cpu_max_percent"] = percent

    return mutate


def test_busy_host_fails_only_the_cpu_check_naming_the_hog(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path], hog: str
) -> None:
    run = run_checks(profile_variant(limit_cpu(50)), "health/test_host_resources.py")
    assert run.failed() == {TEST}
    message = run.message(TEST)
    assert re.fullmatch(r"host local cpu \d+% over 5s \(limit 50%\); top: .+", message), message
    assert re.search(rf"top: (.+, )?{hog} \d+%", message), message
    evidence = run.checks[TEST]["evidence"]
    assert (evidence["window"], evidence["samples"], float(evidence["limit_percent"])) == ("5s", "5", 50)
    assert hog in evidence["top"]
    assert float(evidence["used_percent"]) >= 50


def test_healthy_host_passes_with_the_window_in_the_evidence(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path]
) -> None:
    run = run_checks(profile_variant(), CPU)
    assert run.outcome(TEST) == "passed", run.result.stdout.str()
    evidence = run.checks[TEST]["evidence"]
    assert (evidence["resource"], evidence["window"], evidence["samples"]) == ("cpu", "5s", "5")
    assert len(evidence["sample_percents"].split()) == 5
    assert float(evidence["excluded_own_percent"]) >= 0
