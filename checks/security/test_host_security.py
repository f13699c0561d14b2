"""Hosts are configured securely (``hosts[].security``), read through testinfra on local:// or ssh:// hosts.

Runbook: QP-30 security compliance audit (``find /app -perm /o+w``: no world-writable files under
the app directories) and PF-08 security patch assessment (no pending security update older than
allowed). The other rules (SUID/SGID files, sshd, listening sockets, app processes as root, secret
file modes) have no runbook procedure and carry no ID: they are Lynis/CIS host hardening items.
An unreachable host fails every check, naming the first failure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fixtures.expect import expect, fail
from fixtures.hostsecurity import PendingSecurityUpdatesWarning, state_note
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
    private_key_files,
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
    """The listing, once it is complete: a failed find fails, an unreadable path skips (a missing root is reported
    by ``conclude``, together with what the other roots hold)."""
    __tracebackhide__ = True
    evidence.record(roots=" ".join(listing.roots), found=count(listing), entries=listing.named(20))
    if listing.missing:
        evidence.record(missing=" ".join(listing.missing))
    expect(listing.error is None, f"cannot list {what} on host {host.name} ({host.uri}): {listing.error}")
    if listing.denied and not listing.entries and not listing.missing:
        user = login_user(target)
        pytest.skip(
            f"host {host.name}: {user} may not read {', '.join(listing.denied[:3])} (permission denied): run the check "
            f"as root or give {user} read access to list {what}"
        )
    return listing


def existing(roots: list[str], listing: Listing) -> str:
    return ", ".join(r for r in roots if r not in listing.missing) or "none"


def conclude(host: Host, listing: Listing, finding: str | None, fix: str) -> None:
    """Fail once for the missing roots and the findings under the others (one hides neither); pass when neither."""
    __tracebackhide__ = True
    missing = (
        f"{', '.join(listing.missing)} {'is' if len(listing.missing) == 1 else 'are'} no directory on {host.uri}"
        if listing.missing else None
    )
    create = "create it or fix the host's security section" if len(listing.missing) == 1 else (
        "create them or fix the host's security section")
    if finding and missing:
        fail(f"host {host.name}: {finding}, and {missing}: {fix}, and {create}")
    expect(finding is None, f"host {host.name}: {finding}: {fix}")
    expect(missing is None, f"host {host.name}: {missing}; {create}")


def and_more(shown: list[str], total: int, more: bool = False, limit: int = 5) -> str:
    """``a, b, c, d, e and 3 more`` (``and more`` when the listing itself was cut short)."""
    text = ", ".join(shown[:limit])
    if more:
        return text + " and more"
    return text + (f" and {total - limit} more" if total > limit else "")


@pytest.mark.monthly
@pytest.mark.runbook("QP-30")
def test_no_world_writable_files_in_app_dirs(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """QP-30: no file writable by others and no directory writable by others without the sticky bit in the app dirs."""
    host, policy = secured_host, policy_of(secured_host)
    dirs, target = app_dirs_of(host), testinfra_host(secured_host)
    found = read_listing(host, target, world_writable(target, dirs, policy.scan_timeout), "the app dirs", evidence)
    conclude(
        host, found,
        f"{count(found)} world-writable files or directories under {existing(dirs, found)}: {found.named()}; "
        "expected none (QP-30)" if found.entries else None,
        "chmod o-w them",
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
    conclude(
        host, found,
        f"{len(foreign)}{'+' if found.more else ''} SUID/SGID files are not allowed: "
        f"{and_more([str(e) for e in foreign], len(foreign), found.more)}; expected only the distribution's usual "
        "ones and security.suid_allowed" if foreign else None,
        "remove the bit (chmod u-s,g-s) or add the path to security.suid_allowed",
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
        f"{and_more([str(s) for s in foreign], len(foreign))}; expected only {', '.join(allowed) or 'loopback'}: "
        "stop them, bind them to loopback or add their address:port to security.listening_allowed",
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
    named = and_more([f"{p.name} (pid {p.pid})" for p in root], len(root))
    expect(
        not root,
        f"host {host.name}: app processes run as root: {named}; "
        "expected a non-root user: run them as a dedicated user (systemd User=, Docker USER)",
    )


@pytest.mark.monthly
def test_secret_files_are_private(secured_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """Files under the app dirs named like ``secret_files`` (.env*, keys) or holding a PEM private key (under 64 KiB)
    are readable by their owner only."""
    host, policy = secured_host, policy_of(secured_host)
    dirs, target = app_dirs_of(host), testinfra_host(secured_host)
    named = read_listing(host, target, readable_secrets(target, dirs, policy.secret_files, policy.scan_timeout),
                         "the secret files", evidence)
    keys = private_key_files(target, [d for d in dirs if d not in named.missing], policy.scan_timeout)
    evidence.record(private_keys=keys.named(20) or "none")
    expect(keys.error is None, f"cannot search the app dirs of host {host.name} ({host.uri}) for private keys: "
                               f"{keys.error}")
    merged = {e.path: e for e in sorted((*named.entries, *keys.entries), key=lambda e: e.path)}
    found = replace(named, entries=tuple(merged.values()), more=named.more or keys.more)
    conclude(
        host, found,
        f"{count(found)} secret files under {existing(dirs, found)} are readable by group or others: {found.named()}; "
        "expected owner-only" if found.entries else None,
        "chmod 600 them",
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
    state = pending_updates_state(host)
    existed = state.exists()
    updates = remember_first_seen(state, found.updates, now)
    evidence.record(state_file=state_note(state, existed))
    overdue = [u for u in updates if u.first_seen is not None and now - u.first_seen > limit]
    evidence.record(security_updates=", ".join(f"{u.package} {u.version}" for u in updates) or "none")
    if updates and not overdue:
        fresh = sum(1 for u in updates if u.first_seen == now)
        oldest = min(u.first_seen or now for u in updates)
        since = "first seen now" if fresh == len(updates) else (
            f"{fresh} first seen now, the oldest pending {in_hours(now - oldest)}" if fresh
            else f"the oldest pending {in_hours(now - oldest)}")
        text = f"{len(updates)} security updates pending ({since})"
        evidence.record(pending=text)
        warnings.warn(PendingSecurityUpdatesWarning(
            f"host {host.name}: {text}: {', '.join(f'{u.package} {u.version}' for u in updates[:5])}"
            f"{f' and {len(updates) - 5} more' if len(updates) > 5 else ''}; PF-08 fails once one stays pending "
            f"longer than {format_duration(limit)}"
            + ("" if existed else f" (the state file {state} was just created: keep it between runs)")
        ), stacklevel=1)
    shown = and_more([f"{u.package} {u.version} ({u.origin}, pending {in_hours(now - u.first_seen)})"
                      for u in overdue if u.first_seen is not None], len(overdue))
    expect(
        not overdue,
        f"host {host.name}: {len(overdue)} security updates pending longer than {format_duration(limit)}: {shown} "
        "(PF-08): install them (apt-get upgrade)",
    )
