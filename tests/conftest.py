"""Fixtures of the suite's own tests: the shared test sandbox and pytester runs of checks/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

from opsverify.localserver.net import free_port, port_is_open, wait_for_port
from opsverify.profile import Profile

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sandbox-dir",
        default=str(ROOT / ".sandbox-test"),
        help="state dir of the sandbox the self-tests use (started if it is not running)",
    )


@pytest.fixture(scope="session")
def sandbox_profile(pytestconfig: pytest.Config) -> Path:
    """The running test sandbox's generated profile (``up`` is idempotent; a lock guards xdist workers)."""
    from opsverify import sandbox

    state = Path(pytestconfig.getoption("sandbox_dir")).resolve()
    with FileLock(str(state) + ".lock", timeout=600):
        status = sandbox.up(state)
    return Path(status.profile_path)


@pytest.fixture(scope="session")
def sandbox(sandbox_profile: Path) -> Profile:
    """The running test sandbox's profile, loaded."""
    from opsverify.profile import load_profile

    return load_profile(sandbox_profile)


@pytest.fixture
def profile_variant(sandbox_profile: Path, tmp_path: Path) -> Callable[..., Path]:
    """``profile_variant(mutate)``: a copy of the sandbox profile changed by ``mutate(dict)``."""

    def make(mutate: Callable[[dict[str, Any]], object] | None = None, name: str = "variant.yaml") -> Path:
        data = yaml.safe_load(sandbox_profile.read_text())
        for host in data.get("hosts", []):
            host["cpu_max_percent"] = 100  # the test machine's load is not under test here
        if mutate is not None:
            mutate(data)
        _prune_references(data)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def _prune_references(data: dict[str, Any]) -> None:
    """Drop drills, replicas and lifecycle parts (and backups' ``database``) naming a database, Redis or backup the
    variant removed."""
    names = {key: {i["name"] for i in data.get(key, [])} for key in ("databases", "redis", "backups")}

    def kept(drill: dict[str, Any]) -> bool:
        refs = (("database", "databases"), ("redis", "redis"))
        return drill["backup"] in names["backups"] and all(k not in drill or drill[k] in names[s] for k, s in refs)

    data["drills"] = [d for d in data.get("drills", []) if kept(d)]
    data["replicas"] = [r for r in data.get("replicas", []) if r["primary"] in names["databases"]]
    for source in data.get("backups", []):
        if source.get("database") not in names["databases"]:
            source.pop("database", None)
    lifecycle = data.get("lifecycle") or {}
    for part in ("job_tables", "temp_tables", "personal_data"):  # the parts that live in a database
        if part in lifecycle:
            lifecycle[part] = [item for item in lifecycle[part] if item.get("database") in names["databases"]]


def _short(nodeid: str) -> str:
    """``checks/health/test_x.py::test_y[a:/]`` -> ``test_x.py::test_y[a:/]``."""
    path, _, rest = nodeid.partition("::")
    return f"{Path(path).name}::{rest}"


class ChecksRun:
    """The outcome of one pytester run of checks/: outcomes by test and one-line messages."""

    def __init__(self, result: pytest.RunResult, report_dir: Path, evidence: dict[str, Any]) -> None:
        self.result = result
        self.report_dir = report_dir
        self.evidence = evidence
        self.checks = {_short(c["nodeid"]): _flat(c) for c in evidence.get("checks", [])}

    def outcome(self, test: str) -> str:
        return str(self.checks[test]["outcome"])

    def message(self, test: str) -> str:
        return str(self.checks[test]["message"])

    def failed(self) -> set[str]:
        return {t for t, c in self.checks.items() if c["outcome"] in ("failed", "broken")}


def _flat(check: dict[str, Any]) -> dict[str, Any]:
    """An evidence.json check with ``evidence``: its measured values and thresholds in one mapping."""
    markers = check.get("markers", [])
    return {**check, "evidence": {**check.get("measured", {}), **check.get("thresholds", {})},
            "cadence": [m for m in markers if m in ("daily", "weekly", "monthly", "quarterly")]}


@pytest.fixture
def run_checks(pytester: pytest.Pytester) -> Callable[..., ChecksRun]:
    """``run_checks(profile, "health/test_http_health.py", ...)``: run checks/ in a subprocess."""

    def run(profile: Path, *targets: str, extra: tuple[str, ...] = ()) -> ChecksRun:
        report_dir = pytester.path / "report"
        shutil.rmtree(report_dir, ignore_errors=True)  # a run that stops early must not show the last one's results
        args = [str(ROOT / "checks" / t) for t in targets] or [str(ROOT / "checks")]
        result = pytester.runpytest_subprocess(
            *args, "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
            "--profile", str(profile), "--report-dir", str(report_dir), "-p", "no:randomly", *extra,
            timeout=240,
        )
        evidence_file = report_dir / "evidence.json"
        evidence = json.loads(evidence_file.read_text()) if evidence_file.exists() else {}
        return ChecksRun(result, report_dir, evidence)

    return run


@pytest.fixture
def no_leftover() -> Iterator[list[Any]]:
    """Collects processes a test starts; they are stopped (and verified gone) afterwards."""
    started: list[Any] = []
    yield started
    from opsverify.sandbox.app import stop_process

    for proc in started:
        stop_process(proc, timeout=10)


@pytest.fixture
def team_conftest(pytester: pytest.Pytester) -> Path:
    """A team's own test directory: a conftest that loads opsverify's fixtures (the root conftest's plugins)."""
    import ast

    tree = ast.parse((ROOT / "conftest.py").read_text())
    plugins = next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "pytest_plugins"
    )
    plugins = [p for p in plugins if p != "pytester"]
    return pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\npytest_plugins = {plugins!r}\n")


SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    proc: subprocess.Popen[bytes]
    port: int
    identity: Path
    ssh_config: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A throwaway sshd on 127.0.0.1 that accepts one generated key for the current user (stopped after)."""
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    keygen = ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f"]
    subprocess.run([*keygen, str(tmp_path / "host_key")], check=True, timeout=30)
    subprocess.run([*keygen, str(tmp_path / "id")], check=True, timeout=30)
    shutil.copy(tmp_path / "id.pub", tmp_path / "authorized_keys")
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\nPermitRootLogin "
        "prohibit-password\nStrictModes no\nUsePAM no\n"
    )
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, timeout=10)
    client = tmp_path / "ssh_config"
    client.write_text(
        "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
    )
    server = Sshd(proc, port, tmp_path / "id", client)
    yield server
    server.stop()
    assert not port_is_open("127.0.0.1", port), f"sshd still listens on {port}"


@pytest.fixture
def bucket(sandbox_profile: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(client, S3 settings: the sandbox S3's access and ``url`` s3://BUCKET/database/) for a fresh bucket.

    The settings serve as a source's ``offsite`` or, without ``url``, its ``s3``. The bucket is emptied and
    deleted after, and proven gone.
    """
    import uuid

    import boto3

    sources = yaml.safe_load(sandbox_profile.read_text())["backups"]
    offsite = dict(next(s["offsite"] for s in sources if s.get("offsite")))
    secret = Path(offsite["secret_access_key_file"]).read_text().strip()
    s3 = boto3.client("s3", endpoint_url=offsite["endpoint_url"], region_name=offsite["region"],
                      aws_access_key_id=offsite["access_key_id"], aws_secret_access_key=secret)
    name = f"opsverify-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    access = {k: offsite[k] for k in ("endpoint_url", "region", "access_key_id", "secret_access_key_file")}
    yield s3, {**access, "url": f"s3://{name}/database/"}
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
