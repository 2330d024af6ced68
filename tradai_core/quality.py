"""Data-quality checks over stored candles: what the market-data asset checks report.

Each check takes a candle frame (possibly read back from the store, so it may hold what validation
would have refused) and returns a `QualityResult`: passed or not, a one-line summary, and details. Gaps
are real exchange outages in recorded data, so they are reported as warnings with their ranges, never
filled.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tradai_core.candles import OHLCV_COLUMNS, Gap, missing_ranges, utc_timestamp
from tradai_core.outliers import DEFAULT_K, DEFAULT_ZERO_VOLUME_RUN, find_price_jumps, find_zero_volume_runs
from tradai_core.timeframes import CandleGrid, fixed_grid


class QualityResult(BaseModel):
    """Outcome of one check: `passed`, a summary a person can read, and the offending timestamps."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    summary: str
    offending: list[str] = []
    gaps: list[Gap] = []


def _first(index: pd.DatetimeIndex, mask: np.ndarray, limit: int = 10) -> list[str]:
    return [ts.isoformat() for ts in index[mask][:limit]]


def check_duplicates(candles: pd.DataFrame) -> QualityResult:
    """No two candles share an open time."""
    mask = candles.index.duplicated(keep="first")
    count = int(mask.sum())
    summary = "no duplicate timestamps" if count == 0 else f"{count} duplicate timestamps"
    return QualityResult(
        name="no_duplicates", passed=count == 0, summary=summary, offending=_first(candles.index, mask)
    )


def check_monotonic(candles: pd.DataFrame) -> QualityResult:
    """Open times only ever increase."""
    stamps = candles.index.asi8
    mask = np.zeros(len(stamps), dtype=bool)
    mask[1:] = np.diff(stamps) <= 0
    count = int(mask.sum())
    summary = "timestamps strictly increasing" if count == 0 else f"{count} candles out of order"
    return QualityResult(
        name="monotonic_index", passed=count == 0, summary=summary, offending=_first(candles.index, mask)
    )


def check_ohlc(candles: pd.DataFrame) -> QualityResult:
    """high ≥ max(open, close), low ≤ min(open, close), values finite, prices positive, volume ≥ 0."""
    values = candles.loc[:, list(OHLCV_COLUMNS)].to_numpy(dtype="float64")
    open_, high, low, close = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    with np.errstate(invalid="ignore"):
        mask = (
            ~np.isfinite(values).all(axis=1)
            | (values[:, :4] <= 0).any(axis=1)
            | (values[:, 4] < 0)
            | (high < np.maximum(open_, close))
            | (low > np.minimum(open_, close))
        )
    count = int(mask.sum())
    summary = "every candle consistent" if count == 0 else f"{count} inconsistent candles"
    return QualityResult(
        name="ohlc_consistent", passed=count == 0, summary=summary, offending=_first(candles.index, mask)
    )


def check_grid(candles: pd.DataFrame, grid: CandleGrid | int) -> QualityResult:
    """Every open time sits on the exchange's grid for the timeframe (on the hour for 1h, Monday 00:00
    UTC for Binance's 1w); a plain step in ms means the epoch grid."""
    grid = fixed_grid(grid) if isinstance(grid, int) else grid
    mask = ~grid.on_grid(candles.index.asi8 // 1_000_000)
    count = int(mask.sum())
    summary = "every candle on the grid" if count == 0 else f"{count} candles off the timeframe grid"
    return QualityResult(
        name="timeframe_grid", passed=count == 0, summary=summary, offending=_first(candles.index, mask)
    )


def check_gaps(candles: pd.DataFrame, start: datetime, end: datetime, timeframe_ms: int) -> QualityResult:
    """Candles missing from `[start, end)`, as ranges; passes only when none is missing."""
    gaps = missing_ranges(candles.index, start, end, timeframe_ms)
    missing = sum(g.missing for g in gaps)
    summary = (
        "no missing candles"
        if not gaps
        else f"{missing} missing candles in {len(gaps)} gap{'s' if len(gaps) != 1 else ''}"
    )
    return QualityResult(name="gaps", passed=not gaps, summary=summary, gaps=gaps)


def check_outliers(
    candles: pd.DataFrame,
    start: datetime | None = None,
    k: float = DEFAULT_K,
    zero_volume_run: int = DEFAULT_ZERO_VOLUME_RUN,
) -> QualityResult:
    """Price jumps beyond `k` rolling robust sigmas and runs of `zero_volume_run`+ zero-volume candles,
    from `start` on (earlier candles only give the volatility its history). A warning, never a gate:
    real markets crash too."""
    if candles.empty:
        return QualityResult(name="outliers", passed=True, summary="no candles to judge")
    if not candles.index.is_monotonic_increasing or not candles.index.is_unique:
        # Returns need candles in order; the blocking checks already report this.
        return QualityResult(
            name="outliers", passed=True, summary="not judged: candles out of order (see monotonic_index)"
        )
    jumps = find_price_jumps(candles, k=k)
    runs = find_zero_volume_runs(candles, zero_volume_run)
    if start is not None:
        since = utc_timestamp(start)
        jumps = jumps[jumps >= since]
        runs = [run for run in runs if run.last >= since]
    parts = []
    if len(jumps):
        parts.append(f"{len(jumps)} price jump{'s' if len(jumps) != 1 else ''} beyond {k:g} robust sigmas")
    if runs:
        parts.append(
            f"{len(runs)} run{'s' if len(runs) != 1 else ''} of ≥{zero_volume_run} zero-volume candles"
        )
    offending = [ts.isoformat() for ts in jumps[:10]] + [
        f"{run.first.isoformat()} → {run.last.isoformat()} ({run.length} zero-volume candles)"
        for run in runs[:10]
    ]
    return QualityResult(
        name="outliers",
        passed=not parts,
        summary="; ".join(parts) if parts else "no price jump or zero-volume run",
        offending=offending,
    )


def run_quality_checks(
    candles: pd.DataFrame,
    start: datetime,
    end: datetime,
    timeframe_ms: int,
    grid: CandleGrid | None = None,
    history: pd.DataFrame | None = None,
) -> list[QualityResult]:
    """Every check, in the order the UI lists them. `history`: the window's candles with those before it,
    so the outlier check has recent volatility to judge the window's first candles against."""
    in_window = candles if history is None else history
    return [
        check_duplicates(candles),
        check_monotonic(candles),
        check_ohlc(candles),
        check_grid(candles, grid or timeframe_ms),
        check_gaps(candles, start, end, timeframe_ms),
        check_outliers(in_window, start),
    ]
