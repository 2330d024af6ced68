"""Model features computed from OHLCV candles: trend, momentum, volatility and volume.

Every feature value at candle `t` uses only candles up to and including `t` (TA-Lib indicators and
trailing windows; nothing centred, nothing filled backwards), so a feature row never changes when later
candles arrive.

Some TA-Lib indicators are recursive (EMA, MACD, RSI, ADX/DI, ATR): their value depends, in ever smaller
amounts, on where the series starts. `WARMUP_BARS` is the number of candles after which that dependence
is below `CONVERGENCE_EPSILON` (1e-12, relative) for every feature; `compute_features` drops those first
rows, so any row it returns equals the full-history value to within 1e-9 relative, whatever the input
started with. To compute rows from `t0` on, pass at least `WARMUP_BARS` candles before `t0`.

Windows count candles (rows), not clock time: across an exchange outage a 24-bar window spans more than
24 hours. Labels, not features, are where outages are dropped (see `tradai_core.labels`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.candles import utc_timestamp
from tradai_core.errors import ConfigurationError, ValidationError
from tradai_core.lazy import LazyModule

talib = LazyModule("talib")  # imported on first use, not when the code location loads

logger = logging.getLogger(__name__)

#: Bump when the computation changes in a way the specs below do not show (e.g. a bug fix).
FEATURE_SET_VERSION = "1"
#: Largest relative influence the start of the series may keep on a recursive indicator after warm-up.
CONVERGENCE_EPSILON = 1e-12
OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")

Family = Literal["trend", "momentum", "volatility", "volume"]


class FeatureSpec(BaseModel):
    """What one feature is, for docs and lineage."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: Family
    description: str
    warmup_bars: int = Field(
        ge=0,
        description="Candles needed before a value is defined and independent of where the series "
        "starts (to CONVERGENCE_EPSILON).",
    )


def _recursive_warmup(alpha: float, lookback: int, stages: int = 1) -> int:
    """Bars after TA-Lib's lookback until a recursive smoother of factor `alpha` (stacked `stages`
    times) forgets its seed to within CONVERGENCE_EPSILON: smallest k with k^(stages-1)(1-alpha)^k ≤ ε."""
    k = 1
    while k ** (stages - 1) * (1.0 - alpha) ** k > CONVERGENCE_EPSILON:
        k += 1
    return lookback + k


def _ema_alpha(period: int) -> float:
    return 2.0 / (period + 1)


def _wilder_alpha(period: int) -> float:
    return 1.0 / period


FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    # -- trend
    FeatureSpec(
        name="ema_ratio_12_26",
        family="trend",
        description="EMA(close, 12) / EMA(close, 26) - 1.",
        warmup_bars=_recursive_warmup(_ema_alpha(26), lookback=25),
    ),
    FeatureSpec(
        name="close_ema_50",
        family="trend",
        description="close / EMA(close, 50) - 1.",
        warmup_bars=_recursive_warmup(_ema_alpha(50), lookback=49),
    ),
    FeatureSpec(
        name="close_sma_200",
        family="trend",
        description="close / SMA(close, 200) - 1: long trend from a finite window (no EMA seed to forget).",
        warmup_bars=199,
    ),
    FeatureSpec(
        name="macd_hist",
        family="trend",
        description="MACD(12, 26, 9) histogram divided by close.",
        warmup_bars=_recursive_warmup(_ema_alpha(26), lookback=33, stages=2),
    ),
    FeatureSpec(
        name="adx_14",
        family="trend",
        description="ADX(14), trend strength, 0-100.",
        warmup_bars=_recursive_warmup(_wilder_alpha(14), lookback=27, stages=2),
    ),
    FeatureSpec(
        name="di_spread_14",
        family="trend",
        description="+DI(14) - -DI(14), trend direction, -100..100.",
        warmup_bars=_recursive_warmup(_wilder_alpha(14), lookback=14),
    ),
    FeatureSpec(
        name="aroon_osc_25",
        family="trend",
        description="Aroon oscillator(25), -100..100.",
        warmup_bars=25,
    ),
    FeatureSpec(
        name="linreg_slope_24",
        family="trend",
        description="Least-squares slope of log(close) over the last 24 bars, per bar.",
        warmup_bars=23,
    ),
    # -- momentum
    FeatureSpec(
        name="logret_1", family="momentum", description="log(close / close 1 bar ago).", warmup_bars=1
    ),
    FeatureSpec(
        name="logret_6", family="momentum", description="log(close / close 6 bars ago).", warmup_bars=6
    ),
    FeatureSpec(
        name="logret_24", family="momentum", description="log(close / close 24 bars ago).", warmup_bars=24
    ),
    FeatureSpec(
        name="logret_168", family="momentum", description="log(close / close 168 bars ago).", warmup_bars=168
    ),
    FeatureSpec(
        name="rsi_14",
        family="momentum",
        description="RSI(14), 0-100.",
        warmup_bars=_recursive_warmup(_wilder_alpha(14), lookback=14),
    ),
    FeatureSpec(
        name="stoch_k_14",
        family="momentum",
        description="Slow stochastic %K(14, 3), 0-100.",
        warmup_bars=15,
    ),
    FeatureSpec(
        name="stoch_d_14",
        family="momentum",
        description="Slow stochastic %D(14, 3, 3), 0-100.",
        warmup_bars=17,
    ),
    FeatureSpec(
        name="willr_14",
        family="momentum",
        description="Williams %R(14), -100..0.",
        warmup_bars=13,
    ),
    FeatureSpec(
        name="cci_20",
        family="momentum",
        description="Commodity channel index(20).",
        warmup_bars=19,
    ),
    # -- volatility
    FeatureSpec(
        name="atr_pct_14",
        family="volatility",
        description="ATR(14) / close.",
        warmup_bars=_recursive_warmup(_wilder_alpha(14), lookback=14),
    ),
    FeatureSpec(
        name="bb_width_20",
        family="volatility",
        description="Bollinger band width (20, 2σ): 4·std(close, 20) / SMA(close, 20).",
        warmup_bars=19,
    ),
    FeatureSpec(
        name="bb_pos_20",
        family="volatility",
        description="Position of close inside the Bollinger bands (20, 2σ): 0 at the lower, 1 at the upper.",
        warmup_bars=19,
    ),
    FeatureSpec(
        name="rv_24",
        family="volatility",
        description="Realized volatility: sample std of 1-bar log returns over the last 24 bars.",
        warmup_bars=24,
    ),
    FeatureSpec(
        name="rv_168",
        family="volatility",
        description="Realized volatility: sample std of 1-bar log returns over the last 168 bars.",
        warmup_bars=168,
    ),
    FeatureSpec(
        name="rv_ratio_24_168",
        family="volatility",
        description="rv_24 / rv_168: is volatility expanding or contracting.",
        warmup_bars=168,
    ),
    FeatureSpec(
        name="hl_range",
        family="volatility",
        description="log(high / low) of the candle itself.",
        warmup_bars=0,
    ),
    FeatureSpec(
        name="parkinson_24",
        family="volatility",
        description="Parkinson high-low volatility over the last 24 bars: sqrt(mean(log(h/l)²) / 4ln2).",
        warmup_bars=23,
    ),
    # -- volume
    FeatureSpec(
        name="obv_change_24",
        family="volume",
        description="OBV change over the last 24 bars divided by the volume traded in them, -1..1.",
        warmup_bars=24,
    ),
    FeatureSpec(
        name="volume_z_168",
        family="volume",
        description="z-score of log(1 + volume) against the last 168 bars.",
        warmup_bars=167,
    ),
    FeatureSpec(
        name="volume_ratio_24_168",
        family="volume",
        description="Mean volume of the last 24 bars / mean volume of the last 168 bars.",
        warmup_bars=167,
    ),
    FeatureSpec(
        name="mfi_14",
        family="volume",
        description="Money flow index(14), volume-weighted RSI, 0-100.",
        warmup_bars=14,
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(spec.name for spec in FEATURE_SPECS)
#: Candles dropped at the start of every computation: the largest warm-up of any feature.
WARMUP_BARS: int = max(spec.warmup_bars for spec in FEATURE_SPECS)


def _validated_candles(candles: pd.DataFrame) -> pd.DataFrame:
    """The candles indexed by a sorted, unique, UTC `date` index with float64 OHLCV columns."""
    frame = candles
    if not isinstance(frame.index, pd.DatetimeIndex) and "date" in frame.columns:
        frame = frame.set_index("date")
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise ValidationError(
            "candles must be indexed by a tz-aware DatetimeIndex",
            "index the frame by its UTC `date` column (candle open time)",
        )
    if str(frame.index.tz) != "UTC":
        raise ValidationError(
            f"candle timestamps are in {frame.index.tz}, not UTC", "convert with tz_convert"
        )
    missing = [column for column in OHLCV_COLUMNS if column not in frame.columns]
    if missing:
        raise ValidationError(f"candles lack columns {missing}", f"provide {list(OHLCV_COLUMNS)}")
    if not frame.index.is_monotonic_increasing or frame.index.has_duplicates:
        raise ValidationError("candle timestamps are not sorted and unique", "sort and de-duplicate first")
    values = frame.loc[:, list(OHLCV_COLUMNS)].astype("float64")
    if not np.isfinite(values.to_numpy()).all():
        raise ValidationError("candles contain NaN or infinite values", "drop or repair those candles")
    return values


def _talib_default_mode() -> None:
    """TA-Lib settings are process-global; the features are defined under its defaults."""
    if talib.get_compatibility() != 0:
        raise ConfigurationError(
            "TA-Lib is in Metastock compatibility mode, which changes how EMAs are seeded",
            "call talib.set_compatibility(0) before computing features",
        )


def _trailing(values: np.ndarray, window: int, reduce: str, ddof: int = 0) -> np.ndarray:
    """Trailing-window mean or std by TA-Lib's running sums (SMA, STDDEV): O(n), and within ~1e-12
    relative of an exact two-pass computation, far inside the incremental-equality tolerance. The
    feature assets compute each day from a fixed anchor, so stored values stay bit-identical between a
    backfill and day-by-day runs all the same."""
    if reduce == "mean":
        return talib.SMA(values, window)
    std = talib.STDDEV(values, window, 1.0)
    return std * math.sqrt(window / (window - ddof)) if ddof else std


def _trailing_sum(values: np.ndarray, window: int) -> np.ndarray:
    return talib.SUM(values, window)


def _shift(values: np.ndarray, bars: int) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    out[bars:] = values[:-bars]
    return out


def _div(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is zero (e.g. a window of zero volume)."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _linreg_slope(values: np.ndarray, window: int) -> np.ndarray:
    """Least-squares slope over each trailing window (per bar)."""
    return talib.LINEARREG_SLOPE(values, window)


def _feature_columns(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> dict:
    """Every feature as an array aligned with the candles (NaN where not yet defined)."""
    log_close = np.log(c)
    ret1 = np.diff(log_close, prepend=np.nan)
    ema12, ema26, ema50 = talib.EMA(c, 12), talib.EMA(c, 26), talib.EMA(c, 50)
    _, _, macd_hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    slow_k, slow_d = talib.STOCH(h, lo, c, fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3)
    sma20, std20 = _trailing(c, 20, "mean"), _trailing(c, 20, "std")
    rv24, rv168 = _trailing(ret1, 24, "std", ddof=1), _trailing(ret1, 168, "std", ddof=1)
    log_hl = np.log(h / lo)
    signed_volume = np.sign(np.diff(c, prepend=np.nan)) * v
    log_volume = np.log1p(v)
    return {
        "ema_ratio_12_26": ema12 / ema26 - 1.0,
        "close_ema_50": c / ema50 - 1.0,
        "close_sma_200": c / _trailing(c, 200, "mean") - 1.0,
        "macd_hist": macd_hist / c,
        "adx_14": talib.ADX(h, lo, c, 14),
        "di_spread_14": talib.PLUS_DI(h, lo, c, 14) - talib.MINUS_DI(h, lo, c, 14),
        "aroon_osc_25": talib.AROONOSC(h, lo, 25),
        "linreg_slope_24": _linreg_slope(log_close, 24),
        "logret_1": ret1,
        "logret_6": log_close - _shift(log_close, 6),
        "logret_24": log_close - _shift(log_close, 24),
        "logret_168": log_close - _shift(log_close, 168),
        "rsi_14": talib.RSI(c, 14),
        "stoch_k_14": slow_k,
        "stoch_d_14": slow_d,
        "willr_14": talib.WILLR(h, lo, c, 14),
        "cci_20": talib.CCI(h, lo, c, 20),
        "atr_pct_14": talib.ATR(h, lo, c, 14) / c,
        "bb_width_20": _div(4.0 * std20, sma20),
        "bb_pos_20": _div(c - (sma20 - 2.0 * std20), 4.0 * std20),
        "rv_24": rv24,
        "rv_168": rv168,
        "rv_ratio_24_168": _div(rv24, rv168),
        "hl_range": log_hl,
        "parkinson_24": np.sqrt(_trailing(log_hl**2, 24, "mean") / (4.0 * math.log(2.0))),
        "obv_change_24": _div(_trailing_sum(signed_volume, 24), _trailing_sum(v, 24)),
        "volume_z_168": _div(
            log_volume - _trailing(log_volume, 168, "mean"), _trailing(log_volume, 168, "std")
        ),
        "volume_ratio_24_168": _div(_trailing(v, 24, "mean"), _trailing(v, 168, "mean")),
        "mfi_14": talib.MFI(h, lo, c, v, 14),
    }


def compute_features(candles: pd.DataFrame, *, start: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Feature rows for `candles` (indexed by UTC `date`, or with a `date` column), one per candle,
    columns in `FEATURE_NAMES` order, float64.

    The first `WARMUP_BARS` candles only warm the indicators up and get no row, so every returned row is
    the same (to 1e-9 relative) as a computation over the pair's whole history. With `start`, only rows
    from `start` on are returned; pass at least `WARMUP_BARS` candles before it, or its first rows are
    missing (a warning says how many). A value can still be NaN where it is undefined, e.g. a volume
    ratio over a window with no volume at all.
    """
    _talib_default_mode()
    frame = _validated_candles(candles)
    columns = _feature_columns(*(frame[name].to_numpy() for name in OHLCV_COLUMNS))
    features = pd.DataFrame(columns, index=frame.index, columns=list(FEATURE_NAMES), dtype="float64")
    features = features.iloc[WARMUP_BARS:]
    if start is not None:
        start_ts = pd.Timestamp(start)
        before = int((frame.index < start_ts).sum())
        if before < WARMUP_BARS:
            logger.warning(
                "only %d candles precede %s but features need %d of warm-up: the first %d candles from "
                "there get no feature row; load more history to fill them",
                before,
                start_ts,
                WARMUP_BARS,
                WARMUP_BARS - before,
            )
        features = features.loc[features.index >= start_ts]
    return features


def feature_set_hash(specs: Sequence[FeatureSpec] = FEATURE_SPECS) -> str:
    """Stable 16-hex-digit fingerprint of the feature set, for lineage: the specs, FEATURE_SET_VERSION,
    the TA-Lib version and the source of the code that computes them. Any change to one of these gives a
    new hash, so two feature tables with the same hash were computed the same way."""
    payload = {
        "version": FEATURE_SET_VERSION,
        "epsilon": CONVERGENCE_EPSILON,
        "specs": [spec.model_dump() for spec in specs],
        "talib": talib.__version__,
        "code": [
            inspect.getsource(function)
            for function in (_feature_columns, _trailing, _trailing_sum, _linreg_slope, _div, _shift)
        ],
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
    return digest[:16]


DAY = timedelta(days=1)
"""The unit features are stored in (a daily partition), and so computed in: see `compute_window_features`."""


def compute_window_features(
    candles: pd.DataFrame, start: datetime, end: datetime, partition: timedelta = DAY
) -> pd.DataFrame:
    """Features of the candles in `[start, end)`, each `partition` (a UTC day) computed from exactly the
    `WARMUP_BARS` candles before its first candle plus its own candles.

    `candles` (indexed by UTC time) must hold those warm-up candles; where fewer precede a candle (the
    start of the history) it gets no row. The result does not depend on how `[start, end)` is cut into
    runs, nor on any candle before a day's warm-up or after the day.
    """
    index = candles.index
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    parts: list[pd.DataFrame] = []
    day = lo
    while day < hi:
        next_day = min(day + partition, hi)
        first, stop = int(index.searchsorted(day)), int(index.searchsorted(next_day))
        if stop > first:
            begin = max(0, first - WARMUP_BARS)
            features = compute_features(candles.iloc[begin:stop])
            parts.append(features.loc[features.index >= day])
        day = next_day
    if not parts:
        return pd.DataFrame(
            columns=list(FEATURE_NAMES), index=candles.index[:0], dtype="float64"
        ).rename_axis("date")
    return pd.concat(parts).rename_axis("date")
