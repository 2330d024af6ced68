"""URLs: rewriting an exchange's REST URLs so the same client code can talk to a replay server, and
redacting URLs and URIs that may carry credentials before they are shown anywhere."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit


def rebase_urls(urls: Any, base_url: str) -> Any:
    """Return `urls` (a ccxt `urls['api']` value: str, dict or list, nested) with every URL's scheme and
    host replaced by `base_url`'s, keeping each path; so `https://api.binance.com/api/v3` becomes
    `http://127.0.0.1:8765/api/v3`."""
    base = urlsplit(base_url)
    if not base.scheme or not base.netloc:
        raise ValueError(f"base URL {base_url!r} needs a scheme and a host, e.g. http://127.0.0.1:8765")
    prefix = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}"

    def rebase(value: Any) -> Any:
        if isinstance(value, str):
            parts = urlsplit(value)
            if parts.scheme and parts.netloc:
                return prefix + parts.path + (f"?{parts.query}" if parts.query else "")
            return value
        if isinstance(value, dict):
            return {key: rebase(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rebase(item) for item in value]
        return value

    return rebase(urls)


REDACTED = "***"
_SECRET_KEY = re.compile(
    r"(access|secret|token|passw|pwd|key|auth|sig|credential|session|cookie|private)", re.IGNORECASE
)
_PAIR = re.compile(r"(?P<key>[A-Za-z0-9_.\-]+)=(?P<value>[^&;#\s]*)")
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9+/=_\-.~%]{16,}")


def _looks_like_token(value: str) -> bool:
    """A long run of key characters mixing letters and digits (an API key, a signature, a JWT)."""
    return bool(
        _TOKEN_LIKE.fullmatch(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and not value.replace(".", "").replace("-", "").isdigit()
    )


def _redact_pairs(text: str) -> str:
    """`key=value` pairs (query parameters, `;`-separated connection strings) with the value of every
    credential-bearing key, and every token-like value, replaced by `***`."""

    def replace(match: re.Match[str]) -> str:
        key, value = match["key"], match["value"]
        if value and (_SECRET_KEY.search(key) or _looks_like_token(value)):
            return f"{key}={REDACTED}"
        return match[0]

    return _PAIR.sub(replace, text)


def redact_uri(uri: str) -> str:
    """`uri` safe to log or show: no userinfo (user names can be access keys too), and the value of every
    credential-bearing `key=value` pair (`access`, `secret`, `token`, `password`, `AccountKey`, signatures,
    and any token-like value) replaced by `***`. Works on URIs `urlsplit` cannot parse, such as ArcticDB's
    `s3://host:bucket?access=…&secret=…`, and never raises."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return _redact_pairs(uri)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    return f"{scheme}://{_redact_pairs(authority)}{_redact_pairs(tail)}"


def redact_secret_url(url: str) -> str:
    """A URL that is secret as a whole (a webhook: its path is the token) as only its scheme and host,
    e.g. `https://hooks.slack.com/***`; `***` when it has neither."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme.isalpha():
        return REDACTED
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    if not host or not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
        return f"{scheme}://{REDACTED}"
    return f"{scheme}://{host}/{REDACTED}"


def scrub(text: str, *secrets: str | None) -> str:
    """`text` with every occurrence of each secret (and of its URL path, query and userinfo, which error
    messages quote on their own) replaced by `***`: for messages of third-party errors that may quote a
    secret URL or key."""
    pieces: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        pieces.add(secret)
        _, sep, rest = secret.partition("://")
        if sep:
            end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
            authority, tail = rest[:end], rest[end:]
            if "@" in authority:
                pieces.add(authority.rsplit("@", 1)[0])
            if len(tail) > 1:
                pieces.add(tail)
                pieces.update(m["value"] for m in _PAIR.finditer(tail) if len(m["value"]) >= 4)
                pieces.update(part for part in re.split(r"[/?#&;=]", tail) if _looks_like_token(part))
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return text


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{}]+")


def redact_uris_in(text: str) -> str:
    """`text` (an error message, a notification) with every URI in it passed through `redact_uri`."""
    return _URI_IN_TEXT.sub(lambda match: redact_uri(match[0]), text)
