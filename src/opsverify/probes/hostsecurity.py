"""Host security facts through testinfra (local:// or ssh://): files, SUID binaries, sshd, sockets, processes, updates.

Every command runs on the host under ``timeout`` (the policy's ``scan_timeout``) and its output is
bounded (``head``): a host with a million world-writable files answers with the first ``LIMIT``.
``find`` stays on the filesystem it starts on (``-xdev``) and follows a root that is a symlink (``-H``: a
Capistrano ``current`` -> ``releases/r1``), never a link below it. Nothing here changes the host: pending
updates are read with ``apt-get -s`` against the host's own package lists, never an update.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import testinfra.host

LIMIT = 200  # entries read of one listing; more are reported as "and more"
KEY_SCAN_FILES = 5000  # files under the app dirs whose content is searched for a private key, at most
KEY_SCAN_SIZE = "-64k"  # find -size: smaller than 64 KiB (a PEM key is a few KiB)
PRIVATE_KEY = "-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----"  # PEM: RSA, EC, DSA, OPENSSH, ENCRYPTED, PKCS#8
TIMED_OUT = 124  # timeout(1)'s exit status
DENIED = re.compile(r"^find: '?(.*?)'?: Permission denied$")  # LC_ALL=C: ASCII quotes
APT_LISTS = "/var/lib/apt/lists"

# The SUID/SGID binaries a Debian or Ubuntu install ships (the set Lynis and Debian's own audits treat as
# standard): shadow (su, passwd, chsh, chfn, chage, expiry, gpasswd, newgrp, newuidmap, newgidmap), util-linux
# (mount, umount, wall, write), sudo, PAM's unix_chkpwd, OpenSSH (ssh-keysign, ssh-agent), dbus, polkit, cron,
# at, utempter, fuse, iputils ping on old releases, Postfix's postdrop/postqueue, exim, and chromium's sandbox.
# /bin and /sbin name the same files as /usr/bin and /usr/sbin on merged-/usr systems: both are listed.
DISTRIBUTION_SUID: tuple[str, ...] = tuple(
    prefix + name
    for name in (
        "/bin/su", "/bin/sudo", "/bin/sudoedit", "/bin/passwd", "/bin/chsh", "/bin/chfn", "/bin/chage",
        "/bin/expiry", "/bin/gpasswd", "/bin/newgrp", "/bin/newuidmap", "/bin/newgidmap", "/bin/mount",
        "/bin/umount", "/bin/wall", "/bin/write", "/bin/bsd-write", "/bin/crontab", "/bin/at", "/bin/ssh-agent",
        "/bin/ping", "/bin/ping6", "/bin/fusermount", "/bin/fusermount3", "/bin/pkexec", "/bin/dotlockfile",
        "/bin/mlocate", "/bin/plocate", "/sbin/unix_chkpwd", "/sbin/pam_extrausers_chkpwd", "/sbin/postdrop",
        "/sbin/postqueue", "/sbin/exim4", "/sbin/mount.nfs", "/sbin/mount.cifs",
        "/lib/openssh/ssh-keysign", "/libexec/openssh/ssh-keysign", "/lib/dbus-1.0/dbus-daemon-launch-helper",
        "/libexec/dbus-daemon-launch-helper", "/lib/policykit-1/polkit-agent-helper-1",
        "/lib/polkit-1/polkit-agent-helper-1", "/libexec/polkit-agent-helper-1", "/lib/*/utempter/utempter",
        "/libexec/utempter/utempter", "/lib/eject/dmcrypt-get-device", "/lib/chromium/chrome-sandbox",
        "/lib/xorg/Xorg.wrap", "/lib/snapd/snap-confine",
    )
    for prefix in ("/usr", "")
)


@dataclass(frozen=True)
class Entry:
    """One file ``find`` reported: its permission bits (octal), owner and path."""

    mode: str
    owner: str
    path: str

    def __str__(self) -> str:
        return f"{self.path} ({self.mode} {self.owner})"


@dataclass(frozen=True)
class Listing:
    """What one bounded ``find`` saw: the entries (the first ``LIMIT``), and what it could not read or why it failed."""

    roots: tuple[str, ...]
    entries: tuple[Entry, ...] = ()
    more: bool = False  # more than LIMIT entries matched
    missing: tuple[str, ...] = ()  # roots that are no directory on the host
    denied: tuple[str, ...] = ()  # paths find could not read (permission denied)
    error: str | None = None

    def named(self, limit: int = 5) -> str:
        """``/a (0777 root), /b (0666 app) and 3 more``."""
        shown = ", ".join(str(e) for e in self.entries[:limit])
        if self.more:
            return shown + " and more"
        rest = len(self.entries) - limit
        return shown + (f" and {rest} more" if rest > 0 else "")


def _run(target: testinfra.host.Host, script: str) -> tuple[int, str, str]:
    result = target.run(script)
    return int(result.rc), str(result.stdout), str(result.stderr)


def _first_line(text: str, fallback: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else fallback


def find(target: testinfra.host.Host, roots: list[str], expression: str, timeout: timedelta) -> Listing:
    """``find -H ROOTS -xdev EXPRESSION`` on the host, under ``timeout``, reading at most ``LIMIT`` entries.

    ``-H``: a root that is a symlink to a directory is searched (not listed as the link); links below are not followed.
    """
    quoted = " ".join(shlex.quote(r) for r in roots)
    seconds = max(1, int(timeout.total_seconds()))
    script = (
        f"for d in {quoted}; do [ -d \"$d\" ] || echo \"M $d\"; done; "
        f"{{ LC_ALL=C timeout {seconds} find -H {quoted} -xdev \\( {expression} \\) -printf 'F %m %u %p\\n' 2>&1; "
        f"echo \"R $?\"; }} | head -n {LIMIT + 50}"
    )
    rc, out, err = _run(target, script)
    if rc != 0:
        return Listing(tuple(roots), error=_first_line(err or out, f"the shell on the host exited with {rc}"))
    entries, missing, denied, errors, status = [], [], [], [], None
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "F" and rest.count(" ") >= 2:
            mode, owner, path = rest.split(" ", 2)
            entries.append(Entry(mode.zfill(4), owner, path))
        elif kind == "M":
            missing.append(rest)
        elif kind == "R" and rest.isdigit():
            status = int(rest)
        elif denial := DENIED.match(line):
            denied.append(denial.group(1))
        elif line.strip() and not (line.endswith(": No such file or directory") and any(m in line for m in missing)):
            errors.append(line.strip())
    more = len(entries) > LIMIT or status is None  # no status line: head cut the listing short
    if status == TIMED_OUT:
        return Listing(tuple(roots), tuple(entries[:LIMIT]), more, tuple(missing), tuple(denied),
                       f"find did not finish within {seconds}s")
    error = errors[0] if errors else None
    return Listing(tuple(roots), tuple(entries[:LIMIT]), more, tuple(missing), tuple(denied), error)


def world_writable(target: testinfra.host.Host, dirs: list[str], timeout: timedelta) -> Listing:
    """Files writable by others, and directories writable by others without the sticky bit, under ``dirs``."""
    return find(target, dirs, "-type f -perm -0002 -o -type d -perm -0002 ! -perm -1000", timeout)


def setuid_files(target: testinfra.host.Host, paths: list[str], timeout: timedelta) -> Listing:
    """Regular files with the SUID or SGID bit under ``paths`` (not crossing into other filesystems)."""
    return find(target, paths, "-type f \\( -perm -4000 -o -perm -2000 \\)", timeout)


def readable_secrets(target: testinfra.host.Host, dirs: list[str], globs: list[str], timeout: timedelta) -> Listing:
    """Files under ``dirs`` named like one of ``globs`` that group or others may read."""
    names = " -o ".join(f"-name {shlex.quote(g)}" for g in globs) or "-false"
    return find(target, dirs, f"-type f \\( {names} \\) -perm /0044", timeout)


def private_key_files(target: testinfra.host.Host, dirs: list[str], timeout: timedelta) -> Listing:
    """Files under ``dirs`` that group or others may read and whose content holds a PEM private key.

    Bounded: files smaller than 64 KiB, the first ``KEY_SCAN_FILES`` of them, ``grep -l`` under ``timeout``.
    """
    if not dirs:  # find without a root would search the login directory
        return Listing(())
    quoted = " ".join(shlex.quote(d) for d in dirs)
    seconds = max(1, int(timeout.total_seconds()))
    scan = (
        f"find -H {quoted} -xdev -type f -size {KEY_SCAN_SIZE} -perm /0044 -print0 2>/dev/null "
        f"| head -z -n {KEY_SCAN_FILES} | xargs -0 -r grep -lZE -e {shlex.quote(PRIVATE_KEY)} -- 2>/dev/null "
        "| xargs -0 -r stat -c 'F %a %U %n'; exit 0"
    )
    script = (
        f"{{ LC_ALL=C timeout {seconds} sh -c {shlex.quote(scan)}; echo \"R $?\"; }} | head -n {LIMIT + 50}"
    )
    rc, out, err = _run(target, script)
    if rc != 0:
        return Listing(tuple(dirs), error=_first_line(err or out, f"the shell on the host exited with {rc}"))
    entries, status = [], None
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "F" and rest.count(" ") >= 2:
            mode, owner, path = rest.split(" ", 2)
            entries.append(Entry(mode.zfill(4), owner, path))
        elif kind == "R" and rest.isdigit():
            status = int(rest)
    more = len(entries) > LIMIT or status is None
    error = f"grep for private keys did not finish within {seconds}s" if status == TIMED_OUT else None
    return Listing(tuple(dirs), tuple(entries[:LIMIT]), more, error=error)


def _matches_by_segment(path: str, glob: str) -> bool:
    """``fnmatch`` per path segment: ``/usr/lib/*/utempter/utempter`` matches ``/usr/lib/x86_64-linux-gnu/...``
    but not ``/usr/lib/a/b/utempter/utempter`` (``*`` never crosses ``/``)."""
    parts, globs = path.split("/"), glob.split("/")
    return len(parts) == len(globs) and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs, strict=True))


def is_allowed_setuid(path: str, allowed: list[str]) -> bool:
    """Whether a SUID/SGID file is one of the distribution's usual ones (matched per path segment) or matches a
    declared glob (``fnmatch`` on the whole path: ``/opt/vendor/*`` covers everything below it)."""
    return (any(_matches_by_segment(path, glob) for glob in DISTRIBUTION_SUID)
            or any(fnmatch.fnmatchcase(path, glob) for glob in allowed))


@dataclass(frozen=True)
class SshdSettings:
    """The effective settings ``sshd -T`` prints (lower-case keys, first value of each), or why they are unknown."""

    command: str
    settings: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def sshd_settings(target: testinfra.host.Host, config: str | None, timeout: timedelta) -> SshdSettings:
    """``sshd -T [-f CONFIG]`` on the host; through ``sudo -n`` when the login user is not root (it reads host keys)."""
    seconds = max(1, int(timeout.total_seconds()))
    args = "-T" + (f" -f {shlex.quote(config)}" if config else "")
    sshd = "$(command -v sshd || echo /usr/sbin/sshd)"
    script = f'if [ "$(id -u)" = 0 ]; then s=""; else s="sudo -n"; fi; LC_ALL=C timeout {seconds} $s {sshd} {args}'
    rc, out, err = _run(target, script)
    shown = f"sshd {args}"
    if rc == TIMED_OUT:
        return SshdSettings(shown, error=f"`{shown}` did not finish within {seconds}s")
    if rc != 0:
        return SshdSettings(shown, error=_first_line(err or out, f"`{shown}` exited with {rc}"))
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            settings.setdefault(key.lower(), value.strip())
    return SshdSettings(shown, settings)


def login_user(target: testinfra.host.Host) -> str:
    """The user commands run as on the host (``id -un``), or ``?``."""
    rc, out, _ = _run(target, "id -un")
    return out.strip() if rc == 0 and out.strip() else "?"


def sshd_violations(settings: dict[str, str]) -> list[str]:
    """What in sshd's effective settings lets root or a password in: ``permitrootlogin yes`` and the like."""
    wrong = []
    if settings.get("permitrootlogin", "?") == "yes":
        wrong.append("permitrootlogin yes (expected no or prohibit-password)")
    for key in ("passwordauthentication", "permitemptypasswords"):
        if settings.get(key, "?") != "no":
            wrong.append(f"{key} {settings.get(key, 'unset')} (expected no)")
    return wrong


@dataclass(frozen=True)
class Socket:
    """One listening socket: ``tcp 0.0.0.0:22`` and, when ``ss`` may tell, its process."""

    protocol: str
    address: str  # 0.0.0.0, ::, *, 127.0.0.1 (no brackets, no %interface)
    port: str
    process: str = ""

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.address == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"{self.protocol} {self.endpoint}" + (f" ({self.process})" if self.process else "")


@dataclass(frozen=True)
class Sockets:
    sockets: tuple[Socket, ...] = ()
    error: str | None = None


def listening_sockets(target: testinfra.host.Host, timeout: timedelta) -> Sockets:
    """TCP sockets in LISTEN and bound UDP sockets, from ``ss -Hltnup`` (the process only where ss may read it)."""
    seconds = max(1, int(timeout.total_seconds()))
    rc, out, err = _run(target, f"LC_ALL=C timeout {seconds} ss -Hltnup")
    if rc != 0:
        return Sockets(error=_first_line(err or out, f"`ss -Hltnup` exited with {rc}"))
    found = []
    for line in out.splitlines():
        cells = line.split()
        if len(cells) < 5:
            continue
        local = cells[4]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        process = re.search(r'\(\("([^"]+)"', line)
        found.append(Socket(cells[0], address, port, process.group(1) if process else ""))
    return Sockets(tuple(dict.fromkeys(found)))


def is_allowed_socket(socket: Socket, allowed: list[str]) -> bool:
    """Loopback always; else the ``address:port`` (IPv6 in brackets) matches one of the globs."""
    return socket.is_loopback or any(fnmatch.fnmatchcase(socket.endpoint, glob) for glob in allowed)


@dataclass(frozen=True)
class Process:
    pid: int
    uid: int
    name: str


@dataclass(frozen=True)
class Processes:
    processes: tuple[Process, ...] = ()
    error: str | None = None


def processes_named(target: testinfra.host.Host, names: list[str], timeout: timedelta) -> Processes:
    """The host's processes whose name (``comm``, at most 15 characters) is one of ``names``."""
    seconds = max(1, int(timeout.total_seconds()))
    rc, out, err = _run(target, f"LC_ALL=C timeout {seconds} ps -e -o pid= -o uid= -o comm=")
    if rc != 0:
        return Processes(error=_first_line(err or out, f"`ps` exited with {rc}"))
    wanted = {n[:15] for n in names}
    found = []
    for line in out.splitlines():
        cells = line.split(None, 2)
        if len(cells) == 3 and cells[0].isdigit() and cells[1].isdigit() and cells[2].strip() in wanted:
            found.append(Process(int(cells[0]), int(cells[1]), cells[2].strip()))
    return Processes(tuple(found))


@dataclass(frozen=True)
class Update:
    """One package ``apt-get -s`` would upgrade, from a security origin."""

    package: str
    version: str
    origin: str
    first_seen: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.package}={self.version}"


@dataclass(frozen=True)
class PendingUpdates:
    """The security updates ``apt-get -s dist-upgrade`` would install, and how fresh the lists it read are."""

    updates: tuple[Update, ...] = ()
    pending_total: int = 0  # every upgrade, security or not
    lists_age: timedelta | None = None
    no_apt: bool = False
    error: str | None = None


INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) (.*?)(?: \[[^\]]*\])?\)")


def is_security_origin(origin: str) -> bool:
    """``Debian-Security:12/stable-security``, ``Ubuntu:22.04/jammy-security``, ``Debian:9/stretch/updates`` (old)."""
    label, _, rest = origin.strip().partition(":")
    suite = rest.partition("/")[2]
    return "security" in label.lower() or suite.endswith("-security") or suite.endswith("/updates")


def parse_simulation(output: str) -> tuple[list[Update], int]:
    """The security updates among the ``Inst`` lines of ``apt-get -s`` output, and the number of all upgrades."""
    updates, total = [], 0
    for line in output.splitlines():
        match = INST.match(line)
        if not match:
            continue
        total += 1
        package, version, origins = match.groups()
        security = [o.strip() for o in origins.split(",") if is_security_origin(o)]
        if security:
            updates.append(Update(package, version, security[0]))
    return updates, total


def pending_security_updates(target: testinfra.host.Host, timeout: timedelta) -> PendingUpdates:
    """What ``apt-get -s -o Debug::NoLocking=1 dist-upgrade`` would install from security origins (never installs)."""
    seconds = max(1, int(timeout.total_seconds()))
    rc, out, _ = _run(target, "command -v apt-get")
    if rc != 0:
        return PendingUpdates(no_apt=True)
    ages = (  # apt-get update touches the lists directory and its partial/ even when no list changed
        f"ls {APT_LISTS} 2>/dev/null | grep -c _Packages; find {APT_LISTS} -maxdepth 2 ! -name lock "
        f"! -path '{APT_LISTS}/auxfiles*' -printf '%T@\\n' 2>/dev/null | sort -n | tail -n 1; date +%s"
    )
    rc, out, err = _run(target, ages)
    stamps = out.split()
    if rc != 0 or len(stamps) != 3:
        return PendingUpdates(error=_first_line(err, f"cannot read the age of {APT_LISTS}"))
    if stamps[0] == "0":
        return PendingUpdates(error=f"no package lists in {APT_LISTS}: run apt-get update on the host")
    lists_age = timedelta(seconds=max(0.0, float(stamps[2]) - float(stamps[1])))
    script = f"LC_ALL=C timeout {seconds} apt-get -s -o Debug::NoLocking=1 -o APT::Get::Show-User-Simulation-Note=0 "
    rc, out, err = _run(target, script + "dist-upgrade")
    if rc == TIMED_OUT:
        return PendingUpdates(lists_age=lists_age, error=f"apt-get -s dist-upgrade did not finish within {seconds}s")
    if rc != 0:
        return PendingUpdates(lists_age=lists_age, error=_first_line(err or out, f"apt-get -s exited with {rc}"))
    updates, total = parse_simulation(out)
    return PendingUpdates(tuple(updates), total, lists_age)


def state_file(scratch_dir: Path | None, host: str) -> Path:
    """Where the first sightings of one host's pending updates are kept, on the checking machine."""
    if scratch_dir is not None:
        base = scratch_dir / "opsverify-state"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "opsverify"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
    return base / "pending-security-updates" / f"{safe}.json"


def remember_first_seen(path: Path, updates: tuple[Update, ...], now: datetime | None = None) -> tuple[Update, ...]:
    """``updates`` with the time each (package, version) was first seen pending; the state keeps the current ones only.

    The file is rewritten atomically under a lock (xdist workers and parallel runs share it).
    """
    from filelock import FileLock

    now = now or datetime.now(UTC)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=60):
        try:
            seen = json.loads(path.read_text()).get("first_seen", {})
        except (OSError, ValueError, AttributeError):
            seen = {}
        kept = {u.key: str(seen.get(u.key) or now.isoformat()) for u in updates}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
        tmp.write_text(json.dumps({"first_seen": kept}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    result = []
    for update in updates:
        try:
            first = datetime.fromisoformat(kept[update.key])
        except ValueError:
            first = now
        result.append(Update(update.package, update.version, update.origin, first))
    return tuple(result)
