"""The charts of a finished backtest, drawn from its result: per pair, candles with the strategy's
indicators and its entries and exits (a small PNG for the UI, an interactive HTML page for MLflow), and the
equity curve over its drawdown.

Plain data in, images and pages out, so they can be drawn wherever the data is: in the worker child that
ran the backtest (which has matplotlib loaded already, beside the Dagster process's MLflow work), or in the
Dagster process when that child could not draw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from pydantic import BaseModel, ConfigDict

from tradai_core.backtest_result import BacktestResult
from tradai_core.plots import (
    ChartTrade,
    equity_and_drawdown_figure,
    png_markdown,
    trade_chart_figure,
    trade_chart_html,
)


class BacktestCharts(BaseModel):
    """A backtest's drawn charts: per pair (in the backtest's pair order) a markdown PNG and an HTML page,
    and the equity-and-drawdown PNG as markdown."""

    model_config = ConfigDict(frozen=True)

    images: dict[str, str]
    pages: dict[str, str]
    equity: str


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


def indicator_frames(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per pair, the indicator columns of `table` (columns `pair`, `date` and the indicators, all pairs
    stacked) indexed by candle open time (UTC, ns, named `date`)."""
    if table.empty:
        return {}
    table = table.assign(date=pd.to_datetime(table["date"], utc=True).dt.as_unit("ns"))
    return {
        str(pair): frame.drop(columns="pair").set_index("date")
        for pair, frame in table.groupby("pair", sort=False)
    }


def draw_backtest_charts(
    result: BacktestResult,
    candles: Mapping[str, pd.DataFrame],
    indicators: Mapping[str, pd.DataFrame],
    trading_start: pd.Timestamp,
    equity_title: str,
) -> BacktestCharts:
    """Every chart of the report on the traded window (startup candles left out): `candles` per pair (a UTC
    DatetimeIndex), `indicators` per pair as the strategy computed them during the backtest (a pair
    without gets candles and trades only)."""
    images, pages = draw_pair_charts(result, candles, indicators, trading_start)
    return BacktestCharts(images=images, pages=pages, equity=draw_equity_chart(result, equity_title))


def draw_pair_charts(
    result: BacktestResult,
    candles: Mapping[str, pd.DataFrame],
    indicators: Mapping[str, pd.DataFrame],
    trading_start: pd.Timestamp,
) -> tuple[dict[str, str], dict[str, str]]:
    """Per pair of `candles`, in their order: the trade chart as a markdown PNG, and as an HTML page."""
    images: dict[str, str] = {}
    pages: dict[str, str] = {}
    for pair, frame in candles.items():
        traded = frame[frame.index >= trading_start]
        extra = indicators.get(pair, pd.DataFrame(index=frame.index)).reindex(traded.index)
        trades = chart_trades(result, pair)
        title = f"{result.strategy} {pair} {result.timerange}: {len(trades)} trades"
        figure = trade_chart_figure(traded, extra, trades, title)
        images[pair] = png_markdown(figure, f"{pair} trades", crop=False)
        pages[pair] = trade_chart_html(traded, extra, trades, title)
    return images, pages


def draw_equity_chart(result: BacktestResult, title: str) -> str:
    """The equity curve over its drawdown, as a markdown PNG."""
    figure = equity_and_drawdown_figure(result.equity_frame()["equity"], title)
    return png_markdown(figure, "equity", crop=False)


def split_for_two(pairs: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The pairs a helper process charts, and those left with the equity chart, so that two processes
    draw about as much: of n pair charts plus the equity chart, the helper takes ⌈n/2⌉ pairs."""
    cut = (len(pairs) + 1) // 2
    return tuple(pairs[:cut]), tuple(pairs[cut:])
