"""An MLflow run written whole from a plain description (`RunRecord`), and the store plumbing it needs.

A backtest's run is described first — params, metrics, tags, and its artifacts as files in a folder
(`RunSheet`) — then written in one go (`write_run`). Nothing here imports Dagster, and MLflow only on first
use, so the same `write_run` serves the Dagster process and a child forked from the Freqtrade worker, which
has MLflow loaded already: a report's run then costs the Dagster process no MLflow import or store set-up
(issue #14; `workers.mlflow_run_child`). A written run ends FINISHED, or FAILED with the error as its
`tradai.error` tag; one whose child was killed is ended by the parent (`MLflowResource.write_run`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from tradai_core.errors import ValidationError
from tradai_core.lazy import LazyModule
from tradai_core.urls import scrub

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

TAG_ERROR = "tradai.error"
_TAG_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


def offline_mlflow() -> None:
    """Before MLflow is first imported: no usage telemetry, no links printed to stdout. MLflow 3 otherwise
    fetches its telemetry config over the network and flushes a queue at interpreter exit, a delay every
    run process pays (and a connection attempt from machines that must not make any); a deployment may
    still set either."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Against a tracking server MLflow writes "View run … / View experiment …" links to stdout whenever a
    # run ends: noise in every step's compute log and in the demo (the run's link is in its metadata).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


# imported on first use: loading the code location must not pay for MLflow (seconds)
mlflow = LazyModule("mlflow", setup=offline_mlflow)
entities = LazyModule("mlflow.entities", setup=offline_mlflow)
exceptions = LazyModule("mlflow.exceptions", setup=offline_mlflow)


def safe_tag_key(key: object) -> str:
    """`key` as an MLflow tag key (characters MLflow refuses become `_`)."""
    return _TAG_KEY_UNSAFE.sub("_", str(key))


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` store URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


_CREATED_STORES: set[Path] = set()
_CREATED_STORES_LOCK = threading.Lock()


def _create_sqlite_store_once(path: Path, tracking_uri: str, registry_uri: str) -> None:
    """Create the SQLite store at `path` (tables and migrations) under a file lock, once per process.

    MLflow creates a SQLite store's schema on first use without a lock between processes: two runs started
    at once on a fresh home both create it, and one fails with "table alembic_version already exists".
    """
    path = path.resolve()
    with _CREATED_STORES_LOCK:
        if path in _CREATED_STORES:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".create.lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            # A client opens (and so creates or migrates) its stores when it is built.
            client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
            client.search_registered_models(max_results=1)
        _CREATED_STORES.add(path)


def open_client(tracking_uri: str, registry_uri: str) -> MlflowClient:
    """An MLflow client bound to these stores (no global state involved); a SQLite store is created first,
    safely between processes."""
    for uri in {tracking_uri, registry_uri}:
        path = sqlite_path(uri)
        if path is not None:
            _create_sqlite_store_once(path, tracking_uri, registry_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def experiment_id(client: MlflowClient, name: str, location: str | None) -> str:
    """Id of the experiment `name`, creating it (artifacts at `location`, None: the server decides) or
    restoring it when deleted; safe when another process creates it at the same time."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return str(existing.experiment_id)
    try:
        created = client.create_experiment(name, artifact_location=location)
    except exceptions.MlflowException as exc:
        if "ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")):
            raise
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)
    logger.info("created MLflow experiment %s (artifacts at %s)", name, location or "server default")
    return str(created)


class RunArtifact(BaseModel):
    """One file of a run: `local_path` stored under the run's folder `artifact_path` (None: its root)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    local_path: str
    artifact_path: str | None = None


class RunRecord(BaseModel):
    """Everything one MLflow run records, written whole by `write_run`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str
    """The experiment's full name (created if missing)."""
    artifact_location: str | None
    """Where a new experiment keeps its artifacts; None: the tracking server decides."""
    run_name: str
    tags: dict[str, str]
    """The run's tags at creation (lineage), keys already MLflow-safe."""
    params: dict[str, str]
    metrics: dict[str, float]
    later_tags: dict[str, str] = {}
    """Tags set after the metrics (e.g. which statistics are undefined)."""
    artifacts: tuple[RunArtifact, ...] = ()


class RecordedRun(BaseModel):
    """Where a written run is."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Record parameters (stringified; MLflow params are write-once per run), in batches MLflow takes."""
    items = [entities.Param(str(key), str(value)) for key, value in params.items()]
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH], synchronous=True)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Record metric values at `step`, stamped now, in batches MLflow takes."""
    now = int(datetime.now(tz=UTC).timestamp() * 1000)
    items = [entities.Metric(str(key), float(value), now, step) for key, value in metrics.items()]
    for start in range(0, len(items), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[start : start + _METRICS_PER_BATCH], synchronous=True)


def tag_error(client: MlflowClient, run_id: str, exc: Exception, secrets: tuple[str, ...]) -> None:
    """Keep why a run failed as its `tradai.error` tag, every one of `secrets` scrubbed from it; a tag that
    cannot be set is a warning (the original error matters more)."""
    try:
        client.set_tag(run_id, TAG_ERROR, scrub(f"{type(exc).__name__}: {exc}", *secrets)[:4000])
    except Exception:
        logger.warning("could not tag MLflow run %s with its error", run_id, exc_info=True)


def write_run(
    client: MlflowClient,
    record: RunRecord,
    *,
    secrets: tuple[str, ...] = (),
    on_created: Callable[[RecordedRun], None] | None = None,
) -> RecordedRun:
    """Write `record` as a new run and end it: FINISHED, or FAILED — the error (with every one of `secrets`
    scrubbed from it) kept as the `tradai.error` tag — and re-raised; KILLED on an interrupt. `on_created`
    hears of the run as soon as it exists (a process that may be killed says where the run it leaves is)."""
    experiment = experiment_id(client, record.experiment, record.artifact_location)
    run_id = client.create_run(experiment, run_name=record.run_name, tags=record.tags).info.run_id
    if on_created is not None:
        on_created(RecordedRun(run_id=run_id, experiment_id=experiment))
    status = "FAILED"
    try:
        log_params(client, run_id, record.params)
        log_metrics(client, run_id, record.metrics)
        for key, value in record.later_tags.items():
            client.set_tag(run_id, key, value)
        for artifact in record.artifacts:
            client.log_artifact(run_id, artifact.local_path, artifact.artifact_path)
        status = "FINISHED"
    except Exception as exc:
        tag_error(client, run_id, exc, secrets)
        raise
    except BaseException:
        status = "KILLED"
        raise
    finally:
        try:
            client.set_terminated(run_id, status=status)
        except Exception:
            if status == "FINISHED":
                raise
            logger.exception("could not mark MLflow run %s as %s", run_id, status)
    return RecordedRun(run_id=run_id, experiment_id=experiment)


class RunSheet:
    """A run's contents gathered before it is written: params, metrics, tags, and artifacts as files in
    `folder` (each in a subfolder of its own, so two artifacts may share a file name). It takes the calls a
    `mlflow_tracking.TrackedRun` takes, with the same file formats, so one function fills either."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.params: dict[str, str] = {}
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}
        self.artifacts: list[RunArtifact] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record parameters (stringified)."""
        self.params.update({str(key): str(value) for key, value in params.items()})

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Record metric values."""
        self.metrics.update({str(key): float(value) for key, value in metrics.items()})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add tags, set after the metrics."""
        self.tags.update({safe_tag_key(key): str(value) for key, value in tags.items()})

    def log_dict(self, data: Mapping[str, Any] | list[Any], artifact_file: str) -> None:
        """Store a dict or list as JSON, laid out as MLflow's `log_dict` lays it out."""
        self._write(artifact_file, lambda path: path.write_text(json.dumps(data, indent=2, default=str)))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store text as a file."""
        self._write(artifact_file, lambda path: path.write_text(text, encoding="utf-8"))

    def log_dataframe(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """Store a DataFrame as parquet (round-trips exactly, index included)."""
        if not artifact_file.lower().endswith(".parquet"):
            raise ValidationError(f"cannot store a DataFrame as {artifact_file!r}", "name the file .parquet")
        self._write(artifact_file, frame.to_parquet)

    def log_file(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Store a local file (read when the run is written) under `artifact_path`."""
        self.artifacts.append(RunArtifact(local_path=str(local_path), artifact_path=artifact_path))

    def _write(self, artifact_file: str, write: Any) -> None:
        folder, _, filename = artifact_file.rpartition("/")
        holder = self.folder / f"artifact-{len(self.artifacts)}"
        holder.mkdir(parents=True)
        write(holder / filename)
        self.artifacts.append(RunArtifact(local_path=str(holder / filename), artifact_path=folder or None))

    def record(
        self, experiment: str, artifact_location: str | None, run_name: str, tags: Mapping[str, str]
    ) -> RunRecord:
        """The run to write: what was gathered, in `experiment`, tagged `tags` at creation."""
        return RunRecord(
            experiment=experiment,
            artifact_location=artifact_location,
            run_name=run_name,
            tags=dict(tags),
            params=self.params,
            metrics=self.metrics,
            later_tags=self.tags,
            artifacts=tuple(self.artifacts),
        )
