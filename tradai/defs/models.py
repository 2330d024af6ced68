"""Models: the training set and the walk-forward LightGBM model registered in MLflow, and their job."""

from dagster import Definitions

from jobs.ml import build_training_job
from tradai_assets.models import build_model_assets
from tradai_core.settings import TradAISettings


def build_models_definitions(settings: TradAISettings) -> Definitions:
    """`training_set` and `model` (resources: `candle_store`, `mlflow`) and `training_job`."""
    return Definitions(assets=build_model_assets(settings), jobs=[build_training_job()])
