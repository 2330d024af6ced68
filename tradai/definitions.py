"""The one Dagster code location: every asset, check, job, schedule, sensor and resource of TradAI."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from jobs.backtests import build_backtest_job
from jobs.market_data import build_market_data_job, build_market_data_schedule
from jobs.ml import build_features_job, build_training_job
from jobs.model_lifecycle import build_model_loop_definitions
from sensors.notifications import notify_on_run_failure
from tradai.deployment import execution_from_env, retraining_config_from_env
from tradai_assets.backtests import build_backtest_assets
from tradai_assets.features import build_feature_assets
from tradai_assets.hyperopt import build_hyperopt_assets
from tradai_assets.market_data import build_market_data_assets
from tradai_assets.models import build_model_assets
from tradai_core.settings import TradAISettings
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.mlflow_tracking import MLflowResource
from tradai_resources.notifier import NotifierResource


def _secret(name: str) -> EnvVar | None:
    """An environment-sourced secret when set: Dagster shows the variable's name, never its value."""
    return EnvVar(name) if os.environ.get(name) else None


def _secret_or(name: str, configured: str | None, resolved: str) -> str:
    """`EnvVar(name)` when the setting in force came from that variable (a URI that may carry credentials
    then shows as the variable's name in the UI), else the resolved value (a default holds no secret)."""
    if configured is not None and os.environ.get(name) == configured:
        return EnvVar(name)
    return resolved


def build_definitions(settings: TradAISettings | None = None) -> Definitions:
    """Definitions for `settings` (default: from `TRADAI_*` environment variables)."""
    settings = settings or TradAISettings()
    resources = {
        "exchange": ExchangeResource(
            exchange_id=settings.exchange_id,
            trading_mode=settings.trading_mode,
            base_url=settings.exchange_base_url,
            api_key=_secret("TRADAI_EXCHANGE_API_KEY"),
            api_secret=_secret("TRADAI_EXCHANGE_API_SECRET"),
        ),
        "candle_store": ArcticDBResource(
            uri=_secret_or("TRADAI_ARCTICDB_URI", settings.arcticdb_uri, settings.resolved_arcticdb_uri)
        ),
        "freqtrade": FreqtradeResource(
            work_dir=str(settings.resolved_data_dir / "backtests"),
            start_method=settings.backtest_workers,
            shared_worker_folder=str(settings.worker_dir) if settings.worker_dir else None,
        ),
        "hyperopt": HyperoptResource(
            work_dir=str(settings.resolved_data_dir / "hyperopt"),
            storage_url=_secret("TRADAI_OPTUNA_STORAGE"),
        ),
        "mlflow": MLflowResource(
            tracking_uri=_secret_or("TRADAI_MLFLOW_URI", settings.mlflow_uri, settings.resolved_mlflow_uri)
        ),
        "notifier": NotifierResource(
            webhook_url=_secret("TRADAI_WEBHOOK_URL"),
            sns_topic_arn=_secret("TRADAI_SNS_TOPIC_ARN"),
            aws_region=os.environ.get("AWS_REGION"),
        ),
    }
    execution = execution_from_env()
    resources.update(execution.resources)
    loop = build_model_loop_definitions(settings, retraining_config=retraining_config_from_env())
    return Definitions(
        assets=[
            *build_market_data_assets(settings),
            *build_feature_assets(settings),
            *build_model_assets(settings),
            *build_backtest_assets(settings),
            *build_hyperopt_assets(settings),
            *loop["assets"],
        ],
        jobs=[
            build_market_data_job(settings),
            build_features_job(settings),
            build_training_job(),
            build_backtest_job(),
            *loop["jobs"],
        ],
        schedules=[build_market_data_schedule(settings), *loop["schedules"]],
        sensors=[notify_on_run_failure, *loop["sensors"]],
        resources=resources,
        executor=execution.executor,
    )


defs = build_definitions()
