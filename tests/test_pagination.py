"""Paging a candle range: resume after the last candle, de-duplicate page edges, drop the open candle."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tradai_core.errors import CandleValidationError, ExchangeDataError
from tradai_core.pagination import fetch_range
from tradai_core.timeframes import candle_grid

HOUR = 3_600_000
T0 = 1_600_000_000_000 // HOUR * HOUR


class FakeEndpoint:
    """A candle endpoint over a list of open times; `overlap` re-sends the previous page's last candle."""

    def __init__(self, times: Sequence[int], cap: int, overlap: bool = False) -> None:
        self.times = list(times)
        self.cap = cap
        self.overlap = overlap
        self.calls: list[tuple[int, int]] = []

    def __call__(self, since: int, limit: int) -> list[list[float]]:
        self.calls.append((since, limit))
        start = since - HOUR if self.overlap and self.calls[1:] else since
        chosen = [t for t in self.times if t >= start][: min(limit, self.cap)]
        return [[t, 1.0, 2.0, 0.5, 1.5, 10.0] for t in chosen]


def test_pages_cover_the_range_without_duplicates_or_extras() -> None:
    times = [T0 + i * HOUR for i in range(2500)]
    endpoint = FakeEndpoint(times, cap=1000, overlap=True)
    got = fetch_range(endpoint, T0 + 10 * HOUR, T0 + 2400 * HOUR, HOUR, 1000, now_ms=T0 + 10_000 * HOUR)
    stamps = [r[0] for r in got.rows]
    assert stamps == times[10:2400]
    assert got.pages == 3
    assert [since for since, _ in endpoint.calls] == [T0 + 10 * HOUR, T0 + 1010 * HOUR, T0 + 2009 * HOUR]


def test_a_gap_in_the_data_does_not_stop_paging() -> None:
    times = [T0 + i * HOUR for i in range(3000) if not 900 <= i < 1200]
    got = fetch_range(FakeEndpoint(times, cap=1000), T0, T0 + 3000 * HOUR, HOUR, 1000, T0 + 9999 * HOUR)
    assert [r[0] for r in got.rows] == times


def test_the_still_open_candle_is_dropped() -> None:
    times = [T0 + i * HOUR for i in range(30)]
    now = T0 + 29 * HOUR + 1_000  # the candle opened at 29 h closes at 30 h: still open
    got = fetch_range(FakeEndpoint(times, cap=1000), T0, T0 + 48 * HOUR, HOUR, 1000, now)
    assert [r[0] for r in got.rows] == times[:29]
    assert got.dropped_open_candle


def test_start_off_the_grid_begins_at_the_next_candle() -> None:
    times = [T0 + i * HOUR for i in range(5)]
    got = fetch_range(FakeEndpoint(times, cap=1000), T0 + 1, T0 + 5 * HOUR, HOUR, 1000, T0 + 99 * HOUR)
    assert [r[0] for r in got.rows] == times[1:]


def test_an_empty_range_costs_one_request() -> None:
    endpoint = FakeEndpoint([], cap=1000)
    got = fetch_range(endpoint, T0, T0 + 24 * HOUR, HOUR, 1000, T0 + 99 * HOUR)
    assert got.rows == [] and got.pages == 1


def test_an_endpoint_that_ignores_since_is_stopped_with_a_clear_error() -> None:
    def stubborn(since: int, limit: int) -> list[list[float]]:
        base = since  # always returns `limit` fresh candles starting at since, but far beyond any cap
        return [[base + i * HOUR, 1.0, 2.0, 0.5, 1.5, 1.0] for i in range(limit)]

    with pytest.raises(ExchangeDataError, match="did not converge"):
        fetch_range(
            lambda since, limit: stubborn(since - 5 * HOUR, limit),
            T0,
            T0 + 100 * HOUR,
            HOUR,
            10,
            T0 + 999 * HOUR,
        )


def _rows(times: Sequence[int]) -> list[list[float]]:
    return [[t, 1.0, 2.0, 0.5, 1.5, 10.0] for t in times]


class StaleEndpoint(FakeEndpoint):
    """Answers its `stale` requests after the first with the first page again (a cache gone stale)."""

    def __init__(self, times: Sequence[int], cap: int, stale: int) -> None:
        super().__init__(times, cap)
        self.stale = stale
        self.first_page: list[list[float]] = []

    def __call__(self, since: int, limit: int) -> list[list[float]]:
        page = super().__call__(since, limit)
        if len(self.calls) == 1:
            self.first_page = page
        elif self.stale > 0:
            self.stale -= 1
            return self.first_page
        return page


def test_a_stale_page_is_asked_again_and_the_range_completes() -> None:
    times = [T0 + i * HOUR for i in range(50)]
    waits: list[int] = []
    endpoint = StaleEndpoint(times, cap=10, stale=2)
    got = fetch_range(endpoint, T0, T0 + 50 * HOUR, HOUR, 10, T0 + 999 * HOUR, wait=waits.append)
    assert [r[0] for r in got.rows] == times
    assert got.stale_retries == 2 and waits == [0, 1]


def test_a_page_that_stays_stale_fails_naming_the_shortfall() -> None:
    times = [T0 + i * HOUR for i in range(50)]
    endpoint = StaleEndpoint(times, cap=10, stale=99)
    with pytest.raises(ExchangeDataError) as caught:
        fetch_range(endpoint, T0, T0 + 50 * HOUR, HOUR, 10, T0 + 999 * HOUR, pair="BTC/USDT", stale_retries=2)
    message = str(caught.value)
    assert "BTC/USDT" in message and "got 10 candles" in message and "40 candles" in message
    assert "nothing was written" in message
    assert len(endpoint.calls) == 4  # the good page, the stale one and two more tries


def test_a_short_stale_page_is_not_taken_for_the_end_of_the_range() -> None:
    # A cache answers the second request with an older, shorter page (yesterday's tail): the exchange
    # itself never answers a request from `since` with candles before it, so this is stale, not the end.
    times = [T0 + i * HOUR for i in range(50)]
    full = FakeEndpoint(times, cap=10)

    def endpoint(since: int, limit: int) -> list[list[float]]:
        page = full(since, limit)
        return _rows([T0 + i * HOUR for i in range(3)]) if since > T0 else page

    with pytest.raises(ExchangeDataError) as caught:
        fetch_range(endpoint, T0, T0 + 50 * HOUR, HOUR, 10, T0 + 999 * HOUR, pair="ETH/USDT", stale_retries=1)
    assert "ETH/USDT" in str(caught.value) and "40 candles" in str(caught.value)


def test_an_out_of_order_row_at_a_page_edge_is_refused_not_dropped() -> None:
    # The exchange moves the candle at 9 h from the end of page one to the start of page two.
    pages = [
        _rows([T0 + i * HOUR for i in (*range(9), 10)]),
        _rows([T0 + 9 * HOUR, *(T0 + i * HOUR for i in range(11, 15))]),
    ]
    with pytest.raises(CandleValidationError) as caught:
        fetch_range(
            lambda since, limit: pages.pop(0), T0, T0 + 15 * HOUR, HOUR, 10, T0 + 99 * HOUR, pair="ETH/USDT"
        )
    assert caught.value.pair == "ETH/USDT" and "out of order" in caught.value.rule
    assert caught.value.timestamp.startswith("2020-09-13T21:00")  # T0 + 9 h


@pytest.mark.parametrize(
    ("times", "rule"),
    [([0, 1, 1, 2], "no duplicate candles"), ([0, 2, 1, 3], "timestamps strictly increasing")],
)
def test_a_page_with_a_duplicate_or_swapped_row_names_pair_time_and_rule(times: list[int], rule: str) -> None:
    page = _rows([T0 + i * HOUR for i in times])
    with pytest.raises(CandleValidationError) as caught:
        fetch_range(lambda since, limit: page, T0, T0 + 10 * HOUR, HOUR, 10, T0 + 99 * HOUR, pair="SOL/USDT")
    assert caught.value.pair == "SOL/USDT" and caught.value.rule == rule


def test_a_null_open_time_is_a_clear_error_not_a_type_error() -> None:
    page: list[list[float | None]] = [[T0, 1.0, 2.0, 0.5, 1.5, 1.0], [None, 1.0, 2.0, 0.5, 1.5, 1.0]]
    with pytest.raises(CandleValidationError) as caught:
        fetch_range(lambda since, limit: page, T0, T0 + 10 * HOUR, HOUR, 10, T0 + 99 * HOUR, pair="BTC/USDT")  # type: ignore[arg-type, return-value]
    assert caught.value.pair == "BTC/USDT" and "open time" in caught.value.rule
    assert "row 1 of the page from 2020-09-13T12:00" in caught.value.timestamp


def test_a_weekly_range_starts_on_the_exchange_s_week_grid() -> None:
    week = 7 * 24 * HOUR
    monday = 1_620_000_000_000 // week * week + 4 * 24 * HOUR  # on the Monday grid
    endpoint = FakeEndpoint([monday + i * week for i in range(4)], cap=10)
    got = fetch_range(
        endpoint, monday, monday + 4 * week, week, 10, monday + 99 * week, grid=candle_grid("1w", "binance")
    )
    assert [r[0] for r in got.rows] == [monday + i * week for i in range(4)]
    assert endpoint.calls[0][0] == monday
