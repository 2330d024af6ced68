"""Names the asset modules share: asset keys, groups, ArcticDB library names and stored-metadata keys.

An asset that depends on another's output needs its key, not its code. Keeping the shared names here
lets every asset module import this leaf instead of each other, so the modules stay independent and
the graph's vocabulary reads in one page.
"""

from __future__ import annotations

from typing import Final

from dagster import AssetKey

from tradai_core.registry import CHALLENGER, CHAMPION
from tradai_core.settings import pair_slug

# -- groups
MARKET_DATA_GROUP: Final[str] = "market_data"
FEATURES_GROUP: Final[str] = "features"
MODELS_GROUP: Final[str] = "models"
LIFECYCLE_GROUP: Final[str] = "model_lifecycle"

# -- keys
TRAINING_SET_KEY: Final[AssetKey] = AssetKey(["training_set"])
MODEL_KEY: Final[AssetKey] = AssetKey(["model"])
CHAMPION_MODEL_KEY: Final[AssetKey] = AssetKey("champion_model")
COMPARISON_KEY: Final[AssetKey] = AssetKey("model_comparison")
PERFORMANCE_KEY: Final[AssetKey] = AssetKey("champion_performance")
DRIFT_KEY: Final[AssetKey] = AssetKey("drift_score")
VALIDATION_KEYS: Final[dict[str, AssetKey]] = {
    CHALLENGER: AssetKey(["validation_backtest", CHALLENGER]),
    CHAMPION: AssetKey(["validation_backtest", CHAMPION]),
}


def ohlcv_key(pair: str) -> AssetKey:
    """Asset key of a pair's candles: `ohlcv/BTC_USDT`."""
    return AssetKey(["ohlcv", pair_slug(pair)])


def features_key(pair: str) -> AssetKey:
    """Asset key of a pair's features: `features/BTC_USDT`."""
    return AssetKey(["features", pair_slug(pair)])


# -- ArcticDB libraries and the metadata stored with their symbols
META_FEATURE_SET_HASH: Final[str] = "feature_set_hash"
"""Metadata key of a stored features (or training-set) version: the feature set that computed it."""


def features_library(exchange_id: str, timeframe: str) -> str:
    """ArcticDB library holding one exchange's features of one timeframe."""
    return f"features.{exchange_id}.{timeframe}"


def training_library(exchange_id: str, timeframe: str) -> str:
    """ArcticDB library holding the training sets of one exchange and timeframe."""
    return f"training.{exchange_id}.{timeframe}"
