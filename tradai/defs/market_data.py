"""Market data: candles per pair and day with their quality checks, the backfill job, the hourly refresh."""

from dagster import Definitions

from jobs.market_data import build_market_data_job, build_market_data_schedule
from tradai_assets.market_data import build_market_data_assets
from tradai_core.settings import TradAISettings


def build_market_data_definitions(settings: TradAISettings) -> Definitions:
    """`ohlcv/<pair>` assets (resources: `exchange`, `candle_store`), `market_data_job`, its schedule."""
    return Definitions(
        assets=build_market_data_assets(settings),
        jobs=[build_market_data_job(settings)],
        schedules=[build_market_data_schedule(settings)],
    )
