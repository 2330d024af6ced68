"""MLflowResource against real SQLite-backed MLflow stores (no mocks)."""

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import lightgbm as lgb
import matplotlib
import matplotlib.figure
import mlflow
import numpy as np
import pandas as pd
import pytest

from tradai_core.errors import NotFoundError, ValidationError
from tradai_resources.mlflow_tracking import (
    TAG_DAGSTER_RUN_ID,
    TAG_DATA_VERSION_PREFIX,
    TAG_ERROR,
    TAG_GIT_COMMIT,
    MLflowResource,
    project_git_commit,
)

ROOT = Path(__file__).resolve().parents[1]

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow database. MLflow's schema migrations take seconds per new database, so
    they run once per module and every store starts as a copy of this file."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MLflowResource(tracking_uri=f"sqlite:///{path}").client().search_experiments()
    return path


def new_store(empty_db: Path, folder: Path) -> MLflowResource:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_db, folder / "mlflow.db")
    return MLflowResource(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", experiment_prefix="test")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-store")


@pytest.fixture(scope="module")
def resource(empty_db: Path, store: Path) -> MLflowResource:
    """The store most tests share."""
    return new_store(empty_db, store)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(300, 4))
    target = (features[:, 0] + 0.1 * rng.normal(size=300) > 0).astype(int)
    return lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": 1},
        lgb.Dataset(features, target),
        num_boost_round=10,
    )


def test_a_successful_block_ends_the_run_finished_with_lineage_tags(resource: MLflowResource) -> None:
    with resource.start_run(
        "training",
        "fit-btc",
        dagster_run_id="dagster-run-123",
        data_versions={"ohlcv/BTC_USDT": "17"},
        tags={"pair": "BTC/USDT"},
    ) as run:
        run.log_params({"num_leaves": 7, "learning_rate": 0.05})
        run.log_metrics({"auc": 0.61, "logloss": 0.68}, step=2)

    stored = resource.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.run_name == "fit-btc"
    assert stored.data.tags[TAG_DAGSTER_RUN_ID] == "dagster-run-123"
    assert stored.data.tags[TAG_GIT_COMMIT] == project_git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", stored.data.tags[TAG_GIT_COMMIT])
    assert stored.data.tags[TAG_DATA_VERSION_PREFIX + "ohlcv/BTC_USDT"] == "17"
    assert stored.data.tags["pair"] == "BTC/USDT"
    assert stored.data.params == {"num_leaves": "7", "learning_rate": "0.05"}
    assert stored.data.metrics == {"auc": 0.61, "logloss": 0.68}
    assert mlflow.active_run() is None


def test_a_failing_block_ends_the_run_failed_and_reraises(resource: MLflowResource) -> None:
    with (
        pytest.raises(RuntimeError, match="training diverged"),
        resource.start_run("training", "fit-eth", dagster_run_id="dagster-run-456") as run,
    ):
        run.log_metrics({"loss": float("inf")})
        raise RuntimeError("training diverged")

    stored = resource.get_run(run.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags[TAG_ERROR] == "RuntimeError: training diverged"
    assert mlflow.active_run() is None


def test_an_interrupted_block_ends_the_run_killed(resource: MLflowResource) -> None:
    with (
        pytest.raises(KeyboardInterrupt),
        resource.start_run("training", "interrupted", dagster_run_id="dagster-run-789") as run,
    ):
        raise KeyboardInterrupt

    assert resource.get_run(run.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_the_handle_refuses_logging_once_the_run_has_ended(resource: MLflowResource) -> None:
    with resource.start_run("training", "short", dagster_run_id=None) as run:
        pass
    assert resource.get_run(run.run_id).data.tags[TAG_DAGSTER_RUN_ID] == "outside-dagster"
    with pytest.raises(ValidationError, match="already ended"):
        run.log_metrics({"late": 1.0})


def test_experiments_are_created_with_artifacts_under_the_artifact_root(
    resource: MLflowResource, store: Path
) -> None:
    experiment_id = resource.ensure_experiment("layout")
    experiment = resource.client().get_experiment(experiment_id)
    assert experiment.name == "test/layout"
    assert experiment.artifact_location == (store / "mlartifacts" / "test_layout").as_uri()
    assert resource.ensure_experiment("layout") == experiment_id


def test_artifacts_load_back_as_they_were_logged(resource: MLflowResource, store: Path) -> None:
    frame = pd.DataFrame(
        {"close": [1.5, 2.5, 3.5], "volume": [10.0, 0.0, 7.25]},
        index=pd.date_range("2021-01-01", periods=3, freq="1h", tz="UTC", name="date"),
    )
    png = _png_bytes()
    with resource.start_run("artifacts", "all-kinds", dagster_run_id="r1") as run:
        run.log_dict({"threshold": 0.002, "pairs": ["BTC/USDT"]}, "config/label.json")
        run.log_dict({"horizon": 4}, "config/label.yaml")
        run.log_text("fold 0: auc 0.61\n", "report.txt")
        run.log_dataframe(frame, "data/sample.parquet")
        run.log_dataframe(frame.reset_index(drop=True), "data/sample.csv")
        run.log_image_bytes(png, "plots/equity.png")
        figure = matplotlib.figure.Figure()
        figure.add_subplot().plot([1, 2, 3])
        run.log_figure(figure, "plots/figure.png")
        with pytest.raises(ValidationError, match=r"\.parquet or \.csv"):
            run.log_dataframe(frame, "data/sample.xlsx")

    assert resource.load_dict(run.run_id, "config/label.json") == {"threshold": 0.002, "pairs": ["BTC/USDT"]}
    assert resource.load_dict(run.run_id, "config/label.yaml") == {"horizon": 4}
    assert resource.load_text(run.run_id, "report.txt") == "fold 0: auc 0.61\n"
    pd.testing.assert_frame_equal(
        resource.load_dataframe(run.run_id, "data/sample.parquet"), frame, check_freq=False
    )
    pd.testing.assert_frame_equal(
        resource.load_dataframe(run.run_id, "data/sample.csv"), frame.reset_index(drop=True)
    )
    assert resource.download_artifact(run.run_id, "plots/equity.png", store / "dl").read_bytes() == png
    figure_png = resource.download_artifact(run.run_id, "plots/figure.png", store / "dl").read_bytes()
    assert figure_png.startswith(b"\x89PNG")
    artifact_uri = resource.get_run(run.run_id).info.artifact_uri
    assert artifact_uri.startswith((store / "mlartifacts").as_uri())


def test_a_logged_lightgbm_model_registers_takes_an_alias_and_loads_back_by_it(
    resource: MLflowResource, booster: lgb.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's own default store would appear here as ./mlflow.db
    rows = np.random.default_rng(3).normal(size=(5, 4))
    with resource.start_run("models", "fit", dagster_run_id="r2") as run:
        info = run.log_model(booster, "model", flavor="lightgbm")
    assert info.model_uri.startswith("models:/")

    first = resource.register_model(run.run_id, "model", "btc-direction", tags={"feature_set": "abc123"})
    second = resource.register_model(run.run_id, "model", "btc-direction")
    assert second == first + 1

    assert resource.set_alias("btc-direction", "champion", first) is None
    assert resource.set_alias("btc-direction", "challenger", second) is None
    assert resource.set_alias("btc-direction", "champion", second) == first
    resource.set_version_tag("btc-direction", first, "archived_reason", "replaced by a challenger")

    champion = resource.get_version_by_alias("btc-direction", "champion")
    assert champion.version == second
    assert champion.run_id == run.run_id
    assert set(champion.aliases) == {"champion", "challenger"}

    versions = resource.list_versions("btc-direction")
    assert [v.version for v in versions] == [first, second]
    assert versions[0].aliases == ()
    assert versions[0].tags == {"feature_set": "abc123", "archived_reason": "replaced by a challenger"}

    expected = booster.predict(rows)
    pyfunc = resource.load_model("btc-direction", "champion")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(rows)), expected)
    native = resource.load_model("btc-direction", "champion", flavor="lightgbm")
    np.testing.assert_allclose(native.predict(rows), expected)

    resource.delete_alias("btc-direction", "challenger")
    assert resource.get_version_by_alias("btc-direction", "champion").aliases == ("champion",)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_a_missing_alias_or_model_raises_not_found_saying_what_to_do(
    resource: MLflowResource, booster: lgb.Booster
) -> None:
    with resource.start_run("models", "fit-once", dagster_run_id="r3") as run:
        run.log_model(booster, "model")
    version = resource.register_model(run.run_id, "model", "eth-direction")

    with pytest.raises(NotFoundError) as missing_alias:
        resource.get_version_by_alias("eth-direction", "champion")
    message = str(missing_alias.value)
    assert "no model version of 'eth-direction' has alias 'champion'" in message
    assert f"versions: {version}" in message
    assert "set_alias('eth-direction', 'champion'" in message and "retraining job" in message

    with pytest.raises(NotFoundError, match="no model named 'doge-direction' is registered"):
        resource.load_model("doge-direction", "champion")
    with pytest.raises(NotFoundError, match="has no version 99"):
        resource.set_alias("eth-direction", "champion", 99)
    assert resource.list_versions("doge-direction") == []


def test_registering_a_run_without_that_model_raises_not_found(resource: MLflowResource) -> None:
    with resource.start_run("models", "no-model", dagster_run_id="r4") as run:
        run.log_metrics({"auc": 0.5})
    with pytest.raises(NotFoundError, match="has no model logged as 'model'"):
        resource.register_model(run.run_id, "model", "nothing")


def test_two_stores_stay_apart_and_the_global_tracking_uri_is_restored(
    resource: MLflowResource, store: Path, empty_db: Path, tmp_path: Path
) -> None:
    before = mlflow.get_tracking_uri()
    other = new_store(empty_db, tmp_path / "other")
    with resource.start_run("isolation", "in-first", dagster_run_id="a") as first:
        with other.start_run("isolation", "in-second", dagster_run_id="b") as second:
            assert mlflow.get_tracking_uri() == other.tracking_uri
            second.log_text("second store", "where.txt")
        assert mlflow.get_tracking_uri() == resource.tracking_uri
        first.log_text("first store", "where.txt")
    assert mlflow.get_tracking_uri() == before

    def run_names(res: MLflowResource) -> set[str]:
        experiment_id = res.ensure_experiment("isolation")
        return {r.info.run_name for r in res.client().search_runs([experiment_id])}

    assert run_names(resource) == {"in-first"}
    assert run_names(other) == {"in-second"}
    assert resource.get_run(first.run_id).info.status == "FINISHED"
    assert other.get_run(second.run_id).info.status == "FINISHED"
    assert resource.load_text(first.run_id, "where.txt") == "first store"
    assert other.load_text(second.run_id, "where.txt") == "second store"
    assert other.get_run(second.run_id).info.artifact_uri.startswith(
        (tmp_path / "other" / "mlartifacts").as_uri()
    )
    assert resource.get_run(first.run_id).info.artifact_uri.startswith((store / "mlartifacts").as_uri())


def test_run_links_point_at_a_ui_and_never_carry_credentials(resource: MLflowResource) -> None:
    assert resource.run_url("abc") is None
    assert resource.ui_hint().startswith("mlflow ui --backend-store-uri sqlite:///")
    assert resource.run_metadata("abc")["mlflow_run"] == dg.MetadataValue.text(resource.ui_hint())

    served = MLflowResource(tracking_uri="https://user:s3cret@mlflow.example.com:5000/")
    assert served.run_url("abc", "7") == "https://mlflow.example.com:5000/#/experiments/7/runs/abc"
    assert served.run_url("abc") == "https://mlflow.example.com:5000/#/runs/abc"
    assert (
        served.model_version_url("btc dir", 3)
        == "https://mlflow.example.com:5000/#/models/btc%20dir/versions/3"
    )
    assert served.resolved_artifact_root() is None

    local_ui = MLflowResource(tracking_uri=resource.tracking_uri, ui_url="http://127.0.0.1:5000")
    assert local_ui.run_url("abc", "1") == "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    assert local_ui.run_metadata("abc", "1")["mlflow_run"] == dg.MetadataValue.url(
        "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    )


def test_the_default_store_is_the_settings_sqlite_uri_under_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRADAI_HOME", str(tmp_path / "home"))
    default = MLflowResource()
    assert default.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert default.resolved_artifact_root() == (tmp_path / "home" / "mlartifacts").as_uri()


def test_a_dagster_asset_configured_by_envvar_tags_its_run_with_the_dagster_run_id(
    resource: MLflowResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MLFLOW_URI", resource.tracking_uri)

    @dg.asset
    def trained(context: dg.AssetExecutionContext, mlflow_tracking: MLflowResource) -> str:
        with mlflow_tracking.start_run("dagster", "asset", dagster_run_id=context.run.run_id) as run:
            run.log_metrics({"auc": 0.55})
        context.add_output_metadata(mlflow_tracking.run_metadata(run.run_id, run.experiment_id))
        return run.run_id

    result = dg.materialize(
        [trained],
        resources={"mlflow_tracking": MLflowResource(tracking_uri=dg.EnvVar("TEST_MLFLOW_URI"))},
    )
    assert result.success
    run_id = result.output_for_node("trained")
    stored = resource.get_run(run_id)
    assert stored.data.tags[TAG_DAGSTER_RUN_ID] == result.run_id
    assert stored.info.status == "FINISHED"


def _png_bytes() -> bytes:
    figure = matplotlib.figure.Figure(figsize=(1, 1))
    figure.add_subplot().plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


OPEN_FRESH_STORE = """
import sys, time
from pathlib import Path
from tradai_resources.mlflow_tracking import MLflowResource
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # imported: at the start line
while not go.exists():
    time.sleep(0.01)
MLflowResource(tracking_uri=sys.argv[1]).ensure_experiment("training")
"""


def test_processes_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Two backtests launched together on a fresh home both create the MLflow store: neither may fail
    with "table alembic_version already exists"."""
    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_FRESH_STORE, uri, str(go), str(tmp_path / f"ready-{n}")],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("ready-*"))) < len(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all at once
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], "\n".join(errors)[-3000:]
    assert len(mlflow.MlflowClient(tracking_uri=uri).search_experiments()) >= 1


def test_mlflow_prints_no_run_links_to_stdout_unless_a_deployment_asks_for_them() -> None:
    """Against a tracking server MLflow writes "View run …" links to stdout as each run ends (noise in every
    step's compute log and in the demo): imported through the resource, it is told not to."""
    probe = (
        "from tradai_resources.mlflow_tracking import mlflow\n"
        "mlflow.__version__\n"
        "from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT as SUPPRESS\n"
        "print(SUPPRESS.get())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    quiet = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert quiet.stdout.strip() == "True"
    asked = {**env, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"}
    loud = subprocess.run(
        [sys.executable, "-c", probe], env=asked, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loud.stdout.strip() == "False"
