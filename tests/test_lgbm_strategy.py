"""The LightGBM strategy: trades the model version its alias names — resolved and exported by the parent,
read from a file by the child, which never sees a tracking URI — on the platform's own features, never
looks ahead, and backtests through Freqtrade on the model's holdout. Real recorded candles, real ArcticDB,
real MLflow (SQLite), Freqtrade's own loader and engine."""

import json
import os
import shutil
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
from strategies.model_store import load_model
from strategies.validation import STRATEGIES_DIR, find_strategy_file, validate_strategy
from tests.conftest import load_recorded
from tradai_assets.backtest_runner import execute, export_strategy_model, plan_backtest
from tradai_assets.backtests import model_problem
from tradai_assets.models import register_trained_model, store_training_set
from tradai_core.backtest_config import BacktestCosts, BacktestRunConfig, build_freqtrade_config
from tradai_core.errors import BacktestError, ConfigurationError, NotFoundError, ValidationError
from tradai_core.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from tradai_core.hyperopt import StudySpec
from tradai_core.labels import LabelSpec
from tradai_core.registry import CHALLENGER, CHAMPION, ExportedModel
from tradai_core.training import (
    LightGBMParams,
    build_training_set,
    reference_distribution,
    train_walk_forward,
    training_window,
)
from tradai_core.walk_forward import WalkForwardSpec
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import ChartRequest, FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
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
    trainings: tuple[Any, ...] = ()
    """(first result, second result, reference distribution, stored training set): to register again."""


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
    # a second, different model (fewer rounds), registered only by the tests that need two versions
    second = train_walk_forward(stored.frame, "classification", spec, LightGBMParams(num_boost_round=15))
    reference = reference_distribution(stored.frame, stored.window)
    return Trained(uri, mlflow, candles, result.booster, (result, second, reference, stored))


@pytest.fixture
def two_versions(trained: Trained, tmp_path: Path) -> Trained:
    """A store of its own holding v1 (the module's model: champion) and v2 (another model: challenger)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = MLflowResource(tracking_uri=uri)
    first, second, reference, stored = trained.trainings
    assert register_trained_model(mlflow, NAME, first, reference, stored, None).version == 1
    registered = register_trained_model(mlflow, NAME, second, reference, stored, None)
    assert registered.version == 2 and registered.aliases == (CHALLENGER,)
    return Trained(uri, mlflow, trained.candles, second.booster)


def export(trained: Trained, folder: Path, version: int = 1, alias: str = CHAMPION) -> ExportedModel:
    """What the parent does before a backtest: the version's booster, exported into `folder`."""
    return trained.mlflow.export_booster(NAME, version, folder, alias=alias)


def freqtrade_strategy(work: Path, model: ExportedModel, **buy_params: object) -> Any:
    """LgbmClassifier as Freqtrade's own loader builds it for a backtest, config params applied."""
    from freqtrade.resolvers import StrategyResolver

    source = find_strategy_file("LgbmClassifier", STRATEGIES_DIR)
    config = load_strategy_config(source.with_suffix(".yaml"))
    config = config.model_copy(update={"buy_params": {**config.buy_params, **buy_params}})
    prepare_strategy_dir(source, config, work / "strategy")
    (work / "user_data").mkdir()
    run = BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS)
    ft_config = build_freqtrade_config(config, run, model=model)
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
    trained: Trained, tmp_path: Path
) -> None:
    strategy = freqtrade_strategy(tmp_path, export(trained, tmp_path / "model"))
    candles = trained.candles["BTC/USDT"]
    frame = analyzed(strategy, candles, "BTC/USDT").set_index("date")
    features = compute_features(candles)
    np.testing.assert_array_equal(
        frame.loc[features.index, "ml_probability"].to_numpy(), trained.booster.predict(features)
    )
    assert frame["ml_probability"].iloc[:WARMUP_BARS].isna().all()
    assert frame["enter_long"].sum() > 0 and frame["exit_long"].sum() > 0, "the test needs real signals"


def test_predictions_and_signals_never_change_when_later_candles_are_appended(
    trained: Trained, tmp_path: Path
) -> None:
    strategy = freqtrade_strategy(tmp_path, export(trained, tmp_path / "model"))
    candles = trained.candles["ETH/USDT"]
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


def test_a_holdout_backtest_trades_on_the_champion(trained: Trained, tmp_path: Path) -> None:
    result = FreqtradeResource(work_dir=str(tmp_path / "bt")).backtest(
        "LgbmClassifier",
        STRATEGIES_DIR,
        trained.candles,
        BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS),
        model=export(trained, tmp_path / "model"),
    )
    assert result.metrics.trade_count > 0
    assert result.metrics.backtest_start.date() == HOLDOUT[0]
    assert {trade.pair for trade in result.trades} <= set(PAIRS)


def test_a_missing_alias_fails_in_the_parent_with_the_not_found_message(
    two_versions: Trained, tmp_path: Path
) -> None:
    two_versions.mlflow.delete_alias(NAME, CHALLENGER)
    config = load_strategy_config(STRATEGIES_DIR / "lgbm_classifier.yaml")
    validation = config.model_copy(update={"buy_params": {**config.buy_params, "model_alias": CHALLENGER}})
    with pytest.raises(NotFoundError, match=r"has alias 'challenger' \(versions: 1, 2\)"):
        export_strategy_model(validation, {}, two_versions.mlflow, tmp_path / "model")
    assert not (tmp_path / "model").exists()


# --- the child reads a file the parent exported: no tracking URI, the version recorded is the one traded --

PROBE = """
        _os = __import__("os")
        if _os.getpid() != {parent}:  # in the backtest child only (the parent imports it to validate it)
            import json as _json, pathlib as _pathlib
            _pathlib.Path({out!r}).write_text(_json.dumps({{
                "environ": dict(_os.environ),
                "proc": _pathlib.Path("/proc/self/environ").read_bytes().decode(errors="replace"),
                "config": _json.dumps(self.config, default=str),
            }}))
"""
CREDENTIALS = "tradai-user:s3cr3t-Pa55word"


def _probe_strategy(folder: Path, out: Path) -> Path:
    """LgbmClassifier, copied into `folder`, writing the environment and the Freqtrade config of the process
    that computes its indicators to `out`."""
    folder.mkdir()
    for suffix in (".py", ".yaml"):
        shutil.copy(STRATEGIES_DIR / f"lgbm_classifier{suffix}", folder)
    module = folder / "lgbm_classifier.py"
    hook = 'for every candle with a full feature warm-up."""\n'
    source = module.read_text()
    assert source.count(hook) == 1
    probe = PROBE.format(parent=os.getpid(), out=str(out)).lstrip("\n")
    module.write_text(source.replace(hook, hook + probe))
    return folder


def test_the_child_sees_no_tracking_uri_in_its_config_or_environment(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_uri = f"http://{CREDENTIALS}@127.0.0.1:9/"  # the settings' store: credentials in the URI
    monkeypatch.setenv("TRADAI_MLFLOW_URI", secret_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_uri)
    out = tmp_path / "child.json"
    strategies = _probe_strategy(tmp_path / "strategies", out)
    result = FreqtradeResource(work_dir=str(tmp_path / "bt"), start_method="prefork").backtest(
        "LgbmClassifier",
        strategies,
        trained.candles,
        BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS),
        model=export(trained, tmp_path / "model"),
    )
    assert result.metrics.trade_count > 0
    seen = json.loads(out.read_text())
    for where in (json.dumps(seen["environ"]), seen["proc"], seen["config"]):
        assert "s3cr3t-Pa55word" not in where and "127.0.0.1:9" not in where
        assert trained.uri not in where and "mlflow.db" not in where  # nor the store the model came from
    assert not [name for name in seen["environ"] if "MLFLOW" in name and "URI" in name]
    section = json.loads(seen["config"])["tradai"]
    assert list(section) == ["model"] and section["model"]["version"] == 1
    assert section["model"]["path"].startswith(str(tmp_path / "bt"))  # a copy in the backtest's workspace


def test_the_version_recorded_is_the_version_traded_even_if_the_alias_moves_after_the_lookup(
    two_versions: Trained, tmp_path: Path
) -> None:
    mlflow = two_versions.mlflow
    report = validate_strategy("LgbmClassifier")
    assert report.config is not None
    plan = plan_backtest(report, report.config, *HOLDOUT, PAIRS, BacktestCosts())
    problem, lineage = model_problem(mlflow, report.config, plan.window)  # the parent's lookup: v1
    assert problem is None and lineage["model_version"] == "1"
    plan = plan.model_copy(update={"lineage": lineage})
    mlflow.set_alias(NAME, CHAMPION, 2)  # the alias moves before the backtest runs
    frames = {
        pair: frame.loc[pd.Timestamp(plan.window.data_start) :]
        for pair, frame in two_versions.candles.items()
    }
    executed = execute(
        plan,
        exchange="binance",
        timeframe="1h",
        candle_store=ArcticDBResource(uri=f"lmdb://{tmp_path / 'arcticdb'}"),
        freqtrade=FreqtradeResource(work_dir=str(tmp_path / "bt")),
        mlflow=mlflow,
        pin="already-pinned",
        charts=ChartRequest(trading_start=pd.Timestamp(plan.window.start, tz="UTC"), equity_title="v1"),
        candles=(frames, {pair: "0" for pair in PAIRS}),
    )
    assert executed.plan.lineage["model_version"] == "1"  # what the backtest records
    assert executed.charts is not None and set(executed.charts.images) == set(PAIRS)  # drawn by its worker
    v1 = MLflowResource(tracking_uri=mlflow.tracking_uri).load_model(NAME, CHALLENGER, flavor="lightgbm")
    assert v1.num_trees() == two_versions.booster.num_trees()  # (v2 is the challenger: sanity of the set-up)
    traded = executed.indicators["BTC/USDT"]["ml_probability"].dropna()
    features = compute_features(two_versions.candles["BTC/USDT"]).loc[traded.index]
    first = mlflow.export_booster(NAME, 1, tmp_path / "v1")
    import lightgbm

    version_1 = lightgbm.Booster(model_file=str(first.path)).predict(features[list(FEATURE_NAMES)])
    np.testing.assert_allclose(traded.to_numpy(), version_1)  # the booster that traded is v1's
    assert not np.allclose(traded.to_numpy(), two_versions.booster.predict(features[list(FEATURE_NAMES)]))


def test_a_model_strategy_without_an_exported_model_fails_saying_so(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match="names no exported model"):
        FreqtradeResource(work_dir=str(tmp_path / "bt")).backtest(
            "LgbmClassifier",
            STRATEGIES_DIR,
            trained.candles,
            BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS),
        )
    assert list((tmp_path / "bt").iterdir()) == []


def test_an_altered_export_is_refused_before_the_backtest(trained: Trained, tmp_path: Path) -> None:
    model = export(trained, tmp_path / "model")
    model.path.write_text(model.path.read_text().replace("tree_sizes", "tree_sizez", 1))
    with pytest.raises(ValidationError, match="is not the file that was exported"):
        FreqtradeResource(work_dir=str(tmp_path / "bt")).backtest(
            "LgbmClassifier",
            STRATEGIES_DIR,
            trained.candles,
            BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS),
            model=model,
        )
    assert list((tmp_path / "bt").iterdir()) == []


def test_a_missing_or_corrupt_model_file_in_the_child_fails_with_a_clear_error(
    trained: Trained, tmp_path: Path
) -> None:
    model = export(trained, tmp_path / "model")
    config = model.freqtrade_section()
    loaded, version = load_model(config, NAME, CHAMPION)  # what the strategy does in the child
    assert version == 1 and loaded.num_trees() == trained.booster.num_trees()
    cut = tmp_path / "cut.txt"
    cut.write_bytes(model.path.read_bytes()[:1000])  # cut short
    with pytest.raises(ValidationError, match=r"v1 \(.*cut.txt\) is corrupt: its SHA-256"):
        load_model(model.moved_to(cut).freqtrade_section(), NAME, CHAMPION)
    garbage = model.moved_to(tmp_path / "garbage.txt")
    garbage.path.write_text("not a model")
    digest = __import__("hashlib").sha256(b"not a model").hexdigest()
    with pytest.raises(ValidationError, match="is not a LightGBM model"):
        load_model(garbage.model_copy(update={"sha256": digest}).freqtrade_section(), NAME, CHAMPION)
    with pytest.raises(NotFoundError, match=r"model file of tradai-lgbm-1h v1 .* is missing"):
        load_model(model.moved_to(tmp_path / "gone.txt").freqtrade_section(), NAME, CHAMPION)
    with pytest.raises(ConfigurationError, match="names no exported model"):
        load_model({}, NAME, CHAMPION)
    with pytest.raises(ConfigurationError, match="the strategy trades tradai-lgbm-1h \\(challenger\\)"):
        load_model(config, NAME, CHALLENGER)


def test_a_study_of_the_model_strategy_trades_the_exported_model_in_its_forked_workers(
    trained: Trained, tmp_path: Path
) -> None:
    spec = StudySpec(n_trials=2, workers=2, seed=1, min_trades=0, startup_trials=2)
    run = BacktestRunConfig.for_dates(*HOLDOUT, pairs=PAIRS)
    study = HyperoptResource(
        storage_url=f"sqlite:///{tmp_path / 'study.db'}",
        work_dir=str(tmp_path / "ho"),
        start_method="prefork",
    )
    with pytest.raises(BacktestError, match="names no exported model"):
        study.optimize("LgbmClassifier", STRATEGIES_DIR, trained.candles, run, spec)
    model = export(trained, tmp_path / "model")
    spec = spec.model_copy(update={"study_name": "with-model"})
    report = study.optimize("LgbmClassifier", STRATEGIES_DIR, trained.candles, run, spec, model=model)
    assert report.trials_run == 2  # both workers read the model from the file (without it they fail)
    assert list((tmp_path / "ho").iterdir()) == []
