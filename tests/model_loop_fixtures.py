"""A small world for the model-loop tests: real recorded candles of two pairs in ArcticDB (LMDB), real
MLflow (SQLite), a real Dagster instance (SQLite in a temp folder), and the code location's model-loop
definitions with a tiny LightGBM and the 20-day holdout the data allows."""

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, RunRequest
from dagster._core.storage.tags import RUN_KEY_TAG

from tests.conftest import load_recorded
from tradai.defs.features import build_features_definitions
from tradai.defs.model_loop import build_model_loop_definitions
from tradai.defs.models import build_models_definitions
from tradai_core.model_lifecycle import DriftPolicy, RollbackLimits
from tradai_core.settings import TradAISettings
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource
from tradai_resources.notifier import NotifierResource

PAIRS = ("BTC/USDT", "ETH/USDT")
NAME = "tradai-lgbm-1h"
HISTORY_START = date(2020, 10, 12)
TRAINING = {"holdout_days": 20}
MODEL = {"n_folds": 3, "min_train": 600, "num_boost_round": 60, "min_data_in_leaf": 100}
VALIDATION = {"max_open_trades": 2}
COMPARISON = {"min_trades": 10, "n_iterations": 1000}


def retraining_config(holdout_days: int = 20) -> dict[str, Any]:
    """The retraining job's run config for the tests: small model, short holdout, 10-trade minimum."""
    return {
        "ops": {
            "training_set": {"config": {**TRAINING, "holdout_days": holdout_days}},
            "model": {"config": MODEL},
            "validation_backtest__challenger": {"config": VALIDATION},
            "validation_backtest__champion": {"config": VALIDATION},
            "model_comparison": {"config": COMPARISON},
        }
    }


@dataclass
class Lab:
    """Settings, resources, instance and definitions of one test world."""

    settings: TradAISettings
    store: ArcticDBResource
    mlflow: MLflowResource
    notifier: NotifierResource
    instance: DagsterInstance
    defs: Definitions
    home: Path

    @property
    def resources(self) -> dict[str, Any]:
        """Resources by key, as the code location binds them."""
        return dict(self.defs.resources or {})

    def run(self, job: str, **kwargs: Any) -> ExecuteInProcessResult:
        """Execute a job of the definitions in process on the lab's instance."""
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, **kwargs
        )

    def launch(self, job: str, request: RunRequest) -> ExecuteInProcessResult:
        """Execute what a sensor or schedule requested, as the daemon would (run key, tags, config)."""
        return self.run(
            job,
            run_config=request.run_config or None,
            tags={**request.tags, RUN_KEY_TAG: request.run_key or ""},
            partition_key=request.partition_key,
        )


def empty_mlflow_db(folder: Path) -> Path:
    """A migrated, empty MLflow database (migrations take seconds; stores start as copies of it)."""
    path = folder / "mlflow-template.db"
    if not path.exists():
        MLflowResource(tracking_uri=f"sqlite:///{path}").client().search_experiments()
    return path


def seed_candles(store: ArcticDBResource, candles_dir: Path, start: date, end: date) -> None:
    """Write the recorded candles of `[start, end)` into the candle store, as the ohlcv assets would."""
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    for pair in PAIRS:
        candles = load_recorded(candles_dir, pair)
        store.write_window(
            "binance", "1h", pair, candles[(candles.index >= lo) & (candles.index < hi)], lo, hi
        )


def make_lab(
    home: Path,
    candles_dir: Path,
    template: Path,
    instance: DagsterInstance,
    history_end: date,
    *,
    holdout_days: int = 20,
    drift_policy: DriftPolicy | None = None,
    rollback_limits: RollbackLimits | None = None,
) -> Lab:
    """Candles of `HISTORY_START → history_end` in ArcticDB, an empty MLflow store, the definitions."""
    settings = TradAISettings(home=home, pairs=PAIRS, history_start=HISTORY_START, history_end=history_end)
    store = ArcticDBResource(uri=settings.resolved_arcticdb_uri)
    seed_candles(store, candles_dir, HISTORY_START, history_end)
    shutil.copyfile(template, home / "mlflow.db")
    mlflow = MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    notifier = NotifierResource()
    loop = build_model_loop_definitions(
        settings,
        retraining_config=retraining_config(holdout_days),
        drift_policy=drift_policy,
        rollback_limits=rollback_limits,
    )
    defs = Definitions.merge(
        build_features_definitions(settings),
        build_models_definitions(settings),
        loop,
        Definitions(
            resources={
                "candle_store": store,
                "mlflow": mlflow,
                "notifier": notifier,
                "freqtrade": FreqtradeResource(work_dir=str(home / "backtests")),
            }
        ),
    )
    return Lab(settings, store, mlflow, notifier, instance, defs, home)
