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
from tradai_core.outliers import find_price_jumps, find_zero_volume_runs
from tradai_core.quality import check_grid, check_ohlc, check_outliers, run_quality_checks
from tradai_core.timeframes import candle_grid

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
        (1, {1: 0.0, 3: 0.0}, "prices are positive"),  # a zero open (and low): no trade, not a price
        (2, {4: 0.0, 3: 0.0}, "prices are positive"),
        (3, {1: -10.0, 3: -10.0, 4: -10.0, 2: -1.0}, "prices are positive"),
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


def test_quality_flags_a_zero_price_as_inconsistent() -> None:
    data = rows(4)
    data[2][1:5] = [0.0, 0.0, 0.0, 0.0]
    result = check_ohlc(candles_from_rows(data))
    assert not result.passed and result.offending == [
        pd.Timestamp(data[2][0], unit="ms", tz="UTC").isoformat()
    ]


WEEK_MS = 7 * 24 * HOUR_MS


def weekly(start: str, n: int) -> pd.DataFrame:
    first = int(pd.Timestamp(start, tz="UTC").value // 1_000_000)
    return candles_from_rows([[first + i * WEEK_MS, 10.0, 11.0, 9.0, 10.5, 1.0] for i in range(n)])


def test_binance_weekly_candles_open_on_monday() -> None:
    mondays = weekly("2021-05-03", 8)  # Binance's 1w candles open Monday 00:00 UTC
    validate_candles("BTC/USDT", mondays, candle_grid("1w", "binance"))
    assert check_grid(mondays, candle_grid("1w", "binance")).passed
    thursdays = weekly("2021-05-06", 2)  # the epoch grid (1970-01-01 was a Thursday)
    with pytest.raises(CandleValidationError) as caught:
        validate_candles("BTC/USDT", thursdays, candle_grid("1w", "binance"))
    assert "weeks open Monday" in caught.value.rule
    assert not check_grid(thursdays, candle_grid("1w", "binance")).passed


def test_monthly_candles_open_on_the_first_of_the_month() -> None:
    firsts = pd.DatetimeIndex(["2021-01-01", "2021-02-01", "2021-03-01"], tz="UTC")
    grid = candle_grid("1M", "binance")
    assert grid.on_grid(firsts.asi8 // 1_000_000).all()
    assert not grid.on_grid(pd.DatetimeIndex(["2021-02-02"], tz="UTC").asi8 // 1_000_000).any()


def test_a_1000x_spike_is_found_with_its_timestamp_and_real_history_stays_quiet(
    shared_candles_dir: Path,
) -> None:
    day = load_recorded(shared_candles_dir, "BTC/USDT").loc["2021-04-24":"2021-05-01"].copy()
    spiked_at = day.index[-10]
    day.loc[spiked_at, ["open", "high", "low", "close"]] *= 1000
    assert spiked_at in find_price_jumps(day)
    result = check_outliers(day, start=day.index[-24])
    assert not result.passed and spiked_at.isoformat() in result.offending
    assert "price jump" in result.summary
    # Over all 12 recorded pairs (408,142 hourly candles) the default k flags 19 genuine moves: ≤ 1 in 10,000.
    flagged = scored = 0
    for path in sorted(shared_candles_dir.glob("*-1h.parquet")):
        candles = load_recorded(shared_candles_dir, path.name.split("-")[0].replace("_", "/"))
        flagged += len(find_price_jumps(candles))
        scored += len(candles)
    assert flagged / scored < 1e-4


def test_a_run_of_zero_volume_is_reported_with_its_range() -> None:
    data = rows(10)
    for i in (3, 4, 5):
        data[i][5] = 0.0
    candles = candles_from_rows(data)
    [run] = find_zero_volume_runs(candles)
    assert (run.first, run.last, run.length) == (candles.index[3], candles.index[5], 3)
    result = check_outliers(candles)
    assert not result.passed and candles.index[3].isoformat() in result.offending[0]
    assert check_outliers(candles_from_rows(rows(10))).passed
