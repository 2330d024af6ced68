"""Candle rules: every candle entering the store keeps them, and a breach names pair, time and rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import load_recorded
from tradai_core.candles import candles_from_rows, find_gaps, missing_ranges, validate_candles
from tradai_core.errors import CandleValidationError
from tradai_core.quality import run_quality_checks

HOUR_MS = 3_600_000
T0 = 1_600_000_000_000 // HOUR_MS * HOUR_MS  # on the hour


def rows(n: int) -> list[list[float]]:
    return [[T0 + i * HOUR_MS, 10.0, 11.0, 9.0, 10.5, 100.0] for i in range(n)]


def test_recorded_candles_pass_every_rule(demo_candles_dir: Path) -> None:
    candles = load_recorded(demo_candles_dir, "BTC/USDT")
    validate_candles("BTC/USDT", candles, HOUR_MS)
    assert len(candles) == 17_488


@pytest.mark.parametrize(
    ("row", "change", "rule"),
    [
        (3, {0: T0 + 2 * HOUR_MS}, "timestamps strictly increasing"),
        (3, {0: T0 + 3 * HOUR_MS + 60_000}, "timeframe grid"),
        (2, {2: 9.5}, "high >= max(open, close)"),
        (2, {3: 10.6}, "low <= min(open, close)"),
        (4, {4: float("nan")}, "finite"),
        (4, {5: float("inf")}, "finite"),
        (1, {5: -1.0}, "non-negative"),
    ],
)
def test_a_breach_names_pair_timestamp_and_rule(row: int, change: dict[int, float], rule: str) -> None:
    data = rows(6)
    for column, value in change.items():
        data[row][column] = value
    candles = candles_from_rows(data)
    with pytest.raises(CandleValidationError) as caught:
        validate_candles("ETH/USDT", candles, HOUR_MS)
    error = caught.value
    assert error.pair == "ETH/USDT"
    assert rule in error.rule
    assert error.timestamp == candles.index[row].isoformat()
    assert "nothing was written" in str(error)


def test_gaps_in_the_recorded_data_are_the_real_outages(shared_candles_dir: Path) -> None:
    candles = load_recorded(shared_candles_dir, "BTC/USDT")
    gaps = find_gaps(candles.index, HOUR_MS)
    # The data's README: BTC misses 127 of 45,151 hours in 27 gaps, the longest after the 2018-02-08 00:00
    # candle (+33 h).
    assert len(gaps) == 27
    assert sum(g.missing for g in gaps) == 127
    longest = max(gaps, key=lambda g: g.missing)
    assert longest.first_missing == datetime(2018, 2, 8, 1, tzinfo=UTC)
    assert longest.last_missing == datetime(2018, 2, 9, 9, tzinfo=UTC)
    assert longest.missing == 33


def test_missing_ranges_cover_window_edges() -> None:
    candles = candles_from_rows([r for i, r in enumerate(rows(10)) if i not in (0, 4, 5, 9)])
    start = pd.Timestamp(T0, unit="ms", tz="UTC")
    gaps = missing_ranges(candles.index, start, start + pd.Timedelta(hours=10), HOUR_MS)
    assert [(g.first_missing, g.missing) for g in gaps] == [
        (start.to_pydatetime(), 1),
        ((start + pd.Timedelta(hours=4)).to_pydatetime(), 2),
        ((start + pd.Timedelta(hours=9)).to_pydatetime(), 1),
    ]


def test_quality_checks_report_what_validation_would_refuse() -> None:
    data = rows(6)
    data[2][2] = 8.0  # high below open and close
    candles = candles_from_rows(data)
    candles = pd.concat([candles, candles.iloc[[3]]]).sort_index()  # a duplicate
    start = candles.index[0]
    results = {r.name: r for r in run_quality_checks(candles, start, start + pd.Timedelta(hours=6), HOUR_MS)}
    assert not results["no_duplicates"].passed
    assert results["no_duplicates"].offending == [candles.index[3].isoformat()]
    assert not results["monotonic_index"].passed
    assert not results["ohlc_consistent"].passed
    assert results["timeframe_grid"].passed
    assert results["gaps"].passed


def test_candles_from_rows_keeps_exact_values() -> None:
    data = rows(3)
    candles = candles_from_rows(data)
    assert candles.index.tz is not None
    np.testing.assert_array_equal(candles.to_numpy(), np.asarray(data)[:, 1:])
    assert (candles.index.asi8 // 1_000_000).tolist() == [r[0] for r in data]
