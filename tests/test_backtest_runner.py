"""One backtest path: a report, a validation backtest and hyperopt's out-of-sample confirmation all take
`tradai_assets.backtest_runner`, and each leaves its backtest in MLflow in the same layout."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from dagster import materialize

from tests.backtest_fixtures import BacktestLab, backtest_lab, run_backtest
from tests.conftest import load_recorded
from tradai_assets.backtest_runner import ARTIFACT_DIR, LAYOUT
from tradai_assets.hyperopt import build_hyperopt_assets
from tradai_assets.models import register_trained_model, store_training_set
from tradai_assets.validation import build_validation_backtest_asset
from tradai_core.features import compute_features
from tradai_core.labels import LabelSpec
from tradai_core.registry import CHALLENGER, CHAMPION, TAG_HOLDOUT_START
from tradai_core.training import (
    LightGBMParams,
    build_training_set,
    reference_distribution,
    train_walk_forward,
    training_window,
)
from tradai_core.walk_forward import WalkForwardSpec
from tradai_resources.freqtrade_hyperopt import HyperoptResource

PAIRS = ("BTC/USDT", "ETH/USDT")
NAME = "tradai-lgbm-1h"
# history 2020-10-12 → 2021-02-01, holdout (the model's too) 2021-01-12 → 2021-02-01;
# hyperopt: in-sample 2020-12-01 → 12-29, out-of-sample 2020-12-29 → 2021-01-12
HISTORY = {"history_start": date(2020, 10, 12), "history_end": date(2021, 2, 1), "holdout_days": 20}
STUDY = {
    "n_trials": 2,
    "workers": 1,
    "seed": 3,
    "min_trades": 0,
    "startup_trials": 2,
    "in_sample_days": 28,
    "oos_days": 14,
    "dsr_threshold": 0.0,
    "oos_min_sharpe": -100.0,
    "oos_min_fraction": 0.0,
    "oos_min_trades": 0,
}


def register_model(lab: BacktestLab, candles_dir: Path) -> None:
    """A tiny LightGBM model trained up to 2021-01-12 on both pairs, champion and challenger."""
    candles = {pair: load_recorded(candles_dir, pair).loc[:"2021-01-31 23:00"] for pair in PAIRS}
    window = training_window(HISTORY["history_start"], HISTORY["history_end"], holdout_days=20)
    features = {pair: compute_features(frame) for pair, frame in candles.items()}
    training = build_training_set(features, candles, LabelSpec(horizon=4), window)
    stored = store_training_set(
        lab.resources["candle_store"], "binance", training, {"ohlcv/BTC_USDT": 0, "ohlcv/ETH_USDT": 0}, None
    )
    spec = WalkForwardSpec(n_folds=3, min_train=600, embargo=24, label_horizon=4)
    result = train_walk_forward(stored.frame, "classification", spec, LightGBMParams(num_boost_round=40))
    reference = reference_distribution(stored.frame, stored.window)
    registered = register_trained_model(lab.resources["mlflow"], NAME, result, reference, stored, None)
    assert registered.aliases == (CHALLENGER, CHAMPION)
    version = lab.resources["mlflow"].get_version(NAME, registered.version)
    assert version.tags[TAG_HOLDOUT_START].startswith("2021-01-12")


@pytest.mark.slow
def test_reports_validation_and_hyperopt_confirmation_record_one_layout(
    tmp_path: Path, demo_candles_dir: Path
) -> None:
    lab = backtest_lab(
        tmp_path,
        demo_candles_dir,
        candle_days=("2020-10-12", "2021-01-31"),
        pairs=PAIRS,
        **HISTORY,
    )
    config = yaml.safe_load((lab.folder / "rsi_mean_reversion.yaml").read_text())
    (lab.folder / "rsi_mean_reversion.yaml").write_text(yaml.safe_dump({**config, "pairs": list(PAIRS)}))
    register_model(lab, demo_candles_dir)

    report = run_backtest(lab, "RsiMeanReversion", {"start": "2021-01-12", "end": "2021-02-01"})
    assert report.success
    [reported] = report.asset_materializations_for_node("backtest_report")
    validation = materialize(
        [build_validation_backtest_asset(lab.settings, CHALLENGER)],
        resources=lab.resources,
        instance=lab.instance,
    )
    assert validation.success
    [validated] = validation.asset_materializations_for_node("validation_backtest__challenger")
    study = materialize(
        build_hyperopt_assets(lab.settings, lab.folder),
        resources={
            **lab.resources,
            "hyperopt": HyperoptResource(
                storage_url=f"sqlite:///{tmp_path / 'optuna.db'}", work_dir=str(tmp_path / "work")
            ),
        },
        instance=lab.instance,
        partition_key="RsiMeanReversion",
        run_config={"ops": {"hyperopt_study": {"config": STUDY}}},
        raise_on_error=False,
    )
    [studied] = study.asset_materializations_for_node("hyperopt_study")

    client = mlflow.MlflowClient(lab.settings.resolved_mlflow_uri)
    runs = {
        kind: str(materialization.metadata["mlflow_run_id"].value)
        for kind, materialization in (
            ("report", reported),
            ("validation", validated),
            ("confirmation", studied),
        )
    }
    layouts = {
        kind: {a.path for a in client.list_artifacts(run_id, ARTIFACT_DIR)} - {f"{ARTIFACT_DIR}/charts"}
        for kind, run_id in runs.items()
    }
    assert layouts == {kind: set(LAYOUT) for kind in runs}  # the same files, under the same folder
    top = {a.path for run_id in runs.values() for a in client.list_artifacts(run_id)}
    assert not top & {"report", "oos"}  # no second or third layout beside it

    # each run's recorded trades are the backtest its asset reports, traded with the same money and costs
    trades = {
        kind: len(pd.read_parquet(client.download_artifacts(run_id, f"{ARTIFACT_DIR}/trades.parquet")))
        for kind, run_id in runs.items()
    }
    assert trades["report"] == reported.metadata["trade_count"].value
    assert trades["validation"] == validated.metadata["trade_count"].value
    assert trades["confirmation"] == client.get_run(runs["confirmation"]).data.metrics["oos_trades"]
    run_configs = [
        json.loads(Path(client.download_artifacts(run_id, f"{ARTIFACT_DIR}/run_config.json")).read_text())
        for run_id in runs.values()
    ]
    costs = {(c["max_open_trades"], c["starting_balance"], c["fee"]) for c in run_configs}
    assert costs == {(3, 1000.0, 0.001)}
    windows = [c["timerange"] for c in run_configs]
    assert windows == ["20210112-20210201", "20210112-20210201", "20201229-20210112"]
