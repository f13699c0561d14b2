"""Host security checks (checks/security/test_host_security.py) against real faults on this machine and over ssh://.

Every fault is made by the test in its own files and processes: an app directory in tmp_path, a
copy of /bin/true with the SUID bit, a copy of /bin/sleep running as root, a listener on 0.0.0.0,
a throwaway sshd's config, and a pending "security" update from a local apt repository.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsverify.probes.hostsecurity import listening_sockets

CHECKS = "security/test_host_security.py"
WRITABLE = "test_host_security.py::test_no_world_writable_files_in_app_dirs[{}]"
SUID = "test_host_security.py::test_suid_files_are_allowed[{}]"
SSHD = "test_host_security.py::test_sshd_refuses_root_and_password_logins[{}]"
LISTENING = "test_host_security.py::test_listening_sockets_are_allowed[{}]"
ROOT_PROCESSES = "test_host_security.py::test_app_processes_do_not_run_as_root[{}]"
SECRETS = "test_host_security.py::test_secret_files_are_private[{}]"
UPDATES = "test_host_security.py::test_security_updates_are_installed[{}]"
ALL = (WRITABLE, SUID, SSHD, LISTENING, ROOT_PROCESSES, SECRETS, UPDATES)
ME = pwd.getpwuid(os.geteuid()).pw_name
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the fault needs root (a root SUID file, a root process)")


def outcomes(run: Any, host: str = "local") -> dict[str, str]:
    return {test.format(host): run.outcome(test.format(host)) for test in ALL}


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A healthy app directory: a private .env, a world-writable directory with the sticky bit, plain files."""
    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (app / "config" / "settings.json").write_text("{}\n")
    (app / "config" / "settings.json").chmod(0o644)
    (app / ".env").write_text("SECRET=x\n")
    (app / ".env").chmod(0o600)
    (app / "spool").mkdir()
    (app / "spool").chmod(0o1777)  # a shared directory with the sticky bit, as /tmp: allowed
    app.chmod(0o755)
    return app


def local_host(app: Path, scratch: Path, **security: Any) -> Callable[[dict[str, Any]], None]:
    """The sandbox profile with its one host declaring ``app`` as its app and SUID dirs (and ``security``)."""

    def mutate(data: dict[str, Any]) -> None:
        data["scratch_dir"] = str(scratch)
        data["hosts"] = [{
            "name": "local", "uri": "local://", "cpu_max_percent": 100,
            "security": {"app_dirs": [str(app)], "suid_paths": [str(app)], **security},
        }]

    return mutate


def test_sandbox_host_passes(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                             sandbox_profile: Path) -> None:
    state = sandbox_profile.parent
    private = [*(state / "secrets").iterdir(), *(state / "tls").glob("*key*"), *(state / "app").rglob("*.env")]
    assert private
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in private} == {p.name: "0o600" for p in private}
    assert oct((state / "secrets").stat().st_mode & 0o777) == "0o700"
    run = run_checks(profile_variant(), CHECKS)
    assert run.result.ret == 0, run.result.stdout.str()
    assert outcomes(run) == {
        WRITABLE.format("local"): "passed", SUID.format("local"): "passed", SSHD.format("local"): "skipped",
        LISTENING.format("local"): "skipped", ROOT_PROCESSES.format("local"): "skipped",
        SECRETS.format("local"): "passed", UPDATES.format("local"): "passed",
    }


def test_world_writable_file_fails(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                   app_dir: Path, tmp_path: Path) -> None:
    data = app_dir / "config" / "data.json"
    data.write_text("{}\n")
    data.chmod(0o666)
    run = run_checks(profile_variant(local_host(app_dir, tmp_path)), CHECKS)
    test = WRITABLE.format("local")
    assert run.failed() == {test}
    assert run.message(test) == (
        f"host local: 1 world-writable files or directories under {app_dir}: {data} (0666 {ME}); expected none "
        "(QP-30): chmod o-w them"
    )


@as_root
def test_suid_binary_fails_unless_allowed(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                          app_dir: Path, tmp_path: Path) -> None:
    helper = app_dir / "bin" / "helper"
    helper.parent.mkdir()
    shutil.copy("/bin/true", helper)
    helper.chmod(0o4755)
    run = run_checks(profile_variant(local_host(app_dir, tmp_path)), CHECKS)
    test = SUID.format("local")
    assert run.failed() == {test}
    assert run.message(test) == (
        f"host local: 1 SUID/SGID files are not allowed: {helper} (4755 root); expected only the distribution's "
        "usual ones and security.suid_allowed: remove the bit (chmod u-s,g-s) or add the path to security.suid_allowed"
    )
    allowed = run_checks(profile_variant(local_host(app_dir, tmp_path, suid_allowed=[f"{app_dir}/bin/*"])), CHECKS)
    assert allowed.failed() == set()
    assert allowed.outcome(test) == "passed"


def test_group_readable_env_fails(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                  app_dir: Path, tmp_path: Path) -> None:
    (app_dir / ".env").chmod(0o640)
    run = run_checks(profile_variant(local_host(app_dir, tmp_path)), CHECKS)
    test = SECRETS.format("local")
    assert run.failed() == {test}
    assert run.message(test) == (
        f"host local: 1 secret files under {app_dir} are readable by group or others: {app_dir / '.env'} "
        f"(0640 {ME}); expected owner-only: chmod 600 them"
    )


def test_symlinked_app_dir_is_scanned(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                      tmp_path: Path) -> None:
    """A Capistrano ``current`` -> ``releases/r1`` declared as the app dir: find follows the root link (-H)."""
    release = tmp_path / "releases" / "r1"
    release.mkdir(parents=True)
    current = tmp_path / "current"
    current.symlink_to(release, target_is_directory=True)
    data = release / "data.json"
    data.write_text("{}\n")
    data.chmod(0o666)
    env = release / ".env"
    env.write_text("SECRET=x\n")
    env.chmod(0o644)
    helper = release / "helper"
    shutil.copy("/bin/true", helper)
    helper.chmod(0o4755)
    run = run_checks(profile_variant(local_host(current, tmp_path / "scratch")), CHECKS)
    expected = {WRITABLE.format("local"), SECRETS.format("local")}
    if os.geteuid() == 0:
        expected.add(SUID.format("local"))
        assert run.message(SUID.format("local")) == (
            f"host local: 1 SUID/SGID files are not allowed: {current}/helper (4755 root); expected only the "
            "distribution's usual ones and security.suid_allowed: remove the bit (chmod u-s,g-s) or add the path to "
            "security.suid_allowed"
        )
    assert run.failed() == expected
    assert run.message(WRITABLE.format("local")) == (
        f"host local: 1 world-writable files or directories under {current}: {current}/data.json (0666 {ME}); "
        "expected none (QP-30): chmod o-w them"
    )
    assert run.message(SECRETS.format("local")) == (
        f"host local: 1 secret files under {current} are readable by group or others: {current}/.env (0644 {ME}); "
        "expected owner-only: chmod 600 them"
    )


PEM_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n"


def test_runbook_env_files_and_private_keys_by_content_fail(run_checks: Callable[..., Any],
                                                             profile_variant: Callable[..., Path], app_dir: Path,
                                                             tmp_path: Path) -> None:
    """The runbook's .env.production, privkey1.pem, *.key.pem, *private*.pem, and a key in any small file."""
    faults = {".env.production": "DATABASE_URL=x\n", "privkey1.pem": PEM_KEY, "tls.key.pem": PEM_KEY,
              "server-private.pem": PEM_KEY, "config/signing.crt": "# bundle\n" + PEM_KEY}
    for name, text in faults.items():
        (app_dir / name).write_text(text)
        (app_dir / name).chmod(0o640)
    private = app_dir / "config" / "private.txt"  # a key, but owner-only: fine
    private.write_text(PEM_KEY)
    private.chmod(0o600)
    big = app_dir / "config" / "big.log"  # 64 KiB or more: not searched
    big.write_text(PEM_KEY + "x" * 70_000)
    big.chmod(0o644)
    plain = app_dir / "config" / "public.pem"  # a certificate, no key
    plain.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    plain.chmod(0o644)
    run = run_checks(profile_variant(local_host(app_dir, tmp_path / "scratch")), CHECKS)
    test = SECRETS.format("local")
    assert run.failed() == {test}
    shown = ", ".join(f"{app_dir / name} (0640 {ME})" for name in sorted(faults))
    assert run.message(test) == (
        f"host local: 5 secret files under {app_dir} are readable by group or others: {shown}; expected owner-only: "
        "chmod 600 them"
    )
    assert run.checks[test]["evidence"]["private_keys"].count(str(app_dir)) == 4


def test_missing_app_dir_and_findings_fail_together(run_checks: Callable[..., Any],
                                                    profile_variant: Callable[..., Path], app_dir: Path,
                                                    tmp_path: Path) -> None:
    data = app_dir / "data.json"
    data.write_text("{}\n")
    data.chmod(0o666)
    (app_dir / ".env").chmod(0o644)
    gone = tmp_path / "gone"
    variant = profile_variant(local_host(app_dir, tmp_path / "scratch", app_dirs=[str(app_dir), str(gone)]))
    run = run_checks(variant, CHECKS)
    assert run.failed() == {WRITABLE.format("local"), SECRETS.format("local")}
    assert run.message(WRITABLE.format("local")) == (
        f"host local: 1 world-writable files or directories under {app_dir}: {data} (0666 {ME}); expected none "
        f"(QP-30), and {gone} is no directory on local://: chmod o-w them, and create it or fix the host's security "
        "section"
    )
    assert run.message(SECRETS.format("local")) == (
        f"host local: 1 secret files under {app_dir} are readable by group or others: {app_dir / '.env'} "
        f"(0644 {ME}); expected owner-only, and {gone} is no directory on local://: chmod 600 them, and create it or "
        "fix the host's security section"
    )
    data.chmod(0o644)
    (app_dir / ".env").chmod(0o600)
    run = run_checks(variant, CHECKS)
    assert run.failed() == {WRITABLE.format("local"), SECRETS.format("local")}
    assert run.message(WRITABLE.format("local")) == (
        f"host local: {gone} is no directory on local://; create it or fix the host's security section"
    )


@pytest.fixture
def appd() -> Iterator[Path]:
    """A copy of /bin/sleep named ``appd`` in a directory any user may enter (removed after)."""
    where = Path(tempfile.mkdtemp(prefix="opsverify-appd-"))
    where.chmod(0o755)
    binary = where / "appd"
    shutil.copy("/bin/sleep", binary)
    binary.chmod(0o755)
    yield binary
    shutil.rmtree(where)


def start(binary: Path, uid: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(binary), "120"], user=uid, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@as_root
def test_app_process_running_as_root_fails(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                           app_dir: Path, tmp_path: Path, appd: Path) -> None:
    variant = profile_variant(local_host(app_dir, tmp_path, app_processes=["appd"]))
    test = ROOT_PROCESSES.format("local")
    proc = start(appd)
    try:
        run = run_checks(variant, CHECKS)
    finally:
        stop(proc)
    assert run.failed() == {test}
    assert run.message(test) == (
        f"host local: app processes run as root: appd (pid {proc.pid}); expected a non-root user: run them as a "
        "dedicated user (systemd User=, Docker USER)"
    )
    procs = [start(appd) for _ in range(7)]
    try:
        run = run_checks(variant, CHECKS)
    finally:
        for each in procs:
            stop(each)
    shown = ", ".join(f"appd (pid {p.pid})" for p in sorted(procs, key=lambda p: p.pid)[:5])
    assert run.message(test) == (
        f"host local: app processes run as root: {shown} and 2 more; expected a non-root user: run them as a "
        "dedicated user (systemd User=, Docker USER)"
    )
    proc = start(appd, uid=pwd.getpwnam("nobody").pw_uid)
    try:
        run = run_checks(variant, CHECKS)
    finally:
        stop(proc)
    assert run.failed() == set()
    assert run.outcome(test) == "passed"
    assert f"appd pid {proc.pid} uid" in run.checks[test]["evidence"]["running"]


def test_listener_on_all_addresses_fails(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                         app_dir: Path, tmp_path: Path) -> None:
    from datetime import timedelta

    import testinfra

    present = listening_sockets(testinfra.get_host("local://"), timedelta(seconds=30)).sockets
    others = sorted({s.endpoint for s in present if not s.is_loopback})  # the machine's own: not under test
    # Other self-tests running beside this one open wildcard listeners of their own (a Redis bound to 0.0.0.0):
    # the fault listens on this machine's own address, so wildcard listeners can be allowed without hiding it.
    hosts = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10, check=False).stdout.split()
    address = next((a for a in hosts if ":" not in a and not a.startswith("127.")), "0.0.0.0")
    if address != "0.0.0.0":
        others = sorted({*others, "0.0.0.0:*", "[::]:*"})
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((address, 0))
    listener.listen()
    port = listener.getsockname()[1]
    test = LISTENING.format("local")
    try:
        run = run_checks(profile_variant(local_host(app_dir, tmp_path, listening_allowed=others)), CHECKS)
        allowed = [*others, f"*:{port}"]
        passing = run_checks(profile_variant(local_host(app_dir, tmp_path, listening_allowed=allowed)), CHECKS)
    finally:
        listener.close()
    assert run.failed() == {test}
    me = Path("/proc/self/comm").read_text().strip()
    assert run.message(test) == (
        f"host local: 1 sockets listen beyond loopback and security.listening_allowed: tcp {address}:{port} ({me}); "
        f"expected only {', '.join(others) or 'loopback'}: stop them, bind them to loopback or add their address:port "
        "to security.listening_allowed"
    )
    assert passing.failed() == set()
    assert passing.outcome(test) == "passed"


SSHD_BIN = Path("/usr/sbin/sshd")
needs_sshd = pytest.mark.skipif(not SSHD_BIN.exists(), reason="openssh-server is not installed: run `make setup`")


def ssh_host(server: Any, app: Path, scratch: Path) -> Callable[[dict[str, Any]], None]:
    """A profile whose one host is the throwaway sshd, reached over ssh://, its sshd -T reading that sshd's config."""

    def mutate(data: dict[str, Any]) -> None:
        data["scratch_dir"] = str(scratch)
        for key in ("services", "databases", "redis", "dependencies"):
            data[key] = []
        data["hosts"] = [{
            "name": "remote", "uri": f"ssh://{ME}@127.0.0.1:{server.port}", "ssh_config": str(server.ssh_config),
            "ssh_identity_file": str(server.identity), "cpu_max_percent": 100,
            "security": {"app_dirs": [str(app)], "suid_paths": [str(app)], "listening_allowed": ["*:*"],
                         "sshd_config": str(server.identity.parent / "sshd_config")},
        }]

    return mutate


@needs_sshd
def test_checks_pass_over_ssh_and_sshd_password_login_fails(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path], sshd: Any, app_dir: Path, tmp_path: Path
) -> None:
    variant = profile_variant(ssh_host(sshd, app_dir, tmp_path / "scratch"))
    run = run_checks(variant, CHECKS)
    assert outcomes(run, "remote") == {
        WRITABLE.format("remote"): "passed", SUID.format("remote"): "passed", SSHD.format("remote"): "passed",
        LISTENING.format("remote"): "passed", ROOT_PROCESSES.format("remote"): "skipped",
        SECRETS.format("remote"): "passed", UPDATES.format("remote"): "passed",
    }, run.result.stdout.str()
    config = tmp_path / "sshd_config"  # the fixture's config; the running sshd keeps what it read at start
    config.write_text(config.read_text().replace("PasswordAuthentication no", "PasswordAuthentication yes")
                      .replace("PermitRootLogin prohibit-password", "PermitRootLogin yes"))
    run = run_checks(variant, CHECKS)
    test = SSHD.format("remote")
    assert run.failed() == {test}
    assert run.message(test) == (
        "host remote: sshd lets root or passwords in: permitrootlogin yes (expected no or prohibit-password), "
        f"passwordauthentication yes (expected no) (`sshd -T -f {config}`): set PermitRootLogin prohibit-password "
        "or no, PasswordAuthentication no and PermitEmptyPasswords no, then reload sshd"
    )


@needs_sshd
def test_unreachable_host_fails_every_check(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path], sshd: Any, app_dir: Path, tmp_path: Path
) -> None:
    sshd.stop()
    run = run_checks(profile_variant(ssh_host(sshd, app_dir, tmp_path / "scratch")), CHECKS)
    reached = {t.format("remote") for t in (WRITABLE, SUID, SSHD, LISTENING, SECRETS, UPDATES)}
    assert run.failed() == reached
    uri = f"ssh://{ME}@127.0.0.1:{sshd.port}"
    first = WRITABLE.format("remote")
    assert run.message(first) == f"cannot reach host remote at {uri}: connection refused"
    for later in reached - {first}:
        assert run.message(later).startswith(f"cannot reach host remote at {uri}: skipped probing: "), later


FAULT_PACKAGE = "opsverify-fault-pkg"
APT_LISTS = Path("/var/lib/apt/lists")
needs_apt = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None,
    reason="the pending-update fault installs a package: it needs root, apt-get and dpkg-deb",
)


def build_package(where: Path, version: str) -> Path:
    """An empty ``opsverify-fault-pkg`` of ``version`` (nothing but its name in dpkg's database)."""
    tree = where / f"tree-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {FAULT_PACKAGE}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: opsverify <opsverify@localhost>\nDescription: opsverify self-test package (safe to purge)\n"
    )
    deb = where / f"{FAULT_PACKAGE}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True, capture_output=True,
                   timeout=60)
    return deb


def security_repository(where: Path, deb: Path) -> Path:
    """A flat apt repository holding ``deb``, whose Release names a security origin (Label Debian-Security)."""
    import hashlib

    repo = where / "repo"
    repo.mkdir()
    shutil.copy(deb, repo / deb.name)
    control = (deb.parent / "tree-2" / "DEBIAN" / "control").read_text().rstrip("\n")
    data = deb.read_bytes()
    packages = (f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n").encode()
    (repo / "Packages").write_bytes(packages)
    (repo / "Release").write_text(
        "Origin: Debian\nLabel: Debian-Security\nSuite: opsverify-fault-security\nCodename: opsverify-fault-security\n"
        "Version: 12\nArchitectures: all amd64\n"
        f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
    )
    return repo


def apt_list_name(repo: Path) -> str:
    """The prefix of the list files apt keeps for ``file:REPO`` (its URItoFileName: quoted, then / -> _)."""
    quoted = "".join(f"%{ord(c):02x}" if c in '\\|{}[]<>"^~_=!@#$%&*' else c for c in str(repo))
    return quoted.replace("/", "_")


def apt(*args: str) -> None:
    subprocess.run(["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=120", *args], check=True, capture_output=True,
                   timeout=300, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


@needs_apt
def test_security_update_pending_too_long_fails(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                                app_dir: Path, tmp_path: Path) -> None:
    import json
    from datetime import UTC, datetime, timedelta

    where = Path(tempfile.mkdtemp(prefix="opsverify-apt-"))  # apt reads file: repositories as _apt: not in tmp_path
    where.chmod(0o755)
    v1, v2 = build_package(where, "1"), build_package(where, "2")
    repo = security_repository(where, v2)
    sources = Path(f"/etc/apt/sources.list.d/opsverify-fault-{os.getpid()}.list")
    lists = apt_list_name(repo)
    variant = profile_variant(local_host(app_dir, tmp_path / "scratch"))
    state = tmp_path / "scratch" / "opsverify-state" / "pending-security-updates" / "local.json"
    test = UPDATES.format("local")
    try:
        apt("install", str(v1))
        sources.write_text(f"deb [trusted=yes] file:{repo} ./\n")
        apt("update", "-o", f"Dir::Etc::sourcelist={sources}", "-o", "Dir::Etc::sourceparts=-",
            "-o", "APT::Get::List-Cleanup=0")  # only this repository: the machine's other lists stay as they are
        assert list(APT_LISTS.glob(f"{lists}_*")), f"apt kept no {lists}_* lists"
        first = run_checks(variant, CHECKS)  # v2 is pending from now on: first seen, not overdue
        seen = json.loads(state.read_text())["first_seen"]
        seen[f"{FAULT_PACKAGE}=2"] = (datetime.now(UTC) - timedelta(days=8)).isoformat()  # eight days pass
        state.write_text(json.dumps({"first_seen": seen}))
        late = run_checks(variant, CHECKS)
    finally:
        sources.unlink(missing_ok=True)
        for leftover in APT_LISTS.glob(f"{lists}_*"):
            leftover.unlink()
        subprocess.run(["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=120", "purge", FAULT_PACKAGE],
                       capture_output=True, timeout=300, check=False)
        shutil.rmtree(where)
    assert first.failed() == set()
    assert first.outcome(test) == "passed"
    assert f"{FAULT_PACKAGE} 2" in first.checks[test]["evidence"]["security_updates"]
    # PF-08's first sighting passes, but says so: a warning in the report and the evidence, and the new state file
    pending = first.checks[test]["evidence"]["security_updates"].split(", ")  # the machine's own ones besides
    assert f"{FAULT_PACKAGE} 2" in pending
    assert first.checks[test]["evidence"]["pending"] == f"{len(pending)} security updates pending (first seen now)"
    assert first.checks[test]["evidence"]["state_file"] == (
        f"{state} created by this run: pending updates age from now; keep this directory between runs (CI: cache "
        "scratch_dir) or they can never age past security_updates_max_age"
    )
    shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
    assert f"PendingSecurityUpdatesWarning: host local: {len(pending)} security updates pending (first seen now): " \
        f"{shown}; PF-08 fails once one stays pending longer than 7d (the state file {state} was just created: " \
        "keep it between runs)" in first.result.stdout.str()
    assert late.checks[test]["evidence"]["state_file"] == f"{state} (kept from earlier runs)"
    assert late.failed() == {test}
    assert late.message(test) == (
        f"host local: 1 security updates pending longer than 7d: {FAULT_PACKAGE} 2 "
        "(Debian-Security:12/opsverify-fault-security, pending 8d) (PF-08): install them (apt-get upgrade)"
    )
    assert subprocess.run(["dpkg-query", "-W", FAULT_PACKAGE], capture_output=True, check=False).returncode != 0
    assert not list(APT_LISTS.glob(f"{lists}_*"))
    assert not sources.exists()


@needs_sshd
@as_root
def test_stale_package_lists_fail(run_checks: Callable[..., Any], profile_variant: Callable[..., Path], sshd: Any,
                                  app_dir: Path, tmp_path: Path) -> None:
    """A second sshd in a mount namespace of its own, where /var/lib/apt/lists is a copy ten days old."""
    import time

    from opsverify.localserver.net import free_port, port_is_open, wait_for_port

    stale = tmp_path / "lists"
    shutil.copytree(APT_LISTS, stale, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    old = time.time() - 10 * 86400
    for path in [*stale.rglob("*"), stale]:  # the directory last: copying into it moved its time
        os.utime(path, (old, old), follow_symlinks=False)
    port = free_port()
    config = tmp_path / "sshd_config"
    stale_config = tmp_path / "stale_sshd_config"
    stale_config.write_text(config.read_text().replace(f"Port {sshd.port}", f"Port {port}")
                            .replace("sshd.pid", "stale_sshd.pid"))
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount --bind "$0" {APT_LISTS} && exec {SSHD_BIN} -D -e -f "$1"', str(stale), str(stale_config)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=10)
        server = type("Server", (), {"port": port, "ssh_config": sshd.ssh_config, "identity": sshd.identity})
        run = run_checks(profile_variant(ssh_host(server, app_dir, tmp_path / "scratch")), CHECKS)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not port_is_open("127.0.0.1", port)
    test = UPDATES.format("remote")
    assert run.failed() == {test}
    assert run.message(test) == (
        "host remote: its package lists (/var/lib/apt/lists) are 10d old (limit 2d), so pending security updates "
        "cannot be known: run apt-get update on the host (the check never updates)"
    )


@as_root
def test_unreadable_sshd_config_fails_naming_the_fix(run_checks: Callable[..., Any],
                                                     profile_variant: Callable[..., Path], app_dir: Path,
                                                     tmp_path: Path) -> None:
    missing = tmp_path / "no_sshd_config"
    run = run_checks(profile_variant(local_host(app_dir, tmp_path, sshd_config=str(missing))), CHECKS)
    test = SSHD.format("local")
    assert run.failed() == {test}
    assert run.message(test) == (
        f"cannot read sshd's effective settings on host local: `sshd -T -f {missing}` as root failed: {missing}: No "
        "such file or directory; fix the configuration it reads (security.sshd_config, `sshd -t` names the line)"
    )


def test_simulated_upgrade_lines_are_read_by_origin() -> None:
    from opsverify.probes.hostsecurity import is_allowed_setuid, parse_simulation

    output = (
        "NOTE: This is only a simulation!\n"
        "Inst zstd [1.5.4+dfsg2-5] (1.5.4+dfsg2-5+deb12u1 Debian-Security:12/oldstable-security [amd64])\n"
        "Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable [all])\n"
        "Inst libssl3 [3.0.2-0ubuntu1.10] (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-updates, "
        "Ubuntu:22.04/jammy-security [amd64])\n"
        "Inst newdep (1.0 Debian:12.11/stable [amd64])\n"
        "Conf zstd (1.5.4+dfsg2-5+deb12u1 Debian-Security:12/oldstable-security [amd64])\n"
    )
    updates, total = parse_simulation(output)
    assert total == 4
    assert [(u.package, u.version, u.origin) for u in updates] == [
        ("zstd", "1.5.4+dfsg2-5+deb12u1", "Debian-Security:12/oldstable-security"),
        ("libssl3", "3.0.2-0ubuntu1.18", "Ubuntu:22.04/jammy-security"),
    ]
    assert is_allowed_setuid("/usr/bin/su", [])
    assert is_allowed_setuid("/bin/su", [])
    assert not is_allowed_setuid("/srv/app/bin/su", [])
    assert is_allowed_setuid("/srv/app/bin/su", ["/srv/app/bin/*"])
    # the distribution's globs match per path segment: * never crosses /
    assert is_allowed_setuid("/usr/lib/x86_64-linux-gnu/utempter/utempter", [])
    assert not is_allowed_setuid("/usr/lib/evil/x/utempter/utempter", [])
    assert not is_allowed_setuid("/usr/lib/x86_64-linux-gnu/utempter/utempter/extra", [])


def test_profile_refuses_relative_paths_and_listening_entries_without_a_port() -> None:
    from pydantic import ValidationError

    from opsverify.profile.security import HostSecurity

    with pytest.raises(
        ValidationError, match=r"app_dirs\n  Value error, must be absolute paths on the host: 'srv/app'",
    ):
        HostSecurity(app_dirs=["/srv/ok", "srv/app"])
    with pytest.raises(ValidationError, match=r"suid_paths\n  Value error, must be absolute paths on the host: ''"):
        HostSecurity(suid_paths=[""])
    with pytest.raises(ValidationError, match=r"suid_paths\n  Value error, must name at least one directory"):
        HostSecurity(suid_paths=[])
    with pytest.raises(ValidationError, match=r"must be address:port globs \("):
        HostSecurity(listening_allowed=["*:22", "*", "::1:80"])
    ok = HostSecurity(listening_allowed=["0.0.0.0:443", "*:22", "[::]:80", "10.0.*:80??"])
    assert ok.listening_allowed == ["0.0.0.0:443", "*:22", "[::]:80", "10.0.*:80??"]
    assert HostSecurity().app_dirs == []  # none declared: the app-dir checks skip
