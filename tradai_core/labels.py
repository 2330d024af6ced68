"""Training labels: what happens to the price over the next few candles.

A label at candle `t` looks `horizon` candles ahead: the forward return is close[t + horizon] / close[t]
- 1. Rows whose horizon reaches past the last candle seen (the label is not known yet) get no label, and
neither do rows whose horizon spans an exchange outage (a missing candle on the timeframe grid): their
"4-bar" return would really be a 9-hour one, and outages are exactly when prices jump.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradai_core import candles
from tradai_core.errors import ValidationError
from tradai_core.timeframes import timeframe_delta, timeframe_ms, timeframe_seconds

logger = logging.getLogger(__name__)

LabelKind = Literal["classification", "regression"]


class LabelSpec(BaseModel):
    """How labels are made; its `description` goes into lineage metadata."""

    model_config = ConfigDict(frozen=True)

    horizon: int = Field(default=4, ge=1, description="Candles ahead the label looks.")
    kind: LabelKind = Field(
        default="classification",
        description="classification: 1 if the forward return beats `threshold`, else 0; "
        "regression: the forward return itself.",
    )
    threshold: float = Field(
        default=0.002,
        ge=0.0,
        description="Forward return (a fraction) a trade must beat to count as a win, e.g. round-trip fees.",
    )
    timeframe: str = Field(default="1h", description="Candle timeframe, to tell outages from candles.")

    @field_validator("timeframe")
    @classmethod
    def _check_timeframe(cls, value: str) -> str:
        timeframe_seconds(value)
        return value

    @property
    def description(self) -> str:
        """One line saying exactly what the label is."""
        ahead = f"close {self.horizon} × {self.timeframe} candles ahead / close - 1"
        if self.kind == "classification":
            rule = f"1 if ({ahead}) > {self.threshold:.4%} else 0"
        else:
            rule = f"forward return: {ahead}"
        return (
            f"{self.kind} label, {rule}; rows whose horizon is not yet seen or spans a missing candle "
            "are dropped"
        )


def find_gaps(index: pd.DatetimeIndex, timeframe: str) -> pd.DataFrame:
    """Outages in a candle index as a frame: one row per gap with the last candle before it (`after`), the
    first candle after it (`resumes`) and how many candles are missing (`missing`). The gaps themselves
    are found by `tradai_core.candles.find_gaps`, the one rule for what counts as missing."""
    step = pd.Timedelta(timeframe_delta(timeframe))
    index = pd.DatetimeIndex(index)
    gaps = candles.find_gaps(index.as_unit("ns"), timeframe_ms(timeframe))  # it counts in ns
    unit, tz = index.unit, index.tz

    def stamps(moments: list[pd.Timestamp]) -> pd.DatetimeIndex:
        utc = pd.DatetimeIndex(moments, tz="UTC").as_unit(unit)
        return utc.tz_convert(tz) if tz is not None else utc.tz_localize(None)

    after = stamps([pd.Timestamp(g.first_missing) - step for g in gaps])
    resumes = stamps([pd.Timestamp(g.last_missing) + step for g in gaps])
    return pd.DataFrame(
        {"after": after, "resumes": resumes, "missing": np.array([g.missing for g in gaps], dtype="int64")}
    )


def _close_series(candles: pd.DataFrame) -> pd.Series:
    frame = candles
    if not isinstance(frame.index, pd.DatetimeIndex) and "date" in frame.columns:
        frame = frame.set_index("date")
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise ValidationError(
            "candles must be indexed by a tz-aware DatetimeIndex",
            "index the frame by its UTC `date` column (candle open time)",
        )
    if "close" not in frame.columns:
        raise ValidationError("candles lack a `close` column", "provide OHLCV candles")
    if not frame.index.is_monotonic_increasing or frame.index.has_duplicates:
        raise ValidationError("candle timestamps are not sorted and unique", "sort and de-duplicate first")
    close = frame["close"].astype("float64")
    if not (np.isfinite(close.to_numpy()).all() and (close.to_numpy() > 0).all()):
        raise ValidationError("candles contain non-positive, NaN or infinite closes", "repair those candles")
    return close


def make_labels(candles: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """Labels for `candles` (indexed by UTC `date`, or with a `date` column) under `spec`.

    Returns one row per labelled candle, indexed like the candles, with `forward_return` (float64),
    `label` (int8 for classification, float64 for regression) and `label_end`, the open time of the last
    candle the label uses (walk-forward purging needs it). Candles whose label is not known yet, or whose
    horizon spans a missing candle, get no row.
    """
    close = _close_series(candles)
    index = close.index
    horizon = spec.horizon
    step = pd.Timedelta(timeframe_delta(spec.timeframe))
    n_rows = len(close) - horizon
    if n_rows <= 0:
        return _empty_labels(index, spec)
    values = close.to_numpy()
    forward = values[horizon:] / values[:-horizon] - 1.0
    label_end = index[horizon:]
    contiguous = np.asarray((label_end - index[:n_rows]) == horizon * step)
    dropped = int((~contiguous).sum())
    if dropped:
        logger.info("dropped %d label rows whose %d-candle horizon spans an outage", dropped, horizon)
    kept = index[:n_rows][contiguous]
    forward = forward[contiguous]
    label = (forward > spec.threshold).astype("int8") if spec.kind == "classification" else forward.copy()
    return pd.DataFrame(
        {"forward_return": forward, "label": label, "label_end": label_end[contiguous]},
        index=kept,
    )


def _empty_labels(index: pd.DatetimeIndex, spec: LabelSpec) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "forward_return": np.array([], dtype="float64"),
            "label": np.array([], dtype="int8" if spec.kind == "classification" else "float64"),
            "label_end": index[:0],
        },
        index=index[:0],
    )
