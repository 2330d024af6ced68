"""Jobs of the ML pipeline: features per pair and day, then the training set and a model."""

from typing import TYPE_CHECKING

from dagster import AssetSelection, define_asset_job

from tradai_assets.keys import FEATURES_GROUP, MODELS_GROUP
from tradai_assets.partitions import daily_partitions
from tradai_core.settings import TradAISettings

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

FEATURES_JOB = "features_job"
TRAINING_JOB = "training_job"


def build_features_job(settings: TradAISettings) -> "UnresolvedAssetJobDefinition":
    """Every pair's features for one day or a range of days (single-run backfills)."""
    return define_asset_job(
        FEATURES_JOB,
        selection=AssetSelection.groups(FEATURES_GROUP),
        partitions_def=daily_partitions(settings),
        description="Compute features from stored candles into ArcticDB.",
    )


def build_training_job() -> "UnresolvedAssetJobDefinition":
    """Training set and model: trains a challenger (champion too when none exists)."""
    return define_asset_job(
        TRAINING_JOB,
        selection=AssetSelection.groups(MODELS_GROUP),
        description="Stack features and labels over the training window, train with purged walk-forward "
        "validation, register the model in MLflow.",
    )
