"""Waivers at run time: which waiver a check's node id matches, whether it still holds, and what reports say.

A waiver matches a node id exactly or as a glob: ``*`` and ``?`` are wildcards, brackets are literal (they
enclose a node id's parameter, ``test_x[qp-database-daily]``). Of several matching waivers the latest-expiring
unexpired one wins. Dates are compared in UTC, and a waiver holds through its ``expires`` day. No pytest here:
``fixtures/waivers.py`` applies these to reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from opsverify.profile.reporting import Waiver
from opsverify.reporting.evidence import WaiverProblem

State = Literal["applied", "not-needed", "expired"]


def today_utc() -> date:
    """The day it is in UTC, which waiver dates are compared with."""
    return datetime.now(UTC).date()


def matches(waiver: Waiver, nodeid: str) -> bool:
    """``nodeid`` is the waiver's node id, or matches it as a glob (``*``, ``?``; brackets literal)."""
    return nodeid == waiver.check or fnmatchcase(nodeid, waiver.check.replace("[", "[[]"))


def is_expired(waiver: Waiver, today: date) -> bool:
    """The waiver's last day is behind ``today``."""
    return waiver.expires < today


def choose(waivers: Sequence[Waiver], nodeid: str, today: date) -> tuple[Waiver, State] | None:
    """The waiver that governs ``nodeid`` and whether it holds: the latest-expiring unexpired match ("applied"),
    else the latest-expired match ("expired"), else None."""
    found = [w for w in waivers if matches(w, nodeid)]
    if not found:
        return None
    latest = max(found, key=lambda w: w.expires)
    return latest, "expired" if is_expired(latest, today) else "applied"


def note(waiver: Waiver, state: State) -> dict[str, Any]:
    """The ``WaiverNote`` fields as a plain dict (it travels on a report, through xdist's transport)."""
    return {"check": waiver.check, "reason": waiver.reason, "owner": waiver.owner, "ticket": waiver.ticket,
            "expires": waiver.expires.isoformat(), "state": state}


def waived_text(waiver: Waiver) -> str:
    """What a waived failure says instead of failing (pytest's xfail reason)."""
    return f"waived by {waiver.owner} until {waiver.expires} ({waiver.ticket}): {waiver.reason}"


def not_needed_text(ticket: str, owner: str) -> str:
    """The note a passing check carries when none of its waiver's matches failed in the run."""
    return f"waiver {ticket} ({owner}) is no longer needed: the check passes; remove it"


def needless_text(check: str, ticket: str, owner: str, passed: int) -> str:
    """The end-of-run line, once per waiver, for a waiver none of whose matches failed in the run (terminal and
    summary say the same)."""
    return (f"waiver for {check} ({ticket}, {owner}) is no longer needed: none of the {passed} check(s) it matches "
            "failed in this run; remove it")


def expired_text(waiver: Waiver) -> str:
    return f"waiver {waiver.ticket} ({waiver.owner}) expired on {waiver.expires}: the check counts again"


def expired_warnings(waivers: Sequence[Waiver], today: date) -> list[str]:
    """One line per expired waiver of the profile, as ``opsverify profile check`` and a run's header print them."""
    return [f"waivers[{index}] ({w.ticket}, {w.owner}) expired on {w.expires}: the check counts again; renew it "
            "or remove it" for index, w in enumerate(waivers) if is_expired(w, today)]


def matched_by(waivers: Sequence[Waiver], nodeids: Iterable[str]) -> set[int]:
    """The indexes of the waivers that match at least one of ``nodeids``."""
    matched: set[int] = set()
    for nodeid in nodeids:
        matched |= {i for i, w in enumerate(waivers) if i not in matched and matches(w, nodeid)}
    return matched


def problems(waivers: Sequence[Waiver], matched: set[int], today: date) -> list[WaiverProblem]:
    """Expired waivers, and unexpired ones that matched no check of the run, in the profile's order."""
    out = []
    for index, waiver in enumerate(waivers):
        expired = is_expired(waiver, today)
        if expired or index not in matched:
            out.append(WaiverProblem(check=waiver.check, owner=waiver.owner, ticket=waiver.ticket,
                                     expires=waiver.expires, problem="expired" if expired else "unmatched"))
    return out


def problem_text(problem: WaiverProblem) -> str:
    """The end-of-run line for an expired or unmatched waiver (terminal and summary say the same)."""
    if problem.problem == "expired":
        return (f"waiver for {problem.check} ({problem.ticket}, {problem.owner}) expired on {problem.expires}: the "
                "check counts again; renew it or remove it")
    return (f"waiver for {problem.check} ({problem.ticket}, {problem.owner}) matched no check in this run: correct "
            "its check or remove it")
