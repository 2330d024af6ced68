"""No secret leaks, end to end: a canary planted in every configurable secret (exchange key and secret,
webhook URL token, ArcticDB URI credentials, MLflow URI token, Optuna storage password, SNS topic) while
the demo's steps run in a temporary Dagster and TradAI home through the code location's own definitions:
market data through the loopback replay server, features, a model, a backtest of the model strategy,
drift, the promotion and run-failure notifications, a store that cannot be opened and a webhook URL that
is malformed. The canary must not appear in any log line, captured output, Dagster event, run, job
snapshot (what the UI shows of resource config), metadata, MLflow param, tag or registered version,
notification, sensor error, or file written under the temporary homes.

Where a URI cannot carry a credential for real offline, the canary rides in a form the backend accepts
and ignores: ArcticDB's in-memory store (`mem://`) takes any query parameters, SQLite ignores (with a
warning naming only the key) a `token` query parameter.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    RunRequest,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    RUN_KEY_TAG,
)
from dagster._serdes import serialize_value

from jobs.market_data import MARKET_DATA_JOB
from jobs.ml import FEATURES_JOB, TRAINING_JOB
from jobs.model_loop import PROMOTE_JOB
from sensors.model_loop import PROMOTION_SENSOR
from sensors.notifications import notify_on_run_failure
from strategies.validation import STRATEGIES_DIR
from tests.model_loop_fixtures import MODEL, empty_mlflow_db
from tradai.definitions import build_definitions
from tradai.model_loop_demo import demo_drift_loop
from tradai_assets.backtests import build_backtest_assets
from tradai_core.settings import TradAISettings
from tradai_replay.server import ReplayServer

pytestmark = pytest.mark.slow

CANARY = "cnry7Q2f9Zk4Xw8Lm3Pv"
"""Token-like, as real keys are, and unlike anything the platform writes on its own."""
PAIRS = "BTC/USDT,ETH/USDT"
HISTORY = {"TRADAI_HISTORY_START": "2021-01-01", "TRADAI_HISTORY_END": "2021-05-01"}
HOLDOUT_DAYS = 20
LOUD_LOGGERS = ("tradai", "tradai_core", "tradai_resources", "tradai_assets", "jobs", "sensors", "ccxt")


class Inbox(BaseHTTPRequestHandler):
    """A webhook that keeps every request it gets: path and body, raw."""

    received: list[str] = []  # noqa: RUF012 - shared by the handler instances of one server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Inbox.received.append(body.decode("utf-8", "replace"))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook_port() -> Iterator[int]:
    Inbox.received = []
    server = HTTPServer(("127.0.0.1", 0), Inbox)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


class Seen:
    """Everything shown anywhere, by where it was shown."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: object) -> None:
        self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def leaks(self) -> list[str]:
        return [f"{where}: …{_around(text)}…" for where, text in self.texts if CANARY in text]


def _around(text: str) -> str:
    at = text.index(CANARY)
    return text[max(0, at - 150) : at + 60]


def plant(monkeypatch: pytest.MonkeyPatch, home: Path, webhook: str, arcticdb_uri: str) -> None:
    """The canary in every secret the code location reads from the environment."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    env = {
        "TRADAI_HOME": str(home),
        "TRADAI_PAIRS": PAIRS,
        "TRADAI_HOLDOUT_DAYS": str(HOLDOUT_DAYS),
        **HISTORY,
        "TRADAI_EXCHANGE_API_KEY": f"key-{CANARY}",
        "TRADAI_EXCHANGE_API_SECRET": f"secret-{CANARY}",
        "TRADAI_WEBHOOK_URL": webhook,
        "TRADAI_ARCTICDB_URI": arcticdb_uri,
        "TRADAI_MLFLOW_URI": f"sqlite:///{home / 'mlflow.db'}?token={CANARY}",
        "TRADAI_OPTUNA_STORAGE": f"sqlite:///{home / 'optuna.db'}?password={CANARY}",
        "TRADAI_SNS_TOPIC_ARN": f"arn:aws:sns:eu-west-1:123456789012:alerts-{CANARY}",
        "AWS_REGION": "eu-west-1",
        # No credentials anywhere: SNS publishing fails at once, and its error is what gets reported.
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def record_instance(seen: Seen, instance: DagsterInstance) -> None:
    """Every run, its job snapshot (resource config as the UI shows it) and every event of it."""
    for run in instance.get_runs():
        seen.add(f"run {run.run_id}", serialize_value(run))
        if run.job_snapshot_id:
            snapshot = instance.get_job_snapshot(run.job_snapshot_id)
            seen.add(f"job snapshot of {run.job_name}", serialize_value(snapshot))
        for entry in instance.all_logs(run.run_id):
            seen.add(f"event of run {run.run_id}", serialize_value(entry))
            seen.add(f"event message of run {run.run_id}", entry.user_message or "")


def record_mlflow(seen: Seen, tracking_uri: str) -> None:
    """Every experiment, run (params, tags, metrics), registered model and version of the store."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiments = client.search_experiments()
    assert experiments, "the MLflow store is empty: the steps did not reach it"
    for experiment in experiments:
        seen.add(f"MLflow experiment {experiment.name}", repr(experiment.to_proto()))
    runs = client.search_runs([e.experiment_id for e in experiments], max_results=10_000)
    assert runs
    for run in runs:
        seen.add(f"MLflow run {run.info.run_name}", json.dumps(run.to_dictionary(), default=str))
    for model in client.search_registered_models():
        seen.add(f"MLflow model {model.name}", repr(model.to_proto()))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            seen.add(f"MLflow model version {model.name}/{version.version}", repr(version.to_proto()))


def record_files(seen: Seen, *folders: Path) -> None:
    """Every file under `folders` (compute logs, artifacts, work folders, worker logs), as bytes."""
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and CANARY.encode() in path.read_bytes():
                seen.add(f"file {path}", path.read_bytes().decode("utf-8", "replace"))


def tick(defs: Any, instance: DagsterInstance, sensor: str, seen: Seen) -> list[RunRequest]:
    """Evaluate a sensor as the daemon does; its error, if any, is what the UI would show."""
    context = build_sensor_context(
        instance=instance, cursor=None, resources=dict(defs.resources), definitions=defs
    )
    try:
        return list(defs.resolve_sensor_def(sensor).evaluate_tick(context).run_requests or [])
    except Exception:
        seen.add(f"error of sensor {sensor}", traceback.format_exc())
        return []


def notify_failure(defs: Any, instance: DagsterInstance, run_id: str, seen: Seen) -> None:
    """The run-failure sensor on a failed run, as the daemon would run it (its error recorded)."""
    [record] = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="notify_on_run_failure",
        dagster_event=record.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
        resources={"notifier": defs.resources["notifier"]},
    ).for_run_failure()
    try:
        notify_on_run_failure(context)
    except Exception:
        seen.add("error of sensor notify_on_run_failure", traceback.format_exc())


def test_a_canary_secret_planted_everywhere_shows_up_nowhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    webhook_port: int,
    demo_candles_dir: Path,
    test_worker_dir: Path,
) -> None:
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    template = empty_mlflow_db(tmp_path)
    (home / "mlflow.db").write_bytes(template.read_bytes())
    webhook = f"http://127.0.0.1:{webhook_port}/hooks/T0001/B0001/{CANARY}"
    plant(monkeypatch, home, webhook, f"mem://?access=AK-{CANARY}&secret={CANARY}")
    caplog.set_level(logging.INFO)
    for name in LOUD_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    seen = Seen()
    settings = TradAISettings()
    holdout = settings.holdout_start.isoformat()
    with instance_for_test(temp_dir=str(home / "dagster")) as instance:
        # 1. Candles through ccxt (keys set) and the replay server, then features: one backfill run each.
        with ReplayServer(demo_candles_dir) as server:
            monkeypatch.setenv("TRADAI_EXCHANGE_BASE_URL", server.base_url)
            defs = build_definitions(TradAISettings())
            seen.add("repr of the settings", repr(TradAISettings()))
            seen.add("repr of the resources", repr(defs.resources))
            keys = {
                ASSET_PARTITION_RANGE_START_TAG: HISTORY["TRADAI_HISTORY_START"],
                ASSET_PARTITION_RANGE_END_TAG: "2021-04-30",
            }
            market = defs.resolve_job_def(MARKET_DATA_JOB).execute_in_process(
                instance=instance, tags=keys, raise_on_error=False
            )
            assert market.success
        features = defs.resolve_job_def(FEATURES_JOB).execute_in_process(
            instance=instance, tags=keys, raise_on_error=False
        )
        assert features.success

        # 2. A small model, champion by bootstrap; the promotion sensor records it and notifies.
        training = defs.resolve_job_def(TRAINING_JOB).execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "training_set": {"config": {"holdout_days": HOLDOUT_DAYS}},
                    "model": {"config": MODEL},
                }
            },
            raise_on_error=False,
        )
        assert training.success
        for request in tick(defs, instance, PROMOTION_SENSOR, seen):
            defs.resolve_job_def(PROMOTE_JOB).execute_in_process(
                instance=instance,
                run_config=request.run_config or None,
                tags={**request.tags, RUN_KEY_TAG: request.run_key or ""},
                raise_on_error=False,
            )

        # 3. A backtest of the model strategy on the holdout (Freqtrade loads the model in its process),
        #    from a copy of the strategy trading the two pairs of this world.
        folder = home / "strategies"
        folder.mkdir()
        shutil.copy(STRATEGIES_DIR / "lgbm_classifier.py", folder / "lgbm_classifier.py")
        config = yaml.safe_load((STRATEGIES_DIR / "lgbm_classifier.yaml").read_text())
        config["pairs"] = list(settings.pairs)
        (folder / "lgbm_classifier.yaml").write_text(yaml.safe_dump(config))
        window = {"config": {"start": holdout, "max_open_trades": 2}}
        backtest = materialize(
            build_backtest_assets(settings, folder),
            resources=dict(defs.resources),
            instance=instance,
            partition_key="LgbmClassifier",
            run_config={"ops": {"backtest_plan": window, "backtest_report": window}},
            raise_on_error=False,
        )
        assert backtest.success

        # 4. Drift of every pair against the champion, and what the drift sensor decides and says, as the
        #    demo runs them (from the code location's resources, secrets bound as EnvVars).
        summary = demo_drift_loop(settings, instance, definitions=defs)
        assert all(line.severity != "failed" for line in summary.drift), summary.text()
        seen.add("the demo's drift summary", summary.text())

        # 5. A store that cannot be opened (its URI carries the canary): the failed run is notified.
        monkeypatch.setenv("TRADAI_ARCTICDB_URI", f"lmdb://{home / 'bad-store'}?secret={CANARY}")
        broken = build_definitions(TradAISettings())
        failed = broken.resolve_job_def(FEATURES_JOB).execute_in_process(
            instance=instance, partition_key=f"{HISTORY['TRADAI_HISTORY_START']}", raise_on_error=False
        )
        assert not failed.success
        notify_failure(broken, instance, failed.run_id, seen)

        # 6. A malformed webhook URL (no scheme) carrying the canary: the failure is notified through it.
        monkeypatch.setenv("TRADAI_WEBHOOK_URL", f"hooks.example.com/services/T0001/{CANARY}")
        notify_failure(build_definitions(TradAISettings()), instance, failed.run_id, seen)

        record_instance(seen, instance)
    record_mlflow(seen, f"sqlite:///{home / 'mlflow.db'}")
    assert Inbox.received, "no notification reached the webhook: the check below would prove nothing"
    for body in Inbox.received:
        seen.add("webhook payload", body)
    for record in caplog.records:
        seen.add(f"log {record.name}", record.getMessage())
        if record.exc_info:
            seen.add(f"log traceback {record.name}", "".join(traceback.format_exception(*record.exc_info)))
    captured = capfd.readouterr()
    seen.add("stdout", captured.out)
    seen.add("stderr", captured.err)
    record_files(seen, home, test_worker_dir)
    assert not seen.leaks(), "the canary secret leaked:\n" + "\n".join(seen.leaks())
