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


class PairSelection(BaseModel):
    """The pairs a backtest trades, and the strategy-default pairs it left out because the pair universe
    (`TRADAI_PAIRS`) has no candles for them (pair → why)."""

    model_config = ConfigDict(frozen=True)

    pairs: tuple[str, ...]
    dropped: dict[str, str]
    explicit: bool

    def describe(self) -> str:
        """`BTC/USDT, ETH/USDT (run config)` plus the dropped pairs and why, for metadata and the log."""
        source = "run config" if self.explicit else "strategy default"
        text = f"{', '.join(self.pairs)} ({source})"
        if self.dropped:
            text += "; dropped " + "; ".join(f"{pair}: {why}" for pair, why in self.dropped.items())
        return text


def select_pairs(
    requested: Iterable[str] | None, default: Iterable[str], universe: Iterable[str]
) -> PairSelection:
    """The pairs to backtest: `requested` (run config) if given, else the strategy's `default`.

    Default pairs outside `universe` are dropped and reported; requested pairs outside it are an error (the
    run asked for candles the platform does not ingest). Raises ValidationError when nothing is left.
    """
    members = tuple(universe)
    universe_text = ",".join(members)
    if requested is not None:
        chosen = tuple(requested)
        if not chosen:
            raise ValidationError(
                "run config pairs is empty", "name at least one pair, or leave pairs out for the strategy's"
            )
        if len(set(chosen)) != len(chosen):
            raise ValidationError(f"run config pairs repeat: {', '.join(chosen)}", "name each pair once")
        outside = [pair for pair in chosen if pair not in members]
        if outside:
            raise ValidationError(
                f"run config pairs {', '.join(outside)} are not in the pair universe "
                f"(TRADAI_PAIRS={universe_text})",
                "add them to TRADAI_PAIRS and materialize their ohlcv partitions, or drop them from pairs",
            )
        return PairSelection(pairs=chosen, dropped={}, explicit=True)
    wanted = tuple(default)
    kept = tuple(pair for pair in wanted if pair in members)
    dropped = {
        pair: f"not in the pair universe (TRADAI_PAIRS={universe_text})"
        for pair in wanted
        if pair not in kept
    }
    if not kept:
        raise ValidationError(
            f"none of the strategy's pairs ({', '.join(wanted)}) is in the pair universe "
            f"(TRADAI_PAIRS={universe_text})",
            "name pairs from the universe in the run config's pairs, or add the strategy's to TRADAI_PAIRS",
        )
    return PairSelection(pairs=kept, dropped=dropped, explicit=False)


def parse_timerange(timerange: str) -> tuple[str | None, str | None]:
    """Freqtrade's `YYYYMMDD-YYYYMMDD` (either side may be empty) as ISO days `(start, end)`."""
    first, sep, last = timerange.partition("-")
    days: list[str | None] = []
    for part in (first, last):
        try:
            days.append(datetime.strptime(part, "%Y%m%d").date().isoformat() if part else None)
        except ValueError:
            days.append("invalid")
    if not sep or "invalid" in days or days == [None, None]:
        raise ValidationError(
            f"timerange {timerange!r} is not YYYYMMDD-YYYYMMDD", "write e.g. 20220801-20220901 or 20220801-"
        )
    return days[0], days[1]
