"""Statistics that a backtest's trades may leave undefined, and why.

Freqtrade reports Sharpe, Sortino, Calmar and SQN as −100 when their denominator is zero or NaN (one
trade, no losing trade, no drawdown: `freqtrade.data.metrics._calculate_annualized_ratio` and
`calculate_sqn`), and as 0 when there is no trade at all. Neither is a measurement: a −100 Sharpe looks
like a catastrophe and a 0 like a flat strategy. Here such a statistic is `None` with an
`UndefinedStatistic` saying why, decided from the trades with Freqtrade's own formulas, so the two agree.
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
) -> dict[str, UndefinedStatistic]:
    """Which of Sharpe, Sortino, Calmar and SQN the trades leave undefined (name → why).

    `profits_abs` are the closed trades' `profit_abs`; the conditions are Freqtrade's (population standard
    deviation of per-trade returns for Sharpe, of the losing ones for Sortino, zero account drawdown for
    Calmar, sample standard deviation for SQN). A `reported` value equal to Freqtrade's sentinel is
    undefined too, whatever the trades say.
    """
    returns = np.asarray(profits_abs, dtype=float) / starting_balance
    count = returns.size
    out: dict[str, str] = {}
    if count == 0:
        out = {name: "no trades in the window" for name in GUARDED_STATISTICS}
    else:
        if not _usable(float(np.std(returns))):
            out["sharpe"] = (
                "one trade: its return has no variance"
                if count == 1
                else f"all {_trades(count)} returned the same: no variance"
            )
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
        if max_drawdown_account == 0:
            out["calmar"] = "no drawdown in the window"
        if not _usable(float(pd.Series(returns).std())):
            out["sqn"] = (
                "one trade: no variance across trades"
                if count == 1
                else f"all {_trades(count)} returned the same: no variance"
            )
    for name, value in (reported or {}).items():
        if name in GUARDED_STATISTICS and value == FREQTRADE_SENTINEL and name not in out:
            out[name] = "Freqtrade reports it undefined (−100: zero or undefined denominator)"
    return {name: UndefinedStatistic(name=name, reason=why) for name, why in out.items()}


def _usable(denominator: float) -> bool:
    return denominator != 0 and not np.isnan(denominator)


def format_statistic(
    value: float | None, undefined: UndefinedStatistic | None = None, spec: str = ".2f"
) -> str:
    """`1.23`, or `n/a (one trade: its return has no variance)` for an undefined statistic."""
    if value is None:
        return f"n/a ({undefined.reason})" if undefined is not None else "n/a"
    return format(value, spec)
