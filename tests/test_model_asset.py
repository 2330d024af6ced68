"""Training set and model assets through real Dagster runs: real ArcticDB (LMDB), real MLflow (SQLite),
real recorded candles (2 pairs × 4 months)."""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tests.conftest import load_recorded
from tradai_assets.features import build_feature_assets
from tradai_assets.models import (
    CHALLENGER,
    CHAMPION,
    MODEL_KEY,
    REFERENCE_ARTIFACT,
    TRAINING_SET_KEY,
    build_model_assets,
    load_reference_distribution,
    load_training_set,
)
from tradai_core.features import FEATURE_NAMES, feature_set_hash
from tradai_core.settings import TradAISettings
from tradai_core.training import LightGBMParams, reference_distribution, train_walk_forward
from tradai_core.walk_forward import WalkForwardSpec
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.mlflow_tracking import MLflowResource, project_git_commit

PAIRS = ("BTC/USDT", "ETH/USDT")
NAME = "tradai-lgbm-1h"
TRAINING = {"holdout_days": 20}
MODEL = {"n_folds": 3, "min_train": 600, "num_boost_round": 60, "min_data_in_leaf": 100}


@dataclass
class Lab:
    settings: TradAISettings
    store: ArcticDBResource
    mlflow: MLflowResource
    assets: list[AssetsDefinition]


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow database (migrations take seconds; each store starts as a copy)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MLflowResource(tracking_uri=f"sqlite:///{path}").client().search_experiments()
    return path


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, demo_candles_dir: Path, empty_mlflow_db: Path
) -> Iterator[Lab]:
    """Candles of 2020-10-12 → 2021-02-01 seeded into ArcticDB, their features materialized in one run."""
    home = tmp_path_factory.mktemp("lab")
    settings = TradAISettings(
        home=home, pairs=PAIRS, history_start=date(2020, 10, 12), history_end=date(2021, 2, 1)
    )
    store = ArcticDBResource(uri=settings.resolved_arcticdb_uri)
    start, end = pd.Timestamp("2020-10-12", tz="UTC"), pd.Timestamp("2021-02-01", tz="UTC")
    for pair in PAIRS:
        candles = load_recorded(demo_candles_dir, pair)
        store.write_window(
            "binance", "1h", pair, candles[(candles.index >= start) & (candles.index < end)], start, end
        )
    features = materialize(
        build_feature_assets(settings),
        resources={"candle_store": store},
        instance=DagsterInstance.ephemeral(),
        tags={ASSET_PARTITION_RANGE_START_TAG: "2020-10-12", ASSET_PARTITION_RANGE_END_TAG: "2021-01-31"},
    )
    assert features.success
    shutil.copyfile(empty_mlflow_db, home / "mlflow.db")
    mlflow = MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    yield Lab(settings, store, mlflow, build_model_assets(settings))


def train(
    lab: Lab,
    *,
    training: dict | None = None,
    model: dict | None = None,
    selection: list[AssetKey] | None = None,
    mlflow: MLflowResource | None = None,
) -> ExecuteInProcessResult:
    configs = {TRAINING_SET_KEY: ("training_set", training or TRAINING), MODEL_KEY: ("model", model or MODEL)}
    ops = {op: {"config": config} for key, (op, config) in configs.items() if key in (selection or configs)}
    return materialize(
        lab.assets,
        selection=selection,
        resources={"candle_store": lab.store, "mlflow": mlflow or lab.mlflow},
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": ops},
        raise_on_error=False,
    )


def metadata_of(result: ExecuteInProcessResult, key: AssetKey) -> dict[str, object]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def checks_of(result: ExecuteInProcessResult) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def new_mlflow(lab: Lab, empty_mlflow_db: Path, name: str) -> MLflowResource:
    folder = lab.settings.home / name
    folder.mkdir()
    shutil.copyfile(empty_mlflow_db, folder / "mlflow.db")
    return MLflowResource(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


@pytest.fixture(scope="module")
def first(lab: Lab) -> ExecuteInProcessResult:
    """The first training of the lab: training set, then model."""
    result = train(lab)
    assert result.success, [
        e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure
    ]
    return result


def test_the_training_set_ends_before_the_holdout_and_records_what_it_read(
    lab: Lab, first: ExecuteInProcessResult
) -> None:
    metadata = metadata_of(first, TRAINING_SET_KEY)
    assert metadata["window"] == "train [2020-10-12, 2021-01-12), holdout [2021-01-12, 2021-02-01)"
    stored = load_training_set(lab.store, "binance", "1h", as_of=metadata["arcticdb_version"])
    frame = stored.frame
    holdout_start = pd.Timestamp("2021-01-12", tz="UTC")
    assert (frame["label_end"] < holdout_start).all() and frame["date"].max() < holdout_start
    assert stored.window.end == holdout_start and stored.feature_set_hash == feature_set_hash()
    assert metadata["dagster/row_count"] == len(frame) and set(frame["pair"]) == set(PAIRS)
    assert set(metadata["input_versions"]) == {
        "features/BTC_USDT",
        "features/ETH_USDT",
        "ohlcv/BTC_USDT",
        "ohlcv/ETH_USDT",
    }
    assert metadata["input_versions"] == stored.input_versions
    assert 0.3 < metadata["positive_rate"] < 0.7
    assert "| BTC/USDT |" in metadata["pairs"] and "positive rate" in metadata["pairs"]
    assert checks_of(first)["features_cover_window"]


def test_a_trained_model_is_registered_with_its_lineage_and_becomes_champion_by_bootstrap(
    lab: Lab, first: ExecuteInProcessResult
) -> None:
    metadata = metadata_of(first, MODEL_KEY)
    assert (metadata["model_version"], metadata["aliases"]) == (1, "challenger, champion")
    assert metadata["bootstrapped_champion"] is True
    version = lab.mlflow.get_version_by_alias(NAME, CHAMPION)
    assert version.version == 1 and set(version.aliases) == {CHAMPION, CHALLENGER}
    training_version = metadata_of(first, TRAINING_SET_KEY)["arcticdb_version"]
    tags = version.tags
    assert tags["dagster.run_id"] == first.run_id
    assert tags["tradai.training_set"] == f"training.binance.1h/training_set@v{training_version}"
    assert tags["tradai.input.features/BTC_USDT"] == str(
        lab.store.read_frame("features.binance.1h", "BTC_USDT").version
    )
    assert tags["tradai.input.ohlcv/ETH_USDT"] == "0"
    assert tags["tradai.feature_set_hash"] == feature_set_hash()
    assert tags["tradai.label"].startswith("classification label, 1 if (close 4 × 1h candles ahead")
    assert tags["tradai.code_version"] == project_git_commit()
    assert (tags["tradai.holdout_start"], tags["tradai.holdout_end"]) == (
        "2021-01-12T00:00:00+00:00",
        "2021-02-01T00:00:00+00:00",
    )
    assert tags["tradai.bootstrap_champion"].startswith("true")
    run = lab.mlflow.get_run(version.run_id or "")
    assert run.info.status == "FINISHED" and run.data.tags["dagster.run_id"] == first.run_id
    assert {"oos_auc", "oos_accuracy", "oos_logloss", "fold_auc"} <= set(run.data.metrics)
    assert metadata["oos_auc"] == pytest.approx(run.data.metrics["oos_auc"])
    assert "| auc |" in metadata["oos_metrics"] and "n_purged" in metadata["folds"]
    assert metadata["feature_importance_plot"].startswith("![feature importance](data:image/png;base64,")
    assert checks_of(first)["walk_forward_sane"]


def test_the_model_and_its_training_set_pin_exactly_the_arcticdb_versions_they_name(
    lab: Lab, first: ExecuteInProcessResult
) -> None:
    training_meta, model_meta = metadata_of(first, TRAINING_SET_KEY), metadata_of(first, MODEL_KEY)
    inputs = {
        f"{kind}.binance.1h/{slug}": version
        for key, version in training_meta["input_versions"].items()
        for kind, slug in [key.split("/")]
    }
    assert len(inputs) == 4
    assert lab.store.pinned_versions(f"tradai.training_set.{first.run_id}") == inputs
    tags = lab.mlflow.get_version(NAME, model_meta["model_version"]).tags
    assert (
        tags["tradai.arcticdb_snapshot"] == model_meta["arcticdb_snapshot"] == f"tradai.model.{first.run_id}"
    )
    assert lab.store.pinned_versions(model_meta["arcticdb_snapshot"]) == {
        "training.binance.1h/training_set": training_meta["arcticdb_version"],
        **inputs,
    }


def test_the_registered_model_and_its_reference_distribution_load_back(
    lab: Lab, first: ExecuteInProcessResult
) -> None:
    stored = load_training_set(
        lab.store, "binance", "1h", as_of=metadata_of(first, TRAINING_SET_KEY)["arcticdb_version"]
    )
    # The same training in plain Python gives the very model the asset registered.
    spec = WalkForwardSpec(n_folds=3, min_train=600, embargo=24, label_horizon=4)
    params = LightGBMParams(num_boost_round=60, min_data_in_leaf=100)
    expected = train_walk_forward(stored.frame, "classification", spec, params)
    rows = stored.frame[list(FEATURE_NAMES)].tail(50)
    booster = lab.mlflow.load_model(NAME, CHAMPION, flavor="lightgbm")
    np.testing.assert_array_equal(booster.predict(rows), expected.booster.predict(rows))
    pyfunc = lab.mlflow.load_model(NAME, CHAMPION)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(rows)), expected.booster.predict(rows))
    assert list(pyfunc.metadata.get_input_schema().input_names()) == list(FEATURE_NAMES)

    version, reference = load_reference_distribution(lab.mlflow, NAME, CHAMPION)
    assert version.version == 1
    assert reference == reference_distribution(stored.frame, stored.window)
    assert set(reference.pooled) == set(FEATURE_NAMES) and set(reference.by_pair) == set(PAIRS)
    assert REFERENCE_ARTIFACT.endswith(".json")


def test_retraining_on_the_same_data_gives_the_same_metrics_and_moves_only_the_challenger(
    lab: Lab, first: ExecuteInProcessResult, empty_mlflow_db: Path
) -> None:
    # Its own registry and its own (latest) training set: the module's champion stays as the other
    # tests expect it, and no other test's training set is the one retrained on.
    mlflow = new_mlflow(lab, empty_mlflow_db, "retraining")
    assert train(lab, mlflow=mlflow).success
    again = train(lab, selection=[MODEL_KEY], mlflow=mlflow)
    assert again.success
    metadata = metadata_of(again, MODEL_KEY)
    assert (metadata["model_version"], metadata["aliases"], metadata["bootstrapped_champion"]) == (
        2,
        "challenger",
        False,
    )
    assert mlflow.get_version_by_alias(NAME, CHAMPION).version == 1
    assert mlflow.get_version_by_alias(NAME, CHALLENGER).version == 2
    runs = [mlflow.get_run(v.run_id or "") for v in mlflow.list_versions(NAME)[:2]]
    oos = [{k: v for k, v in run.data.metrics.items() if k.startswith("oos_")} for run in runs]
    assert oos[0] == oos[1] and len(oos[0]) >= 6
    assert metadata["oos_metrics"] == metadata_of(first, MODEL_KEY)["oos_metrics"]
    assert metadata["feature_importance"] == metadata_of(first, MODEL_KEY)["feature_importance"]


def test_a_model_that_cannot_be_scored_gets_no_alias_and_fails_its_blocking_check(
    lab: Lab, empty_mlflow_db: Path
) -> None:
    mlflow = new_mlflow(lab, empty_mlflow_db, "degenerate")
    # A 50 % threshold over 4 hours: no candle of the window is a win, so no fold has an AUC.
    result = train(lab, training={**TRAINING, "label_threshold": 0.5}, mlflow=mlflow)
    assert not result.success
    assert checks_of(result) == {
        "features_cover_window": True,
        "walk_forward_sane": False,
        "beats_constant_baseline": False,
    }
    [version] = mlflow.list_versions(NAME)
    assert version.aliases == ()
    assert "metrics ['auc'] are not finite" in version.tags["tradai.rejected"]
    with pytest.raises(Exception, match="has alias 'champion'"):
        mlflow.get_version_by_alias(NAME, CHAMPION)


def test_an_embargo_shorter_than_the_label_horizon_is_refused(
    lab: Lab, first: ExecuteInProcessResult
) -> None:
    # The model alone, over the training set `first` stored (the embargo is checked before fitting).
    result = train(lab, model={**MODEL, "embargo": 2}, selection=[MODEL_KEY])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.to_string()
    assert "embargo (2 bars) is shorter than the label horizon (4)" in message
