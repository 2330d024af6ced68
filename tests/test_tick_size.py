"""Historic price precision: `tradai_core.tick_size` equals Freqtrade's `get_tick_size_over_time`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from freqtrade.data.btanalysis.historic_precision import get_tick_size_over_time
from freqtrade.optimize import backtesting

from tests.conftest import DEMO_CANDLES, SHARED_CANDLES
from tradai_core.tick_size import significant_decimals, tick_size_over_time
from tradai_resources.workers.backtest_child import vectorized_tick_size


def _freqtrade_counts(prices: np.ndarray) -> np.ndarray:
    """Freqtrade's per-price rule, verbatim: 14 significant digits, decimals up to the last non-zero."""
    return (
        pd.Series(prices)
        .apply(np.format_float_positional, precision=14, unique=False, fractional=False, trim="-")
        .str.extract(r"\.(\d*[1-9])")[0]
        .str.len()
        .to_numpy(dtype=float)
    )


def _freqtrade_frame(path: Path) -> pd.DataFrame:
    """A recorded candle file shaped as Freqtrade's data loader hands it to the backtester."""
    frame = pd.read_parquet(path)
    return frame.reset_index() if "date" not in frame.columns else frame


def _recorded_files() -> list[Path]:
    folder = SHARED_CANDLES if SHARED_CANDLES.is_dir() else DEMO_CANDLES
    return sorted(folder.glob("*-1h.parquet"))


@pytest.mark.parametrize("path", _recorded_files(), ids=lambda p: p.name.split("-")[0])
def test_every_recorded_pair_gets_freqtraders_series_and_columns(path: Path) -> None:
    theirs, ours = _freqtrade_frame(path), _freqtrade_frame(path)

    expected = get_tick_size_over_time(theirs)
    actual = tick_size_over_time(ours)

    pd.testing.assert_series_equal(actual, expected, check_exact=True)
    # the count columns Freqtrade adds reach the strategy's dataframe: same names, order, values, dtypes
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)


def test_prices_of_every_magnitude_count_the_same_decimals_as_freqtraders_print() -> None:
    rng = np.random.default_rng(7)
    raw = 10.0 ** rng.uniform(-12, 16, 100_000) * rng.choice([1.0, -1.0], 100_000)
    edge = [0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, 10.0, 0.1, 0.3, 1 / 3, 1e-9, 9.9e-10, 1e13, 1e14]
    carries = [9.99999999999999, 0.0999999999999999, 99999999999999.6, 0.99999999999999995]
    ticks = np.concatenate([np.round(raw, 2), np.round(raw, 5), np.round(raw, 8)])
    prices = np.concatenate([raw, ticks, edge, carries])

    np.testing.assert_array_equal(significant_decimals(prices), _freqtrade_counts(prices))


def test_column_dtypes_follow_pandas_str_len_int_float_or_object() -> None:
    dates = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    with_decimals = pd.DataFrame(
        {"date": dates, "open": 1.5, "high": 1.75, "low": 1.25, "close": 1.5, "volume": 1.0}
    )
    some_whole = with_decimals.assign(open=[2.0, 2.5, 3.0, 3.5])
    one_column_whole = with_decimals.assign(open=2.0)
    all_whole = with_decimals.assign(open=2.0, high=3.0, low=1.0, close=2.0)
    for frame in (with_decimals, some_whole, one_column_whole, all_whole):
        theirs, ours = frame.copy(), frame.copy()
        pd.testing.assert_series_equal(tick_size_over_time(ours), get_tick_size_over_time(theirs))
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert tick_size_over_time(with_decimals.copy()).iloc[0] == pytest.approx(0.01)


def test_contract_the_pinned_freqtrade_function_is_the_one_the_backtester_calls() -> None:
    original = backtesting.get_tick_size_over_time
    assert original is get_tick_size_over_time
    with vectorized_tick_size() as active:
        assert active, "Freqtrade's get_tick_size_over_time changed: re-check tradai_core.tick_size"
        assert backtesting.get_tick_size_over_time is tick_size_over_time
    assert backtesting.get_tick_size_over_time is original


def test_a_changed_freqtrade_function_is_left_in_place_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def upgraded(candles: pd.DataFrame) -> pd.Series:  # pragma: no cover - never called here
        return get_tick_size_over_time(candles) * 10

    monkeypatch.setattr(backtesting, "get_tick_size_over_time", upgraded)
    with caplog.at_level(logging.WARNING), vectorized_tick_size() as active:
        assert not active
        assert backtesting.get_tick_size_over_time is upgraded
    assert "running Freqtrade's own" in caplog.text


def test_turned_off_it_leaves_freqtrade_alone() -> None:
    with vectorized_tick_size(enabled=False) as active:
        assert not active
        assert backtesting.get_tick_size_over_time is get_tick_size_over_time
