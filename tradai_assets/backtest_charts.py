"""Charts of a finished backtest: per pair, candles with the strategy's indicators and its entries and
exits (a small PNG for the UI, an interactive HTML page for MLflow), and the monthly returns table.

The indicators come from the strategy's own `populate_indicators`, run in this process on the candles the
backtest read; a strategy whose indicators cannot be computed here still gets its candles and trades
charted (the reason is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from dagster import MetadataValue

from strategies.validation import load_strategy_class
from tradai_assets.plots import ChartTrade, png_markdown, trade_chart_figure, trade_chart_html
from tradai_core.backtest_result import BacktestResult
from tradai_core.monthly_returns import monthly_returns, monthly_returns_markdown
from tradai_core.settings import pair_slug

logger = logging.getLogger(__name__)
_SIGNAL_COLUMNS = ("enter_long", "exit_long", "enter_short", "exit_short", "enter_tag", "exit_tag")


def strategy_indicators(
    name: str, folder: Path, candles: Mapping[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """Per pair, the numeric columns the strategy's `populate_indicators` adds (indexed like the candles);
    empty frames when they cannot be computed in this process. Indicators are drawn with the strategy's
    default parameters (the markers are the backtest's own trades, whatever its parameters)."""
    out: dict[str, pd.DataFrame] = {pair: pd.DataFrame(index=frame.index) for pair, frame in candles.items()}
    try:
        strategy = load_strategy_class(name, folder)({})
        for pair, frame in candles.items():
            source = frame.reset_index()
            analyzed = strategy.populate_indicators(source.copy(), {"pair": pair})
            added = [
                column
                for column in analyzed.columns
                if column not in source.columns
                and column not in _SIGNAL_COLUMNS
                and pd.api.types.is_float_dtype(analyzed[column])
            ]
            out[pair] = analyzed[added].set_index(frame.index)
    except Exception as error:  # the chart is a view of the report: it must not fail the backtest
        logger.warning("indicators of %s not charted (%s: %s)", name, type(error).__name__, error)
    return out


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
    """Per pair, a PNG chart (metadata `chart_<pair>`) and an HTML page (`report/charts/<pair>.html`), both
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
        pages[f"report/charts/{pair_slug(pair)}.html"] = trade_chart_html(traded, extra, trades, title)
    return metadata, pages


def monthly_returns_metadata(result: BacktestResult) -> MetadataValue:
    """The monthly returns table of the realized equity curve."""
    equity = result.equity_frame()["equity"]
    start = result.metrics.starting_balance
    return MetadataValue.md(
        monthly_returns_markdown(monthly_returns(equity, start), start, result.stake_currency)
    )
