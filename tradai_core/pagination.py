"""Paging through an exchange's candle endpoint over any time range.

Exchanges cap candles per request (Binance: 1000). Reading a range means asking page after page, each
resuming after the last candle received, dropping the duplicates that appear at page edges, and leaving
out the candle that is still open (its close is in the future, so its values will still change).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from tradai_core.errors import ExchangeDataError

logger = logging.getLogger(__name__)

PageFetcher = Callable[[int, int], Sequence[Sequence[float]]]
"""Fetch at most `limit` candles with open time ≥ `since_ms` (both ints), as `[ts_ms, o, h, l, c, v]` rows."""


class PagedCandles(BaseModel):
    """Rows gathered from every page of a range, plus how many requests it took."""

    model_config = ConfigDict(frozen=True)

    rows: list[list[float]]
    pages: int
    dropped_open_candle: bool


def fetch_range(
    fetch_page: PageFetcher,
    start_ms: int,
    end_ms: int,
    timeframe_ms: int,
    page_limit: int,
    now_ms: int,
) -> PagedCandles:
    """Every closed candle with open time in `[start_ms, end_ms)`, oldest first, without duplicates.

    Stops at the first page that is shorter than `page_limit` (the exchange has nothing more in range),
    so `page_limit` must not exceed the exchange's real per-request cap.
    """
    if page_limit <= 0:
        raise ValueError("page_limit must be positive")
    since = -(-start_ms // timeframe_ms) * timeframe_ms  # first grid point at or after start
    closed_before = min(end_ms, now_ms - timeframe_ms + 1)  # an open time after this is still open
    rows: list[list[float]] = []
    pages = 0
    dropped_open = False
    max_pages = (end_ms - since) // (timeframe_ms * page_limit) + 3
    while since < end_ms:
        if pages >= max_pages:
            raise ExchangeDataError(
                f"paging candles from {since} did not converge after {pages} requests",
                "the exchange keeps returning candles outside the requested range; check its page cap "
                "setting (page_limit) for this exchange",
            )
        page = fetch_page(since, page_limit)
        pages += 1
        last_seen = rows[-1][0] if rows else since - timeframe_ms
        fresh = [_as_floats(row) for row in page if last_seen < row[0] < end_ms]
        if any(row[0] >= closed_before for row in fresh):
            dropped_open = True
            fresh = [row for row in fresh if row[0] < closed_before]
        rows.extend(fresh)
        if not fresh or len(page) < page_limit or dropped_open:
            break
        since = int(rows[-1][0]) + timeframe_ms
    logger.debug("fetched %d candles in %d pages", len(rows), pages)
    return PagedCandles(rows=rows, pages=pages, dropped_open_candle=dropped_open)


def _as_floats(row: Sequence[float | None]) -> list[float]:
    """A candle row as six floats; a missing value becomes NaN so validation names it."""
    values = [float("nan") if value is None else float(value) for value in row[:6]]
    return values + [float("nan")] * (6 - len(values))
