"""LightGBM classifier: trade the model registered in MLflow on the platform's own features.

The model (`tradai-lgbm-<timeframe>`, trained by the `model` asset) predicts the probability that the close
`horizon` candles ahead beats the current one by more than round-trip fees. This strategy computes the very
same features (`tradai_core.features.compute_features`) on the candles Freqtrade hands it, asks the model
version behind an alias for that probability, enters long above `entry_threshold` and exits below
`exit_threshold`.

- **Which model.** The alias is the `model_alias` buy parameter: `champion` by default; a validation
  backtest sets `buy_params: {model_alias: challenger}` in its strategy config. The model is loaded once
  per process from the MLflow store at `TRADAI_MLFLOW_URI` (else the settings' default). A missing model
  or alias fails the backtest with MLflow's not-found message; it never silently trades nothing.
- **No lookahead.** A feature at candle t uses candles up to t only, and the prediction at t uses the
  features at t only; Freqtrade acts on a signal at the next candle's open.
- **Outages.** Freqtrade fills missing candles with flat, zero-volume ones; the model was trained on the
  candle store, which has gaps instead. Those filler candles are left out before the features are
  computed (so features match training), and get no prediction (so no entry during an outage).
- **Honest validation.** The model's training window ends before its holdout (`tradai.holdout_start` tag
  on the version); backtest the strategy on the holdout to judge it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, ClassVar

import numpy as np
from freqtrade.strategy import CategoricalParameter, DecimalParameter
from pandas import DataFrame

from strategies.base import StrategyCategory, StrategyMetadata, StrategyStatus, TradAIStrategy
from tradai_core.errors import ConfigurationError
from tradai_core.features import FEATURE_NAMES, WARMUP_BARS, compute_features, feature_set_hash

logger = logging.getLogger(__name__)

MODEL_ALIASES = ("champion", "challenger")
TAG_FEATURE_SET_HASH = "tradai.feature_set_hash"

# (tracking URI, model name, alias) → (booster, version); one load per process.
_MODELS: dict[tuple[str, str, str], tuple[Any, int]] = {}
_MODELS_LOCK = threading.Lock()


def tracking_uri() -> str:
    """The MLflow store models are loaded from: `TRADAI_MLFLOW_URI`, else the settings' default."""
    from tradai_core.settings import TradAISettings

    return os.environ.get("TRADAI_MLFLOW_URI") or TradAISettings().resolved_mlflow_uri


def load_model(name: str, alias: str, uri: str | None = None) -> tuple[Any, int]:
    """The LightGBM booster of the version `alias` points at, and that version; cached per process.

    Raises NotFoundError (from the MLflow resource, saying what to do) when the model or the alias is
    missing, and ConfigurationError when the version was trained on other features than this code computes.
    """
    uri = uri or tracking_uri()
    key = (uri, name, alias)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from tradai_resources.mlflow_tracking import MLflowResource, redact_uri

            resource = MLflowResource(tracking_uri=uri)
            version = resource.get_version_by_alias(name, alias)
            trained_on = version.tags.get(TAG_FEATURE_SET_HASH)
            if trained_on != feature_set_hash():
                raise ConfigurationError(
                    f"{name} version {version.version} ({alias}) was trained on feature set {trained_on}, "
                    f"but this code computes feature set {feature_set_hash()}",
                    "retrain the model on the current features (materialize features, training_set, model)",
                )
            booster = resource.load_model(name, alias, flavor="lightgbm")
            if tuple(booster.feature_name()) != FEATURE_NAMES:
                raise ConfigurationError(
                    f"{name} version {version.version} expects features {booster.feature_name()}",
                    "retrain the model on the current features",
                )
            logger.info(  # the URI may carry a password: never logged as is
                "loaded %s version %s (alias %s) from %s", name, version.version, alias, redact_uri(uri)
            )
            _MODELS[key] = (booster, version.version)
        return _MODELS[key]


def filler_candles(dataframe: DataFrame) -> np.ndarray:
    """Rows Freqtrade invented to fill an outage: no volume and one price for open, high, low and close."""
    flat = (
        (dataframe["open"] == dataframe["high"])
        & (dataframe["high"] == dataframe["low"])
        & (dataframe["low"] == dataframe["close"])
    )
    return ((dataframe["volume"] == 0) & flat).to_numpy()


class LgbmClassifier(TradAIStrategy):
    """Long when the registered LightGBM model gives the next `horizon` candles a winning probability above
    `entry_threshold`; exit below `exit_threshold`, on ROI or on a 5 % stop."""

    timeframe = "1h"
    startup_candle_count = WARMUP_BARS
    stoploss = -0.05
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.03, "240": 0.005}

    model_alias = CategoricalParameter(list(MODEL_ALIASES), default="champion", space="buy", optimize=False)
    entry_threshold = DecimalParameter(0.50, 0.80, default=0.55, decimals=3, space="buy")
    exit_threshold = DecimalParameter(0.20, 0.55, default=0.45, decimals=3, space="sell")

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        """Metadata of this strategy."""
        return StrategyMetadata(
            name="LgbmClassifier",
            version="1.0.0",
            description="Trades the LightGBM model registered in MLflow (alias champion by default) on the "
            "platform's leak-free features: long when the predicted probability of beating fees over the "
            "label horizon is high, out when it drops.",
            timeframe="1h",
            category=StrategyCategory.MACHINE_LEARNING,
            status=StrategyStatus.TESTING,
            tags=("lightgbm", "mlflow", "talib"),
        )

    @property
    def model_name(self) -> str:
        """Registered model this strategy trades: `tradai-lgbm-<timeframe>`."""
        return f"tradai-lgbm-{self.timeframe}"

    def prefetch(self) -> None:
        """Load the model before the backtest goes offline (the store may be a tracking server): the alias
        comes from the strategy's parameters, applied here as Freqtrade's bot start would apply them."""
        self.ft_load_hyper_params()
        load_model(self.model_name, str(self.model_alias.value))

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """The model's probability (`ml_probability`) for every candle with a full feature warm-up."""
        booster, version = load_model(self.model_name, str(self.model_alias.value))
        real = ~filler_candles(dataframe)
        candles = dataframe.loc[real, ["date", "open", "high", "low", "close", "volume"]].set_index("date")
        features = compute_features(candles)
        probability = np.full(len(dataframe), np.nan)
        if len(features):
            predicted = booster.predict(features[list(FEATURE_NAMES)])
            position = dataframe["date"].searchsorted(features.index)
            probability[position] = predicted
        dataframe["ml_probability"] = probability
        dataframe["ml_model_version"] = version
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Enter long when the probability clears `entry_threshold`."""
        dataframe.loc[
            (dataframe["ml_probability"] > self.entry_threshold.value) & (dataframe["volume"] > 0),
            ["enter_long", "enter_tag"],
        ] = (1, "ml_probability_high")
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Exit when the probability falls below `exit_threshold`."""
        dataframe.loc[
            (dataframe["ml_probability"] < self.exit_threshold.value) & (dataframe["volume"] > 0),
            ["exit_long", "exit_tag"],
        ] = (1, "ml_probability_low")
        return dataframe
