"""Redis security facts over the protocol: authentication, protected-mode, bind, app users' ACLs, the default user.

Read with the profile's user (``username``/password) and timeouts, plus one unauthenticated connection
(a raw ``PING``, over TLS when the instance declares ``tls``). Never reads a password back: no ``CONFIG GET
requirepass``; of ``ACL GETUSER default`` only the flags are kept, the password hashes are dropped at once.
A refusal by the checking user's ACL (NOPERM) is kept as the grant it lacks (``+config|get``).
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.probes.outage import connect_timed_out, connection_failure, request_timed_out
from opsverify.probes.redis import client, refused_credentials, unreachable
from opsverify.profile.model import RedisInstance

if TYPE_CHECKING:
    import redis

WILDCARDS = frozenset({"*", "0.0.0.0", "::", "::*"})  # bind addresses meaning every interface ("-" prefix: optional)
_PERMISSION = re.compile(r"permissions to run the '([^']+)' command", re.IGNORECASE)


def missing_grant(error: str) -> str:
    """The ACL rule a NOPERM refusal asks for: ``+config|get`` (the whole refusal when it names no command)."""
    found = _PERMISSION.search(error)
    return f"+{found.group(1)}" if found else error


@dataclass(frozen=True)
class DryRun:
    """Whether one application user may run one denied command (``ACL DRYRUN``), in every form it has.

    ``allowed`` lists the forms the user may run: the command itself, or the subcommands of a container
    command (``config|get``); ``absent``: the server does not know the command (renamed away), so nobody can."""

    user: str
    command: str
    allowed: tuple[str, ...] = ()
    absent: bool = False


@dataclass(frozen=True)
class RedisSecurityFacts:
    """What the server says about its security configuration, or why it could not be read."""

    address: str
    user: str  # the checking user: the profile's username, else "default"
    unauthenticated_reply: str | None = None  # first line of the reply to an unauthenticated PING ("NOAUTH …")
    config: dict[str, str] = field(default_factory=dict)  # protected-mode and bind, as CONFIG GET reads them
    config_refused: str | None = None  # NOPERM: the grant the checking user lacks; or why CONFIG failed
    config_unknown: bool = False  # CONFIG is renamed or disabled (unknown command), not refused by an ACL
    dryruns: tuple[DryRun, ...] = ()
    missing_users: tuple[str, ...] = ()  # application users the server does not know (ACL DRYRUN: not found)
    unknown_commands: tuple[str, ...] = ()  # denied_commands the server knows no such command as (not even renamed)
    dryrun_refused: str | None = None  # NOPERM on ACL DRYRUN / COMMAND INFO: the grant the checking user lacks
    dryrun_error: str | None = None  # ACL DRYRUN unsupported (Redis < 7.0) or another failure
    default_flags: tuple[str, ...] | None = None  # ACL GETUSER default -> flags only (on/off, nopass, …)
    default_refused: str | None = None  # NOPERM on ACL GETUSER: the grant the checking user lacks
    acl_unknown: bool = False  # the server has no ACL command (Redis < 6): judged by requirepass (NOAUTH) alone
    error: str | None = None
    unreachable: str | None = None

    @property
    def is_answering(self) -> bool:
        return self.error is None

    @property
    def refuses_unauthenticated(self) -> bool:
        return (self.unauthenticated_reply or "").upper().startswith("NOAUTH")

    @property
    def wildcard_binds(self) -> list[str]:
        """The wildcard addresses of ``bind`` (``*``, ``0.0.0.0``, ``::``, optional ones too: ``-::*``)."""
        return [a for a in self.config.get("bind", "").split() if a.removeprefix("-") in WILDCARDS]

    @property
    def allowed_dryruns(self) -> list[DryRun]:
        return [d for d in self.dryruns if d.allowed]

    @property
    def default_user_open(self) -> bool | None:
        """The ``default`` user is on without a password; None when unknown."""
        if self.default_flags is not None:
            return "nopass" in self.default_flags and "off" not in self.default_flags
        if self.acl_unknown:  # Redis < 6: the default user is the only one, passworded by requirepass
            return not self.refuses_unauthenticated
        return None


class Unanswered(Exception):
    """The unauthenticated connection got no reply: ``cause`` is the outage (refused, timed out), else None."""

    def __init__(self, message: str, cause: str | None) -> None:
        super().__init__(message)
        self.cause = cause


def unauthenticated_ping(instance: RedisInstance, connect: timedelta, request: timedelta) -> str:
    """The first line of the server's reply to ``PING`` on a fresh connection that never authenticated.

    A raw socket (TLS when declared, verified as the profile's client verifies it): redis-py would say
    HELLO or CLIENT SETINFO first. Raises ``Unanswered`` when the server gave no reply."""
    try:
        raw = socket.create_connection((instance.host, instance.port), timeout=connect.total_seconds())
    except OSError as exc:
        cause = connection_failure(exc, connect_timed_out(connect))
        raise Unanswered(cause or _first_line(exc), cause) from exc
    sock: socket.socket = raw
    reply = b""
    try:
        sock.settimeout(request.total_seconds())
        if instance.tls:
            context = ssl.create_default_context(cafile=str(instance.ca_file) if instance.ca_file else None)
            sock = context.wrap_socket(raw, server_hostname=instance.host)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        while b"\r\n" not in reply:
            chunk = sock.recv(512)
            if not chunk:
                break
            reply += chunk
    except ConnectionResetError:
        pass  # closed or reset before a reply: told below
    except OSError as exc:  # ssl.SSLError is an OSError
        cause = connection_failure(exc, request_timed_out(request))
        what = "TLS handshake failed: " if isinstance(exc, ssl.SSLError) else ""
        raise Unanswered(cause or what + _first_line(exc), cause) from exc
    finally:
        sock.close()
        raw.close()
    if not reply:
        hint = "" if instance.tls else " (a TLS port? then declare tls: true and ca_file)"
        raise Unanswered(f"the server closed the connection without replying to PING{hint}", None)
    line = reply.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    return line[1:] if line[:1] in ("+", "-") else line


def _run(conn: redis.Redis, *args: str) -> Any:
    """One command as the server spells it (redis-py's execute_command is untyped)."""
    return conn.execute_command(*args)  # type: ignore[no-untyped-call]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _config(conn: redis.Redis) -> tuple[dict[str, str], str | None, bool]:
    import redis

    values: dict[str, str] = {}
    for name in ("protected-mode", "bind"):
        try:
            reply = conn.config_get(name)
        except redis.exceptions.NoPermissionError as exc:
            return {}, missing_grant(_first_line(exc)), False
        except redis.ResponseError as exc:
            text = _first_line(exc)
            return {}, text, text.lower().startswith("unknown command")
        if name in reply:
            values[name] = str(reply[name])
    return values, None, False


@dataclass(frozen=True)
class _Command:
    """One entry of ``COMMAND INFO``: its name (``config|set`` for a subcommand), arity and subcommands."""

    name: str
    arity: int
    subcommands: tuple[tuple[str, int], ...] = ()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _command_infos(conn: redis.Redis, commands: list[str]) -> dict[str, _Command]:
    """``COMMAND INFO`` of ``commands`` as the server replies it, by lower-cased name; a command the server does not
    run is left out. Read raw: redis-py's parser of this reply fails on the nil of an unknown command."""
    conn.set_response_callback("COMMAND", lambda reply, **_: reply)  # this probe's own client only
    reply = _run(conn, "COMMAND", "INFO", *[c.lower() for c in commands]) if commands else []
    infos: dict[str, _Command] = {}
    for command, entry in zip(commands, reply or [], strict=False):
        if not entry:
            continue
        subs = entry[9] if len(entry) > 9 and entry[9] else []
        infos[command.lower()] = _Command(
            _text(entry[0]).lower(), int(entry[1]), tuple((_text(sub[0]).lower(), int(sub[1])) for sub in subs))
    return infos


def _known_commands(conn: redis.Redis) -> set[str]:
    """Every command the server knows under its own name, renamed away or not (``config|set`` for subcommands).

    ``ACL CAT`` lists the original command table, and every command is either ``@fast`` or ``@slow``."""
    return {_text(name).lower() for category in ("fast", "slow") for name in _run(conn, "ACL", "CAT", category)}


def _forms(info: _Command) -> list[list[str]]:
    """Argument lists that run each form of a command with its smallest arity (placeholders ``x``).

    A container command (CONFIG, SCRIPT, MODULE) is each of its subcommands except ``help``; a subcommand
    (``config|set``) is sent as its two words."""
    def padded(parts: list[str], arity: int) -> list[str]:
        return parts + ["x"] * max(0, abs(arity) - len(parts))

    if info.subcommands:
        return [padded(name.split("|"), arity) for name, arity in info.subcommands if not name.endswith("|help")]
    return [padded(info.name.split("|"), info.arity)]


def _dryruns(conn: redis.Redis, users: list[str], commands: list[str]) -> tuple[list[DryRun], list[str], list[str]]:
    """``ACL DRYRUN`` of every form of every command for every user; the users the server does not know; and the
    commands it does not know at all (not even renamed away)."""
    import redis

    infos = _command_infos(conn, commands)
    absent = [c for c in commands if c.lower() not in infos]
    known = _known_commands(conn) if absent else set()
    unknown = [c for c in absent if c.lower() not in known]
    found: list[DryRun] = []
    missing: list[str] = []
    for user in users:
        for command in commands:
            info = infos.get(command.lower())
            if info is None:
                if command not in unknown:  # renamed away: nobody can run it
                    found.append(DryRun(user, command, absent=True))
                continue
            allowed = []
            for args in _forms(info):
                try:
                    reply = _run(conn, "ACL", "DRYRUN", user, *args)
                except redis.exceptions.NoPermissionError:
                    raise
                except redis.ResponseError as exc:
                    text = _first_line(exc)
                    if text.lower().startswith("user ") and "not found" in text.lower():
                        missing.append(user)
                        break
                    if text.lower().startswith("command ") and "not found" in text.lower():
                        if command not in unknown:
                            unknown.append(command)
                        break
                    raise
                if "permissions to run" not in str(reply):  # "OK", or refused only a placeholder key/channel
                    allowed.append("|".join(args[:2]) if info.subcommands or "|" in info.name else args[0])
            if user in missing:
                break
            if command not in unknown:
                found.append(DryRun(user, command, tuple(allowed)))
    return found, missing, unknown


def _default_flags(conn: redis.Redis) -> tuple[tuple[str, ...] | None, str | None, bool]:
    """The flags of the ``default`` user (the password hashes of the same reply are dropped at once, never kept)."""
    import redis

    try:
        reply = _run(conn, "ACL", "GETUSER", "default")
    except redis.exceptions.NoPermissionError as exc:
        return None, missing_grant(_first_line(exc)), False
    except redis.ResponseError as exc:
        if _first_line(exc).lower().startswith("unknown command"):
            return None, None, True
        raise
    flags = reply.get("flags", []) if isinstance(reply, dict) else []
    return tuple(str(f) for f in flags), None, False


def probe_redis_security(instance: RedisInstance, connect: timedelta, request: timedelta) -> RedisSecurityFacts:
    """An unauthenticated PING, then as the profile's user: CONFIG GET protected-mode/bind, ACL DRYRUN of each
    application user x denied command, ACL GETUSER default (flags only)."""
    import redis

    address = f"{instance.host}:{instance.port}"
    user = instance.username or "default"
    policy = instance.security
    try:
        reply = unauthenticated_ping(instance, connect, request)
    except Unanswered as exc:
        return RedisSecurityFacts(address, user, error=str(exc), unreachable=exc.cause)
    conn = client(instance, connect, request)
    facts: dict[str, Any] = {"unauthenticated_reply": reply}
    try:
        conn.ping()
        facts["config"], facts["config_refused"], facts["config_unknown"] = _config(conn)
        if policy is not None and policy.app_users:
            try:
                dryruns, missing, unknown = _dryruns(conn, policy.app_users, policy.denied_commands)
                facts["dryruns"], facts["missing_users"] = tuple(dryruns), tuple(missing)
                facts["unknown_commands"] = tuple(unknown)
            except redis.exceptions.NoPermissionError as exc:
                facts["dryrun_refused"] = missing_grant(_first_line(exc))
            except redis.ResponseError as exc:
                text = _first_line(exc)
                unsupported = "unknown subcommand" in text.lower() or "unknown command" in text.lower()
                facts["dryrun_error"] = f"ACL DRYRUN needs Redis 7.0 or later ({text})" if unsupported else text
        facts["default_flags"], facts["default_refused"], facts["acl_unknown"] = _default_flags(conn)
    except redis.RedisError as exc:
        cause = unreachable(exc, connect, request)
        return RedisSecurityFacts(address, user, reply, error=cause or refused_credentials(exc) or _first_line(exc),
                                  unreachable=cause)
    finally:
        conn.close()
    return RedisSecurityFacts(address, user, **facts)
