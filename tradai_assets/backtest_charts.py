"""Charts of a finished backtest: per pair, candles with the strategy's indicators and its entries and
exits (a small PNG for the UI, an interactive HTML page for MLflow), and the monthly returns table.

The indicators are the float columns the strategy's own `populate_indicators` added during the backtest
itself, in the worker child that ran it (`FreqtradeResource.backtest_charted`: computed once, with the
backtest's parameters, and Freqtrade never runs in this process); when the child could not write them the
pair still gets its candles and trades charted (the reason is in the engine's log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd
from dagster import MetadataValue

from tradai_assets.backtest_runner import chart_artifact
from tradai_assets.plots import ChartTrade, png_markdown, trade_chart_figure, trade_chart_html
from tradai_core.backtest_result import BacktestResult
from tradai_core.monthly_returns import monthly_returns, monthly_returns_markdown
from tradai_core.settings import pair_slug

logger = logging.getLogger(__name__)


def chart_trades(result: BacktestResult, pair: str) -> list[ChartTrade]:
    """The pair's trades as chart markers."""
    return [
        ChartTrade(
            open_date=t.open_date,
            open_rate=t.open_rate,
            close_date=t.close_date,
            close_rate=t.close_rate,
            profit_ratio=t.profit_ratio,
            exit_reason=t.exit_reason,
        )
        for t in result.trades
        if t.pair == pair
    ]


def trade_charts(
    result: BacktestResult,
    candles: Mapping[str, pd.DataFrame],
    indicators: Mapping[str, pd.DataFrame],
    trading_start: pd.Timestamp,
) -> tuple[dict[str, MetadataValue], dict[str, str]]:
    """Per pair, a PNG chart (metadata `chart_<pair>`) and an HTML page (`backtest/charts/<pair>.html`), both
    on the traded window (startup candles left out)."""
    metadata: dict[str, MetadataValue] = {}
    pages: dict[str, str] = {}
    for pair, frame in candles.items():
        traded = frame[frame.index >= trading_start]
        extra = indicators.get(pair, pd.DataFrame(index=frame.index)).reindex(traded.index)
        trades = chart_trades(result, pair)
        title = f"{result.strategy} {pair} {result.timerange}: {len(trades)} trades"
        metadata[f"chart_{pair_slug(pair)}"] = MetadataValue.md(
            png_markdown(trade_chart_figure(traded, extra, trades, title), f"{pair} trades")
        )
        pages[chart_artifact(pair_slug(pair))] = trade_chart_html(traded, extra, trades, title)
    return metadata, pages


def monthly_returns_metadata(result: BacktestResult) -> MetadataValue:
    """The monthly returns table of the realized equity curve."""
    equity = result.equity_frame()["equity"]
    start = result.metrics.starting_balance
    return MetadataValue.md(
        monthly_returns_markdown(monthly_returns(equity, start), start, result.stake_currency)
    )
