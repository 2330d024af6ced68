"""Where a model strategy finds its model: the booster file the platform exported into the backtest's
workspace, named in Freqtrade's config.

The parent process (the Dagster side) resolves the model version once, exports that version's booster
(`MLflowResource.export_booster`), and the backtester copies it into the backtest's workspace and names it
in the config's `tradai` section (`tradai_core.registry.ExportedModel`: file, name, version, SHA-256). The
strategy reads that file and nothing else: the process running strategy code never sees a tracking URI
(which may carry credentials), and it trades exactly the version the backtest records — an alias moved
after the parent's lookup changes nothing. A config naming no export, a missing file, or a file that is not
the one exported fails the backtest with a message saying so; the strategy never falls back to a registry.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

import pydantic

from tradai_core.errors import ConfigurationError, NotFoundError, ValidationError
from tradai_core.features import FEATURE_NAMES
from tradai_core.registry import ExportedModel

logger = logging.getLogger(__name__)

# (file, SHA-256) → booster: one read per process.
_BOOSTERS: dict[tuple[str, str], Any] = {}
_BOOSTERS_LOCK = threading.Lock()

RUN_IT_THROUGH_TRADAI = (
    "backtest it through TradAI (the backtest assets, or FreqtradeResource.backtest with "
    "model=MLflowResource.export_booster(...)), which exports the model version into the workspace"
)


def exported_model(config: Mapping[str, Any] | None) -> ExportedModel:
    """The exported booster a Freqtrade config names; ConfigurationError when it names none."""
    try:
        model = ExportedModel.from_freqtrade(config)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(
            f"the Freqtrade config's tradai.model section is malformed ({problems})", RUN_IT_THROUGH_TRADAI
        ) from None
    if model is None:
        raise ConfigurationError(
            "the Freqtrade config names no exported model (tradai.model): a model strategy trades the "
            "booster file the platform exports for its backtest and never reads a model registry itself",
            RUN_IT_THROUGH_TRADAI,
        )
    return model


def load_model(config: Mapping[str, Any] | None, name: str, alias: str) -> tuple[Any, int]:
    """The booster of model `name` the config's export holds, and its version; cached per process.

    Raises ConfigurationError when the config names no export or another model or alias, NotFoundError
    when the file is missing, ValidationError when it is not the file exported (altered, cut short) or not
    a LightGBM model on the platform's features.
    """
    model = exported_model(config)
    if model.name != name or (model.alias is not None and model.alias != alias):
        raise ConfigurationError(
            f"the exported model is {model.name} v{model.version} ({model.alias}); the strategy trades "
            f"{name} ({alias})",
            "export the model the strategy's parameters name (model_alias), then backtest again",
        )
    key = (str(model.path), model.sha256)
    with _BOOSTERS_LOCK:
        if key not in _BOOSTERS:
            _BOOSTERS[key] = _read(model)
        return _BOOSTERS[key], model.version


def _read(model: ExportedModel) -> Any:
    import lightgbm

    what = f"the exported model file of {model.name} v{model.version} ({model.path})"
    try:
        data = model.path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{what} is missing", RUN_IT_THROUGH_TRADAI) from None
    except OSError as exc:
        raise NotFoundError(f"{what} cannot be read: {exc}", RUN_IT_THROUGH_TRADAI) from None
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise ValidationError(
            f"{what} is corrupt: its SHA-256 is not the exported file's (altered or cut short)",
            RUN_IT_THROUGH_TRADAI,
        )
    try:
        booster = lightgbm.Booster(model_str=data.decode("utf-8"))
    except (lightgbm.basic.LightGBMError, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"{what} is not a LightGBM model: {exc}", RUN_IT_THROUGH_TRADAI) from None
    if tuple(booster.feature_name()) != FEATURE_NAMES:
        raise ValidationError(
            f"{model.name} v{model.version} expects features {booster.feature_name()}, not the platform's",
            "retrain the model on the current features",
        )
    logger.info("trading %s v%d from its exported file", model.name, model.version)
    return booster
