"""Features from real recorded candles: causal, start-independent after warm-up, documented."""

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from tradai_core.errors import ValidationError
from tradai_core.features import (
    FEATURE_NAMES,
    FEATURE_SPECS,
    WARMUP_BARS,
    compute_features,
    feature_set_hash,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_CANDLES = PROJECT_ROOT / "demo_data" / "binance_spot_1h"
SHARED_CANDLES = PROJECT_ROOT.parent / "shared" / "data" / "binance_spot_1h"

# Incremental and full-history values must agree to 1e-9 of the value, or of the feature's typical spread
# (its std over the history) where the value itself is near zero (returns, ratios minus one): that is six
# orders of magnitude below anything a tree model's 255 histogram bins can tell apart. The warm-up is
# sized so the start of the series keeps < 1e-12 relative influence, and TA-Lib's running sums add
# ~1e-13, so the bound holds with a wide margin.
TOLERANCE = 1e-9


def load(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).set_index("date")


@pytest.fixture(scope="module")
def demo_btc() -> pd.DataFrame:
    return load(DEMO_CANDLES / "BTC_USDT-1h.parquet")


@pytest.fixture(scope="module", params=["BTC_USDT", "DOGE_USDT"])
def history(request: pytest.FixtureRequest) -> pd.DataFrame:
    """The longest history of a pair available: the shared set (BTC from 2017) when beside the clone,
    else the demo. DOGE is there for its violent moves (x8 in January 2021), the worst case for EMA seeds."""
    shared = SHARED_CANDLES / f"{request.param}-1h.parquet"
    return load(shared if shared.is_file() else DEMO_CANDLES / f"{request.param}-1h.parquet")


@pytest.fixture(scope="module")
def full_features(history: pd.DataFrame) -> pd.DataFrame:
    return compute_features(history)


def assert_close_to_full(part: pd.DataFrame, full: pd.DataFrame) -> None:
    reference = full.loc[part.index]
    scale = full.std()
    error = (part - reference).abs() / reference.abs().clip(lower=scale, axis=1)
    worst = error.max()
    assert (worst <= TOLERANCE).all(), (
        f"features off beyond {TOLERANCE}: {worst[worst > TOLERANCE].to_dict()}"
    )


def test_the_feature_set_spans_four_families_with_documented_warm_ups() -> None:
    assert len(FEATURE_SPECS) >= 20
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert {spec.family for spec in FEATURE_SPECS} == {"trend", "momentum", "volatility", "volume"}
    assert all(spec.description for spec in FEATURE_SPECS)
    assert max(spec.warmup_bars for spec in FEATURE_SPECS) == WARMUP_BARS
    recursive = {
        spec.name: spec.warmup_bars for spec in FEATURE_SPECS if spec.name in {"close_ema_50", "rsi_14"}
    }
    assert recursive["close_ema_50"] > 600 and recursive["rsi_14"] > 300


def test_every_candle_after_the_warm_up_gets_a_finite_feature_row(demo_btc: pd.DataFrame) -> None:
    features = compute_features(demo_btc)
    assert list(features.columns) == list(FEATURE_NAMES)
    assert features.index.equals(demo_btc.index[WARMUP_BARS:])
    assert (features.dtypes == "float64").all()
    assert np.isfinite(features.to_numpy()).all()


def test_candles_with_a_date_column_work_like_an_indexed_frame(demo_btc: pd.DataFrame) -> None:
    sample = demo_btc.iloc[: WARMUP_BARS + 50]
    pd.testing.assert_frame_equal(compute_features(sample.reset_index()), compute_features(sample))


@pytest.mark.parametrize(
    "cut", ["2020-12-21 14:00", "2021-05-19 13:00", "2022-06-13 00:00", "2022-10-01 00:00"]
)
def test_appending_future_candles_never_changes_past_features(demo_btc: pd.DataFrame, cut: str) -> None:
    full = compute_features(demo_btc)
    known = compute_features(demo_btc.loc[:cut])
    pd.testing.assert_frame_equal(known, full.loc[: known.index[-1]], check_exact=True)


def test_a_feature_at_t_ignores_whatever_comes_after_t(demo_btc: pd.DataFrame) -> None:
    cut = pd.Timestamp("2021-06-01", tz="UTC")
    altered = demo_btc.copy()
    later = altered.index > cut
    altered.loc[later, ["open", "high", "low", "close"]] *= 3.0
    altered.loc[later, "volume"] = altered.loc[later, "volume"].to_numpy()[::-1]
    original, changed = compute_features(demo_btc), compute_features(altered)
    pd.testing.assert_frame_equal(changed.loc[:cut], original.loc[:cut], check_exact=True)
    assert not changed.loc[cut:].iloc[1:].equals(original.loc[cut:].iloc[1:])


@pytest.mark.parametrize(
    "start",
    [
        "2018-02-09 12:00",  # just after the 33-hour outage (shared history only)
        "2020-03-12 00:00",  # COVID crash (shared history only)
        "2020-12-21 18:00",  # first candle after the 4-hour outage
        "2021-01-28 12:00",  # DOGE's first pump
        "2021-05-19 00:00",  # -30 % day
        "2022-10-01 00:00",
    ],
)
def test_incremental_computation_matches_the_full_history(
    history: pd.DataFrame, full_features: pd.DataFrame, start: str
) -> None:
    start_ts = pd.Timestamp(start, tz="UTC")
    first = int(history.index.searchsorted(start_ts))
    if first < WARMUP_BARS:
        pytest.skip(f"{start} is within the warm-up of the recorded history")
    window = history.iloc[first - WARMUP_BARS : first + 500]

    part = compute_features(window, start=start_ts)

    assert part.index[0] == history.index[first]
    assert part.index.equals(window.index[WARMUP_BARS:])
    assert_close_to_full(part, full_features)


def test_recursive_indicators_remember_the_series_start_for_hundreds_of_bars(history: pd.DataFrame) -> None:
    """Why the warm-up is as long as it is: an EMA(50) started 100 bars early is off by far more than
    the tolerance, one started WARMUP_BARS early is not."""
    close = history["close"].to_numpy()
    at = len(close) - 1
    full = talib.EMA(close, 50)[at]

    def started(bars_before: int) -> float:
        return float(talib.EMA(close[at - bars_before : at + 1], 50)[-1])

    assert abs(started(100) - full) / full > 1e-6
    assert abs(started(WARMUP_BARS) - full) / full < 1e-12


def test_too_little_history_before_start_omits_rows_and_warns(
    demo_btc: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    start = demo_btc.index[WARMUP_BARS + 100]
    window = demo_btc.iloc[WARMUP_BARS:]
    with caplog.at_level(logging.WARNING, logger="tradai_core.features"):
        part = compute_features(window, start=start)
    assert part.index[0] == window.index[WARMUP_BARS]
    assert "load more history" in caplog.text


def test_feature_set_hash_is_stable_and_follows_the_definitions() -> None:
    digest = feature_set_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert feature_set_hash() == digest
    changed = list(FEATURE_SPECS)
    changed[0] = changed[0].model_copy(update={"warmup_bars": changed[0].warmup_bars + 1})
    assert feature_set_hash(changed) != digest


def test_malformed_candles_are_rejected_with_a_validation_error(demo_btc: pd.DataFrame) -> None:
    sample = demo_btc.iloc[:50]
    with pytest.raises(ValidationError, match="tz-aware"):
        compute_features(sample.tz_localize(None))
    with pytest.raises(ValidationError, match="lack columns"):
        compute_features(sample.drop(columns="volume"))
    with pytest.raises(ValidationError, match="sorted and unique"):
        compute_features(sample.iloc[::-1])
    broken = sample.copy()
    broken.iloc[3, 3] = np.nan
    with pytest.raises(ValidationError, match="NaN"):
        compute_features(broken)
