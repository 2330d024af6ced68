"""Features: the platform's features per pair and day, computed from stored candles, and their job."""

from dagster import Definitions

from jobs.ml import build_features_job
from tradai_assets.features import build_feature_assets
from tradai_core.settings import TradAISettings


def build_features_definitions(settings: TradAISettings) -> Definitions:
    """`features/<pair>` assets (resource: `candle_store`) and `features_job`."""
    return Definitions(assets=build_feature_assets(settings), jobs=[build_features_job(settings)])
