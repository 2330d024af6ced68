"""Timeframe strings (`5m`, `1h`, `1d`, `1w`) and their lengths, and the grid candles open on.

The grid depends on the exchange as well as the timeframe: minutes, hours and days open on multiples of
their length since the Unix epoch everywhere, but a week does not. The epoch (1970-01-01) was a Thursday,
while Binance, Bybit and OKX open a week on Monday 00:00 UTC; a month opens on its first day.
"""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tradai_core.errors import ValidationError

_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIMEFRAME = re.compile(r"^(\d+)([mhdw])$")
_MONTHLY = re.compile(r"^(\d+)M$")
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-05, the first Monday after the (Thursday) epoch
# Where a week opens, as an offset from the epoch's Thursday; exchanges not listed open on Monday.
WEEK_OFFSET_MS: dict[str, int] = {
    "binance": MONDAY_OFFSET_MS,
    "binanceus": MONDAY_OFFSET_MS,
    "bybit": MONDAY_OFFSET_MS,
    "okx": MONDAY_OFFSET_MS,
    "kraken": 0,  # Kraken's 10080-minute candles sit on the epoch grid (Thursday)
}
DEFAULT_WEEK_OFFSET_MS = MONDAY_OFFSET_MS


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle of `timeframe` in seconds; rejects anything that is not `<n><m|h|d|w>`."""
    match = _TIMEFRAME.match(timeframe)
    if match is None or int(match.group(1)) == 0:
        raise ValidationError(
            f"timeframe {timeframe!r} is not valid", "use a number and a unit, like 5m, 1h, 4h or 1d"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle of `timeframe` in milliseconds (the unit exchanges use)."""
    return timeframe_seconds(timeframe) * 1000


def timeframe_delta(timeframe: str) -> timedelta:
    """Length of one candle of `timeframe` as a timedelta."""
    return timedelta(seconds=timeframe_seconds(timeframe))


class CandleGrid(BaseModel):
    """The open times candles of one timeframe may have on one exchange.

    Fixed-length timeframes: `offset_ms + n × step_ms`. Monthly (`months` > 0): 00:00 UTC on the first day
    of every `months`-th month counted from January 1970.
    """

    model_config = ConfigDict(frozen=True)

    timeframe: str
    step_ms: int
    offset_ms: int = 0
    months: int = 0

    def on_grid(self, stamps_ms: np.ndarray) -> np.ndarray:
        """Boolean mask: which open times (int ms) sit on the grid."""
        stamps_ms = np.asarray(stamps_ms, dtype="int64")
        if not self.months:
            return (stamps_ms - self.offset_ms) % self.step_ms == 0
        moments = pd.to_datetime(stamps_ms, unit="ms", utc=True)
        first_of_month = (moments.day == 1) & (stamps_ms % DAY_MS == 0)
        month_index = (moments.year - 1970) * 12 + (moments.month - 1)
        return np.asarray(first_of_month & (month_index % self.months == 0))

    def first_at_or_after(self, moment_ms: int) -> int:
        """The first grid point at or after `moment_ms` (where paging a range starts)."""
        if not self.months:
            return self.offset_ms + -(-(moment_ms - self.offset_ms) // self.step_ms) * self.step_ms
        moment = pd.Timestamp(moment_ms, unit="ms", tz="UTC")
        month = pd.Timestamp(year=moment.year, month=moment.month, day=1, tz="UTC")
        while (
            int(month.value // 1_000_000) < moment_ms
            or not self.on_grid(np.array([month.value // 1_000_000]))[0]
        ):
            month += pd.DateOffset(months=1)
        return int(month.value // 1_000_000)

    def describe(self) -> str:
        """The rule a candle breaks when it is off this grid, as an error names it."""
        if self.months:
            return f"timestamp on the {self.timeframe} grid (00:00 UTC on the first day of a month)"
        if self.step_ms % WEEK_MS == 0:
            day = pd.Timestamp(self.offset_ms, unit="ms", tz="UTC").day_name()
            return f"timestamp on the {self.timeframe} grid (weeks open {day} 00:00 UTC)"
        return f"timestamp on the {self.step_ms // 1000}s timeframe grid"


def fixed_grid(step_ms: int) -> CandleGrid:
    """The epoch grid of a fixed step (right for minutes, hours and days on every exchange)."""
    return CandleGrid(timeframe=f"{step_ms // 1000}s", step_ms=step_ms)


def candle_grid(timeframe: str, exchange_id: str = "binance") -> CandleGrid:
    """The grid candles of `timeframe` open on at `exchange_id`: weeks per exchange, months by calendar."""
    monthly = _MONTHLY.match(timeframe)
    if monthly is not None and int(monthly.group(1)) > 0:
        return CandleGrid(timeframe=timeframe, step_ms=31 * DAY_MS, months=int(monthly.group(1)))
    step = timeframe_ms(timeframe)
    offset = 0
    if timeframe.endswith("w"):
        offset = WEEK_OFFSET_MS.get(exchange_id, DEFAULT_WEEK_OFFSET_MS)
    return CandleGrid(timeframe=timeframe, step_ms=step, offset_ms=offset)
