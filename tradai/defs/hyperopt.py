"""Hyperopt: a study per strategy partition, gated against overfitting, and the parameters it hands on."""

from dagster import Definitions

from tradai_assets.hyperopt import build_hyperopt_assets
from tradai_core.settings import TradAISettings


def build_hyperopt_definitions(settings: TradAISettings) -> Definitions:
    """`hyperopt_study` and `tuned_parameters` (resources: `candle_store`, `hyperopt`, `freqtrade`,
    `mlflow`); materialized from the UI per strategy, so no job of their own."""
    return Definitions(assets=build_hyperopt_assets(settings))
