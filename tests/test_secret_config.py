"""URIs that may carry credentials (ArcticDB, MLflow) are bound as EnvVars when they come from the
environment, so the UI shows the variable's name; and wherever a resource shows them (reprs, errors,
metadata, MLflow tags) the credentials are redacted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import EnvVar

from tests.model_loop_fixtures import empty_mlflow_db
from tradai.definitions import build_definitions
from tradai_core.errors import StorageError
from tradai_core.settings import TradAISettings
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.mlflow_tracking import TAG_ERROR, MLflowResource

TOKEN = "Mn3Bv8Cx1Za6Sd4Fg7Hj"


def test_an_arcticdb_uri_that_cannot_be_opened_is_named_without_its_credentials(tmp_path: Path) -> None:
    store = ArcticDBResource(uri=f"lmdb://{tmp_path / 'store'}?access=AK{TOKEN}&secret={TOKEN}")
    with pytest.raises(StorageError) as raised:
        store.arctic()
    error = raised.value
    assert f"lmdb://{tmp_path / 'store'}?access=***&secret=***" in str(error)
    assert "TRADAI_ARCTICDB_URI" in str(error) and TOKEN not in str(error)
    assert error.__cause__ is None and error.__suppress_context__
    assert TOKEN not in repr(store) and TOKEN not in str(store)


@pytest.fixture
def mlflow_with_token(tmp_path: Path) -> MLflowResource:
    shutil.copyfile(empty_mlflow_db(tmp_path), tmp_path / "mlflow.db")
    return MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}?token={TOKEN}")


def test_an_mlflow_uri_is_shown_without_its_credentials(mlflow_with_token: MLflowResource) -> None:
    assert TOKEN not in repr(mlflow_with_token)
    assert mlflow_with_token.ui_hint().startswith("mlflow ui --backend-store-uri sqlite:///")
    assert TOKEN not in mlflow_with_token.ui_hint()
    assert TOKEN not in str(mlflow_with_token.run_metadata("abc", "1"))


def test_a_failed_run_is_tagged_with_its_error_without_the_store_credentials(
    mlflow_with_token: MLflowResource,
) -> None:
    uri = mlflow_with_token.tracking_uri
    with (
        pytest.raises(RuntimeError),
        mlflow_with_token.start_run("secrets", "fails", dagster_run_id=None) as run,
    ):
        raise RuntimeError(f"could not reach {uri}")
    tag = mlflow_with_token.get_run(run.run_id).data.tags[TAG_ERROR]
    assert tag.startswith("RuntimeError: could not reach") and TOKEN not in tag


def test_uris_from_the_environment_are_bound_as_envvars_and_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADAI_HOME", str(tmp_path))
    monkeypatch.setenv("TRADAI_ARCTICDB_URI", f"mem://?secret={TOKEN}")
    monkeypatch.setenv("TRADAI_MLFLOW_URI", f"sqlite:///{tmp_path / 'm.db'}?token={TOKEN}")
    settings = TradAISettings()
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    resources = build_definitions(settings).resources
    assert isinstance(resources["candle_store"].uri, EnvVar)
    assert resources["candle_store"].uri == EnvVar("TRADAI_ARCTICDB_URI")
    assert isinstance(resources["mlflow"].tracking_uri, EnvVar)
    assert resources["mlflow"].process_config_and_initialize().tracking_uri == settings.mlflow_uri

    # Settings given in code (not the environment's) and defaults are bound as they are.
    monkeypatch.delenv("TRADAI_ARCTICDB_URI")
    settings = TradAISettings(home=tmp_path, mlflow_uri=f"sqlite:///{tmp_path / 'other.db'}")
    resources = build_definitions(settings).resources
    assert resources["candle_store"].uri == f"lmdb://{tmp_path / 'arcticdb'}"
    assert not isinstance(resources["candle_store"].uri, EnvVar)
    assert resources["mlflow"].tracking_uri == f"sqlite:///{tmp_path / 'other.db'}"
    assert not isinstance(resources["mlflow"].tracking_uri, EnvVar)


def test_an_optuna_storage_url_is_shown_without_its_credentials(tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://optuna:{TOKEN}@db.internal:5432/optuna?sslmode=require&password={TOKEN}"
    shown = HyperoptResource(storage_url=url, work_dir=str(tmp_path)).redacted_storage_url()
    assert shown == "postgresql+psycopg2://db.internal:5432/optuna?sslmode=require&password=***"
