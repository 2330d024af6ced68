"""Where a model strategy finds its model: the MLflow store named in Freqtrade's config, read with mlflow.

A backtest hands the store to the strategy the way Freqtrade hands it everything else, in the config
(`config["tradai"]["mlflow_tracking_uri"]`, written by the backtester), so the strategy needs no Dagster
resource and no environment swapped around it. Without that section (a stock `freqtrade` run, a
hyperopt worker) the settings' store applies (`TRADAI_MLFLOW_URI`, else the local default).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from tradai_core.errors import ConfigurationError, NotFoundError
from tradai_core.features import FEATURE_NAMES, feature_set_hash
from tradai_core.registry import FREQTRADE_MODEL_STORE, FREQTRADE_SECTION, TAG_FEATURE_SET_HASH
from tradai_core.settings import TradAISettings
from tradai_core.urls import redact_uri

logger = logging.getLogger(__name__)

_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")

# (tracking URI, model name, alias) → (booster, version): one load per process.
_MODELS: dict[tuple[str, str, str], tuple[Any, int]] = {}
_MODELS_LOCK = threading.Lock()


def model_store_uri(config: Mapping[str, Any] | None) -> str:
    """The MLflow store named in a Freqtrade config's `tradai` section, else the settings' store."""
    section = (config or {}).get(FREQTRADE_SECTION) or {}
    return str(section.get(FREQTRADE_MODEL_STORE) or TradAISettings().resolved_mlflow_uri)


def _not_found(client: Any, name: str, alias: str, uri: str) -> NotFoundError:
    """The registry's "no such model or alias", saying what exists and what to do."""
    from mlflow.exceptions import MlflowException

    try:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        versions = []
    if not versions:
        return NotFoundError(
            f"no model version of {name!r} has alias {alias!r}: no model named {name!r} is registered in "
            f"{redact_uri(uri)}",
            "train and register one first (materialize the model asset / run the retraining job)",
        )
    return NotFoundError(
        f"no model version of {name!r} has alias {alias!r} (versions: {', '.join(map(str, versions))})",
        f"train one with the retraining job, or set the alias {alias!r} in the MLflow UI",
    )


def load_model(name: str, alias: str, uri: str) -> tuple[Any, int]:
    """The LightGBM booster of the version `alias` points at in the store `uri`, and that version;
    cached per process.

    Raises NotFoundError when the model or the alias is missing, ConfigurationError when the version was
    trained on other features than this code computes.
    """
    key = (uri, name, alias)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load(name, alias, uri)
        return _MODELS[key]


def _load(name: str, alias: str, uri: str) -> tuple[Any, int]:
    import mlflow.artifacts
    import mlflow.lightgbm
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if str(getattr(exc, "error_code", "")) not in _MISSING:
            raise
        raise _not_found(client, name, alias, uri) from exc
    number = int(version.version)
    trained_on = (version.tags or {}).get(TAG_FEATURE_SET_HASH)
    if trained_on != feature_set_hash():
        raise ConfigurationError(
            f"{name} version {number} ({alias}) was trained on feature set {trained_on}, "
            f"but this code computes feature set {feature_set_hash()}",
            "retrain the model on the current features (materialize features, training_set, model)",
        )
    # The version's artifact location, resolved by this store's client, then fetched with no process-wide
    # MLflow state involved (a `models:/` URI would be resolved against the global registry instead).
    source = client.get_model_version_download_uri(name, str(number))
    with tempfile.TemporaryDirectory(prefix="tradai-model-") as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=folder, tracking_uri=uri)
        booster = mlflow.lightgbm.load_model(local)
    if tuple(booster.feature_name()) != FEATURE_NAMES:
        raise ConfigurationError(
            f"{name} version {number} expects features {booster.feature_name()}",
            "retrain the model on the current features",
        )
    logger.info("loaded %s version %s (alias %s) from %s", name, number, alias, redact_uri(uri))
    return booster, number
