"""Candles as the platform holds them, and the rules every candle must keep.

A candle frame is a DataFrame indexed by a tz-aware UTC `DatetimeIndex` named `date` (candle open time)
with float64 columns `open, high, low, close, volume`. Everything that enters the candle store passes
`validate_candles` first, so a bad candle stops a write instead of reaching a backtest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tradai_core.errors import CandleValidationError, ValidationError
from tradai_core.timeframes import CandleGrid, fixed_grid

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


class Gap(BaseModel):
    """Candles missing between two present ones: `[first_missing, last_missing]`, `missing` candles."""

    model_config = ConfigDict(frozen=True)

    first_missing: datetime
    last_missing: datetime
    missing: int

    def describe(self) -> str:
        """One line a person can read: `2020-12-21 18:00 → 21:00 (4 candles)`."""
        return (
            f"{self.first_missing:%Y-%m-%d %H:%M} → {self.last_missing:%Y-%m-%d %H:%M} "
            f"({self.missing} candle{'s' if self.missing != 1 else ''})"
        )


def empty_candles() -> pd.DataFrame:
    """A candle frame with no rows, in the canonical dtypes."""
    index = pd.DatetimeIndex([], tz="UTC", name="date", dtype="datetime64[ns, UTC]")
    return pd.DataFrame({c: pd.Series([], dtype="float64") for c in OHLCV_COLUMNS}, index=index)


def candles_from_rows(rows: Sequence[Sequence[float]]) -> pd.DataFrame:
    """Candle frame from exchange rows `[timestamp_ms, open, high, low, close, volume]` (ccxt's shape)."""
    if not rows:
        return empty_candles()
    array = np.asarray([row[:6] for row in rows], dtype="float64")
    index = pd.DatetimeIndex(pd.to_datetime(array[:, 0].astype("int64"), unit="ms", utc=True), name="date")
    return pd.DataFrame(array[:, 1:6], index=index, columns=list(OHLCV_COLUMNS))


def normalize_candles(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical candle frame from a frame with a `date` column or index (e.g. a parquet file)."""
    if "date" in frame.columns:
        frame = frame.set_index("date")
    index = pd.DatetimeIndex(frame.index, name="date")
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    missing = [c for c in OHLCV_COLUMNS if c not in frame.columns]
    if missing:
        raise ValidationError(f"candles lack the columns {missing}", f"give all of {list(OHLCV_COLUMNS)}")
    try:
        out = frame.loc[:, list(OHLCV_COLUMNS)].astype("float64")
    except (TypeError, ValueError) as error:
        raise ValidationError(f"candles hold non-numeric values: {error}", "give numbers only") from error
    out.index = index.as_unit("ns")
    return out


def validate_candles(pair: str, candles: pd.DataFrame, grid: CandleGrid | int) -> None:
    """Raise `CandleValidationError` naming pair, timestamp and rule for the first candle that breaks one.

    Rules: timestamps strictly increasing and on the exchange's grid for the timeframe (`grid`; a plain
    step in ms means the epoch grid); every price and volume a finite number; prices positive (a zero
    price is no trade, not a price); volume non-negative; high ≥ max(open, close); low ≤ min(open, close).
    """
    if candles.empty:
        return
    if isinstance(grid, int):
        grid = fixed_grid(grid)
    stamps_ms = candles.index.asi8 // 1_000_000
    values = candles.loc[:, list(OHLCV_COLUMNS)].to_numpy(dtype="float64")

    def fail(row: int, rule: str) -> None:
        raise CandleValidationError(pair, candles.index[row].isoformat(), rule)

    steps = np.diff(stamps_ms)
    if (bad := np.flatnonzero(steps <= 0)).size:
        fail(int(bad[0]) + 1, "timestamps strictly increasing")
    if (bad := np.flatnonzero(~grid.on_grid(stamps_ms))).size:
        fail(int(bad[0]), grid.describe())
    if (bad := np.flatnonzero(~np.isfinite(values).all(axis=1))).size:
        fail(int(bad[0]), "prices and volume are finite numbers")
    if (bad := np.flatnonzero((values[:, :4] <= 0).any(axis=1))).size:
        fail(int(bad[0]), "prices are positive (open, high, low, close > 0)")
    if (bad := np.flatnonzero(values[:, 4] < 0)).size:
        fail(int(bad[0]), "volume is non-negative")
    open_, high, low, close = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    if (bad := np.flatnonzero(high < np.maximum(open_, close))).size:
        fail(int(bad[0]), "high >= max(open, close)")
    if (bad := np.flatnonzero(low > np.minimum(open_, close))).size:
        fail(int(bad[0]), "low <= min(open, close)")


def find_gaps(index: pd.DatetimeIndex, timeframe_ms: int) -> list[Gap]:
    """Every run of missing candles between two present ones, oldest first (real outages included)."""
    if len(index) < 2:
        return []
    stamps_ms = index.asi8 // 1_000_000
    steps = np.diff(stamps_ms)
    gaps: list[Gap] = []
    for at in np.flatnonzero(steps > timeframe_ms):
        missing = int(steps[at] // timeframe_ms) - 1
        first = pd.Timestamp(int(stamps_ms[at]) + timeframe_ms, unit="ms", tz="UTC")
        last = pd.Timestamp(int(stamps_ms[at + 1]) - timeframe_ms, unit="ms", tz="UTC")
        gaps.append(
            Gap(first_missing=first.to_pydatetime(), last_missing=last.to_pydatetime(), missing=missing)
        )
    return gaps


def missing_ranges(index: pd.DatetimeIndex, start: datetime, end: datetime, timeframe_ms: int) -> list[Gap]:
    """Candles missing from `[start, end)` on the grid, including before the first and after the last
    present candle: what a consumer of that window would lack."""
    grid_start, grid_end = utc_timestamp(start), utc_timestamp(end)
    step = pd.Timedelta(milliseconds=timeframe_ms)
    inside = index[(index >= grid_start) & (index < grid_end)]
    bounds = pd.DatetimeIndex([grid_start - step]).append(inside).append(pd.DatetimeIndex([grid_end]))
    return find_gaps(bounds.as_unit("ns"), timeframe_ms)


def utc_timestamp(moment: datetime | str) -> pd.Timestamp:
    """`moment` as a tz-aware UTC timestamp; a naive one is taken to be UTC already."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


class CandleDiff(BaseModel):
    """How two candle frames differ: open times only in `expected`, only in `actual`, or in both with
    different values."""

    model_config = ConfigDict(frozen=True)

    expected: int
    missing: int
    extra: int
    changed: int

    @property
    def identical(self) -> bool:
        """True when both hold exactly the same candles with the same values."""
        return self.missing == 0 and self.extra == 0 and self.changed == 0


def diff_candles(expected: pd.DataFrame, actual: pd.DataFrame) -> CandleDiff:
    """Compare two candle frames candle for candle (exact float equality: the store must not alter data)."""
    common = expected.index.intersection(actual.index)
    left = expected.loc[common, list(OHLCV_COLUMNS)].to_numpy()
    right = actual.loc[common, list(OHLCV_COLUMNS)].to_numpy()
    changed = int((left != right).any(axis=1).sum())
    return CandleDiff(
        expected=len(expected),
        missing=len(expected.index.difference(actual.index)),
        extra=len(actual.index.difference(expected.index)),
        changed=changed,
    )
