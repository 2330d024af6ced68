"""What a backtest needs before it runs: its window, the candles that window needs (startup included),
and whether the store covers them. Plain logic; the backtest-plan asset asks Dagster and ArcticDB."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from tradai_core.errors import ValidationError
from tradai_core.timeframes import timeframe_delta


class BacktestWindow(BaseModel):
    """The traded period `[start, end)` (days) and the first candle the strategy's startup needs."""

    model_config = ConfigDict(frozen=True)

    start: date
    end: date
    data_start: datetime

    @property
    def timerange(self) -> str:
        """Freqtrade's `YYYYMMDD-YYYYMMDD` for the traded period."""
        return f"{self.start:%Y%m%d}-{self.end:%Y%m%d}"

    @property
    def data_days(self) -> list[date]:
        """Every UTC day whose candles the backtest reads (startup days included)."""
        first = self.data_start.date()
        return [first + timedelta(days=i) for i in range((self.end - first).days)]


def plan_window(start: date, end: date, timeframe: str, startup_candles: int) -> BacktestWindow:
    """The window of a backtest trading `[start, end)` whose strategy needs `startup_candles` before it."""
    if start >= end:
        raise ValidationError(f"backtest window {start} → {end} is empty", "give a start before the end")
    data_start = datetime.combine(start, datetime.min.time(), tzinfo=UTC) - startup_candles * timeframe_delta(
        timeframe
    )
    return BacktestWindow(start=start, end=end, data_start=data_start)


def missing_day_ranges(materialized: Iterable[str], days: list[date]) -> list[tuple[date, date]]:
    """Runs of `days` (first, last) whose daily partition key (`YYYY-MM-DD`) is not in `materialized`."""
    have = set(materialized)
    ranges: list[tuple[date, date]] = []
    for day in days:
        if day.isoformat() in have:
            continue
        if ranges and ranges[-1][1] == day - timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def describe_day_ranges(ranges: list[tuple[date, date]]) -> str:
    """`2021-01-01 → 2021-01-03, 2021-02-10` for messages."""
    return ", ".join(f"{a}" if a == b else f"{a} → {b}" for a, b in ranges)
