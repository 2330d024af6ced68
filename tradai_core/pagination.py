"""Paging through an exchange's candle endpoint over any time range.

Exchanges cap candles per request (Binance: 1000). Reading a range means asking page after page, each
resuming after the last candle received, dropping the candle a page may repeat from the one before (its
edge), and leaving out the candle that is still open (its close is in the future, so its values will
still change).

A page is never trusted blindly: its open times must be present and strictly increasing, and a row older
than what earlier pages gave must be one of their candles. A full page made only of candles from before
what was asked for (a stale, repeated answer from a cache) is asked again a few times, then the range
fails naming how many candles are missing; it never just ends the range short, which would pass for an
outage.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence

import pandas as pd
from pydantic import BaseModel, ConfigDict

from tradai_core.errors import CandleValidationError, ExchangeDataError
from tradai_core.timeframes import CandleGrid, fixed_grid

logger = logging.getLogger(__name__)

PageFetcher = Callable[[int, int], Sequence[Sequence[float]]]
"""Fetch at most `limit` candles with open time ≥ `since_ms` (both ints), as `[ts_ms, o, h, l, c, v]` rows."""

DEFAULT_STALE_RETRIES = 3


class PagedCandles(BaseModel):
    """Rows gathered from every page of a range, plus how many requests it took."""

    model_config = ConfigDict(frozen=True)

    rows: list[list[float]]
    pages: int
    dropped_open_candle: bool
    stale_retries: int = 0


def _iso(ms: float) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()


def fetch_range(
    fetch_page: PageFetcher,
    start_ms: int,
    end_ms: int,
    timeframe_ms: int,
    page_limit: int,
    now_ms: int,
    *,
    pair: str = "candles",
    grid: CandleGrid | None = None,
    stale_retries: int = DEFAULT_STALE_RETRIES,
    wait: Callable[[int], None] | None = None,
) -> PagedCandles:
    """Every closed candle with open time in `[start_ms, end_ms)`, oldest first, without duplicates.

    Stops at the first page that is shorter than `page_limit` (the exchange has nothing more in range),
    so `page_limit` must not exceed the exchange's real per-request cap. A page with candles but none at or
    after `since` (stale) is asked again up to `stale_retries` times (calling `wait(attempt)` before
    each), then `ExchangeDataError` names the shortfall. A page with a missing or out-of-order open time
    raises `CandleValidationError` naming `pair`, the timestamp and the rule.
    """
    if page_limit <= 0:
        raise ValueError("page_limit must be positive")
    grid = grid or fixed_grid(timeframe_ms)
    first = grid.first_at_or_after(start_ms)
    since = first
    closed_before = min(end_ms, now_ms - timeframe_ms + 1)  # an open time after this is still open
    rows: list[list[float]] = []
    held: dict[float, list[float]] = {}
    pages = stale = 0
    dropped_open = False
    max_pages = (end_ms - since) // (timeframe_ms * page_limit) + 3
    while since < end_ms:
        if pages - stale >= max_pages:
            raise ExchangeDataError(
                f"paging {pair} candles from {_iso(since)} did not converge after {pages} requests",
                "the exchange keeps returning candles outside the requested range; check its page cap "
                "setting (page_limit) for this exchange",
            )
        page = [_as_floats(pair, row, since, at) for at, row in enumerate(fetch_page(since, page_limit))]
        pages += 1
        _check_order(pair, page)
        last_seen = rows[-1][0] if rows else first - 1
        fresh = []
        for row in page:
            if row[0] < first or row[0] >= end_ms:
                continue  # outside the range asked for
            if row[0] <= last_seen:
                if row[0] not in held:
                    raise CandleValidationError(
                        pair,
                        _iso(row[0]),
                        "no candle arrives after a later one (out of order across a page edge)",
                    )
                continue  # the edge candle repeated from the previous page
            fresh.append(row)
        if any(row[0] >= closed_before for row in fresh):
            dropped_open = True
            fresh = [row for row in fresh if row[0] < closed_before]
        if page and page[-1][0] < since:
            # Candles, all of them before what was asked for: a stale page (a cache repeating an earlier
            # answer), full or short. An exhausted range answers an empty page instead. Ask again.
            if stale >= stale_retries:
                raise ExchangeDataError(_shortfall(pair, rows, since, closed_before, grid, stale), _STALE_FIX)
            stale += 1
            logger.warning(
                "%s: the page from %s repeated candles already received; asking again (%d/%d)",
                pair,
                _iso(since),
                stale,
                stale_retries,
            )
            if wait is not None:
                wait(stale - 1)
            continue
        rows.extend(fresh)
        held.update((row[0], row) for row in fresh)
        if not fresh or len(page) < page_limit or dropped_open:
            break
        since = int(rows[-1][0]) + timeframe_ms
    logger.debug("fetched %d candles in %d pages", len(rows), pages)
    return PagedCandles(rows=rows, pages=pages, dropped_open_candle=dropped_open, stale_retries=stale)


_STALE_FIX = (
    "nothing was written; the exchange (or a cache in front of it) keeps answering with candles already "
    "received. Re-run the partition later; if it persists, lower page_limit or report it to the exchange"
)


def _shortfall(
    pair: str, rows: list[list[float]], since: int, until: int, grid: CandleGrid, asked: int
) -> str:
    """What a stale page leaves missing, in words: how many candles, from when to when."""
    expected = math.ceil((until - since) / grid.step_ms) if grid.step_ms else 0
    got = f"{len(rows)} candles up to {_iso(rows[-1][0])}" if rows else "no candle"
    return (
        f"{pair}: the page from {_iso(since)} repeated candles already received {asked + 1} times; "
        f"got {got}, but up to {expected} candles from {_iso(since)} to {_iso(until)} never arrived"
    )


def _check_order(pair: str, page: list[list[float]]) -> None:
    """Open times within one page strictly increase (a duplicate or a swapped row breaks it)."""
    for previous, row in itertools.pairwise(page):
        if row[0] <= previous[0]:
            rule = "no duplicate candles" if row[0] == previous[0] else "timestamps strictly increasing"
            raise CandleValidationError(pair, _iso(row[0]), rule)


def _as_floats(pair: str, row: Sequence[float | None], since: int, at: int) -> list[float]:
    """A candle row as six floats; a missing price becomes NaN so validation names it, a missing open
    time is refused here (there is no timestamp to name, so the page position is named instead)."""
    stamp = row[0] if len(row) else None
    if stamp is None or not math.isfinite(float(stamp)):
        raise CandleValidationError(
            pair,
            f"row {at} of the page from {_iso(since)}",
            "every candle has an open time (it was missing)",
        )
    values = [float("nan") if value is None else float(value) for value in row[:6]]
    return values + [float("nan")] * (6 - len(values))
