"""Rewriting an exchange's REST URLs so the same client code can talk to a replay server."""

from __future__ import annotations

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
