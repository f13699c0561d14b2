"""URLs as they may be shown: in a message, in evidence, in any report.

A URL in a profile may carry a secret: a password (or a token) in its userinfo, an API key in its
query. Whatever shows a URL shows ``redact_url(url)``; a text that may quote the URL or a part of it
(a driver's error) passes through ``redact_in(text, url)``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its userinfo's password and every query value masked: ``svc:***@host/p?api_key=***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':' + MASK if colon else ''}@{hostport}" if colon else f"{MASK}@{hostport}"
    query = "&".join(f"{key}={MASK}" if sep else key
                     for key, sep, _ in (pair.partition("=") for pair in parts.query.split("&") if pair))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(url: str) -> set[str]:
    """The secret parts of ``url`` as they may appear in a text: raw, percent-decoded and percent-encoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, colon, password = userinfo.partition(":")
        found.add(password if colon else user)
    found.update(value for pair in parts.query.split("&") for value in [pair.partition("=")[2]])
    found.update(value for _, value in parse_qsl(parts.query, keep_blank_values=True))
    found |= {unquote(s) for s in found} | {quote(s, safe="") for s in found}
    return {s for s in found if s}


def redact_in(text: str, url: str) -> str:
    """``text`` with ``url`` shown redacted and every secret part of it (3 characters or more, as a whole
    word: a query value ``1`` is no secret, and masking every ``1`` would garble the text) masked."""
    text = text.replace(url, redact_url(url))
    for secret in sorted((s for s in secrets_of(url) if len(s) >= 3), key=len, reverse=True):
        text = re.sub(rf"(?<![\w%]){re.escape(secret)}(?!\w)", MASK, text)
    return text


URL_IN_TEXT = re.compile(r"""[a-z][a-z0-9+.-]*://[^\s"'<>]+""", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """``text`` with every URL in it (a library's error quoting the URL it failed on) redacted."""
    return URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


SECRET_VALUE = re.compile(
    r"""(?P<key>\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|credentials?)\b["']?\s*[=:]\s*)"""
    r"""(?P<quote>["']?)(?P<value>[^\s"',;&]+)""",
    re.IGNORECASE,
)
AUTHORIZATION = re.compile(r"(?P<key>\b(?:Bearer|Basic|Token)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)


def redact_text(text: str) -> str:
    """A free text that may hold anything (a log line): URLs redacted, the values of ``password=…``,
    ``token: …``, ``api_key=…`` and the like, and ``Bearer …``/``Basic …`` credentials masked."""
    text = redact_urls(text)
    text = SECRET_VALUE.sub(lambda m: f"{m.group('key')}{m.group('quote')}{MASK}", text)
    return AUTHORIZATION.sub(lambda m: f"{m.group('key')}{MASK}", text)


def mask_values(text: str, secrets: frozenset[str]) -> str:
    """``text`` with each known secret value (4 characters or more) masked wherever it appears."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
