"""The LightGBM strategy: loads the registered model by alias, trades on the platform's own features,
never looks ahead, and backtests through Freqtrade on the model's holdout. Real recorded candles, real
ArcticDB, real MLflow (SQLite), Freqtrade's own loader and engine."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from strategies.config import load_strategy_config
from strategies.lgbm_classifier import LgbmClassifier, filler_candles
from strategies.metadata import StrategyCategory
from strategies.model_store import load_model, model_store_uri
from strategies.validation import STRATEGIES_DIR, find_strategy_file, validate_strategy
from tests.conftest import load_recorded
from tradai_assets.models import register_trained_model, store_training_set
from tradai_core.backtest_config import BacktestRunConfig, build_freqtrade_config
from tradai_core.errors import BacktestError, NotFoundError
from tradai_core.features import WARMUP_BARS, compute_features
from tradai_core.labels import LabelSpec
from tradai_core.registry import CHALLENGER, CHAMPION
from tradai_core.training import (
    LightGBMParams,
    build_training_set,
    reference_distribution,
    train_walk_forward,
    training_window,
)
from tradai_core.walk_forward import WalkForwardSpec
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_workspace import prepare_strategy_dir
from tradai_resources.mlflow_tracking import MLflowResource

PAIRS = ("BTC/USDT", "ETH/USDT")
NAME = "tradai-lgbm-1h"
HOLDOUT = (date(2021, 1, 12), date(2021, 2, 1))


@dataclass
class Trained:
    uri: str
    mlflow: MLflowResource
    candles: dict[str, pd.DataFrame]
    booster: Any


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_candles_dir: Path) -> Trained:
    """A tiny model on 2 pairs, trained on 2020-10-12 → 2021-01-12 and registered (champion by bootstrap);
    its holdout is 2021-01-12 → 2021-02-01."""
    home = tmp_path_factory.mktemp("lgbm")
    candles = {pair: load_recorded(demo_candles_dir, pair).loc[:"2021-01-31 23:00"] for pair in PAIRS}
    window = training_window(date(2020, 10, 12), HOLDOUT[1], holdout_days=20)
    assert window.end.date() == HOLDOUT[0]
    features = {pair: compute_features(frame) for pair, frame in candles.items()}
    training = build_training_set(features, candles, LabelSpec(horizon=4), window)
    store = ArcticDBResource(uri=f"lmdb://{home / 'arcticdb'}")
    stored = store_training_set(store, "binance", training, {"ohlcv/BTC_USDT": 0, "ohlcv/ETH_USDT": 0}, None)
    spec = WalkForwardSpec(n_folds=3, min_train=600, embargo=24, label_horizon=4)
    result = train_walk_forward(stored.frame, "classification", spec, LightGBMParams(num_boost_round=80))
    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow = MLflowResource(tracking_uri=uri)
    registered = register_trained_model(
        mlflow, NAME, result, reference_distribution(stored.frame, stored.window), stored, None
    )
    assert registered.aliases == (CHALLENGER, CHAMPION)
    return Trained(uri=uri, mlflow=mlflow, candles=candles, booster=result.booster)


@pytest.fixture
def model_store(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trained]:
    """The strategy (and any Freqtrade child process) reads models from the test's MLflow store."""
    monkeypatch.setenv("TRADAI_MLFLOW_URI", trained.uri)
    yield trained


def freqtrade_strategy(work: Path, **buy_params: object) -> Any:
    """LgbmClassifier as Freqtrade's own loader builds it for a backtest, config params applied."""
    from freqtrade.resolvers import StrategyResolver

    source = find_strategy_file("LgbmClassifier", STRATEGIES_DIR)
    config = load_strategy_config(source.with_suffix(".yaml"))
    config = config.model_copy(update={"buy_params": {**config.buy_params, **buy_params}})
    prepare_strategy_dir(source, config, work / "strategy")
    (work / "user_data").mkdir()
    ft_config = build_freqtrade_config(config, BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS))
    ft_config |= {"strategy_path": str(work / "strategy"), "user_data_dir": work / "user_data"}
    strategy = StrategyResolver.load_strategy(ft_config)
    strategy.ft_bot_start()
    return strategy


def analyzed(strategy: Any, candles: pd.DataFrame, pair: str) -> pd.DataFrame:
    frame = strategy.analyze_ticker(candles.reset_index(), {"pair": pair})
    for column in ("enter_long", "exit_long"):
        if column not in frame:
            frame[column] = np.nan
    return frame.loc[:, ["date", "ml_probability", "enter_long", "exit_long"]].fillna(
        {"enter_long": 0, "exit_long": 0}
    )


def test_the_strategy_is_a_valid_machine_learning_strategy_with_the_feature_warmup() -> None:
    report = validate_strategy("LgbmClassifier")
    assert report.ok, report.summary()
    assert report.metadata is not None and report.metadata.category is StrategyCategory.MACHINE_LEARNING
    assert LgbmClassifier.startup_candle_count == WARMUP_BARS
    assert report.config is not None and report.config.buy_params["model_alias"] == CHAMPION


def test_it_predicts_with_the_champion_on_the_platforms_own_features(
    model_store: Trained, tmp_path: Path
) -> None:
    strategy = freqtrade_strategy(tmp_path)
    candles = model_store.candles["BTC/USDT"]
    frame = analyzed(strategy, candles, "BTC/USDT").set_index("date")
    features = compute_features(candles)
    np.testing.assert_array_equal(
        frame.loc[features.index, "ml_probability"].to_numpy(), model_store.booster.predict(features)
    )
    assert frame["ml_probability"].iloc[:WARMUP_BARS].isna().all()
    assert frame["enter_long"].sum() > 0 and frame["exit_long"].sum() > 0, "the test needs real signals"


def test_predictions_and_signals_never_change_when_later_candles_are_appended(
    model_store: Trained, tmp_path: Path
) -> None:
    strategy = freqtrade_strategy(tmp_path)
    candles = model_store.candles["ETH/USDT"]
    full = analyzed(strategy, candles, "ETH/USDT")
    for cut in [*range(WARMUP_BARS + 10, len(candles), 211), len(candles) - 1]:
        prefix = analyzed(strategy, candles.iloc[:cut], "ETH/USDT")
        pd.testing.assert_frame_equal(prefix, full.iloc[:cut].reset_index(drop=True))


def test_freqtrades_outage_fillers_get_no_prediction() -> None:
    frame = pd.DataFrame(
        {
            "open": [10.0, 11.0, 11.0, 11.0],
            "high": [12.0, 11.0, 11.0, 11.5],
            "low": [9.0, 11.0, 11.0, 10.5],
            "close": [11.0, 11.0, 11.0, 11.2],
            "volume": [5.0, 0.0, 2.0, 0.0],
        }
    )
    assert filler_candles(frame).tolist() == [False, True, False, False]


def test_a_holdout_backtest_trades_on_the_champion(model_store: Trained, tmp_path: Path) -> None:
    result = FreqtradeResource(work_dir=str(tmp_path / "bt")).backtest(
        "LgbmClassifier",
        STRATEGIES_DIR,
        model_store.candles,
        BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS),
    )
    assert result.metrics.trade_count > 0
    assert result.metrics.backtest_start.date() == HOLDOUT[0]
    assert {trade.pair for trade in result.trades} <= set(PAIRS)


def test_a_missing_alias_fails_the_backtest_with_the_not_found_message(
    model_store: Trained, tmp_path: Path
) -> None:
    model_store.mlflow.delete_alias(NAME, CHALLENGER)
    with pytest.raises(NotFoundError, match="has alias 'challenger'"):
        load_model(NAME, CHALLENGER, model_store.uri)
    config = load_strategy_config(STRATEGIES_DIR / "lgbm_classifier.yaml")
    validation = config.model_copy(update={"buy_params": {**config.buy_params, "model_alias": CHALLENGER}})
    with pytest.raises(BacktestError) as failed:
        FreqtradeResource(work_dir=str(tmp_path / "bt")).backtest(
            "LgbmClassifier",
            STRATEGIES_DIR,
            model_store.candles,
            BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS),
            strategy_config=validation,
        )
    assert "no model version of 'tradai-lgbm-1h' has alias 'challenger' (versions: 1)" in str(failed.value)


def test_the_model_store_reaches_the_strategy_through_freqtrades_config(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADAI_MLFLOW_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")  # holds no model
    result = FreqtradeResource(work_dir=str(tmp_path / "bt")).backtest(
        "LgbmClassifier",
        STRATEGIES_DIR,
        trained.candles,
        BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS),
        model_store_uri=trained.uri,
    )
    assert result.metrics.trade_count > 0
    assert (
        model_store_uri(
            build_freqtrade_config(
                load_strategy_config(STRATEGIES_DIR / "lgbm_classifier.yaml"),
                BacktestRunConfig.for_dates(*HOLDOUT),
                model_store_uri=trained.uri,
            )
        )
        == trained.uri
    )
