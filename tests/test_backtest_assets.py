"""Backtest reports as assets: gates first (strategy validates, data covers the window), then Freqtrade on
candles from ArcticDB, the full report in MLflow, and nothing half-written when anything fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import lightgbm
import mlflow
import numpy as np
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, ExecuteInProcessResult

from strategies.config import load_strategy_config
from strategies.validation import STRATEGIES_DIR
from tests.backtest_fixtures import HISTORY_END, BacktestLab, backtest_lab, run_backtest
from tradai_assets.backtests import build_backtest_assets, model_problem
from tradai_core.backtest_plan import plan_window
from tradai_core.registry import TAG_HOLDOUT_START
from tradai_core.settings import TradAISettings
from tradai_resources.mlflow_tracking import MLflowResource
from tradai_resources.workers.zygote_client import stop_shared_zygotes

WINDOW = {"start": "2022-08-01", "end": "2022-09-01"}
BROKEN_IMPORT = """
from strategies.base import TradAIStrategy
import a_module_that_does_not_exist  # noqa: F401


class BrokenImport(TradAIStrategy):
    timeframe = "1h"
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, demo_candles_dir: Path) -> BacktestLab:
    """Candles of the demo pairs for 2022-07-20 → 2022-08-31 materialized through the real market-data path,
    a strategies folder with one good, one crashing and one broken strategy, and the resources."""
    lab = backtest_lab(
        tmp_path_factory.mktemp("lab"),
        demo_candles_dir,
        history_start=date(2022, 7, 1),
        candle_days=("2022-07-20", "2022-08-31"),
        strategies=("rsi_mean_reversion", "lgbm_classifier"),
    )
    crashing = (STRATEGIES_DIR / "rsi_mean_reversion.py").read_text().replace("RsiMeanReversion", "Crashing")
    crashing = crashing.replace(
        '        dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)',
        '        raise RuntimeError("engine crash on purpose")',
    )
    (lab.folder / "crashing.py").write_text(crashing)
    (lab.folder / "crashing.yaml").write_text(
        (STRATEGIES_DIR / "rsi_mean_reversion.yaml").read_text().replace("RsiMeanReversion", "Crashing")
    )
    (lab.folder / "broken_import.py").write_text(BROKEN_IMPORT)
    return lab


def backtest(
    lab: BacktestLab, strategy: str, settings: TradAISettings | None = None, **window: object
) -> ExecuteInProcessResult:
    return run_backtest(
        lab, strategy, {**({} if "timerange" in window else WINDOW), **window}, settings=settings
    )


def check(result: ExecuteInProcessResult, name: str) -> object:
    return next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == name
    )


def reported(result: ExecuteInProcessResult) -> bool:
    return any(
        m.asset_key == AssetKey("backtest_report")
        for m in result.asset_materializations_for_node("backtest_report")
    )


def test_every_strategy_module_is_a_partition(lab: BacktestLab) -> None:
    [plan, _] = build_backtest_assets(lab.settings, lab.folder)
    assert set(plan.partitions_def.get_partition_keys()) == {
        "RsiMeanReversion",
        "Crashing",
        "BrokenImport",
        "LgbmClassifier",
    }


def test_a_valid_strategy_passes_its_gates_and_reports_to_the_ui_and_mlflow(lab: BacktestLab) -> None:
    result = backtest(lab, "RsiMeanReversion")
    assert result.success
    assert check(result, "strategy_valid").passed and check(result, "data_coverage").passed
    [report] = result.asset_materializations_for_node("backtest_report")
    metadata = report.metadata
    assert "| Sharpe |" in metadata["metrics"].value and "| SQN |" in metadata["metrics"].value
    assert metadata["equity_and_drawdown"].value.startswith("![equity](data:image/png;base64,")
    assert "| pair | trades |" in metadata["best_and_worst_pairs"].value
    assert metadata["timerange"].value == "20220801-20220901"
    assert set(metadata["data_versions"].value) == {
        f"ohlcv.binance.1h/{p.replace('/', '_')}" for p in lab.settings.pairs
    }
    store = lab.resources["candle_store"]
    pinned = store.pinned_versions(metadata["arcticdb_snapshot"].value)  # the versions it read stay readable
    assert pinned == {key: int(v) for key, v in metadata["data_versions"].value.items()}  # type: ignore[union-attr]
    run = mlflow.MlflowClient(lab.settings.resolved_mlflow_uri).get_run(metadata["mlflow_run_id"].value)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["tradai.arcticdb_snapshot"] == metadata["arcticdb_snapshot"].value
    assert run.data.tags["source_sha256"] == metadata["source_sha256"].value
    assert int(run.data.metrics["trade_count"]) == metadata["trade_count"].value
    artifacts = {
        a.path
        for a in mlflow.MlflowClient(lab.settings.resolved_mlflow_uri).list_artifacts(
            run.info.run_id, "backtest"
        )
    }
    assert {
        "backtest/trades.parquet",
        "backtest/equity.parquet",
        "backtest/freqtrade_stats.json",
    } <= artifacts


def test_a_window_without_data_fails_its_gate_naming_the_missing_days(lab: BacktestLab) -> None:
    result = backtest(lab, "RsiMeanReversion", start="2022-09-15", end="2022-09-20")
    coverage = check(result, "data_coverage")
    assert not coverage.passed
    assert "BTC/USDT: 2022-09-06 → 2022-09-19" in coverage.description  # 200 startup candles before 09-15
    assert not reported(result)


def test_a_strategy_that_does_not_import_fails_its_own_gate_clearly(lab: BacktestLab) -> None:
    result = backtest(lab, "BrokenImport")
    gate = check(result, "strategy_valid")
    assert not gate.passed
    assert "a_module_that_does_not_exist" in gate.metadata["issues"].value
    assert not reported(result)
    assert backtest(lab, "RsiMeanReversion").success  # the others still run


def mlflow_contents(client: mlflow.MlflowClient) -> tuple[set[str], set[str]]:
    """Names of all experiments and ids of all runs in the store (any status)."""
    experiments = client.search_experiments()
    ids = [e.experiment_id for e in experiments]
    runs = client.search_runs(ids, run_view_type=mlflow.entities.ViewType.ALL) if ids else []
    return {e.name for e in experiments}, {r.info.run_id for r in runs}


def test_an_engine_crash_leaves_no_report_and_no_temp_folders(lab: BacktestLab) -> None:
    client = mlflow.MlflowClient(lab.settings.resolved_mlflow_uri)
    before = mlflow_contents(client)
    result = backtest(lab, "Crashing")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "engine crash on purpose" in failure.step_failure_data.error.to_string()
    assert not reported(result)
    assert not any((Path(lab.home) / "backtests").iterdir())
    assert mlflow_contents(client) == before  # no experiment, no run (not even an unfinished one)


def test_an_ml_strategy_without_its_model_is_stopped_by_its_gate(lab: BacktestLab) -> None:
    result = backtest(lab, "LgbmClassifier")
    gate = check(result, "model_ready")
    assert not gate.passed
    assert "champion" in gate.description and "tradai-lgbm-1h" in gate.description
    assert not reported(result)


def test_an_ml_backtest_on_the_models_training_data_is_refused(tmp_path: Path) -> None:
    store = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    features = np.random.default_rng(0).normal(size=(200, 3))
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(features, (features[:, 0] > 0).astype(int)),
        num_boost_round=2,
    )
    with store.start_run("models", "tiny", dagster_run_id="test") as run:
        run.log_model(booster, "model")
        run_id = run.run_id
    version = store.register_model(run_id, "model", "tradai-lgbm-1h")
    store.set_alias("tradai-lgbm-1h", "champion", version)
    store.set_version_tag("tradai-lgbm-1h", version, TAG_HOLDOUT_START, "2022-06-14T00:00:00+00:00")
    config = TradAISettings().model_copy()  # only the timeframe matters here
    strategy_config = load_strategy_config(STRATEGIES_DIR / "lgbm_classifier.yaml")
    assert config.timeframe == strategy_config.timeframe
    inside = plan_window(date(2022, 5, 1), date(2022, 6, 1), "1h", 0)
    problem, lineage = model_problem(store, strategy_config, inside)
    assert problem is not None and "trained on data up to 2022-06-14T00:00:00+00:00" in problem
    assert lineage == {"model": "tradai-lgbm-1h", "model_alias": "champion", "model_version": str(version)}
    after = plan_window(date(2022, 6, 14), date(2022, 7, 1), "1h", 0)
    assert model_problem(store, strategy_config, after)[0] is None


def test_default_pairs_outside_the_universe_are_dropped_and_said_so(lab: BacktestLab) -> None:
    narrow = lab.settings.model_copy(update={"pairs": ("ETH/USDT", "BTC/USDT")})
    result = backtest(lab, "RsiMeanReversion", narrow)
    assert result.success
    coverage = check(result, "data_coverage")
    assert coverage.passed
    dropped = coverage.metadata["dropped_pairs"].value
    assert set(dropped) == {"ADA/USDT", "LTC/USDT", "XRP/USDT", "DOGE/USDT"}
    assert all("not in the pair universe (TRADAI_PAIRS=ETH/USDT,BTC/USDT)" in why for why in dropped.values())
    [plan] = result.asset_materializations_for_node("backtest_plan")
    assert plan.metadata["pairs"].value == "BTC/USDT, ETH/USDT"
    [report] = result.asset_materializations_for_node("backtest_report")
    assert report.metadata["pairs"].value == "BTC/USDT, ETH/USDT"
    assert set(report.metadata["dropped_pairs"].value) == set(dropped)
    logged = [entry.user_message for entry in lab.instance.all_logs(result.run_id)]
    assert any("dropped ADA/USDT: not in the pair universe" in message for message in logged)


def test_run_config_pairs_choose_the_backtested_pairs(lab: BacktestLab) -> None:
    result = backtest(lab, "RsiMeanReversion", pairs=["LTC/USDT"], timerange="20220805-20220820")
    assert result.success
    [report] = result.asset_materializations_for_node("backtest_report")
    assert report.metadata["pairs"].value == "LTC/USDT"
    assert report.metadata["timerange"].value == "20220805-20220820"


def test_run_config_pairs_outside_the_universe_fail_the_gate_clearly(lab: BacktestLab) -> None:
    result = backtest(lab, "RsiMeanReversion", pairs=["BTC/USDT", "SOL/USDT"])
    coverage = check(result, "data_coverage")
    assert not coverage.passed
    assert "SOL/USDT are not in the pair universe" in coverage.description
    assert "add them to TRADAI_PAIRS" in coverage.description
    assert not reported(result)


STEPS_PROBE = """
import json, sys
from datetime import date
from pathlib import Path
from dagster import AssetKey, DagsterInstance, materialize
from tradai_assets.backtests import build_backtest_assets
from tradai_core.settings import TradAISettings
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource

home, instance_dir, window = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
settings = TradAISettings(
    home=home, history_start=date(2022, 7, 1), history_end=date.fromisoformat(sys.argv[4])
)
resources = {
    "candle_store": ArcticDBResource(uri=settings.resolved_arcticdb_uri),
    "freqtrade": FreqtradeResource(work_dir=str(home / "backtests")),
    "mlflow": MLflowResource(tracking_uri=settings.resolved_mlflow_uri),
}
heavy = {"freqtrade", "ccxt", "matplotlib", "mlflow"}
loaded = lambda: sorted({name.split(".")[0] for name in sys.modules} & heavy)
ops = {"ops": {"backtest_plan": {"config": window}, "backtest_report": {"config": window}}}
assets = build_backtest_assets(settings, home / "strategies")
out = {}
with DagsterInstance.from_config(instance_dir) as instance:
    plan = materialize(
        assets, selection=[AssetKey("backtest_plan")], resources=resources, instance=instance,
        partition_key="RsiMeanReversion", run_config={"ops": {"backtest_plan": {"config": window}}},
    )
    out["plan"] = [plan.success, loaded()]
    both = materialize(
        assets, resources=resources, instance=instance, partition_key="RsiMeanReversion", run_config=ops
    )
    reports = both.asset_materializations_for_node("backtest_report")
    charted = len(reports) == 1 and {"chart_BTC_USDT", "equity_and_drawdown"} <= set(reports[0].metadata)
    out["report"] = [both.success and charted, loaded()]
    meta = reports[0].metadata
    run = resources["mlflow"].get_run(meta["mlflow_run_id"].value)  # MLflow loaded from here on
    trades = resources["mlflow"].load_dataframe(run.info.run_id, "backtest/trades.parquet")
    out["run"] = [run.info.status, run.data.params["timerange"], len(trades), meta["trade_count"].value]
    out["run_tags"] = [run.data.tags["dagster.run_id"] == both.run_id, run.data.tags["purpose"]]
print(json.dumps(out))
"""


def test_neither_backtest_step_imports_freqtrade_ccxt_matplotlib_or_mlflow_in_the_dagster_process(
    tmp_path: Path, demo_candles_dir: Path
) -> None:
    """The strategy is validated in a child forked from the Freqtrade worker, the report's charts are drawn
    by the backtest's own child, and its MLflow run is written by another (issue #14): the Dagster process
    that runs the plan and the report never imports Freqtrade's strategy API, ccxt with it, matplotlib or
    MLflow; the report still has its charts, and its run is in the store, finished, with its trades."""
    instance_dir = tmp_path / "dagster"
    instance_dir.mkdir()
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(instance_dir)) as instance:
        backtest_lab(
            tmp_path / "home",
            demo_candles_dir,
            history_start=date(2022, 7, 1),
            candle_days=("2022-07-20", "2022-08-31"),
            instance=instance,
        )
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRADAI_")}
    env["TRADAI_WORKER_DIR"] = str(tmp_path / "workers")  # its own worker, stopped below
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                STEPS_PROBE,
                str(tmp_path / "home"),
                str(instance_dir),
                json.dumps(WINDOW),
                HISTORY_END.isoformat(),
            ],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        if (tmp_path / "workers").is_dir():
            stop_shared_zygotes(tmp_path / "workers")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["plan"] == [True, []], f"after backtest_plan: {out['plan']}"
    assert out["report"] == [True, []], f"after backtest_report: {out['report']}"
    status, timerange, stored_trades, reported_trades = out["run"]
    assert status == "FINISHED"
    assert timerange.startswith(WINDOW["start"].replace("-", "") + "-")
    assert stored_trades == reported_trades > 0
    assert out["run_tags"] == [True, "report"]
