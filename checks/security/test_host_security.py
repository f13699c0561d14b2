"""Hosts are configured securely (``hosts[].security``), read through testinfra on local:// or ssh:// hosts.

Runbook: QP-30 security compliance audit (``find /app -perm /o+w``: no world-writable files under
the app directories) and PF-08 security patch assessment (no pending security update older than
allowed). The other rules (SUID/SGID files, sshd, listening sockets, app processes as root, secret
file modes) have no runbook procedure and carry no ID: they are Lynis/CIS host hardening items.
An unreachable host fails every check, naming the first failure.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.hostsecurity import (
    APT_LISTS,
    Listing,
    is_allowed_setuid,
    is_allowed_socket,
    listening_sockets,
    login_user,
    pending_security_updates,
    processes_named,
    readable_secrets,
    remember_first_seen,
    setuid_files,
    sshd_settings,
    sshd_violations,
    world_writable,
)
from opsverify.profile import Host
from opsverify.profile.security import HostSecurity

pytestmark = [pytest.mark.security]
HostOf = Callable[[Host], Any]


def policy_of(host: Host) -> HostSecurity:
    assert host.security is not None  # the secured_host row holds hosts with a security section only
    return host.security


def app_dirs_of(host: Host) -> list[str]:
    dirs = policy_of(host).app_dirs
    if not dirs:
        pytest.skip(f"host {host.name} declares no security.app_dirs")
    return dirs


def in_hours(age: timedelta) -> str:
    """``8d3h``: how long an update has been pending, in whole hours (the limits are days)."""
    hours = timedelta(hours=age // timedelta(hours=1))
    return format_duration(hours) if hours else format_duration(age)


def count(listing: Listing) -> str:
    return f"more than {len(listing.entries)}" if listing.more else str(len(listing.entries))


def read_listing(host: Host, target: Any, listing: Listing, what: str, evidence: Recorder) -> Listing:
    """The listing, once it is complete: a failed find fails, a missing root fails, an unreadable path skips."""
    __tracebackhide__ = True
    evidence.record(roots=" ".join(listing.roots), found=count(listing), entries=listing.named(20))
    expect(listing.error is None, f"cannot list {what} on host {host.name} ({host.uri}): {listing.error}")
    expect(
        not listing.missing,
        f"host {host.name}: {', '.join(listing.missing)} is no directory on {host.uri}; "
        "create it or fix the host's security section",
    )
    if listing.denied and not listing.entries:
        user = login_user(target)
        pytest.skip(
            f"host {host.name}: {user} may not read {', '.join(listing.denied[:3])} (permission denied): run the check "
            f"as root or give {user} read access to list {what}"
        )
    return listing


@pytest.mark.monthly
@pytest.mark.runbook("QP-30")
def test_no_world_writable_files_in_app_dirs(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """QP-30: no file writable by others and no directory writable by others without the sticky bit in the app dirs."""
    host, policy = secured_host, policy_of(secured_host)
    dirs, target = app_dirs_of(host), testinfra_host(secured_host)
    found = read_listing(host, target, world_writable(target, dirs, policy.scan_timeout), "the app dirs", evidence)
    expect(
        not found.entries,
        f"host {host.name}: {count(found)} world-writable files or directories under {', '.join(dirs)}: "
        f"{found.named()}; expected none (QP-30): chmod o-w them",
    )


@pytest.mark.monthly
def test_suid_files_are_allowed(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """SUID/SGID files under ``suid_paths`` (not crossing filesystems) are the distribution's usual ones or allowed."""
    host, policy = secured_host, policy_of(secured_host)
    target = testinfra_host(host)
    listing = setuid_files(target, policy.suid_paths, policy.scan_timeout)
    found = read_listing(host, target, listing, "SUID/SGID files", evidence)
    foreign = [e for e in found.entries if not is_allowed_setuid(e.path, policy.suid_allowed)]
    evidence.record(not_allowed=", ".join(str(e) for e in foreign) or "none")
    expect(
        not foreign,
        f"host {host.name}: {len(foreign)}{'+' if found.more else ''} SUID/SGID files are not allowed: "
        f"{', '.join(str(e) for e in foreign[:5])}; expected only the distribution's usual ones and "
        "security.suid_allowed: remove the bit (chmod u-s,g-s) or add the path to security.suid_allowed",
    )


@pytest.mark.monthly
def test_sshd_refuses_root_and_password_logins(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """``sshd -T``: permitrootlogin is not yes, passwordauthentication no, permitemptypasswords no."""
    host, policy = secured_host, policy_of(secured_host)
    if not policy.sshd and not policy.sshd_config:
        pytest.skip(f"host {host.name} declares no sshd (security.sshd or security.sshd_config)")
    target = testinfra_host(host)
    read = sshd_settings(target, policy.sshd_config, policy.scan_timeout)
    if read.error is not None:
        user = login_user(target)
        fix = (
            "fix the configuration it reads (security.sshd_config, `sshd -t` names the line)" if user == "root"
            else f"it needs root to read the host keys: run the check as root or let {user} run `sudo -n sshd -T` "
            "without a password"
        )
        fail(f"cannot read sshd's effective settings on host {host.name}: `{read.command}` as {user} failed: "
             f"{read.error}; {fix}")
    evidence.record(**{k: read.settings.get(k, "unset")
                       for k in ("permitrootlogin", "passwordauthentication", "permitemptypasswords")})
    wrong = sshd_violations(read.settings)
    expect(
        not wrong,
        f"host {host.name}: sshd lets root or passwords in: {', '.join(wrong)} (`{read.command}`): set "
        "PermitRootLogin prohibit-password or no, PasswordAuthentication no and PermitEmptyPasswords no, then reload "
        "sshd",
    )


@pytest.mark.monthly
def test_listening_sockets_are_allowed(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """Every socket listening beyond loopback matches ``listening_allowed`` (address:port globs)."""
    host, policy = secured_host, policy_of(secured_host)
    allowed = policy.listening_allowed
    if allowed is None:
        pytest.skip(f"host {host.name} declares no security.listening_allowed: listening sockets are not checked")
    found = listening_sockets(testinfra_host(host), policy.scan_timeout)
    expect(found.error is None, f"cannot list the listening sockets of host {host.name} ({host.uri}): {found.error}")
    foreign = [s for s in found.sockets if not is_allowed_socket(s, allowed)]
    evidence.record(listening=", ".join(str(s) for s in found.sockets), not_allowed=", ".join(map(str, foreign)))
    expect(
        not foreign,
        f"host {host.name}: {len(foreign)} sockets listen beyond loopback and security.listening_allowed: "
        f"{', '.join(str(s) for s in foreign[:5])}; expected only {', '.join(allowed) or 'loopback'}: stop them, "
        "bind them to loopback or add their address:port to security.listening_allowed",
    )


@pytest.mark.monthly
def test_app_processes_do_not_run_as_root(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """No process named like one of ``app_processes`` runs with uid 0."""
    host, policy = secured_host, policy_of(secured_host)
    if not policy.app_processes:
        pytest.skip(f"host {host.name} declares no security.app_processes")
    found = processes_named(testinfra_host(host), policy.app_processes, policy.scan_timeout)
    expect(found.error is None, f"cannot list the processes of host {host.name} ({host.uri}): {found.error}")
    root = [p for p in found.processes if p.uid == 0]
    evidence.record(running=", ".join(f"{p.name} pid {p.pid} uid {p.uid}" for p in found.processes) or "none")
    expect(
        not root,
        f"host {host.name}: app processes run as root: {', '.join(f'{p.name} (pid {p.pid})' for p in root[:5])}; "
        "expected a non-root user: run them as a dedicated user (systemd User=, Docker USER)",
    )


@pytest.mark.monthly
def test_secret_files_are_private(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """Files under the app dirs named like ``secret_files`` (.env, keys) are readable by their owner only."""
    host, policy = secured_host, policy_of(secured_host)
    dirs, target = app_dirs_of(host), testinfra_host(secured_host)
    listing = readable_secrets(target, dirs, policy.secret_files, policy.scan_timeout)
    found = read_listing(host, target, listing, "the secret files", evidence)
    expect(
        not found.entries,
        f"host {host.name}: {count(found)} secret files under {', '.join(dirs)} are readable by group or others: "
        f"{found.named()}; expected owner-only: chmod 600 them",
    )


@pytest.mark.weekly
@pytest.mark.runbook("PF-08")
def test_security_updates_are_installed(
    secured_host: Host, testinfra_host: HostOf, pending_updates_state: Callable[[Host], Path], evidence: Recorder
) -> None:
    """PF-08: no security update has been pending longer than ``security_updates_max_age``.

    ``apt-get -s dist-upgrade`` against the host's own package lists (never an update); the lists
    must be younger than ``apt_lists_max_age``. How long each (package, version) has been pending is
    remembered on the checking machine since it was first seen.
    """
    host, policy = secured_host, policy_of(secured_host)
    limit = policy.security_updates_max_age
    if limit is None:
        pytest.skip(f"host {host.name}: security.security_updates_max_age is null: pending updates are not checked")
    found = pending_security_updates(testinfra_host(host), policy.scan_timeout)
    if found.no_apt:
        pytest.skip(f"host {host.name} has no apt-get: pending security updates are checked on Debian/Ubuntu hosts")
    lists_age = in_hours(found.lists_age) if found.lists_age is not None else "?"
    evidence.record(lists_age=lists_age, pending_upgrades=found.pending_total, pending_security=len(found.updates))
    expect(found.error is None, f"cannot simulate an upgrade on host {host.name} ({host.uri}): {found.error}")
    expect(
        found.lists_age is not None and found.lists_age <= policy.apt_lists_max_age,
        f"host {host.name}: its package lists ({APT_LISTS}) are {lists_age} old "
        f"(limit {format_duration(policy.apt_lists_max_age)}), so pending security updates cannot be known: run "
        "apt-get update on the host (the check never updates)",
    )
    now = datetime.now(UTC)
    updates = remember_first_seen(pending_updates_state(host), found.updates, now)
    overdue = [u for u in updates if u.first_seen is not None and now - u.first_seen > limit]
    evidence.record(security_updates=", ".join(f"{u.package} {u.version}" for u in updates) or "none")
    shown = ", ".join(
        f"{u.package} {u.version} ({u.origin}, pending {in_hours(now - u.first_seen)})"
        for u in overdue[:5] if u.first_seen is not None
    )
    expect(
        not overdue,
        f"host {host.name}: {len(overdue)} security updates pending longer than {format_duration(limit)}: {shown} "
        "(PF-08): install them (apt-get upgrade)",
    )
