"""MLflow experiments, runs, artifacts and the model registry, as a Dagster resource.

Runs opened here always end: FINISHED when the block succeeds, FAILED when it raises (the error is
re-raised and kept as a run tag), KILLED when the process is interrupted. Each run is tagged with the
Dagster run id, the project's git commit and the data versions it read, so an MLflow run can be traced to
the Dagster run, the code and the candles that made it.

MLflow keeps "the current tracking URI" and "the active run" as process-wide state, which its model
flavours (`mlflow.lightgbm.log_model`, `mlflow.pyfunc.load_model`) rely on. This resource talks to its
store through an explicit `MlflowClient`, and sets that global state only inside `start_run` blocks and
model loads, restoring it afterwards, so two resources pointing at two stores never see each other's
runs. A process-wide lock serialises those blocks between threads.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import dagster as dg
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.errors import NotFoundError, TradAIError, ValidationError
from tradai_core.model_lifecycle import AuditEntry
from tradai_core.registry import (
    AUDIT_EXPERIMENT,
    TAG_AUDIT_ENTRY,
    TAG_AUDIT_LAST,
    TAG_AUDIT_MODEL,
    TAG_AUDIT_PREFIX,
    TAG_FEATURE_SET_HASH,
    ExportedModel,
)
from tradai_core.settings import PROJECT_ROOT, TradAISettings
from tradai_core.urls import redact_uri, scrub
from tradai_resources import mlflow_records as records
from tradai_resources.mlflow_records import RecordedRun, RunRecord
from tradai_resources.workers.env import mlflow_client_environment
from tradai_resources.workers.jobs import MLflowRunJob, job_error, write_job
from tradai_resources.workers.launch import (
    ChildLauncher,
    ChildLostError,
    ChildTimeoutError,
    InterpreterError,
    child_env,
)
from tradai_resources.workers.processes import log_tail
from tradai_resources.workers.protocol import ForkRequest

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.exceptions import MlflowException
    from mlflow.models.model import ModelInfo


mlflow = records.mlflow
_entities = records.entities
_exceptions = records.exceptions

logger = logging.getLogger(__name__)

WRITE_RUN_TIMEOUT_S = 1800.0
"""How long the child writing a run may take (artifact uploads to a remote store included)."""


class MLflowWriteError(TradAIError):
    """A run could not be written by its child process."""


# MLflow draws a tqdm bar on stderr for every artifact download (model loads, `load_dict`, ...): noise in
# a log. Off unless the environment asks for it; set before any download, and inherited by the Freqtrade
# child processes that load models.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Loggers MLflow's `log_model` talks through about requirements we pass explicitly: that it found a uv
# project (it only records that) and that pip is not installed (uv environments have none).
_REQUIREMENT_LOGGERS = ("mlflow.utils.uv_utils", "mlflow.utils.environment")

TAG_DAGSTER_RUN_ID = "dagster.run_id"
TAG_GIT_COMMIT = "tradai.git_commit"
TAG_DATA_VERSION_PREFIX = "tradai.data_version."
TAG_ERROR = records.TAG_ERROR
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"
UNKNOWN_COMMIT = "unknown"
OUTSIDE_DAGSTER = "outside-dagster"

# Packages whose pinned version stands in for MLflow's requirement inference, which loads the model in
# a subprocess and takes seconds.
_FLAVOR_PACKAGES = {"lightgbm": "lightgbm", "sklearn": "scikit-learn", "xgboost": "xgboost"}
_GLOBAL_STATE_LOCK = threading.RLock()


@cache
def project_git_commit() -> str:
    """The commit the project is checked out at (computed once per process), or "unknown" outside a git
    checkout or before the first commit."""
    try:
        result = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_COMMIT
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else UNKNOWN_COMMIT


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Only errors from these loggers for the block (their levels restored afterwards)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


@contextmanager
def _mlflow_globals(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at one store for the block, then restore
    exactly what was there (module state and environment variables)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _GLOBAL_STATE_LOCK:
        old_tracking = getattr(tracking_utils, "_tracking_uri", None)
        old_registry = getattr(registry_utils, "_registry_uri", None)
        old_env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old_tracking)
            registry_utils._registry_uri = old_registry
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _error_code(exc: MlflowException) -> str:
    return str(getattr(exc, "error_code", ""))


def _is_missing(exc: MlflowException) -> bool:
    """Whether MLflow said "no such thing" (a missing alias comes back as an invalid parameter)."""
    return _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _default_tracking_uri() -> str:
    return TradAISettings().resolved_mlflow_uri


class ModelVersionInfo(BaseModel):
    """One registered model version, as TradAI needs it (and as Dagster metadata can show it)."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    run_id: str | None
    source: str
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = Field(default_factory=dict)
    status: str
    created_at: datetime

    @classmethod
    def from_mlflow(cls, version: ModelVersion, aliases: tuple[str, ...] | None = None) -> ModelVersionInfo:
        """Convert MLflow's entity; `aliases` overrides it (search results carry no aliases)."""
        return cls(
            name=version.name,
            version=int(version.version),
            run_id=version.run_id or None,
            source=version.source or "",
            aliases=tuple(sorted(aliases if aliases is not None else (version.aliases or ()))),
            tags=dict(version.tags or {}),
            status=str(version.status),
            created_at=datetime.fromtimestamp((version.creation_timestamp or 0) / 1000, tz=UTC),
        )


class TrackedRun:
    """An open MLflow run, yielded by `MLflowResource.start_run`; logs go to the resource's store.

    Valid only inside the `with` block: the run has ended once the block exits.
    """

    def __init__(
        self,
        client: mlflow.MlflowClient,
        run_id: str,
        experiment_id: str,
        experiment_name: str,
        run_name: str,
        url: str | None,
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.url = url
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise ValidationError(
                f"MLflow run {self.run_id} has already ended", "log inside the `with start_run(...)` block"
            )

    def _close(self) -> None:
        self._open = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record parameters (stringified; MLflow params are write-once per run)."""
        self._check_open()
        records.log_params(self._client, self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metric values, optionally at a step (e.g. the walk-forward fold)."""
        self._check_open()
        records.log_metrics(self._client, self.run_id, metrics, step or 0)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add tags to the run."""
        self._check_open()
        for key, value in tags.items():
            self._client.set_tag(self.run_id, records.safe_tag_key(key), str(value))

    def log_dict(self, data: Mapping[str, Any] | list[Any], artifact_file: str) -> None:
        """Store a dict or list as JSON (or YAML when `artifact_file` ends in .yaml/.yml)."""
        self._check_open()
        self._client.log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store text (a report, a config) as a file."""
        self._check_open()
        self._client.log_text(self.run_id, text, artifact_file)

    def log_dataframe(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """Store a DataFrame as parquet (round-trips exactly, index included) or CSV (for people), as
        `artifact_file`'s extension says."""
        self._check_open()
        suffix = Path(artifact_file).suffix.lower()
        if suffix not in (".parquet", ".csv"):
            raise ValidationError(
                f"cannot store a DataFrame as {artifact_file!r}", "name the file .parquet or .csv"
            )

        def write(path: Path) -> None:
            if suffix == ".parquet":
                frame.to_parquet(path)
            else:
                frame.to_csv(path, index=not isinstance(frame.index, pd.RangeIndex))

        self._log_file_written_by(write, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Store a matplotlib or plotly figure (PNG, SVG, HTML... by extension)."""
        self._check_open()
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_image_bytes(self, image: bytes, artifact_file: str) -> None:
        """Store an already-encoded image (e.g. PNG bytes)."""
        self._check_open()
        self._log_file_written_by(lambda path: path.write_bytes(image), artifact_file)

    def log_file(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Store a local file under `artifact_path` (a folder inside the run's artifacts)."""
        self._check_open()
        self._client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_model(
        self, model: Any, name: str = "model", *, flavor: str = "lightgbm", **kwargs: Any
    ) -> ModelInfo:
        """Log a model with an MLflow flavour (`lightgbm`, `sklearn`, `pyfunc`, ...) as `name` in this
        run; extra keyword arguments go to `mlflow.<flavor>.log_model`. Requirements default to the
        installed version of the flavour's package, which skips MLflow's slow inference."""
        self._check_open()
        try:
            module = importlib.import_module(f"mlflow.{flavor}")
        except ImportError as exc:
            raise ValidationError(
                f"MLflow has no model flavour {flavor!r}", "use e.g. lightgbm or pyfunc"
            ) from exc
        package = _FLAVOR_PACKAGES.get(flavor)
        if package and not {"pip_requirements", "extra_pip_requirements", "conda_env"} & kwargs.keys():
            kwargs["pip_requirements"] = [f"{package}=={importlib.metadata.version(package)}"]
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise ValidationError(
                f"MLflow run {self.run_id} is not the active run of this thread",
                "log models inside the `with start_run(...)` block, not from another thread",
            )
        with _quiet(_REQUIREMENT_LOGGERS):
            return module.log_model(model, name=name, **kwargs)

    def _log_file_written_by(self, write: Any, artifact_file: str) -> None:
        folder, _, filename = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="tradai-mlflow-") as tmp:
            path = Path(tmp) / filename
            write(path)
            self._client.log_artifact(self.run_id, str(path), folder or None)


class MLflowResource(dg.ConfigurableResource):
    """Experiment tracking and model registry on MLflow.

    Defaults to a local SQLite store (`TRADAI_MLFLOW_URI`, else `sqlite:///<home>/mlflow.db`) with
    artifacts in a `mlartifacts` folder beside it; point `tracking_uri` at an MLflow server (and leave
    `artifact_root` unset, the server decides) when outgrowing it. Every field accepts `dg.EnvVar`.
    """

    tracking_uri: str = Field(
        default_factory=_default_tracking_uri,
        description="MLflow tracking URI; default TradAISettings().resolved_mlflow_uri.",
    )
    registry_uri: str | None = Field(default=None, description="Model registry URI; default tracking_uri.")
    artifact_root: str | None = Field(
        default=None,
        description="Where new experiments keep artifacts (path or URI). Default: `mlartifacts` beside a "
        "SQLite store, the server's choice for an http(s) tracking URI, else <home>/mlartifacts.",
    )
    experiment_prefix: str = Field(default="tradai", description="Experiments are named <prefix>/<name>.")
    ui_url: str | None = Field(
        default=None,
        description="Base URL of an MLflow UI showing this store (e.g. `mlflow ui` at "
        "http://127.0.0.1:5000), to link runs from Dagster; default the tracking URI when it is http(s).",
    )

    def __repr__(self) -> str:  # the URIs may carry credentials: never show them whole
        return f"MLflowResource(tracking_uri={redact_uri(self.tracking_uri)!r})"

    __str__ = __repr__

    # -- plumbing

    @property
    def resolved_registry_uri(self) -> str:
        """Registry URI in force."""
        return self.registry_uri or self.tracking_uri

    def client(self) -> mlflow.MlflowClient:
        """An MLflow client bound to this resource's stores (no global state involved)."""
        return records.open_client(self.tracking_uri, self.resolved_registry_uri)

    def resolved_artifact_root(self) -> str | None:
        """Artifact root URI for new experiments, or None to let a tracking server decide."""
        if self.artifact_root:
            root = self.artifact_root
        elif _is_http(self.tracking_uri) or self.tracking_uri.startswith("databricks"):
            return None
        else:
            sqlite = records.sqlite_path(self.tracking_uri)
            home = TradAISettings().home
            root = str((sqlite.parent if sqlite is not None else home) / "mlartifacts")
        if "://" in root or root.startswith("file:"):
            return root.rstrip("/")
        return Path(root).expanduser().resolve().as_uri()

    def experiment_name(self, experiment: str) -> str:
        """Full MLflow experiment name for a short one: `training` → `tradai/training`."""
        return f"{self.experiment_prefix}/{experiment}" if self.experiment_prefix else experiment

    def ensure_experiment(self, experiment: str) -> str:
        """Id of the experiment, creating it (artifacts under the artifact root) or restoring it when
        deleted."""
        return records.experiment_id(self.client(), *self.experiment_location(experiment))

    def experiment_location(self, experiment: str) -> tuple[str, str | None]:
        """The experiment's full name, and where it keeps its artifacts if it is created (None: the server
        decides)."""
        name = self.experiment_name(experiment)
        root = self.resolved_artifact_root()
        return name, None if root is None else f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"

    # -- runs

    def run_tags(
        self,
        dagster_run_id: str | None,
        data_versions: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The lineage tags every run carries, plus `tags`."""
        commit = project_git_commit()
        out = {str(key): str(value) for key, value in (tags or {}).items()}
        out[TAG_DAGSTER_RUN_ID] = dagster_run_id or OUTSIDE_DAGSTER
        out[TAG_GIT_COMMIT] = commit
        if commit != UNKNOWN_COMMIT:
            out[MLFLOW_GIT_COMMIT_TAG] = commit
        for key, value in (data_versions or {}).items():
            out[TAG_DATA_VERSION_PREFIX + str(key)] = str(value)
        return {records.safe_tag_key(key): value for key, value in out.items()}

    @contextmanager
    def start_run(
        self,
        experiment: str,
        run_name: str,
        *,
        dagster_run_id: str | None,
        data_versions: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[TrackedRun]:
        """Open a run in `experiment` (created if missing) and yield it; the run ends with the block.

        FINISHED on success; FAILED when the block raises (the exception propagates, its message is kept
        in the `tradai.error` tag); KILLED on an interrupt. `dagster_run_id` (`context.run.run_id`) and
        `data_versions` (e.g. ArcticDB symbol → version) are stored as tags, with the git commit. Inside
        the block the run is also MLflow's active run, so flavour functions like
        `mlflow.lightgbm.log_model` reach this store.
        """
        client = self.client()
        experiment_id = self.ensure_experiment(experiment)
        run = client.create_run(
            experiment_id, run_name=run_name, tags=self.run_tags(dagster_run_id, data_versions, tags)
        )
        run_id = run.info.run_id
        status = _entities.RunStatus.to_string(_entities.RunStatus.FAILED)
        with _mlflow_globals(self.tracking_uri, self.resolved_registry_uri):
            handle = TrackedRun(
                client=client,
                run_id=run_id,
                experiment_id=experiment_id,
                experiment_name=self.experiment_name(experiment),
                run_name=run_name,
                url=self.run_url(run_id, experiment_id),
            )
            try:
                mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
                try:
                    yield handle
                finally:
                    handle._close()
                status = _entities.RunStatus.to_string(_entities.RunStatus.FINISHED)
            except Exception as exc:
                records.tag_error(client, run_id, exc, (self.tracking_uri, self.resolved_registry_uri))
                raise
            except BaseException:
                status = _entities.RunStatus.to_string(_entities.RunStatus.KILLED)
                raise
            finally:
                self._end_run(client, run_id, status)

    def write_run(self, record: RunRecord, launcher: ChildLauncher | None = None) -> RecordedRun:
        """Write `record` as a new run of this store (`mlflow_records.write_run`: it ends FINISHED, or
        FAILED with its error as a tag). With a `launcher` that forks, in a child forked from the Freqtrade
        worker, which has MLflow loaded (this process then never imports MLflow); else here."""
        if launcher is None or not launcher.forks:
            secrets = (self.tracking_uri, self.resolved_registry_uri)
            return records.write_run(self.client(), record, secrets=secrets)
        root = Path(tempfile.mkdtemp(prefix="tradai-mlflow-run-"))  # this user's only
        try:
            return self._write_run_in_child(record, launcher, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _write_run_in_child(self, record: RunRecord, launcher: ChildLauncher, root: Path) -> RecordedRun:
        job = MLflowRunJob(
            created_path=str(root / "created.json"),
            tracking_uri=self.tracking_uri,
            registry_uri=self.resolved_registry_uri,
            environment=mlflow_client_environment(os.environ),
            record=record,
            result_path=str(root / "result.json"),
            error_path=str(root / "error.json"),
        )
        request = ForkRequest(
            job_path=str(write_job(job, root / "job.json")),
            cwd=os.getcwd(),  # relative store paths (`sqlite:///.tradai/mlflow.db`) mean what they mean here
            stdout_path=str(root / "run.stdout"),
            stderr_path=str(root / "run.stderr"),
            env=child_env(),
        )
        try:
            done = launcher.run(request, WRITE_RUN_TIMEOUT_S)
        except ChildTimeoutError:
            self._end_left_run(job, "KILLED")
            raise MLflowWriteError(
                f"writing the MLflow run {record.run_name!r} took longer than {WRITE_RUN_TIMEOUT_S:g} s",
                f"check that {redact_uri(self.tracking_uri)} answers, then re-run",
            ) from None
        except (ChildLostError, InterpreterError) as exc:
            self._end_left_run(job, "FAILED")
            raise MLflowWriteError(
                f"the process writing the MLflow run {record.run_name!r} was lost: {exc}", "re-run"
            ) from exc
        except BaseException:  # stopped (the Dagster run terminated): the child was killed
            self._end_left_run(job, "KILLED")
            raise
        if done.returncode == 0 and Path(job.result_path).is_file():
            return RecordedRun.model_validate_json(Path(job.result_path).read_text(encoding="utf-8"))
        self._end_left_run(job, "FAILED")
        reason = job_error(job.error_path)
        tail = scrub(log_tail(Path(request.stderr_path), 15), *job.secrets())
        log = f"\n--- last lines of its log ---\n{tail}" if tail else ""
        raise MLflowWriteError(
            f"writing the MLflow run {record.run_name!r} to {redact_uri(self.tracking_uri)} failed "
            f"(exit code {done.returncode}){reason}{log}",
            "fix what it says (is the tracking server up, are its credentials set?) and re-run",
        )

    def _end_left_run(self, job: MLflowRunJob, status: str) -> None:
        """End the run a child created but did not end (it was killed, or died): marked `status`, so no run
        stays RUNNING. A child that ended its run, or never created one, leaves nothing to do."""
        created = Path(job.created_path)
        if not created.is_file():
            return
        run = RecordedRun.model_validate_json(created.read_text(encoding="utf-8"))
        try:
            client = self.client()
            if client.get_run(run.run_id).info.status == "RUNNING":
                client.set_terminated(run.run_id, status=status)
        except Exception:  # the child's own failure is what the caller reports
            logger.warning("could not mark MLflow run %s as %s", run.run_id, status, exc_info=True)

    @staticmethod
    def _end_run(client: mlflow.MlflowClient, run_id: str, status: str) -> None:
        try:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == run_id:
                mlflow.end_run(status=status)
            else:
                client.set_terminated(run_id, status=status)
        except Exception:
            if status == _entities.RunStatus.to_string(_entities.RunStatus.FINISHED):
                raise
            logger.exception("could not mark MLflow run %s as %s", run_id, status)

    def get_run(self, run_id: str) -> mlflow.entities.Run:
        """The run as MLflow stores it (info, params, metrics, tags)."""
        try:
            return self.client().get_run(run_id)
        except _exceptions.MlflowException as exc:
            if not _is_missing(exc):
                raise
            raise NotFoundError(f"no MLflow run {run_id} in {redact_uri(self.tracking_uri)}") from exc

    # -- reading artifacts back

    def download_artifact(self, run_id: str, artifact_file: str, dst_dir: str | Path) -> Path:
        """Copy one artifact of a run into `dst_dir` and return its local path."""
        return Path(self.client().download_artifacts(run_id, artifact_file, str(dst_dir)))

    def load_text(self, run_id: str, artifact_file: str) -> str:
        """A text artifact's content."""
        with tempfile.TemporaryDirectory(prefix="tradai-mlflow-") as tmp:
            return self.download_artifact(run_id, artifact_file, tmp).read_text(encoding="utf-8")

    def load_dict(self, run_id: str, artifact_file: str) -> Any:
        """A JSON or YAML artifact, parsed."""
        text = self.load_text(run_id, artifact_file)
        return yaml.safe_load(text) if artifact_file.endswith((".yaml", ".yml")) else json.loads(text)

    def load_dataframe(self, run_id: str, artifact_file: str) -> pd.DataFrame:
        """A parquet or CSV artifact as a DataFrame (CSV gives back columns, not the index)."""
        with tempfile.TemporaryDirectory(prefix="tradai-mlflow-") as tmp:
            path = self.download_artifact(run_id, artifact_file, tmp)
            return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)

    # -- links for the Dagster UI

    def _ui_base(self) -> str | None:
        base = self.ui_url or (self.tracking_uri if _is_http(self.tracking_uri) else None)
        return redact_uri(base).split("?")[0].split("#")[0].rstrip("/") if base else None

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        """Link to the run in the MLflow UI, or None when no UI URL is known (a local SQLite store
        without `ui_url`; `ui_hint()` says how to open one)."""
        base = self._ui_base()
        if base is None:
            return None
        if experiment_id:
            return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"{base}/#/runs/{run_id}"

    def model_version_url(self, name: str, version: int | str) -> str | None:
        """Link to a registered model version in the MLflow UI, or None (see `run_url`)."""
        base = self._ui_base()
        return None if base is None else f"{base}/#/models/{quote(name, safe='')}/versions/{version}"

    def ui_hint(self) -> str:
        """How a person opens this store in a browser."""
        base = self._ui_base()
        if base is not None:
            return base
        return (
            f"mlflow ui --backend-store-uri {redact_uri(self.tracking_uri)} "
            "(then open http://127.0.0.1:5000; set ui_url to link runs from Dagster)"
        )

    def run_metadata(self, run_id: str, experiment_id: str | None = None) -> dict[str, dg.MetadataValue]:
        """Dagster metadata pointing at a run: its id and a link (or how to open the UI)."""
        url = self.run_url(run_id, experiment_id)
        return {
            "mlflow_run_id": dg.MetadataValue.text(run_id),
            "mlflow_run": dg.MetadataValue.url(url) if url else dg.MetadataValue.text(self.ui_hint()),
        }

    # -- model registry

    def register_model(
        self, run_id: str, artifact_path: str, name: str, tags: Mapping[str, str] | None = None
    ) -> int:
        """Register the model a run logged as `artifact_path` as a new version of `name` (created if
        missing); returns the version number."""
        client = self.client()
        run = self.get_run(run_id)
        model_id, source = self._model_source(client, run, artifact_path)
        try:
            client.create_registered_model(name)
        except _exceptions.MlflowException as exc:
            if "ALREADY_EXISTS" not in _error_code(exc):
                raise
        # The SQL registry store resolves `models:/<id>` sources through the *global* tracking URI.
        with _mlflow_globals(self.tracking_uri, self.resolved_registry_uri):
            version = client.create_model_version(
                name,
                source=source,
                run_id=run_id,
                tags={str(key): str(value) for key, value in (tags or {}).items()},
                run_link=self.run_url(run_id, run.info.experiment_id),
                model_id=model_id,
            )
        logger.info("registered %s version %s from run %s", name, version.version, run_id)
        return int(version.version)

    @staticmethod
    def _model_source(
        client: mlflow.MlflowClient, run: mlflow.entities.Run, artifact_path: str
    ) -> tuple[str | None, str]:
        """(logged model id, source URI) of the model `run` logged as `artifact_path`."""
        candidates = []
        page_token = None
        while True:
            page = client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"name = '{artifact_path}' AND source_run_id = '{run.info.run_id}'",
                page_token=page_token,
            )
            candidates.extend(model for model in page if model.source_run_id == run.info.run_id)
            page_token = page.token
            if not page_token:
                break
        if candidates:
            newest = max(candidates, key=lambda model: model.creation_timestamp or 0)
            return newest.model_id, f"models:/{newest.model_id}"
        files = {item.path for item in client.list_artifacts(run.info.run_id, artifact_path)}
        if f"{artifact_path}/MLmodel" in files:
            return None, f"{run.info.artifact_uri}/{artifact_path}"
        raise NotFoundError(
            f"MLflow run {run.info.run_id} has no model logged as {artifact_path!r}",
            f"log one inside the run with TrackedRun.log_model(model, name={artifact_path!r})",
        )

    def get_version(self, name: str, version: int | str) -> ModelVersionInfo:
        """One version of a registered model."""
        try:
            found = self.client().get_model_version(name, str(version))
        except _exceptions.MlflowException as exc:
            if not _is_missing(exc):
                raise
            raise NotFoundError(
                f"model {name!r} has no version {version}",
                f"list the versions there are with list_versions({name!r})",
            ) from exc
        return ModelVersionInfo.from_mlflow(found)

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of a registered model, oldest first, with its aliases; [] when the model is not
        registered."""
        client = self.client()
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            return []
        by_version: dict[int, list[str]] = {}
        for alias, version in (client.get_registered_model(name).aliases or {}).items():
            by_version.setdefault(int(version), []).append(alias)
        infos = [
            ModelVersionInfo.from_mlflow(version, tuple(by_version.get(int(version.version), ())))
            for version in versions
        ]
        return sorted(infos, key=lambda info: info.version)

    def set_alias(self, name: str, alias: str, version: int | str) -> int | None:
        """Point `alias` (e.g. `champion`) at a version; returns the version it pointed at before, if any,
        so a caller can record or undo the move."""
        previous = self.alias_version(name, alias)
        self.get_version(name, version)
        self.client().set_registered_model_alias(name, alias, str(version))
        logger.info("alias %s of %s: version %s -> %s", alias, name, previous, version)
        return previous

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove `alias` from whichever version holds it (nothing if none does)."""
        if self.alias_version(name, alias) is not None:
            self.client().delete_registered_model_alias(name, alias)

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version `alias` points at, or None when the model or the alias does not exist."""
        try:
            return int(self.client().get_model_version_by_alias(name, alias).version)
        except _exceptions.MlflowException as exc:
            if not _is_missing(exc):
                raise
            return None

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersionInfo:
        """The version `alias` points at; NotFoundError, saying what to do, when the model or the alias
        does not exist."""
        client = self.client()
        try:
            return ModelVersionInfo.from_mlflow(client.get_model_version_by_alias(name, alias))
        except _exceptions.MlflowException as exc:
            if not _is_missing(exc):
                raise
            versions = [info.version for info in self.list_versions(name)]
            if not versions:
                raise NotFoundError(
                    f"no model version of {name!r} has alias {alias!r}: no model named {name!r} is "
                    f"registered in {redact_uri(self.resolved_registry_uri)}",
                    "train and register one first (materialize the model asset / run the retraining job), "
                    f"then set the alias with set_alias({name!r}, {alias!r}, <version>)",
                ) from exc
            raise NotFoundError(
                f"no model version of {name!r} has alias {alias!r} (versions: "
                f"{', '.join(map(str, versions))})",
                f"train one with the retraining job, or set the alias: set_alias({name!r}, {alias!r}, "
                f"{versions[-1]}) or in the MLflow UI",
            ) from exc

    def set_version_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        """Tag a model version (e.g. its validation result or why it was archived)."""
        self.get_version(name, version)
        self.client().set_model_version_tag(name, str(version), key, str(value))

    def load_model(self, name: str, alias: str, *, flavor: str = "pyfunc") -> Any:
        """Load the version `alias` points at, as a pyfunc model (default) or a flavour's native object
        (`flavor="lightgbm"` gives a Booster). NotFoundError when the alias is missing."""
        version = self.get_version_by_alias(name, alias).version
        module = importlib.import_module(f"mlflow.{flavor}")
        with _mlflow_globals(self.tracking_uri, self.resolved_registry_uri):
            return module.load_model(f"models:/{name}/{version}")

    def export_booster(
        self, name: str, version: int, folder: Path, *, alias: str | None = None
    ) -> ExportedModel:
        """Write the LightGBM booster of `name` version `version` to a file in `folder` (LightGBM's own text
        format) for a backtest child to trade: the child reads the file and never this store or its URI.
        Pinned by version, so the file is that version whatever an alias does meanwhile.

        Raises NotFoundError for a missing version, ValidationError when it was trained on other features
        than this code computes (its feature-set tag, or the booster's feature names).
        """
        from tradai_core.features import FEATURE_NAMES, feature_set_hash  # pandas, TA-Lib: on first use

        info = self.get_version(name, version)  # imports MLflow the resource's way (no telemetry)
        import mlflow.artifacts
        import mlflow.lightgbm

        trained_on = info.tags.get(TAG_FEATURE_SET_HASH)
        if trained_on != feature_set_hash():
            raise ValidationError(
                f"{name} v{version} was trained on feature set {trained_on}, but this code computes feature "
                f"set {feature_set_hash()}",
                "retrain the model on the current features (materialize features, training_set, model)",
            )
        client = self.client()
        source = client.get_model_version_download_uri(name, str(version))
        with tempfile.TemporaryDirectory(prefix="tradai-model-") as scratch:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=scratch, tracking_uri=self.tracking_uri
            )
            booster = mlflow.lightgbm.load_model(local)
        if tuple(booster.feature_name()) != FEATURE_NAMES:
            raise ValidationError(
                f"{name} v{version} expects features {booster.feature_name()}, not the platform's",
                "retrain the model on the current features",
            )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}-v{version}.txt"
        booster.save_model(str(path))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        logger.info("exported %s v%d%s for a backtest", name, version, f" ({alias})" if alias else "")
        return ExportedModel(name=name, version=version, alias=alias, path=path, sha256=digest)

    # -- the champion's audit history: one run per entry in the audit experiment (vocabulary: registry)

    def audit_history(self, name: str) -> list[AuditEntry]:
        """Every audit entry of model `name`, oldest first ([] when there is none)."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name(AUDIT_EXPERIMENT))
        if experiment is None:
            return []
        entries: list[AuditEntry] = []
        token: str | None = None
        while True:
            page = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`{TAG_AUDIT_MODEL}` = '{name}'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                raw = run.data.tags.get(TAG_AUDIT_ENTRY)
                if raw:
                    entries.append(AuditEntry.model_validate_json(raw))
            token = page.token
            if not token:
                break
        return sorted(entries, key=lambda entry: entry.at)

    def record_audit_entry(self, entry: AuditEntry) -> tuple[str, str]:
        """Append `entry` to its model's history; returns (run id, experiment id) of its run."""
        to = f"v{entry.to_version}" if entry.to_version is not None else "none"
        tags = {
            TAG_AUDIT_MODEL: entry.model,
            f"{TAG_AUDIT_PREFIX}action": entry.action.value,
            f"{TAG_AUDIT_PREFIX}from_version": str(entry.from_version),
            f"{TAG_AUDIT_PREFIX}to_version": str(entry.to_version),
            f"{TAG_AUDIT_PREFIX}trigger": entry.trigger.value,
            f"{TAG_AUDIT_PREFIX}event_key": entry.event_key or "-",
            f"{TAG_AUDIT_PREFIX}reason": entry.reason[:4000],
            TAG_AUDIT_ENTRY: entry.model_dump_json(),
        }
        with self.start_run(
            AUDIT_EXPERIMENT,
            f"{entry.model} {entry.action.value} {to}",
            dagster_run_id=entry.dagster_run_id,
            tags=tags,
        ) as run:
            metrics = dict(entry.metrics)
            if entry.p_value is not None:
                metrics["p_value"] = entry.p_value
            if metrics:
                run.log_metrics(metrics)
            run.log_dict(entry.model_dump(mode="json"), "audit/entry.json")
            run_id, experiment_id = run.run_id, run.experiment_id
        try:  # the history run is what matters; the glance tag on the model is a convenience
            self.client().set_registered_model_tag(entry.model, TAG_AUDIT_LAST, entry.summary[:4000])
        except MlflowException:
            logger.debug("could not set %s on %s", TAG_AUDIT_LAST, entry.model)
        return run_id, experiment_id
