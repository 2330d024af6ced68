"""LightGBM classifier: trade the model registered in MLflow on the platform's own features.

The model (`tradai-lgbm-<timeframe>`, trained by the `model` asset) predicts the probability that the close
`horizon` candles ahead beats the current one by more than round-trip fees. This strategy computes the very
same features (`tradai_core.features.compute_features`) on the candles Freqtrade hands it, asks the model
version behind an alias for that probability, enters long above `entry_threshold` and exits below
`exit_threshold`.

- **Which model.** The alias is the `model_alias` buy parameter: `champion` by default; a validation
  backtest sets `buy_params: {model_alias: challenger}` in its strategy config. The platform's parent
  process resolves that alias to a version once, exports the version's booster into the backtest's
  workspace, and names the file in Freqtrade's config (`self.config["tradai"]`, see
  `strategies.model_store`); the strategy reads that file only — never a registry or a tracking URI — so
  the version the backtest records is the version that traded. A missing alias fails in the parent with the
  registry's not-found message; a missing or corrupt file fails the backtest saying so; it never silently
  trades nothing.
- **No lookahead.** A feature at candle t uses candles up to t only, and the prediction at t uses the
  features at t only; Freqtrade acts on a signal at the next candle's open.
- **Outages.** Freqtrade fills missing candles with flat, zero-volume ones; the model was trained on the
  candle store, which has gaps instead. Those filler candles are left out before the features are
  computed (so features match training), and get no prediction (so no entry during an outage).
- **Honest validation.** The model's training window ends before its holdout (`tradai.holdout_start` tag
  on the version); backtest the strategy on the holdout to judge it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from freqtrade.strategy import CategoricalParameter, DecimalParameter
from pandas import DataFrame

from strategies.base import StrategyCategory, StrategyMetadata, StrategyStatus, TradAIStrategy
from strategies.model_store import load_model
from tradai_core.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from tradai_core.registry import CHAMPION, MODEL_ALIASES, default_model_name


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

    model_alias = CategoricalParameter(list(MODEL_ALIASES), default=CHAMPION, space="buy", optimize=False)
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
        return default_model_name(self.timeframe)

    def prefetch(self) -> None:
        """Read the exported model before the backtest starts, so a missing or corrupt file fails at once:
        the alias comes from the strategy's parameters, applied here as Freqtrade's bot start would."""
        self.ft_load_hyper_params()
        load_model(self.config, self.model_name, str(self.model_alias.value))

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """The model's probability (`ml_probability`) for every candle with a full feature warm-up."""
        booster, version = load_model(self.config, self.model_name, str(self.model_alias.value))
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
