"""Fuzzing the profile loader (issue 9): mutated real profiles end in a Profile or a ProfileError, never
anything else, and quickly; the CLI and pytest turn the nastiest inputs into one line / a usage error.

Hypothesis runs derandomized with a fixed number of examples, so CI sees the same inputs every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsverify.errors import ProfileError
from opsverify.profile import Profile, load_profile

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ENV = {"DB_HOST": "db", "DB_PASSWORD": "x", "PF_DB_PASSWORD": "y"}
PER_EXAMPLE = 5.0  # seconds, generous (a shared machine): a profile loads in milliseconds, a bomb is refused
EXAMPLES = 300

NASTY_VALUES = [
    "18446744073709551617", "-86400", "0", "-1", "9" * 5000, "-" + "9" * 40, "1e999", ".inf", "-.inf", ".nan",
    "99999999999999d", "0s", "-5m", "20", "'20'", "3651d", "1:2:3:4:5:6:7:8:9", "0x" + "f" * 40, "~", "true",
    "[]", "{}", "[" * 500 + "]" * 500, "{a: " * 100 + "b" + "}" * 100, "*nowhere", "&loop [*loop]",
    "!!python/object/apply:os.system [echo]", "!!binary aGk=", "'${UNSET_VAR}'", "'${UNSET_PASSWORD:-}'", "\"\\x00\"",
    "|\n  multi\n  line", "'" + "x" * 10000 + "'", "2024-01-01", "0o777", "[1, [2, [3, [4]]]]", "{name: {}}",
]
BOMB = "".join(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}" if i else "x"] * 9) + "]\n" for i in range(9))


def _seeds() -> Iterator[tuple[str, bytes, dict[str, str]]]:
    for name in ("photonic-foundry", "quantum-planner"):
        path = ROOT / "environments" / f"{name}.yaml"
        yield name, path.read_bytes(), SHIPPED_ENV


@st.composite
def mutated(draw: st.DrawFn, seeds: list[tuple[str, bytes, dict[str, str]]]) -> tuple[bytes, dict[str, str]]:
    _, text, environ = draw(st.sampled_from(seeds))
    lines = text.split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        line = lines[at] if lines else b""
        kind = draw(st.sampled_from(
            ["value", "value", "value", "duplicate", "bytes", "truncate", "swap", "bomb", "indent", "delete"]
        ))
        if kind == "value" and b":" in line:
            key = line.split(b":", 1)[0]
            lines[at] = key + b": " + draw(st.sampled_from(NASTY_VALUES)).encode()
        elif kind == "duplicate":
            lines.insert(at, line)
        elif kind == "bytes":
            noise = draw(st.binary(min_size=1, max_size=16))
            cut = draw(st.integers(0, len(line)))
            lines[at] = line[:cut] + noise + line[cut:]
        elif kind == "truncate":
            joined = b"\n".join(lines)
            lines = joined[: draw(st.integers(0, len(joined)))].split(b"\n")
        elif kind == "swap" and b":" in line:
            key = line.split(b":", 1)[0]
            lines[at] = key + b": " + draw(st.sampled_from([b"[]", b"{}", b"~", b"42", b"[x]", b"{a: b}", b"-1.5"]))
        elif kind == "bomb":
            lines.append(BOMB.encode())
        elif kind == "indent":
            lines[at] = b"  " * draw(st.integers(1, 8)) + line
        elif kind == "delete" and lines:
            del lines[at]
    return b"\n".join(lines), environ


def _check(path: Path, data: bytes, environ: dict[str, str]) -> None:
    path.write_bytes(data)
    started = time.monotonic()
    problems: list[str] | None = None
    try:
        loaded = load_profile(path, environ)
    except ProfileError as err:
        problems = err.problems
    else:
        assert isinstance(loaded, Profile)
    if problems is not None:
        assert problems, "a ProfileError names at least one problem"
        assert all(isinstance(p, str) and p for p in problems)
    elapsed = time.monotonic() - started
    assert elapsed < PER_EXAMPLE, f"loading took {elapsed:.2f}s: {data[:200]!r}"


def _fuzz(seeds: list[tuple[str, bytes, dict[str, str]]]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "profile.yaml"

        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(mutated(seeds))
        def run(case: tuple[bytes, dict[str, str]]) -> None:
            _check(path, *case)

        run()


@pytest.mark.timeout(120)
def test_mutated_shipped_profiles_load_or_fail_cleanly() -> None:
    for name in ("photonic-foundry", "quantum-planner"):  # unmutated, each seed is a valid profile
        assert isinstance(load_profile(ROOT / "environments" / f"{name}.yaml", SHIPPED_ENV), Profile), name
    _fuzz(list(_seeds()))


@pytest.mark.timeout(120)
def test_mutated_sandbox_profile_loads_or_fails_cleanly(sandbox_profile: Path) -> None:
    seeds = [("sandbox", sandbox_profile.read_bytes(), {})]
    assert isinstance(load_profile(sandbox_profile, {}), Profile)
    _fuzz(seeds)


def _nasty_inputs(tmp_path: Path) -> dict[str, Path]:
    inputs = {
        "anchor bomb": b"name: x\n" + BOMB.encode(),
        "5000-digit int": b"name: x\nredis: [{name: c, port: " + b"9" * 5000 + b"}]\n",
        "500 nested brackets": b"name: x\ntables: " + b"[" * 500 + b"]" * 500 + b"\n",
        "non-UTF-8": b"name: caf\xe9\n",
        "self alias": b"name: x\nhosts: &a [*a]\n",
        "huge max_verify": (
            b"name: x\nbackups: [{name: b, kind: archive, path: /b, max_verify: 18446744073709551617}]\n"
        ),
        "duplicate section": b"name: x\nservices: [{name: s, url: 'http://a'}]\nservices: []\n",
    }
    paths = {}
    for what, data in inputs.items():
        paths[what] = tmp_path / f"{what.replace(' ', '-')}.yaml"
        paths[what].write_bytes(data)
    os.mkfifo(tmp_path / "fifo.yaml")
    return {**paths, "FIFO": tmp_path / "fifo.yaml", "/dev/zero": Path("/dev/zero")}


@pytest.mark.timeout(120)
def test_profile_check_of_the_nastiest_inputs_is_one_line_and_quick(tmp_path: Path) -> None:
    for what, path in _nasty_inputs(tmp_path).items():
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "opsverify", "profile", "check", str(path)],
            capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 1, what
        assert done.stdout == "", what
        assert done.stderr.startswith(f"opsverify: profile {path} is not valid: "), (what, done.stderr)
        assert done.stderr.count("\n") == 1, (what, done.stderr)
        assert "Traceback" not in done.stderr, what
        assert elapsed < 10, f"{what}: {elapsed:.1f}s"


@pytest.mark.timeout(300)
def test_bad_profiles_through_pytest_are_usage_errors(pytester: pytest.Pytester, tmp_path: Path) -> None:
    nasty = _nasty_inputs(tmp_path)
    for what in ("anchor bomb", "FIFO", "huge max_verify", "duplicate section"):
        result = pytester.runpytest_subprocess(
            str(ROOT / "checks"), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
            f"--profile={nasty[what]}", "--no-reports", "-p", "no:randomly", timeout=60,
        )
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (what, output[-2000:])
        assert "INTERNALERROR" not in output, what
        assert "Traceback" not in output, what
        result.stderr.fnmatch_lines([f"ERROR: profile {nasty[what]} is not valid (1 problem(s)):"])
