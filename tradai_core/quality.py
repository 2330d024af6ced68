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

from tradai_core.candles import OHLCV_COLUMNS, Gap, missing_ranges


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
    """high ≥ max(open, close), low ≤ min(open, close), all values finite and non-negative."""
    values = candles.loc[:, list(OHLCV_COLUMNS)].to_numpy(dtype="float64")
    open_, high, low, close = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    with np.errstate(invalid="ignore"):
        mask = (
            ~np.isfinite(values).all(axis=1)
            | (values < 0).any(axis=1)
            | (high < np.maximum(open_, close))
            | (low > np.minimum(open_, close))
        )
    count = int(mask.sum())
    summary = "every candle consistent" if count == 0 else f"{count} inconsistent candles"
    return QualityResult(
        name="ohlc_consistent", passed=count == 0, summary=summary, offending=_first(candles.index, mask)
    )


def check_grid(candles: pd.DataFrame, timeframe_ms: int) -> QualityResult:
    """Every open time sits on the timeframe grid (e.g. on the hour for 1h)."""
    mask = (candles.index.asi8 // 1_000_000) % timeframe_ms != 0
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


def run_quality_checks(
    candles: pd.DataFrame, start: datetime, end: datetime, timeframe_ms: int
) -> list[QualityResult]:
    """Every check, in the order the UI lists them."""
    return [
        check_duplicates(candles),
        check_monotonic(candles),
        check_ohlc(candles),
        check_grid(candles, timeframe_ms),
        check_gaps(candles, start, end, timeframe_ms),
    ]
