"""The strategy sweep as a real Dagster run: one op per strategy on the multiprocess executor.

`bench.backtest` runs `python -m bench.sweep_job RUN_CONFIG.json` in a fresh process (with `DAGSTER_HOME`
pointing at a throw-away instance), which is what launching a run costs: an interpreter imports this job,
Dagster's multiprocess executor starts one step process per strategy, at most `max_concurrent` at a time,
and each step sets up `FreqtradeResource`, reads the candles and backtests. `run_config` chooses how steps
start (spawned, or forked from a forkserver that preloads `FORKSERVER_PRELOAD`) and where backtests fork
from (a worker per step process, or the machine's shared worker).

The strategies are named by `TRADAI_BENCH_SWEEP_STRATEGIES` (comma-separated; read again by every step
process when it imports this module, so it must not change during the run).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pandas as pd
from dagster import (
    Config,
    DagsterInstance,
    OpDefinition,
    OpExecutionContext,
    execute_job,
    job,
    multiprocess_executor,
    op,
    reconstructable,
)

from bench.common import child_env, run_checked, trades_digest
from strategies.validation import STRATEGIES_DIR
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.candles import normalize_candles
from tradai_core.settings import PROJECT_ROOT
from tradai_resources.freqtrade_backtester import FreqtradeResource

STRATEGIES_ENV = "TRADAI_BENCH_SWEEP_STRATEGIES"
MAX_CONCURRENT = 2
FORKSERVER_PRELOAD = ("bench.sweep_job", "strategies.base")
"""What the forkserver imports once for every step: this job, and the Freqtrade strategy API that each
step's strategy validation imports."""
WARMUP = pd.Timedelta(days=60)


class SweepOpConfig(Config):
    """Where the candles are and what to backtest (the same for every strategy of the sweep)."""

    folder: str
    pairs: list[str]
    timerange: str


def recorded_candles(folder: Path, pairs: tuple[str, ...], run: BacktestRunConfig) -> dict[str, pd.DataFrame]:
    """Recorded 1h candles of `pairs` covering `run` plus the warm-up, as the candle store returns them."""
    start = pd.Timestamp(run.timerange[:8], tz="UTC") - WARMUP
    end = pd.Timestamp(run.timerange[9:], tz="UTC")
    files = {pair: folder / f"{pair.replace('/', '_')}-1h.parquet" for pair in pairs}
    return {pair: normalize_candles(pd.read_parquet(path)).loc[start:end] for pair, path in files.items()}


def _backtest_op(strategy: str) -> OpDefinition:
    @op(name=f"backtest_{strategy}")
    def backtest(context: OpExecutionContext, config: SweepOpConfig, freqtrade: FreqtradeResource) -> int:
        run = BacktestRunConfig(timerange=config.timerange, pairs=tuple(config.pairs))
        candles = recorded_candles(Path(config.folder), run.pairs or (), run)
        result = freqtrade.backtest(strategy, STRATEGIES_DIR, candles, run)
        digest = trades_digest(result.freqtrade_stats["trades"])  # compared with the stock CLI's
        context.log.info("%s: %d trades, digest %s", strategy, result.metrics.trade_count, digest)
        return result.metrics.trade_count

    return backtest


SWEEP_STRATEGIES = tuple(s for s in os.environ.get(STRATEGIES_ENV, "").split(",") if s)
SWEEP_OPS = [_backtest_op(name) for name in SWEEP_STRATEGIES]


@job(
    executor_def=multiprocess_executor,
    resource_defs={"freqtrade": FreqtradeResource()},
)
def strategy_sweep() -> None:
    """Backtest every strategy of the sweep, each in its own step process."""
    for backtest in SWEEP_OPS:
        backtest()


def run_config(
    strategies: list[str],
    folder: Path,
    pairs: tuple[str, ...],
    timerange: str,
    work_dir: Path,
    start_method: Literal["spawn", "forkserver"] = "spawn",
    shared_worker_folder: Path | None = None,
) -> dict[str, object]:
    """The run config of one sweep of `strategies` (the same list as `TRADAI_BENCH_SWEEP_STRATEGIES`).

    `spawn` is Dagster's default: each step process imports the job's module afresh. `forkserver` forks
    each step from a server process that imported it once. With `shared_worker_folder`, every step forks
    its backtest from the machine's shared Freqtrade worker with its socket there (started by the first
    step that needs it, or still running from an earlier run) instead of starting a worker of its own.
    """
    op_config = {"folder": str(folder), "pairs": list(pairs), "timerange": timerange}
    method = {"preload_modules": list(FORKSERVER_PRELOAD)} if start_method == "forkserver" else {}
    freqtrade: dict[str, object] = {"work_dir": str(work_dir), "start_method": "prefork"}
    if shared_worker_folder is not None:
        freqtrade |= {"start_method": "shared", "shared_worker_folder": str(shared_worker_folder)}
    return {
        "execution": {
            "config": {"max_concurrent": MAX_CONCURRENT, "start_method": {start_method: method}},
        },
        "ops": {f"backtest_{name}": {"config": op_config} for name in strategies},
        "resources": {"freqtrade": {"config": freqtrade}},
    }


def launch(
    strategies: list[str], config: dict[str, object], work: Path, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one sweep as `python -m bench.sweep_job RUN_CONFIG.json` in a fresh process, on a throw-away
    Dagster instance under `work` (telemetry off), and return the finished process with its output (it
    raises, with the output, when the run fails)."""
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    config_path = work / "sweep_run_config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return run_checked(
        [sys.executable, "-m", "bench.sweep_job", config_path],
        PROJECT_ROOT,
        child_env(
            PYTHONPATH=str(PROJECT_ROOT), DAGSTER_HOME=str(home), **{STRATEGIES_ENV: ",".join(strategies)}
        ),
        "the sweep job",
        timeout,
    )


def main(argv: list[str]) -> int:
    """Execute one sweep run with the run config in the JSON file `argv[0]`; exit 1 unless it succeeds."""
    from bench.sweep_job import strategy_sweep as sweep  # by module name, for the step processes

    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    with DagsterInstance.get() as instance:
        result = execute_job(reconstructable(sweep), instance=instance, run_config=config)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
