"""Typed backtest results, parsed from Freqtrade's own backtest statistics.

Every metric here is the number Freqtrade's `generate_backtest_stats` computed (so it equals what the stock
`freqtrade backtesting` CLI reports for the same inputs), except two that Freqtrade does not report and
that are derived from its trade list, documented where they are computed:

- the **equity curve**: realized (closed-trade) balance — the starting balance, then the balance after the
  trades closing at each distinct close time (starting balance + cumulative `profit_abs`). It is the curve
  Freqtrade's own drawdown metrics are computed on, so its deepest fall equals `max_drawdown_abs`;
- **market exposure**: the fraction of the backtest period during which at least one position was open.

Sharpe, Sortino, Calmar and SQN are `None` when the trades leave them undefined (Freqtrade's −100 or
no-trade 0), with the reason in `BacktestMetrics.undefined` (see `tradai_core.statistics`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, JsonValue, computed_field

from tradai_core.errors import BacktestError
from tradai_core.statistics import UndefinedStatistic, format_statistic, undefined_reasons


class Trade(BaseModel):
    """One closed (or force-closed at the end of the period) trade, as Freqtrade reports it."""

    model_config = ConfigDict(frozen=True)

    pair: str
    open_date: datetime
    close_date: datetime
    open_rate: float
    close_rate: float
    amount: float
    stake_amount: float
    fee_open: float
    fee_close: float
    profit_abs: float = Field(description="Profit in stake currency, fees included.")
    profit_ratio: float = Field(description="Profit relative to the stake, fees included.")
    exit_reason: str
    enter_tag: str | None = None
    is_short: bool = False
    duration_minutes: int


class EquityPoint(BaseModel):
    """Realized balance in stake currency after every trade closed up to `date`."""

    model_config = ConfigDict(frozen=True)

    date: datetime
    equity: float


class BacktestMetrics(BaseModel):
    """The numbers a quant reads first; ratios are fractions (0.05 = 5 %)."""

    model_config = ConfigDict(frozen=True)

    starting_balance: float
    final_balance: float
    total_profit_abs: float
    total_profit_ratio: float
    cagr: float
    sharpe: float | None = Field(description="None when undefined; see `undefined`.")
    sortino: float | None = Field(description="None when undefined; see `undefined`.")
    calmar: float | None = Field(description="None when undefined; see `undefined`.")
    sqn: float | None = Field(default=None, description="System Quality Number; None when undefined.")
    max_drawdown_ratio: float = Field(description="Freqtrade's max_drawdown_account.")
    max_drawdown_abs: float
    win_rate: float
    profit_factor: float
    expectancy: float = Field(description="Mean profit per trade in stake currency.")
    expectancy_ratio: float
    trade_count: int
    wins: int
    draws: int
    losses: int
    avg_duration_s: float
    market_exposure: float = Field(description="Fraction of the period with at least one open position.")
    market_change: float = Field(description="Mean buy-and-hold change of the pairs over the period.")
    backtest_start: datetime
    backtest_end: datetime
    undefined: dict[str, UndefinedStatistic] = Field(
        default_factory=dict, description="Statistics the trades leave undefined (None above), and why."
    )

    def display(self, name: str, spec: str = ".2f") -> str:
        """A statistic for people: its value, or `n/a (why)` when undefined."""
        return format_statistic(getattr(self, name), self.undefined.get(name), spec)

    def defined_numbers(self) -> dict[str, float]:
        """Every numeric metric that is defined, as floats (what MLflow may log)."""
        return {
            key: float(value)
            for key, value in self.model_dump(exclude={"undefined"}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_profit_pct(self) -> float:
        """Total profit in percent of the starting balance."""
        return self.total_profit_ratio * 100

    @computed_field  # type: ignore[prop-decorator]
    @property
    def avg_duration(self) -> timedelta:
        """Mean time a trade was held."""
        return timedelta(seconds=self.avg_duration_s)


class BacktestResult(BaseModel):
    """A finished backtest: what ran, its trades, its equity curve and its metrics (frozen)."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    timeframe: str
    timerange: str
    pairs: tuple[str, ...]
    stake_currency: str
    freqtrade_version: str
    trades: tuple[Trade, ...]
    equity_curve: tuple[EquityPoint, ...]
    metrics: BacktestMetrics
    freqtrade_stats: dict[str, JsonValue] = Field(
        description="Freqtrade's full statistics for the strategy (as its CLI exports them)."
    )

    def trades_frame(self) -> pd.DataFrame:
        """The trades as a DataFrame, one row per trade."""
        return pd.DataFrame([t.model_dump() for t in self.trades], columns=list(Trade.model_fields))

    def equity_frame(self) -> pd.DataFrame:
        """The equity curve as a DataFrame indexed by date."""
        frame = pd.DataFrame([p.model_dump() for p in self.equity_curve], columns=["date", "equity"])
        return frame.set_index("date")


def _utc(value: str | int | float) -> datetime:
    if isinstance(value, int | float):  # Freqtrade timestamps are milliseconds
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


def parse_trade(raw: dict[str, Any]) -> Trade:
    """A Trade from one entry of Freqtrade's `trades` list."""
    return Trade(
        pair=raw["pair"],
        open_date=_utc(raw["open_timestamp"]),
        close_date=_utc(raw["close_timestamp"]),
        open_rate=raw["open_rate"],
        close_rate=raw["close_rate"],
        amount=raw["amount"],
        stake_amount=raw["stake_amount"],
        fee_open=raw["fee_open"],
        fee_close=raw["fee_close"],
        profit_abs=raw["profit_abs"],
        profit_ratio=raw["profit_ratio"],
        exit_reason=raw["exit_reason"],
        enter_tag=raw.get("enter_tag") or None,
        is_short=bool(raw.get("is_short", False)),
        duration_minutes=int(raw["trade_duration"]),
    )


def equity_curve_from_trades(
    trades: tuple[Trade, ...] | list[Trade], starting_balance: float, start: datetime
) -> tuple[EquityPoint, ...]:
    """Realized equity: `starting_balance` at `start`, then one point per distinct trade close time.

    Each point is the starting balance plus the summed `profit_abs` of every trade closed at or before it
    (Freqtrade's closed-trade balance, on which its drawdown metrics are computed).
    """
    points = [EquityPoint(date=start, equity=starting_balance)]
    if not trades:
        return tuple(points)
    frame = pd.DataFrame({"date": [t.close_date for t in trades], "profit": [t.profit_abs for t in trades]})
    per_close = frame.groupby("date", sort=True)["profit"].sum().cumsum() + starting_balance
    points += [EquityPoint(date=d.to_pydatetime(), equity=float(v)) for d, v in per_close.items()]
    return tuple(points)


def max_drawdown_abs(curve: tuple[EquityPoint, ...]) -> float:
    """Largest fall of an equity curve from a previous peak, in stake currency."""
    equity = pd.Series([p.equity for p in curve], dtype=float)
    return float((equity.cummax() - equity).max()) if len(equity) else 0.0


def market_exposure(trades: tuple[Trade, ...] | list[Trade], start: datetime, end: datetime) -> float:
    """Fraction of [start, end] during which at least one position was open (union of trade intervals)."""
    total = (end - start).total_seconds()
    if total <= 0 or not trades:
        return 0.0
    intervals = sorted((max(t.open_date, start), min(t.close_date, end)) for t in trades)
    covered = 0.0
    current_start, current_end = intervals[0]
    for open_at, close_at in intervals[1:]:
        if open_at <= current_end:
            current_end = max(current_end, close_at)
        else:
            covered += max((current_end - current_start).total_seconds(), 0.0)
            current_start, current_end = open_at, close_at
    covered += max((current_end - current_start).total_seconds(), 0.0)
    return covered / total


def parse_backtest_stats(stats: dict[str, Any], strategy: str, freqtrade_version: str) -> BacktestResult:
    """A BacktestResult from Freqtrade's statistics for one strategy (`results['strategy'][name]`).

    Raises BacktestError if the statistics lack a field (e.g. written by another Freqtrade version).
    """
    try:
        trades = tuple(parse_trade(raw) for raw in stats["trades"])
        start, end = _utc(stats["backtest_start_ts"]), _utc(stats["backtest_end_ts"])
        starting_balance = float(stats["starting_balance"])
        drawdown = float(stats.get("max_drawdown_account", 0.0))
        undefined = undefined_reasons(
            [t.profit_abs for t in trades],
            starting_balance,
            drawdown,
            {name: stats.get(name) for name in ("sharpe", "sortino", "calmar", "sqn")},
        )

        def defined(name: str) -> float | None:
            value = stats.get(name) if name == "sqn" else stats[name]  # sqn: older stats lack it
            return None if name in undefined or value is None else float(value)

        metrics = BacktestMetrics(
            starting_balance=starting_balance,
            final_balance=stats["final_balance"],
            total_profit_abs=stats["profit_total_abs"],
            total_profit_ratio=stats["profit_total"],
            cagr=stats["cagr"],
            sharpe=defined("sharpe"),
            sortino=defined("sortino"),
            calmar=defined("calmar"),
            sqn=defined("sqn"),
            max_drawdown_ratio=drawdown,
            max_drawdown_abs=stats.get("max_drawdown_abs", 0.0),
            win_rate=stats["winrate"],
            profit_factor=stats["profit_factor"],
            expectancy=stats["expectancy"],
            expectancy_ratio=stats["expectancy_ratio"],
            trade_count=stats["total_trades"],
            wins=stats["wins"],
            draws=stats["draws"],
            losses=stats["losses"],
            # Freqtrade leaves the holding-time fields out when there is no trade
            avg_duration_s=stats["holding_avg_s"] if trades else 0.0,
            market_exposure=market_exposure(trades, start, end),
            market_change=stats["market_change"],
            backtest_start=start,
            backtest_end=end,
            undefined=undefined,
        )
        return BacktestResult(
            strategy=strategy,
            timeframe=stats["timeframe"],
            timerange=stats.get("timerange", ""),
            pairs=tuple(stats["pairlist"]),
            stake_currency=stats["stake_currency"],
            freqtrade_version=freqtrade_version,
            trades=trades,
            equity_curve=equity_curve_from_trades(trades, starting_balance, start),
            metrics=metrics,
            freqtrade_stats=stats,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BacktestError(
            f"Freqtrade {freqtrade_version} statistics for {strategy} cannot be read: {exc!r}",
            "the Freqtrade version is pinned; if it changed, update tradai_core.backtest_result",
        ) from exc
