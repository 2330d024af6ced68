"""Paging a candle range: resume after the last candle, de-duplicate page edges, drop the open candle."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tradai_core.errors import ExchangeDataError
from tradai_core.pagination import fetch_range

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
