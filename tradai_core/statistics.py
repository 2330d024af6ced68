"""Statistics that a backtest's trades may leave undefined, and why.

Freqtrade reports Sharpe, Sortino, Calmar and SQN as −100 when their denominator is zero or NaN (one
trade, no losing trade, no drawdown: `freqtrade.data.metrics._calculate_annualized_ratio` and
`calculate_sqn`), and as 0 when there is no trade at all. Neither is a measurement: a −100 Sharpe looks
like a catastrophe and a 0 like a flat strategy. Here such a statistic is `None` with an
`UndefinedStatistic` saying why, decided from the trades with Freqtrade's own formulas, so the two agree.

A denominator that is not zero but below what the backtest can measure is no measurement either: two losing
trades that both exit at the stoploss differ by a rounding error, and Freqtrade's Sortino divides by that
(3053 in a two-week window); a drawdown of 0.0008 % makes its Calmar 119 542. The backtest's **resolution**
is the smallest account move it measures: the round-trip fee of its median trade, as a fraction of the
starting balance (`fee_resolution`; 0.2 % fees on a 10 % stake: 0.02 % of the account). A difference
between trades, or a fall of the account, smaller than what one trade pays in fees is indistinguishable
from the cost of trading at all. So Sharpe and SQN (dispersion of trade returns), Sortino (dispersion of
the losing ones) and Calmar (account drawdown) are undefined when their denominator is below the
resolution, and the reason states both numbers. Fee-free backtests fall back to `MIN_RESOLUTION`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

FREQTRADE_SENTINEL = -100.0
"""What Freqtrade reports for a ratio whose denominator is zero or NaN."""
GUARDED_STATISTICS = ("sharpe", "sortino", "calmar", "sqn")
"""Freqtrade statistics that use the sentinel."""


MIN_RESOLUTION = 1e-6
"""Resolution of a fee-free backtest: a millionth of the account (0.01 on a 10 000 balance), below any price
tick of a stake; a denominator under it is a floating-point remainder, not a risk."""


def fee_resolution(fees_abs: Sequence[float], starting_balance: float) -> float:
    """The smallest account move a backtest measures: its median trade's round-trip fee (stake currency,
    `fees_abs` one entry per trade) over the starting balance, never below `MIN_RESOLUTION`."""
    fees = np.asarray(fees_abs, dtype=float)
    if fees.size == 0 or starting_balance <= 0:
        return MIN_RESOLUTION
    return max(float(np.median(np.abs(fees))) / starting_balance, MIN_RESOLUTION)


class UndefinedStatistic(BaseModel):
    """A statistic its input does not define (`name`), and why (`reason`, for people)."""

    model_config = ConfigDict(frozen=True)

    name: str
    reason: str


def _trades(count: int, what: str = "trade") -> str:
    return f"{count} {what}" + ("" if count == 1 else "s")


def undefined_reasons(
    profits_abs: Sequence[float],
    starting_balance: float,
    max_drawdown_account: float,
    reported: Mapping[str, float | None] | None = None,
    *,
    fees_abs: Sequence[float] = (),
) -> dict[str, UndefinedStatistic]:
    """Which of Sharpe, Sortino, Calmar and SQN the trades leave undefined (name → why).

    `profits_abs` are the closed trades' `profit_abs` and `fees_abs` their round-trip fees; the
    denominators are Freqtrade's (population standard deviation of per-trade returns for Sharpe, of the
    losing ones for Sortino, account drawdown for Calmar, sample standard deviation for SQN), and each is
    undefined when zero, NaN or below the backtest's resolution (`fee_resolution`, see the module). A
    `reported` value equal to Freqtrade's sentinel is undefined too, whatever the trades say.
    """
    returns = np.asarray(profits_abs, dtype=float) / starting_balance
    resolution = fee_resolution(fees_abs, starting_balance)
    count = returns.size
    out: dict[str, str] = {}
    if count == 0:
        out = {name: "no trades in the window" for name in GUARDED_STATISTICS}
    else:
        spread = float(np.std(returns))
        if not _usable(spread):
            out["sharpe"] = (
                "one trade: its return has no variance"
                if count == 1
                else f"all {_trades(count)} returned the same: no variance"
            )
        elif spread < resolution:
            out["sharpe"] = _below(f"the {_trades(count)} returned", spread, resolution, "variance")
        losses = returns[returns < 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            downside = float(np.std(losses)) if losses.size else float("nan")
        if not _usable(downside):
            out["sortino"] = (
                "no losing trade: no downside deviation"
                if losses.size == 0
                else "one losing trade: no downside deviation"
                if losses.size == 1
                else f"all {_trades(losses.size, 'losing trade')} lost the same: no downside deviation"
            )
        elif downside < resolution:
            out["sortino"] = _below(
                f"the {_trades(losses.size, 'losing trade')} lost", downside, resolution, "downside deviation"
            )
        if max_drawdown_account == 0:
            out["calmar"] = "no drawdown in the window"
        elif 0 < max_drawdown_account < resolution:
            out["calmar"] = (
                f"drawdown {_pct(max_drawdown_account)} of the account is below one round-trip fee "
                f"({_pct(resolution)}): no measurable drawdown"
            )
        sample_spread = float(pd.Series(returns).std())
        if not _usable(sample_spread):
            out["sqn"] = (
                "one trade: no variance across trades"
                if count == 1
                else f"all {_trades(count)} returned the same: no variance"
            )
        elif sample_spread < resolution:
            out["sqn"] = _below(f"the {_trades(count)} returned", sample_spread, resolution, "variance")
    for name, value in (reported or {}).items():
        if name in GUARDED_STATISTICS and value == FREQTRADE_SENTINEL and name not in out:
            out[name] = "Freqtrade reports it undefined (−100: zero or undefined denominator)"
    return {name: UndefinedStatistic(name=name, reason=why) for name, why in out.items()}


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2g} %"


def _below(who: str, deviation: float, resolution: float, what: str) -> str:
    return (
        f"{who} the same within one round-trip fee (deviation {_pct(deviation)} of the account < "
        f"{_pct(resolution)}): no measurable {what}"
    )


def _usable(denominator: float) -> bool:
    return denominator != 0 and not np.isnan(denominator)


def format_statistic(
    value: float | None, undefined: UndefinedStatistic | None = None, spec: str = ".2f"
) -> str:
    """`1.23`, or `n/a (one trade: its return has no variance)` for an undefined statistic."""
    if value is None:
        return f"n/a ({undefined.reason})" if undefined is not None else "n/a"
    return format(value, spec)
