"""Hyperopt as assets: a study per strategy on candles from ArcticDB, an overfitting gate that blocks, and
tuned parameters handed on only through an explicit, versioned MLflow record — never a stray file."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from conftest import DEMO_CANDLES, load_recorded
from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult, materialize

from strategies.config import load_strategy_config
from strategies.validation import STRATEGIES_DIR
from tradai_assets.hyperopt import (
    build_hyperopt_assets,
    latest_tuned_run_id,
    load_tuned_parameters,
    run_demo_study,
    summarize_demo_study,
)
from tradai_core.errors import NotFoundError, TradAIError, ValidationError
from tradai_core.settings import TradAISettings
from tradai_core.tuned_params import apply_tuned
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.mlflow_tracking import MLflowResource

PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT")
# holdout 2021-04-01 → 2021-04-11; out-of-sample 2021-03-04 → 2021-04-01; in-sample 2021-01-03 → 2021-03-04
SETTINGS = {"history_start": date(2020, 12, 1), "history_end": date(2021, 4, 11), "holdout_days": 10}
STUDY = {
    "n_trials": 6,
    "workers": 2,
    "seed": 3,
    "min_trades": 3,
    "startup_trials": 4,
    "in_sample_days": 60,
    "oos_days": 28,
}
LENIENT = {"dsr_threshold": 0.0, "oos_min_sharpe": -100.0, "oos_min_fraction": 0.0, "oos_min_trades": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """What every study reads and none writes: recorded candles of three pairs in ArcticDB and
    RsiMeanReversion (on those pairs) in its own strategy folder."""
    home = tmp_path_factory.mktemp("hyperopt-world")
    settings = TradAISettings(home=home, pairs=PAIRS, **SETTINGS)
    folder = home / "strategies"
    folder.mkdir()
    shutil.copy(STRATEGIES_DIR / "rsi_mean_reversion.py", folder / "rsi_mean_reversion.py")
    config = yaml.safe_load((STRATEGIES_DIR / "rsi_mean_reversion.yaml").read_text())
    (folder / "rsi_mean_reversion.yaml").write_text(
        yaml.safe_dump({**config, "pairs": list(PAIRS)}, sort_keys=False)
    )
    store = ArcticDBResource(uri=settings.resolved_arcticdb_uri)
    start, end = pd.Timestamp(settings.history_start, tz="UTC"), pd.Timestamp(settings.history_end, tz="UTC")
    for pair in PAIRS:
        store.write_window(
            "binance",
            "1h",
            pair,
            load_recorded(DEMO_CANDLES, pair).loc[start : end - pd.Timedelta(hours=1)],
            start,
            end,
        )
    return {"settings": settings, "folder": folder, "candle_store": store}


def new_lab(world: dict[str, object], home: Path) -> dict[str, object]:
    """The shared candles and strategy with stores of its own under `home`: an Optuna SQLite storage, an
    MLflow store, a work folder and a Dagster instance — so no other test's study adds to its trials or
    tuned versions."""
    mlflow_store = MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    resources = {
        "candle_store": world["candle_store"],
        "hyperopt": HyperoptResource(
            storage_url=f"sqlite:///{home / 'optuna.db'}", work_dir=str(home / "work")
        ),
        "freqtrade": FreqtradeResource(work_dir=str(home / "backtests")),
        "mlflow": mlflow_store,
    }
    return {
        "settings": world["settings"],
        "folder": world["folder"],
        "instance": DagsterInstance.ephemeral(),
        "resources": resources,
        "home": home,
        "mlflow_uri": mlflow_store.tracking_uri,
    }


@pytest.fixture(scope="module")
def lab(world: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The stores of the module's one passing study (`passed`), which the tests only read."""
    return new_lab(world, tmp_path_factory.mktemp("hyperopt-lab"))


@pytest.fixture
def own_lab(world: dict[str, object], tmp_path: Path) -> dict[str, object]:
    """Fresh stores for a test that runs studies of its own."""
    return new_lab(world, tmp_path)


def study(lab: dict[str, object], **config: object) -> ExecuteInProcessResult:
    return materialize(
        build_hyperopt_assets(lab["settings"], lab["folder"]),  # type: ignore[arg-type]
        resources=lab["resources"],  # type: ignore[arg-type]
        instance=lab["instance"],  # type: ignore[arg-type]
        partition_key="RsiMeanReversion",
        run_config={"ops": {"hyperopt_study": {"config": {**STUDY, **config}}}},
        raise_on_error=False,
    )


def gate(result: ExecuteInProcessResult) -> object:
    return next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    )


def materialized(result: ExecuteInProcessResult, node: str) -> dict[str, object] | None:
    found = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in found[0].metadata.items()} if found else None


@pytest.fixture(scope="module")
def passed(lab: dict[str, object]) -> ExecuteInProcessResult:
    """A first study whose gate is set low enough to pass."""
    return study(lab, **LENIENT)


def test_a_passing_gate_hands_the_tuned_parameters_on(
    passed: ExecuteInProcessResult, lab: dict[str, object]
) -> None:
    assert passed.success
    check = gate(passed)
    assert check.passed and check.check_name == "overfitting_gate"
    meta = materialized(passed, "hyperopt_study")
    assert meta is not None
    assert (meta["trials_this_run"], meta["trials_total"]) == (6, 6)
    assert meta["study"] == "RsiMeanReversion-20210103-20210304-sharpe"
    assert meta["indicators_once"] is True
    assert "| buy_rsi | buy |" in meta["best_params"] and "| parameter | importance |" in meta["importances"]
    assert meta["optimization_history"].startswith("![optimization history](data:image/png;base64,")
    assert meta["out_of_sample"].startswith("20210304-20210401: Sharpe ")
    assert 0.0 <= meta["dsr"] <= 1.0 and meta["tuned_version"] == 1
    pinned = lab["resources"]["candle_store"].pinned_versions(meta["arcticdb_snapshot"])  # type: ignore[index]
    read = {key: int(version) for key, version in meta["data_versions"].items()}
    assert pinned == read and pinned  # the candle versions the study read stay readable
    tuned_meta = materialized(passed, "tuned_parameters")
    assert tuned_meta is not None and tuned_meta["mlflow_run_id"] == meta["mlflow_run_id"]
    assert latest_tuned_run_id(lab["instance"], "RsiMeanReversion") == meta["mlflow_run_id"]  # type: ignore[arg-type]


def test_the_tuned_parameters_are_a_versioned_mlflow_artifact_with_the_study(
    passed: ExecuteInProcessResult, lab: dict[str, object]
) -> None:
    meta = materialized(passed, "hyperopt_study")
    assert meta is not None
    client = mlflow.MlflowClient(lab["mlflow_uri"])  # type: ignore[arg-type]
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.tags["tradai.tuned.version"] == "1" and run.data.tags["tradai.gate"] == "passed"
    assert run.data.tags["dagster.run_id"] == passed.run_id
    assert (
        run.data.metrics["trials_total"] == 6
        and "dsr" in run.data.metrics
        # a defined OOS Sharpe is a metric; an undefined one (e.g. one OOS trade) a tag saying why, never −100
        and ("oos_sharpe" in run.data.metrics) != ("tradai.undefined.oos_sharpe" in run.data.tags)
    )
    assert run.data.metrics.get("oos_sharpe") != -100.0
    artifacts = {
        a.path for folder in ("tuned", "study") for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "tuned/RsiMeanReversion.json",
        "study/trials.parquet",
        "study/optimization_history.png",
        "study/importances.json",
    } <= artifacts
    trials = lab["resources"]["mlflow"].load_dataframe(meta["mlflow_run_id"], "study/trials.parquet")  # type: ignore[index]
    assert sorted(trials["number"]) == list(range(6))
    assert set(trials["worker"]) == {0, 1}  # two study-workers shared the study
    tuned = load_tuned_parameters(lab["resources"]["mlflow"], meta["mlflow_run_id"], "RsiMeanReversion")  # type: ignore[index]
    assert tuned.version == 1 and tuned.trials == 6 and tuned.gate_passed
    assert tuned.in_sample_timerange == "20210103-20210304" and tuned.oos_timerange == "20210304-20210401"
    config = apply_tuned(load_strategy_config(Path(lab["folder"]) / "rsi_mean_reversion.yaml"), tuned)  # type: ignore[arg-type]
    assert config.buy_params == tuned.buy_params and config.sell_params == tuned.sell_params


def test_a_high_dsr_threshold_blocks_the_hand_over_and_the_study_resumes(
    own_lab: dict[str, object],
) -> None:
    lab = own_lab
    first = materialized(study(lab, **LENIENT), "hyperopt_study")
    assert first is not None and (first["trials_total"], first["tuned_version"]) == (6, 1)
    refused = study(lab, **{**LENIENT, "dsr_threshold": 0.999})
    check = gate(refused)
    assert not check.passed and "DSR" in check.description and "below 0.999" in check.description
    assert materialized(refused, "tuned_parameters") is None  # the blocking gate stopped it
    meta = materialized(refused, "hyperopt_study")
    assert meta is not None
    # the same study continued: more trials, a best that is never worse, a new tuned version
    assert (meta["trials_this_run"], meta["trials_total"]) == (6, 12)
    assert meta["best_value"] >= first["best_value"] and meta["tuned_version"] == 2
    with pytest.raises(ValidationError, match="refused"):
        load_tuned_parameters(lab["resources"]["mlflow"], meta["mlflow_run_id"], "RsiMeanReversion")  # type: ignore[index]
    # backtests naming no tuned parameters are unaffected; the latest handed-on version is still v1
    assert latest_tuned_run_id(lab["instance"], "RsiMeanReversion") == first["mlflow_run_id"]  # type: ignore[arg-type]
    storage = f"sqlite:///{Path(lab['home']) / 'optuna.db'}"  # type: ignore[arg-type]
    assert len(optuna.load_study(study_name=meta["study"], storage=storage).trials) == 12


def test_no_parameter_file_ever_appears_beside_the_strategy(
    passed: ExecuteInProcessResult, lab: dict[str, object]
) -> None:
    assert passed.success
    assert sorted(p.name for p in Path(lab["folder"]).iterdir() if p.is_file()) == [  # type: ignore[arg-type]
        "rsi_mean_reversion.py",
        "rsi_mean_reversion.yaml",
    ]
    assert not list(STRATEGIES_DIR.glob("*.json"))
    assert not any(Path(lab["home"], "work").iterdir())  # type: ignore[arg-type]


DEMO_WINDOWS = {key: STUDY[key] for key in ("in_sample_days", "oos_days", "min_trades", "startup_trials")}


def test_the_demo_study_hands_on_what_its_gate_passes(own_lab: dict[str, object]) -> None:
    lab = own_lab
    result = run_demo_study(
        lab["settings"],  # type: ignore[arg-type]
        lab["resources"],  # type: ignore[arg-type]
        lab["instance"],  # type: ignore[arg-type]
        n_trials=2,
        folder=lab["folder"],  # type: ignore[arg-type]
        config={**DEMO_WINDOWS, **LENIENT},
    )
    assert result.success and gate(result).passed
    tuned = materialized(result, "tuned_parameters")
    assert tuned is not None
    summary = summarize_demo_study(result)
    assert summary.startswith("RsiMeanReversion-") and "2 trials this run (2 in total" in summary
    assert "; gate passed: DSR " in summary
    assert summary.endswith(f"→ tuned parameters v1 handed on (MLflow run {tuned['mlflow_run_id']})")


def test_the_demo_study_says_why_its_gate_refused(own_lab: dict[str, object]) -> None:
    lab = own_lab
    result = run_demo_study(
        lab["settings"],  # type: ignore[arg-type]
        lab["resources"],  # type: ignore[arg-type]
        lab["instance"],  # type: ignore[arg-type]
        n_trials=2,
        folder=lab["folder"],  # type: ignore[arg-type]
        config={**DEMO_WINDOWS, **LENIENT, "oos_min_trades": 100_000},  # no window holds that many trades
    )
    assert not gate(result).passed
    assert result.asset_materializations_for_node("tuned_parameters") == []
    summary = summarize_demo_study(result)
    assert summary.startswith("RsiMeanReversion-") and "2 trials this run (2 in total" in summary
    assert "gate refused: " in summary and "fewer than 100000" in summary
    assert summary.endswith("→ parameters not handed on")


# -- reading tuned parameters back: "none recorded" is not the same as "MLflow failed"


def hyperopt_run(mlflow_store: MLflowResource, artifact_location: str | None = None) -> str:
    """An MLflow run tagged like a hyperopt run of RsiMeanReversion, with no artifact logged yet."""
    client = mlflow_store.client()
    location = artifact_location or f"{mlflow_store.resolved_artifact_root()}/probe"
    experiment = client.create_experiment("probe", artifact_location=location)
    return client.create_run(experiment, tags={"strategy": "RsiMeanReversion"}).info.run_id


def test_a_run_without_tuned_parameters_is_reported_as_not_found(tmp_path: Path) -> None:
    store = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = hyperopt_run(store)
    with pytest.raises(NotFoundError, match="holds no tuned parameters for RsiMeanReversion"):
        load_tuned_parameters(store, run_id)


def test_an_mlflow_failure_is_not_taken_for_missing_tuned_parameters(tmp_path: Path) -> None:
    store = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = hyperopt_run(store, artifact_location="nosuchscheme://bucket/tuned")  # no such artifact store
    with pytest.raises(TradAIError, match="could not read the tuned parameters") as caught:
        load_tuned_parameters(store, run_id)
    assert not isinstance(caught.value, NotFoundError)
    assert run_id in str(caught.value) and "INTERNAL_ERROR" in str(caught.value)


def test_a_corrupt_tuned_parameters_artifact_is_a_validation_error(tmp_path: Path) -> None:
    store = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = hyperopt_run(store)
    store.client().log_dict(run_id, {"strategy": "RsiMeanReversion"}, "tuned/RsiMeanReversion.json")
    with pytest.raises(ValidationError, match="is not a tuned-parameters record"):
        load_tuned_parameters(store, run_id)


def test_the_demo_study_uses_the_pre_screen_and_says_so(own_lab: dict[str, object]) -> None:
    lab = own_lab
    result = run_demo_study(
        lab["settings"],  # type: ignore[arg-type]
        lab["resources"],  # type: ignore[arg-type]
        lab["instance"],  # type: ignore[arg-type]
        n_trials=2,
        folder=lab["folder"],  # type: ignore[arg-type]
        config={**DEMO_WINDOWS, **LENIENT, "prescreen_trials": 40, "agreement_sample": 5},
        prescreen=True,
    )
    study = materialized(result, "hyperopt_study")
    assert study is not None and study["prescreen_explored"] == 40
    assert study["trials_this_run"] == 5 + 2  # the agreement sample, then the finalists (or 2 plain trials)
    summary = summarize_demo_study(result)
    assert ("pre-screen explored 40 parameter sets" in summary) == study["prescreen_used"]
    assert "pre-screen" in summary and str(study["prescreen"]) in summary
