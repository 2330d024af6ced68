"""`make demo`: the platform end to end, offline, from the recorded candles bundled in `demo_data/`.

It starts the Binance replay server on loopback, materializes every market-data partition through the
real CCXT path into ArcticDB under `.tradai/`, checks that ArcticDB holds every source candle unchanged,
and says where everything is and how to open the UI.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance, ExecuteInProcessResult
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from jobs.market_data import MARKET_DATA_JOB
from jobs.ml import FEATURES_JOB
from tradai.demo_output import (
    QUIET_LOGGERS,
    QUIET_RUN_CONFIG,
    outcome_lines,
    progress,
    quiet_sensor_context,
    unexpected_errors,
)
from tradai_core.candles import diff_candles, normalize_candles
from tradai_core.settings import PROJECT_ROOT, TradAISettings, pair_slug
from tradai_core.urls import redact_uri

DEMO_DATA = PROJECT_ROOT / "demo_data"
DEMO_CANDLES = DEMO_DATA / "binance_spot_1h"
DEMO_EXCHANGE_INFO = DEMO_DATA / "exchange" / "binance_spot_exchangeInfo.json"
OFFLINE_ENV = PROJECT_ROOT / "offline.env"

logger = logging.getLogger("tradai.demo")

DEMO_SIMULATION = {
    "start": "2022-05-02",
    "end": "2022-05-23",
    "pairs": ["BTC/USDT", "ETH/USDT"],
    "train_days": 120,
    "challenge_looks": 2,
}
"""The demo's walk-forward: three weekly decisions in May 2022 on two pairs (a few minutes)."""


def load_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines of an env file (comments and blanks skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.strip().startswith("#")}


def prepare_environment() -> None:
    """Offline settings (unless already set) and a DAGSTER_HOME under `.tradai/` linked to dagster.yaml."""
    for key, value in load_env_file(OFFLINE_ENV).items():
        os.environ.setdefault(key, value)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".tradai" / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(PROJECT_ROOT / "dagster.yaml")


def run_daily_job(settings: TradAISettings, instance: DagsterInstance, job_name: str, what: str) -> None:
    """Every pair × every day of a daily-partitioned job as one single-run backfill."""
    from tradai.definitions import build_definitions
    from tradai_assets.partitions import daily_partitions

    keys = daily_partitions(settings).get_partition_keys()
    job = build_definitions(settings).resolve_job_def(job_name)
    print(f"→ {what}: {len(settings.pairs)} pairs × {len(keys)} days ({keys[0]} … {keys[-1]}), one run")
    started = time.perf_counter()
    with progress(what):
        result = job.execute_in_process(
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
            raise_on_error=False,
        )
    require_success(result, what)
    print(f"  run {result.run_id} succeeded in {time.perf_counter() - started:.1f}s")


class DemoStepFailed(RuntimeError):
    """A demo step failed for an unexpected reason (its errors were printed in full)."""


def require_success(result: ExecuteInProcessResult, what: str) -> None:
    """Print why a run did not succeed (refusals in a line, other errors in full) and stop the demo."""
    if result.success:
        return
    for line in outcome_lines(result):
        print("  " + line)
    raise DemoStepFailed(f"{what}: run {result.run_id} failed (see above, and the run in the UI)")


def run_training(settings: TradAISettings, instance: DagsterInstance) -> None:
    """The training set and a model (registered in MLflow; champion by bootstrap when none exists)."""
    from jobs.ml import TRAINING_JOB
    from tradai.definitions import build_definitions

    print(f"→ training a model on {settings.history_start} → {settings.holdout_start} (holdout kept out)")
    job = build_definitions(settings).resolve_job_def(TRAINING_JOB)
    with progress("training"):
        result = job.execute_in_process(instance=instance, run_config=QUIET_RUN_CONFIG, raise_on_error=False)
    require_success(result, "training")
    [model] = result.asset_materializations_for_node("model")
    meta = {key: value.value for key, value in model.metadata.items()}
    auc, accuracy = meta.get("oos_auc", float("nan")), meta.get("oos_accuracy", float("nan"))
    print(
        f"  {meta.get('model_name')} v{meta.get('model_version')} (aliases: {meta.get('aliases')}): "
        f"out-of-sample AUC {auc:.3f}, accuracy {accuracy:.3f}"
    )


def run_hyperopt(settings: TradAISettings, instance: DagsterInstance) -> None:
    """A short Optuna study of one strategy, with its overfitting gate."""
    from tradai.definitions import build_definitions
    from tradai_assets.hyperopt import run_demo_study, summarize_demo_study

    print(
        "→ a short hyperopt study of RsiMeanReversion with the pre-screen (the compiled simulation explores, "
        "Freqtrade confirms the finalists; then out-of-sample and the DSR gate)"
    )
    resources = build_definitions(settings).resources
    with progress("hyperopt"):
        result = run_demo_study(
            settings, dict(resources), instance, n_trials=6, loggers=QUIET_LOGGERS, prescreen=True
        )
    print("  " + summarize_demo_study(result))
    for line in outcome_lines(result):
        print("  " + line)


def run_model_loop(settings: TradAISettings, instance: DagsterInstance) -> None:
    """Drift of every pair against the champion, and what the loop's sensors decide and run."""
    from tradai.model_loop_demo import demo_drift_loop

    print("→ scoring drift against the champion; the model loop's state")
    with progress("drift and the model loop"):
        state = demo_drift_loop(
            settings, instance, run_requested=True, loggers=QUIET_LOGGERS, sensor_context=quiet_sensor_context
        )
    print(state.text())


def run_walk_forward(settings: TradAISettings) -> None:
    """A short walk-forward simulation: challengers trained on newer data, their comparisons, and the
    policy table (never, weekly, monthly, drift) on the out-of-sample PnL of the champion in force."""
    import uuid

    from tradai.defs.resources import build_resources
    from tradai.model_loop_demo import simulation_text
    from tradai_assets.model_loop_simulation import SimulationConfig, run_simulation

    config = SimulationConfig(**DEMO_SIMULATION)
    print(
        f"→ walk-forward simulation {config.start} → {config.end} (weekly clock, {', '.join(config.pairs)}): "
        "retraining policies compared"
    )
    resources = build_resources(settings)
    with progress("walk-forward simulation"):
        result, _ = run_simulation(
            settings,
            config,
            resources["freqtrade"],
            resources["mlflow"].process_config_and_initialize(),
            run_id=f"demo-{uuid.uuid4().hex[:12]}",
        )
    print("  " + simulation_text(result).replace("\n", "\n  "))


def show_statistic(value: object) -> str:
    """A statistic from report metadata: `1.23`, or the report's `n/a (why)` when it is undefined."""
    return f"{value:5.2f}" if isinstance(value, int | float) else str(value)


def run_backtests(settings: TradAISettings, instance: DagsterInstance) -> bool:
    """One backtest run (plan, gates, report) per strategy partition; True when every one succeeded."""
    from jobs.backtests import BACKTEST_JOB
    from tradai.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def(BACKTEST_JOB)
    strategies = job.partitions_def.get_partition_keys() if job.partitions_def else []
    print(
        f"→ backtesting {len(strategies)} strategies on the holdout {settings.holdout_start} → "
        f"{settings.resolved_history_end}"
    )
    ok = True
    for strategy in strategies:
        with progress(f"backtesting {strategy}"):
            result = job.execute_in_process(
                instance=instance, partition_key=strategy, run_config=QUIET_RUN_CONFIG, raise_on_error=False
            )
        reports = result.asset_materializations_for_node("backtest_report")
        if not result.success or not reports:
            lines = outcome_lines(result)
            refused_only = bool(lines) and not unexpected_errors(result)
            ok &= refused_only
            print(f"  {strategy:<20} {'not run' if refused_only else 'FAILED'} (run {result.run_id}):")
            for line in lines or ["no report and no error recorded"]:
                print("    " + line)
            continue
        meta = {key: value.value for key, value in reports[0].metadata.items()}
        print(
            f"  {strategy:<20} {meta['trade_count']:>4} trades, profit {meta['total_profit_pct']:6.2f} %, "
            f"Sharpe {show_statistic(meta['sharpe'])}, max drawdown {meta['max_drawdown_pct']:5.2f} %"
        )
    return ok


def verify_market_data(settings: TradAISettings) -> bool:
    """ArcticDB holds every source candle of the demo window: zero missing, extra or changed."""
    from tradai_resources.arcticdb_store import ArcticDBResource

    store = ArcticDBResource(uri=settings.resolved_arcticdb_uri)
    start = pd.Timestamp(settings.history_start, tz="UTC")
    ok = True
    for pair in settings.pairs:
        source = normalize_candles(
            pd.read_parquet(DEMO_CANDLES / f"{pair_slug(pair)}-{settings.timeframe}.parquet")
        )
        source = source[source.index >= start]
        stored = store.read(settings.exchange_id, settings.timeframe, pair)
        diff = diff_candles(source, stored.candles)
        ok &= diff.identical
        print(
            f"  {pair:<10} {len(stored.candles):>6} candles, ArcticDB v{stored.version}: "
            f"missing {diff.missing}, extra {diff.extra}, changed {diff.changed}"
        )
    return ok


def main() -> int:
    """Run the demo; exit status 0 when every step succeeded and the data checks out."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # MLflow logs at INFO through its own handler (e.g. "Creating initial MLflow database tables"); the
    # demo prints results, so only its warnings and errors pass. MLflow is imported on first use and then
    # sets its loggers' level from MLFLOW_LOGGING_LEVEL, so the level is set there as well as here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Offline, notifications go to this logger; the model loop's lines already say what was notified.
    logging.getLogger("tradai.notify").setLevel(logging.CRITICAL)
    prepare_environment()
    try:
        return run_demo()
    except DemoStepFailed as error:
        print(f"demo stopped: {error}", file=sys.stderr)
        return 1


def run_demo() -> int:
    """Every step of the demo in order; exit status 0 when each succeeded and the data checks out."""
    from tradai_replay.server import ReplayServer

    with ReplayServer(candles_dir=DEMO_CANDLES, exchange_info_path=DEMO_EXCHANGE_INFO) as server:
        os.environ["TRADAI_EXCHANGE_BASE_URL"] = server.base_url
        settings = TradAISettings()
        print(f"→ replay server for {len(server.pairs)} recorded pairs on {server.base_url}")
        instance = DagsterInstance.get()
        run_daily_job(settings, instance, MARKET_DATA_JOB, "materializing candles")
    print("→ checking ArcticDB against the recorded source files")
    ok = verify_market_data(settings)
    run_daily_job(settings, instance, FEATURES_JOB, "computing features")
    run_training(settings, instance)
    run_model_loop(settings, instance)
    ok &= run_backtests(settings, instance)
    run_walk_forward(settings)
    run_hyperopt(settings, instance)
    # against the stack (make stack-demo) its webserver and tracking server are already up
    port = os.environ.get("TRADAI_WEBSERVER_PORT")
    ui = f"at http://127.0.0.1:{port}" if port else "with `make ui` (http://127.0.0.1:3000)"
    tracking = redact_uri(settings.resolved_mlflow_uri)
    served = tracking.startswith(("http://", "https://"))
    experiments = f"at {tracking}" if served else "with `make mlflow-ui` (http://127.0.0.1:5000)"
    print(
        f"\nCandles: {redact_uri(settings.resolved_arcticdb_uri)}\n"
        f"Experiments: {redact_uri(settings.resolved_mlflow_uri)}\n"
        f"Dagster instance: {os.environ['DAGSTER_HOME']}\n"
        f"Open the UI {ui}: Assets → ohlcv/* shows partitions, metadata and checks; "
        "backtest_report/<strategy> shows metrics and plots.\n"
        f"Open MLflow {experiments}: experiment tradai/backtests."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
