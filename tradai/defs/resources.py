"""The resources every domain shares, built from the settings; secrets stay `EnvVar`s (the UI shows the
variable's name, never its value)."""

import os
from typing import Any

from dagster import EnvVar

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


def build_resources(settings: TradAISettings) -> dict[str, Any]:
    """`exchange`, `candle_store`, `freqtrade`, `hyperopt`, `mlflow` and `notifier` for `settings`."""
    return {
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
        "hyperopt": HyperoptResource(  # its study-workers fork from the backtests' worker
            work_dir=str(settings.resolved_data_dir / "hyperopt"),
            storage_url=_secret("TRADAI_OPTUNA_STORAGE"),
            start_method=settings.backtest_workers,
            shared_worker_folder=str(settings.worker_dir) if settings.worker_dir else None,
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
