"""The report's view of a finished backtest's charts (`tradai_core.backtest_charts`): per pair, a PNG in
the asset's metadata (`chart_<pair>`) and an HTML page for MLflow (`backtest/charts/<pair>.html`), and the
monthly returns table.

The charts are drawn by the worker child that ran the backtest, with the indicators the strategy computed
in it (`FreqtradeResource.backtest_charted`); when that child could not draw them (the reason is in the
engine's log), they are drawn here from the same data.
"""

from __future__ import annotations

from dagster import MetadataValue

from tradai_assets.backtest_runner import chart_artifact
from tradai_core.backtest_charts import BacktestCharts
from tradai_core.backtest_result import BacktestResult
from tradai_core.monthly_returns import monthly_returns, monthly_returns_markdown
from tradai_core.settings import pair_slug


def trade_charts(charts: BacktestCharts) -> tuple[dict[str, MetadataValue], dict[str, str]]:
    """Per pair, the PNG chart as metadata (`chart_<pair>`) and the HTML page by its MLflow artifact path."""
    metadata = {f"chart_{pair_slug(pair)}": MetadataValue.md(image) for pair, image in charts.images.items()}
    pages = {chart_artifact(pair_slug(pair)): page for pair, page in charts.pages.items()}
    return metadata, pages


def monthly_returns_metadata(result: BacktestResult) -> MetadataValue:
    """The monthly returns table of the realized equity curve."""
    equity = result.equity_frame()["equity"]
    start = result.metrics.starting_balance
    return MetadataValue.md(
        monthly_returns_markdown(monthly_returns(equity, start), start, result.stake_currency)
    )
