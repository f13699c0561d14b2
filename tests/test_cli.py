"""The ``opsverify`` command: exit codes and one-sentence errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def opsverify(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsverify", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_profile_check_accepts_a_valid_profile(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: ok\nhosts: [{name: h}]\n")
    done = opsverify("profile", "check", str(tmp_path / "p.yaml"))
    assert done.returncode == 0
    assert "profile ok (staging) is valid: 0 services, 0 databases, 0 redis, 0 dependencies, 1 hosts" in done.stdout


def test_profile_check_lists_problems_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: bad\nhosts: [{name: h, cpu_max_percent: 180}]\n")
    done = opsverify("profile", "check", str(tmp_path / "p.yaml"))
    assert done.returncode == 1
    assert "hosts[0].cpu_max_percent (line 2): Input should be less than or equal to 100" in done.stderr
    assert "Traceback" not in done.stderr


def test_profile_schema_is_json_schema() -> None:
    done = opsverify("profile", "schema")
    assert done.returncode == 0
    assert json.loads(done.stdout)["title"] == "Profile"


def test_sandbox_status_of_a_missing_sandbox_says_so(tmp_path: Path) -> None:
    done = opsverify("sandbox", "status", "--state-dir", str(tmp_path / "none"))
    assert done.returncode == 0
    assert "not created" in done.stdout


def test_help_describes_the_commands() -> None:
    done = opsverify("--help")
    assert done.returncode == 0
    for word in ("profile", "sandbox", "pytest -m daily"):
        assert word in done.stdout
