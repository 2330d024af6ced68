"""The Dagster-run harness of the backtest tests: recorded candles materialized through the real market-data
path (replay server → ccxt → ArcticDB), a strategies folder, real resources, and one call that runs a
strategy's `backtest_plan` and `backtest_report`.

Plain helpers (not fixtures): each test module builds its own lab in a fixture of the scope it needs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from strategies.validation import STRATEGIES_DIR
from tradai_assets.backtests import build_backtest_assets
from tradai_assets.market_data import build_market_data_assets
from tradai_core.settings import TradAISettings
from tradai_replay.server import ReplayServer
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource

HISTORY_END = date(2022, 10, 12)


@dataclass(frozen=True)
class BacktestLab:
    """Where a backtest test's state lives: settings, strategies folder, Dagster instance, resources."""

    settings: TradAISettings
    folder: Path
    instance: DagsterInstance
    resources: dict[str, Any]
    home: Path


def backtest_lab(
    home: Path,
    candles_dir: Path,
    *,
    history_start: date,
    candle_days: tuple[str, str],
    strategies: tuple[str, ...] = ("rsi_mean_reversion",),
    instance: DagsterInstance | None = None,
    **settings_fields: Any,
) -> BacktestLab:
    """A lab in `home`: the `strategies` modules (with their YAML) copied into its strategies folder, and
    every pair's candles of `candle_days` (first, last day) materialized from `candles_dir` into `instance`
    (default: an ephemeral one). `settings_fields` set any other `TradAISettings` field (history end,
    pairs, holdout days)."""
    settings = TradAISettings(
        home=home, history_start=history_start, **{"history_end": HISTORY_END, **settings_fields}
    )
    folder = home / "strategies"
    folder.mkdir()
    for module in strategies:
        for suffix in (".py", ".yaml"):
            shutil.copy(STRATEGIES_DIR / f"{module}{suffix}", folder / f"{module}{suffix}")
    instance = instance or DagsterInstance.ephemeral()
    resources: dict[str, Any] = {
        "candle_store": ArcticDBResource(uri=settings.resolved_arcticdb_uri),
        "freqtrade": FreqtradeResource(work_dir=str(home / "backtests")),
        "mlflow": MLflowResource(tracking_uri=settings.resolved_mlflow_uri),
    }
    first, last = candle_days
    with ReplayServer(candles_dir) as server:
        done = materialize(
            build_market_data_assets(settings),
            resources={**resources, "exchange": ExchangeResource(base_url=server.base_url)},
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        )
    if not done.success:
        raise RuntimeError(f"materializing the lab's candles {first} → {last} failed (run {done.run_id})")
    return BacktestLab(settings=settings, folder=folder, instance=instance, resources=resources, home=home)


def run_backtest(
    lab: BacktestLab,
    strategy: str,
    config: dict[str, Any],
    *,
    settings: TradAISettings | None = None,
    raise_on_error: bool = False,
) -> ExecuteInProcessResult:
    """`backtest_plan/<strategy>` and `backtest_report/<strategy>` in one run, both with run config
    `config` (the plan and the report take the same values)."""
    ops = {"config": config}
    return materialize(
        build_backtest_assets(settings or lab.settings, lab.folder),
        resources=lab.resources,
        instance=lab.instance,
        partition_key=strategy,
        run_config={"ops": {"backtest_plan": ops, "backtest_report": ops}},
        raise_on_error=raise_on_error,
    )
