"""A run described whole (`RunSheet`, `RunRecord`) and written in one go: in a child forked from the Freqtrade
worker, or in process — the same run either way, always ended, and no secret in its errors."""

import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tradai_core.errors import ValidationError
from tradai_resources import mlflow_records
from tradai_resources.mlflow_records import RecordedRun, RunArtifact, RunRecord, RunSheet
from tradai_resources.mlflow_tracking import TAG_ERROR, MLflowResource, MLflowWriteError, TrackedRun
from tradai_resources.workers.jobs import MLflowRunJob
from tradai_resources.workers.launch import ChildLauncher

SHARED = ChildLauncher(python=sys.executable, start_method="shared")
EMPTY = RunRecord(
    experiment="tradai/reports", artifact_location=None, run_name="r", tags={}, params={}, metrics={}
)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow database (migrations take seconds; each test copies it)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MLflowResource(tracking_uri=f"sqlite:///{path}").client().search_experiments()
    return path


def store(empty_db: Path, folder: Path) -> MLflowResource:
    folder.mkdir(parents=True)
    shutil.copyfile(empty_db, folder / "mlflow.db")
    return MLflowResource(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", experiment_prefix="test")


def fill(log: RunSheet | TrackedRun) -> None:
    """Every kind of content a backtest report records."""
    log.log_params({"timerange": "20240101-20240501", "pairs": "BTC/USDT,ETH/USDT", "stake": 1000})
    log.log_metrics({"sharpe": 1.25, "trade_count": 42})
    log.set_tags({"tradai.undefined.sortino": "no losing bar", "a:b": "unsafe key"})
    trades = pd.DataFrame({"pair": ["BTC/USDT", "ETH/USDT"], "profit": [0.01, -0.02]})
    log.log_dataframe(
        trades.set_index(pd.DatetimeIndex(["2024-01-02", "2024-01-03"], tz="UTC")), "bt/t.parquet"
    )
    log.log_dict({"z": [1, 2], "when": pd.Timestamp("2024-01-01")}, "bt/stats.json")
    log.log_text("<html>chart</html>", "bt/charts/BTC_USDT.html")
    log.log_text("<html>other</html>", "bt/charts/ETH_USDT.html")
    log.log_file(Path(__file__), "bt/source")


def report_like_record(resource: MLflowResource, folder: Path) -> RunRecord:
    """A run with every kind of content a backtest report records."""
    sheet = RunSheet(folder)
    fill(sheet)
    name, location = resource.experiment_location("reports")
    tags = resource.run_tags("dagster-run-1", {"BTC/USDT": "3"}, {"purpose": "report"})
    return sheet.record(name, location, "Rsi-20240101-20240501", tags)


def stored(resource: MLflowResource, run_id: str, into: Path) -> dict[str, object]:
    """What the store holds for a run: status, params, metrics, tags, and every artifact's bytes."""
    run = resource.get_run(run_id)
    client = resource.client()
    files: dict[str, bytes] = {}
    pending = [""]
    while pending:
        for item in client.list_artifacts(run_id, pending.pop() or None):
            if item.is_dir:
                pending.append(item.path)
            else:
                files[item.path] = Path(client.download_artifacts(run_id, item.path, str(into))).read_bytes()
    tags = {key: value for key, value in run.data.tags.items() if not key.startswith("mlflow.")}
    return {
        "status": run.info.status,
        "name": run.info.run_name,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": tags,
        "files": files,
    }


def test_a_run_written_by_a_worker_child_is_the_run_written_in_process(
    empty_db: Path, tmp_path: Path
) -> None:
    """The report's run goes to a child forked from the shared worker (MLflow loaded there): the store then
    holds exactly what writing it here would have stored, and the child's job folder is gone."""
    resource = store(empty_db, tmp_path / "store")
    record = report_like_record(resource, tmp_path / "sheet")
    before = set(Path(tempfile.gettempdir()).glob("tradai-mlflow-run-*"))

    in_child = resource.write_run(record, SHARED)
    here = resource.write_run(record)

    assert in_child.run_id != here.run_id
    assert in_child.experiment_id == here.experiment_id
    child_run = stored(resource, in_child.run_id, tmp_path / "a")
    assert child_run == stored(resource, here.run_id, tmp_path / "b")
    assert child_run["status"] == "FINISHED"
    assert child_run["params"] == {
        "timerange": "20240101-20240501",
        "pairs": "BTC/USDT,ETH/USDT",
        "stake": "1000",
    }
    assert child_run["metrics"] == {"sharpe": 1.25, "trade_count": 42.0}
    tags = child_run["tags"]
    assert isinstance(tags, dict)
    assert tags["a_b"] == "unsafe key"
    assert tags["purpose"] == "report"
    assert tags["dagster.run_id"] == "dagster-run-1"
    assert tags["tradai.data_version.BTC/USDT"] == "3"
    files = child_run["files"]
    assert isinstance(files, dict)
    assert sorted(files) == [
        "bt/charts/BTC_USDT.html",
        "bt/charts/ETH_USDT.html",
        "bt/source/test_mlflow_records.py",
        "bt/stats.json",
        "bt/t.parquet",
    ]
    assert files["bt/source/test_mlflow_records.py"] == Path(__file__).read_bytes()
    assert files["bt/stats.json"] == b'{\n  "z": [\n    1,\n    2\n  ],\n  "when": "2024-01-01 00:00:00"\n}'
    frame = pd.read_parquet(io.BytesIO(files["bt/t.parquet"]))
    assert list(frame["profit"]) == [0.01, -0.02]
    assert str(frame.index.tz) == "UTC"
    assert set(Path(tempfile.gettempdir()).glob("tradai-mlflow-run-*")) == before


def test_a_run_the_child_cannot_write_fails_fast_naming_the_store_but_no_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A tracking server that does not answer: the step fails with what to do. The password in the URI and
    the client's token (both reach the child only in its 0600 job file) appear nowhere in the error; the
    client's own settings reach it too (no retries here, so it fails at once)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-sekrit-4711")
    resource = MLflowResource(tracking_uri="http://alice:pw-s3cret@127.0.0.1:9/")

    started = time.monotonic()
    with pytest.raises(MLflowWriteError) as raised:
        resource.write_run(EMPTY, SHARED)
    assert time.monotonic() - started < 60
    message = str(raised.value)
    assert "writing the MLflow run 'r' to http://127.0.0.1:9/ failed (exit code 1)" in message
    assert "tracking server up" in message
    assert "pw-s3cret" not in message
    assert "tok-sekrit-4711" not in message
    assert "alice" not in message


def test_a_run_that_fails_midway_is_ended_failed_with_its_error_as_a_tag(
    empty_db: Path, tmp_path: Path
) -> None:
    """An artifact that is not there: the run exists, ends FAILED, and says why; the error propagates."""
    resource = store(empty_db, tmp_path / "store")
    record = RunRecord(
        experiment="test/reports",
        artifact_location=None,
        run_name="broken",
        tags={"purpose": "report"},
        params={"a": "1"},
        metrics={"m": 2.0},
        artifacts=(RunArtifact(local_path=str(tmp_path / "missing.parquet"), artifact_path="bt"),),
    )
    with pytest.raises(Exception, match=r"missing\.parquet"):
        mlflow_records.write_run(resource.client(), record)
    runs = mlflow.MlflowClient(resource.tracking_uri).search_runs(
        [resource.client().get_experiment_by_name("test/reports").experiment_id]
    )
    assert [run.info.status for run in runs] == ["FAILED"]
    assert "missing.parquet" in runs[0].data.tags[TAG_ERROR]
    assert runs[0].data.params == {"a": "1"}


def test_a_sheet_refuses_a_dataframe_it_cannot_store_as_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"name the file \.parquet"):
        RunSheet(tmp_path).log_dataframe(pd.DataFrame({"a": [1]}), "trades.xlsx")


def test_a_relative_store_and_artifact_mean_the_same_in_the_child_as_here(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`sqlite:///.tradai/mlflow.db` (the default under a relative TRADAI_HOME) and a relative source file:
    the child works in the caller's folder, so the run lands in the caller's store, artifact included."""
    monkeypatch.chdir(tmp_path)
    Path("source.py").write_text("print('strategy')\n", encoding="utf-8")
    resource = MLflowResource(tracking_uri="sqlite:///.tradai/mlflow.db", experiment_prefix="test")
    sheet = RunSheet(tmp_path / "sheet")
    sheet.log_params({"a": 1})
    sheet.log_file("source.py", "bt/source")
    name, location = resource.experiment_location("reports")

    written = resource.write_run(sheet.record(name, location, "relative", {}), SHARED)

    absolute = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / '.tradai' / 'mlflow.db'}")
    run = stored(absolute, written.run_id, tmp_path / "out")
    assert run["status"] == "FINISHED"
    assert run["files"] == {"bt/source/source.py": b"print('strategy')\n"}


def test_a_run_its_child_left_running_is_ended_by_the_parent(empty_db: Path, tmp_path: Path) -> None:
    """A child killed mid-write (time limit, the Dagster run terminated) cannot end its run: the parent
    reads where the child said the run is and marks it; a run the child ended is left as it is."""
    resource = store(empty_db, tmp_path / "store")
    client = resource.client()
    experiment = resource.ensure_experiment("reports")
    left = client.create_run(experiment, run_name="left").info.run_id
    finished = client.create_run(experiment, run_name="finished").info.run_id
    client.set_terminated(finished, status="FINISHED")
    for run_id in (left, finished):
        created = tmp_path / f"{run_id}.json"
        created.write_text(RecordedRun(run_id=run_id, experiment_id=experiment).model_dump_json())
        job = MLflowRunJob(
            created_path=str(created),
            tracking_uri=resource.tracking_uri,
            registry_uri=resource.tracking_uri,
            record=EMPTY,
            result_path=str(tmp_path / "result.json"),
            error_path=str(tmp_path / "error.json"),
        )
        resource._end_left_run(job, "KILLED")
    assert client.get_run(left).info.status == "KILLED"
    assert client.get_run(finished).info.status == "FINISHED"


def test_only_credential_like_or_long_client_settings_are_scrubbed_from_errors() -> None:
    """Short plain settings (`INFO`, `default`) would blank ordinary words out of an error."""
    job = MLflowRunJob(
        created_path="c",
        tracking_uri="http://u:p@host/",
        registry_uri="http://u:p@host/",
        environment={
            "MLFLOW_TRACKING_PASSWORD": "pw1",
            "AWS_SECRET_ACCESS_KEY": "k",
            "MLFLOW_LOGGING_LEVEL": "INFO",
            "AWS_PROFILE": "default",
            "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        },
        record=RunRecord(
            experiment="e", artifact_location=None, run_name="r", tags={}, params={}, metrics={}
        ),
        result_path="r",
        error_path="e",
    )
    assert set(job.secrets()) == {"http://u:p@host/", "pw1", "k", "http://127.0.0.1:9000"}


def test_a_run_described_whole_stores_what_an_open_run_logged_call_by_call_stores(
    empty_db: Path, tmp_path: Path
) -> None:
    """The report used to log into an open run (`start_run`, `TrackedRun`); a sheet written in one go
    stores the very same params, metrics, tags and artifact bytes."""
    resource = store(empty_db, tmp_path / "store")
    written = resource.write_run(report_like_record(resource, tmp_path / "sheet"))
    with resource.start_run(
        "reports",
        "Rsi-20240101-20240501",
        dagster_run_id="dagster-run-1",
        data_versions={"BTC/USDT": "3"},
        tags={"purpose": "report"},
    ) as tracked:
        fill(tracked)
    assert stored(resource, written.run_id, tmp_path / "a") == stored(
        resource, tracked.run_id, tmp_path / "b"
    )
