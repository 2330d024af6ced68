"""Faults the replay server can inject, so clients are tested against the ways a real exchange fails.

A `Fault` applies to the next `count` requests whose path starts with `path_prefix` (None: any path),
then expires. Several faults can be queued; a request takes the first pending fault that matches it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

FaultKind = Literal[
    "latency", "timeout", "http_429", "http_418", "http_5xx", "malformed", "truncated", "stale_page"
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

KLINES_PATH = "/api/v3/klines"

# Variants per kind; the first is the default.
VARIANTS: dict[str, tuple[str, ...]] = {
    # which bad candle a `malformed` page carries (the middle candle of the page is spoiled); the first
    # four break the JSON shape or OHLC consistency, the rest are content a real feed can carry
    "malformed": (
        "high_below_low",
        "non_numeric",
        "null_price",
        "short_row",
        "null_timestamp",
        "nan_price",
        "zero_price",
        "negative_price",
        "duplicate_row",
        "out_of_order",
        "price_spike",
    ),
    # `body`: the body cut in half with a Content-Length that matches, so HTTP succeeds and JSON fails;
    # `connection`: the full Content-Length is announced, half the body sent, then the connection closed.
    "truncated": ("body", "connection"),
    # `html`: the HTML page a gateway answers with; `json`: Binance's {"code": -1001, ...} body.
    "http_5xx": ("html", "json"),
}

# How long a `latency` fault delays and a `timeout` fault holds a request when `delay_s` is not given;
# 30 s exceeds ccxt's default 10 s timeout.
DEFAULT_DELAY_S = {"latency": 0.5, "timeout": 30.0}
# The longest a fault may hold a request: a bigger delay_s is a typo (ms for s) that would hang a server
# thread, and the client, for hours.
MAX_DELAY_S = 300.0
SPIKE_FACTOR = 1000.0


class Fault(BaseModel):
    """One fault to inject, e.g. `Fault(kind="http_429", count=2, retry_after_s=1.0)`.

    - `latency`: wait `delay_s`, then answer normally.
    - `timeout`: hold the request `delay_s`, then drop the connection without answering.
    - `http_429` / `http_418`: Binance's rate-limit / IP-ban answer with a `Retry-After: retry_after_s`.
    - `http_5xx`: answer `status` (500–599) with a gateway's `html` page (default) or Binance's `json`
      -1001 body (`variant`).
    - `malformed`: a kline page whose middle candle is bad (`variant`: high_below_low, non_numeric,
      null_price, short_row, null_timestamp, nan_price, zero_price, negative_price, duplicate_row (the
      candle sent twice), out_of_order (swapped with the next), price_spike (prices × 1000, a valid
      candle)). Matches kline requests only.
    - `truncated`: the real body cut in half (`variant`: body, connection).
    - `stale_page`: a kline request answered with the page before the one asked for (the `limit` candles
      opening before `startTime`), as a stale cache would. Matches kline requests with a startTime only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    count: int = Field(default=1, ge=1, description="How many matching requests it applies to.")
    path_prefix: str | None = Field(default=None, description="Only paths starting with this; None: all.")
    delay_s: float = Field(
        default=0.0, ge=0.0, description=f"Delay (latency) or hold time (timeout), at most {MAX_DELAY_S:g} s."
    )
    retry_after_s: float = Field(default=1.0, ge=0.0, description="Retry-After of a 429/418 answer.")
    status: int = Field(default=503, ge=500, le=599, description="HTTP status of an http_5xx answer.")
    variant: str | None = Field(default=None, description="Flavour of malformed, truncated or http_5xx.")

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind")
        if kind in DEFAULT_DELAY_S and data.get("delay_s") is None:
            data["delay_s"] = DEFAULT_DELAY_S[kind]
        if kind in VARIANTS and data.get("variant") is None:
            data["variant"] = VARIANTS[kind][0]
        return data

    @model_validator(mode="after")
    def _check_variant(self) -> Fault:
        allowed = VARIANTS.get(self.kind, ())
        if self.variant is not None and self.variant not in allowed:
            choices = ", ".join(allowed) if allowed else "none"
            raise ValueError(
                f"variant {self.variant!r} does not apply to {self.kind} faults (choices: {choices})"
            )
        if self.delay_s > MAX_DELAY_S:
            raise ValueError(
                f"delay_s {self.delay_s:g} is too long: a fault holds a request at most {MAX_DELAY_S:g} s "
                "(delay_s is in seconds, not milliseconds)"
            )
        if self.kind == "timeout" and self.delay_s <= 0:
            raise ValueError("a timeout fault needs delay_s > 0, longer than the client's timeout")
        return self

    def matches(self, path: str) -> bool:
        """Whether this fault applies to a request for `path`."""
        if self.kind in ("malformed", "stale_page") and not path.startswith(KLINES_PATH):
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


_FAULT_LIST = TypeAdapter(list[Fault])


def supported_faults() -> list[Fault]:
    """One fault of every kind and variant the server can inject, with default settings (e.g. for a
    matrix of client tests over all of them). Timeouts and latencies carry their default delays."""
    return [
        Fault(kind=kind, variant=variant)  # type: ignore[arg-type]
        for kind in FAULT_KINDS
        for variant in VARIANTS.get(kind, (None,))
    ]


def parse_faults(payload: Any) -> list[Fault]:
    """Faults from decoded JSON: one fault object or a list of them (what `POST /_replay/faults` takes).

    Raises pydantic's ValidationError naming the bad field.
    """
    if isinstance(payload, dict):
        payload = [payload]
    return _FAULT_LIST.validate_python(payload)


class FaultQueue:
    """Thread-safe queue of pending faults, each with how many more requests it applies to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[list[Any]] = []  # [fault, remaining count]

    def inject(self, faults: Fault | Iterable[Fault]) -> None:
        """Queue one fault or several, behind those already pending."""
        batch = [faults] if isinstance(faults, Fault) else list(faults)
        with self._lock:
            self._pending.extend([fault, fault.count] for fault in batch)

    def clear(self) -> int:
        """Drop every pending fault; returns how many there were."""
        with self._lock:
            dropped = len(self._pending)
            self._pending.clear()
        return dropped

    def take(self, path: str) -> Fault | None:
        """The first pending fault matching `path`, counting this request against it; None if none."""
        with self._lock:
            for index, item in enumerate(self._pending):
                fault, remaining = item
                if fault.matches(path):
                    if remaining <= 1:
                        del self._pending[index]
                    else:
                        item[1] = remaining - 1
                    return fault
        return None

    def pending(self) -> list[tuple[Fault, int]]:
        """Pending faults with the number of requests each still applies to."""
        with self._lock:
            return [(fault, remaining) for fault, remaining in self._pending]


def corrupt_klines(rows: list[list[Any]], variant: str) -> list[list[Any]]:
    """A copy of a kline page whose middle candle is spoiled as `variant` says; an empty page stays empty.

    The outer shape (a list of arrays) stays valid so the client's JSON parsing succeeds and only its
    candle validation can catch the fault.
    """
    if not rows:
        return rows
    rows = [list(row) for row in rows]
    bad = rows[len(rows) // 2]
    middle = len(rows) // 2
    if variant == "high_below_low":
        low = float(bad[3])
        bad[2] = f"{low * 0.9 if low > 0 else low - 1.0:.8f}"
    elif variant == "non_numeric":
        bad[4] = "not-a-number"
    elif variant == "null_price":
        bad[1] = None
    elif variant == "short_row":
        rows[middle] = bad[:4]
    elif variant == "null_timestamp":
        bad[0] = None
    elif variant == "nan_price":
        bad[4] = "NaN"
    elif variant == "zero_price":
        bad[1:5] = ["0.00000000"] * 4
    elif variant == "negative_price":
        bad[3] = f"{-abs(float(bad[3])):.8f}"
    elif variant == "duplicate_row":
        rows.insert(middle + 1, list(bad))
    elif variant == "out_of_order":
        if len(rows) > middle + 1:
            rows[middle], rows[middle + 1] = rows[middle + 1], rows[middle]
    elif variant == "price_spike":
        bad[1:5] = [f"{float(value) * SPIKE_FACTOR:.8f}" for value in bad[1:5]]
    else:
        raise ValueError(f"unknown malformed variant {variant!r}; choose one of {VARIANTS['malformed']}")
    return rows
