"""Backtests: the plan (with its blocking gates) and report of one strategy partition, and their job."""

from dagster import Definitions

from jobs.backtests import build_backtest_job
from tradai_assets.backtests import build_backtest_assets
from tradai_core.settings import TradAISettings


def build_backtests_definitions(settings: TradAISettings) -> Definitions:
    """`backtest_plan` and `backtest_report` (resources: `candle_store`, `freqtrade`, `mlflow`) and
    `backtest_reports_job`."""
    return Definitions(assets=build_backtest_assets(settings), jobs=[build_backtest_job()])
