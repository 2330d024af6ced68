"""`FreqtradeResource`: real Freqtrade backtests on candles from our store, offline, one per child process.

    result = FreqtradeResource().backtest("RsiMeanReversion", STRATEGIES_DIR, candles, run)

How one backtest runs:
1. the strategy is validated (`strategies.validation`); an invalid one fails here, with every problem
   listed, before any work is done;
2. a fresh temporary workspace is laid out (`tradai_core.backtest_config.prepare_workspace`): the candles
   as Freqtrade data files, the strategy module copied *alone* into a new folder (a `<Strategy>.json`
   left by hyperopt beside the source is never loaded; the config's buy/sell params are written as that
   folder's parameter file instead), Freqtrade's config file, and an empty user-data folder;
3. a child process (`python -m tradai_resources.freqtrade_worker`) runs the stock `freqtrade backtesting`
   path on it — Freqtrade's argument parser, config loader and engine, backtest cache off — with markets
   answered from the recorded **exchangeInfo snapshot** and every socket refused (no network at all, not
   even loopback; see the worker's docstring). A child process keeps Freqtrade's logging set-up and
   process-global state out of the Dagster process: its logging is left intact;
4. the child's result (Freqtrade's own statistics) is parsed into a typed `BacktestResult`;
5. the workspace is removed in every case — success, engine crash, timeout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from strategies.config import StrategyConfig
from strategies.validation import find_strategy_file, validate_strategy
from tradai_core.backtest_config import BacktestRunConfig, BacktestWorkspace, prepare_workspace, resolve_pairs
from tradai_core.backtest_result import (
    BacktestMetrics,
    BacktestResult,
    EquityPoint,
    Trade,
    parse_backtest_stats,
)
from tradai_core.errors import BacktestError, ConfigurationError
from tradai_core.settings import PROJECT_ROOT, TradAISettings
from tradai_resources.freqtrade_worker import SNAPSHOT_EXCHANGES, WorkerJob

__all__ = [
    "BacktestMetrics",
    "BacktestResult",
    "BacktestRunConfig",
    "EquityPoint",
    "FreqtradeResource",
    "Trade",
]

logger = logging.getLogger(__name__)

DEFAULT_EXCHANGE_INFO = PROJECT_ROOT / "demo_data" / "exchange" / "binance_spot_exchangeInfo.json"
WORKER_MODULE = "tradai_resources.freqtrade_worker"
STDERR_TAIL_LINES = 25


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    return "\n".join(text[-lines:])


class FreqtradeResource(ConfigurableResource):
    """Runs Freqtrade backtests (Freqtrade pinned by the project lock) on candles we hand it, offline."""

    exchange_info_path: str | None = Field(
        default=None,
        description="Binance GET /api/v3/exchangeInfo snapshot answering market requests; "
        "default: the one shipped in demo_data/exchange/.",
    )
    work_dir: str | None = Field(
        default=None,
        description="Folder for the temporary per-backtest workspaces (removed after each run); "
        "default: <TRADAI_HOME>/data/backtests.",
    )
    timeout_seconds: float = Field(default=1800.0, gt=0, description="A backtest running longer is killed.")
    python_executable: str | None = Field(
        default=None, description="Interpreter for the child process; default: the current one."
    )

    def _work_root(self) -> Path:
        root = Path(self.work_dir) if self.work_dir else TradAISettings().resolved_data_dir / "backtests"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _snapshot_path(self) -> Path:
        path = Path(self.exchange_info_path) if self.exchange_info_path else DEFAULT_EXCHANGE_INFO
        if not path.is_file():
            raise ConfigurationError(
                f"exchangeInfo snapshot {path} does not exist",
                "set FreqtradeResource.exchange_info_path to a saved GET /api/v3/exchangeInfo response",
            )
        return path

    def backtest(
        self,
        strategy_name: str,
        strategy_dir: Path,
        candles: Mapping[str, pd.DataFrame],
        run: BacktestRunConfig,
        *,
        strategy_config: StrategyConfig | None = None,
    ) -> BacktestResult:
        """Backtest `strategy_name` (a class in `strategy_dir`) on `candles` with Freqtrade's engine.

        `candles` maps each pair to our store's frame (UTC DatetimeIndex `date`, float OHLCV), covering the
        timerange plus the strategy's startup candles. `strategy_config` defaults to the YAML beside the
        strategy. Raises StrategyValidationError for an invalid strategy, ValidationError/NotFoundError for
        unusable candles, BacktestError when the engine fails (with the tail of its log).
        """
        strategy_dir = Path(strategy_dir)
        report = validate_strategy(strategy_name, strategy_dir, config=strategy_config)
        report.raise_for_errors()
        config = strategy_config or report.config
        if config is None:  # pragma: no cover - validate_strategy reports a missing config as an error
            raise ConfigurationError(f"strategy {strategy_name} has no config", "add its YAML")
        if config.exchange not in SNAPSHOT_EXCHANGES:
            raise ConfigurationError(
                f"strategy {strategy_name} trades on {config.exchange}; offline backtests have market "
                f"snapshots for {', '.join(SNAPSHOT_EXCHANGES)} only",
                "set exchange: binance in the strategy's YAML",
            )
        snapshot = self._snapshot_path()
        root = Path(tempfile.mkdtemp(prefix=f"bt-{strategy_name}-", dir=self._work_root()))
        try:
            workspace = prepare_workspace(
                root, find_strategy_file(strategy_name, strategy_dir), config, run, candles
            )
            return self._run_worker(workspace, config, run, snapshot)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _run_worker(
        self, workspace: BacktestWorkspace, config: StrategyConfig, run: BacktestRunConfig, snapshot: Path
    ) -> BacktestResult:
        result_path, error_path = workspace.root / "result.json", workspace.root / "error.json"
        job = WorkerJob(
            argv=tuple(workspace.backtest_argv(config.name, run.timerange)),
            strategy=config.name,
            exchange=config.exchange,
            exchange_info_path=str(snapshot),
            result_path=str(result_path),
            error_path=str(error_path),
        )
        job_path = workspace.root / "job.json"
        job_path.write_text(job.model_dump_json(indent=2), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        stdout_path, stderr_path = workspace.root / "worker.stdout", workspace.root / "worker.stderr"
        command = [self.python_executable or sys.executable, "-m", WORKER_MODULE, str(job_path)]
        logger.info(
            "backtesting %s on %s over %s in a child process",
            config.name,
            ", ".join(resolve_pairs(config, run)),
            run.timerange,
        )
        started = time.monotonic()
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                command, cwd=workspace.root, env=env, stdout=out, stderr=err, start_new_session=True
            )
            try:
                returncode = process.wait(timeout=self.timeout_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise BacktestError(
                    f"backtest of {config.name} timed out after {self.timeout_seconds:g} s and was killed",
                    "shorten the timerange or raise FreqtradeResource.timeout_seconds",
                ) from None
            except BaseException:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
        elapsed = time.monotonic() - started
        if returncode != 0 or not result_path.is_file():
            reason = ""
            if error_path.is_file():
                error = json.loads(error_path.read_text(encoding="utf-8"))
                reason = f": {error.get('type')}: {error.get('message')}"
            raise BacktestError(
                f"Freqtrade backtest of {config.name} failed (exit code {returncode}){reason}\n"
                f"--- last lines of the engine's log ---\n{_tail(stderr_path)}",
                "read the log above; fix the strategy or the candles, then re-run. No report was written.",
            )
        payload = json.loads(result_path.read_text(encoding="utf-8"))
        result = parse_backtest_stats(
            payload["strategy"][config.name], config.name, payload["freqtrade_version"]
        )
        logger.info(
            "backtest of %s done in %.1f s: %d trades, profit %.2f%%",
            config.name,
            elapsed,
            result.metrics.trade_count,
            result.metrics.total_profit_pct,
        )
        return result
