"""`FreqtradeResource`: real Freqtrade backtests on candles from our store, offline, one per child process.

    result = FreqtradeResource().backtest("RsiMeanReversion", STRATEGIES_DIR, candles, run)

How one backtest runs:
1. the strategy is validated (`strategies.validation`, in a child process like the backtest's: see
   `check_strategy`, so this process never imports Freqtrade); an invalid one fails here, with every
   problem listed, before any work is done;
2. a fresh temporary workspace is laid out (`tradai_resources.freqtrade_workspace`): the candles
   as Freqtrade data files, the strategy module copied *alone* into a new folder (a `<Strategy>.json`
   left by hyperopt beside the source is never loaded; the config's buy/sell params are written as that
   folder's parameter file instead), Freqtrade's config file, and an empty user-data folder;
3. a child process runs the stock `freqtrade backtesting` path on it
   (`tradai_resources.workers.backtest_child`) — Freqtrade's argument parser, config loader and engine,
   backtest cache off — with markets answered from the recorded **exchangeInfo snapshot** and every socket
   refused (no network at all, not even loopback; see the worker's docstring). A pair the snapshot lacks gets
   a market entry of the same shape, sized from the pair's last price in the candles given
   (`backtest_exchange_info`), as the replay server does. A child process keeps Freqtrade's logging set-up and
   process-global state out of the Dagster process: its logging is left intact, and a crash in the engine
   cannot take it down;
4. the child's result (Freqtrade's own statistics) is parsed into a typed `BacktestResult`;
5. the workspace is removed in every case — success, engine crash, timeout.

How the child starts (`start_method`, default `tradai_core.settings.DEFAULT_WORKER_MODE`): it is forked
from a **zygote** (`tradai_resources.workers`), a worker process that imported Freqtrade once, so a backtest
starts in milliseconds instead of paying Freqtrade's import time (seconds) each time. `shared` (the default)
forks from one zygote per user and checkout, shared by every process (Dagster runs and step processes),
started in the background by whichever needs it first and stopped when idle (`zygote_client.SharedZygote`);
its socket folder is `shared_worker_folder`, else `TRADAI_WORKER_DIR`. `prefork` forks from a zygote of this
process, shared by every resource in it and gone with it. Either is started on first use — or when Dagster
sets the resource up for a step (`setup_for_execution`) — so its imports overlap the validation and candle
writing. `spawn` starts a fresh interpreter per backtest instead (`python -m
tradai_resources.workers.backtest_child job.json`): slower, for debugging, and the fallback if the zygote
cannot start. All run the same `main(job)` on the same files; results are identical. The time limit counts
from the fork or from the interpreter's start; a child over it is killed with its whole process group, and
the zygote carries on.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pandas as pd
from pydantic import Field

from strategies.validation import Severity, StrategyCheck, StrategyValidationReport, ValidationIssue
from tradai_core.backtest_charts import BacktestCharts, indicator_frames
from tradai_core.backtest_config import BacktestRunConfig, resolve_pairs
from tradai_core.backtest_result import (
    BacktestMetrics,
    BacktestResult,
    EquityPoint,
    Trade,
    parse_backtest_stats,
)
from tradai_core.errors import BacktestError, ConfigurationError
from tradai_core.registry import ExportedModel
from tradai_core.strategy_config import StrategyConfig
from tradai_replay.markets import exchange_info_for, load_exchange_info, pair_to_symbol
from tradai_resources.freqtrade_workers import DEFAULT_EXCHANGE_INFO, FreqtradeWorkerResource
from tradai_resources.freqtrade_workspace import BacktestWorkspace, candle_file, prepare_workspace
from tradai_resources.workers.backtest_child import SNAPSHOT_EXCHANGES
from tradai_resources.workers.jobs import BacktestJob, ChartJob, StrategyCheckJob, job_error, write_job
from tradai_resources.workers.launch import (
    ChildLostError,
    ChildTimeoutError,
    InterpreterError,
    child_env,
)
from tradai_resources.workers.processes import log_tail
from tradai_resources.workers.protocol import ForkRequest

__all__ = [
    "DEFAULT_EXCHANGE_INFO",
    "BacktestMetrics",
    "BacktestResult",
    "BacktestRunConfig",
    "ChartRequest",
    "ChartedBacktest",
    "EquityPoint",
    "FreqtradeResource",
    "Trade",
]

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 25
CHECK_TIMEOUT_S = 300.0
"""A strategy check (importing its module, reading its class) running longer is killed."""


class ChartRequest(NamedTuple):
    """What the report's charts need besides the backtest itself: where trading starts (startup candles
    are left out) and the equity chart's title."""

    trading_start: datetime
    equity_title: str


class ChartedBacktest(NamedTuple):
    """A backtest's result, per pair the indicator frame its strategy computed (empty if none), and the
    charts its worker child drew (None if it could not: the engine's log says why)."""

    result: BacktestResult
    indicators: dict[str, pd.DataFrame]
    charts: BacktestCharts | None


def read_indicators(path: Path) -> dict[str, pd.DataFrame]:
    """Per pair, the worker's indicator columns indexed by candle open time (UTC, named `date`); empty
    when the worker could not write them (it logged why: the charts then show candles and trades only)."""
    if not path.is_file():
        logger.warning("no indicators from the backtest for the charts (see the engine's log)")
        return {}
    return indicator_frames(pd.read_feather(path))


def read_charts(path: Path) -> BacktestCharts | None:
    """The charts the worker child drew, or None (with a warning) when it could not or its file does not
    read as charts: the report then draws them itself (they are a view of the result, never its reason
    to fail)."""
    if not path.is_file():
        logger.warning("the backtest's worker did not draw the charts (see the engine's log)")
        return None
    try:
        return BacktestCharts.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("the charts the backtest's worker drew do not read (%s)", type(exc).__name__)
        return None


class _TimedOut(Exception):
    """The child ran past the resource's time limit and was killed."""


def backtest_exchange_info(
    snapshot: Mapping[str, Any], pairs: tuple[str, ...], candles: Mapping[str, pd.DataFrame]
) -> dict[str, Any] | None:
    """The exchangeInfo a backtest of `pairs` loads its markets from, or None if `snapshot` has them all.

    Pairs the snapshot lacks get an entry shaped like the snapshot's own (`tradai_replay.markets`), with
    tick and step sizes derived from the pair's last close in `candles` — the rule the replay server
    applies to its latest price, so a replay server given the returned snapshot serves the same markets.
    The snapshot's own entries are kept unchanged, in order, and the made-up ones follow.
    """
    known = {entry.get("symbol") for entry in snapshot.get("symbols", []) if isinstance(entry, dict)}
    missing = [pair for pair in pairs if pair_to_symbol(pair) not in known]
    if not missing:
        return None
    prices = {pair: float(candles[pair]["close"].iloc[-1]) for pair in missing if len(candles[pair])}
    added = exchange_info_for(missing, snapshot, prices)["symbols"]
    return {**snapshot, "symbols": [*snapshot["symbols"], *added]}


class FreqtradeResource(FreqtradeWorkerResource):
    """Runs Freqtrade backtests (Freqtrade pinned by the project lock) on candles we hand it, offline."""

    WORK_FOLDER: ClassVar[str] = "backtests"

    timeout_seconds: float = Field(default=1800.0, gt=0, description="A backtest running longer is killed.")
    vectorized_tick_size: bool = Field(
        default=True,
        description="Estimate Freqtrade's historic price precision arithmetically instead of printing "
        "every price (identical results, ~3 s less per 12 pairs × 2 years); false: Freqtrade's own code.",
    )

    def backtest(
        self,
        strategy_name: str,
        strategy_dir: Path,
        candles: Mapping[str, pd.DataFrame],
        run: BacktestRunConfig,
        *,
        strategy_config: StrategyConfig | None = None,
        model: ExportedModel | None = None,
    ) -> BacktestResult:
        """Backtest `strategy_name` (a class in `strategy_dir`) on `candles` with Freqtrade's engine.

        `candles` maps each pair to our store's frame (UTC DatetimeIndex `date`, float OHLCV), covering the
        timerange plus the strategy's startup candles. `strategy_config` defaults to the YAML beside the
        strategy. `model` is the booster a model strategy trades, exported by the caller
        (`MLflowResource.export_booster`, pinned by version): it is copied into the workspace and named in
        Freqtrade's config; the child never sees a tracking URI. Raises StrategyValidationError for an
        invalid strategy, ValidationError/NotFoundError for unusable candles or a model file that is not the
        one exported, BacktestError when the engine fails (with the tail of its log)."""
        return self.backtest_charted(
            strategy_name, strategy_dir, candles, run, None, strategy_config=strategy_config, model=model
        ).result

    def backtest_charted(
        self,
        strategy_name: str,
        strategy_dir: Path,
        candles: Mapping[str, pd.DataFrame],
        run: BacktestRunConfig,
        charts: ChartRequest | None,
        *,
        strategy_config: StrategyConfig | None = None,
        model: ExportedModel | None = None,
    ) -> ChartedBacktest:
        """`backtest`, plus — with `charts` — per pair the indicator columns the strategy computed during
        that very backtest (in the child, with the backtest's parameters; indexed by candle open time), and
        the report's charts drawn by that child from them (`tradai_core.backtest_charts`: beside this
        process's own work, with matplotlib loaded in the worker, not here). Without `charts`, no indicators
        and no charts."""
        strategy_dir = Path(strategy_dir)
        report = self.check_strategy(strategy_name, strategy_dir, config=strategy_config).report
        report.raise_for_errors()
        config = strategy_config or report.config
        if config is None or report.path is None:  # pragma: no cover - reported as errors above
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
            workspace = prepare_workspace(root, Path(report.path), config, run, candles, model=model)
            markets = backtest_exchange_info(
                load_exchange_info(snapshot), resolve_pairs(config, run), candles
            )
            if markets is not None:
                snapshot = root / "exchange_info.json"
                snapshot.write_text(json.dumps(markets), encoding="utf-8")
            return self._run_worker(workspace, config, run, snapshot, charts)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def check_strategy(
        self, strategy_name: str, strategy_dir: Path, *, config: StrategyConfig | None = None
    ) -> StrategyCheck:
        """Validate `strategy_name` in `strategy_dir` (`strategies.validation.check_strategy`: every
        problem listed, and the class's startup candles) in a child process — forked from the worker,
        which has Freqtrade loaded — so this process never imports Freqtrade, ccxt or SciPy (issue #14).
        Never raises for a bad strategy: a check whose process crashed or ran past `CHECK_TIMEOUT_S` comes
        back as an invalid report saying so. `config` defaults to the YAML beside the module."""
        root = Path(tempfile.mkdtemp(prefix=f"check-{strategy_name}-", dir=self._work_root()))
        try:
            result_path, error_path = root / "result.json", root / "error.json"
            job = StrategyCheckJob(
                strategy=strategy_name,
                folder=str(Path(strategy_dir).resolve()),
                config=config,
                result_path=str(result_path),
                error_path=str(error_path),
            )
            request = ForkRequest(
                job_path=str(write_job(job, root / "job.json")),
                cwd=str(root),
                stdout_path=str(root / "check.stdout"),
                stderr_path=str(root / "check.stderr"),
                env=child_env(),
            )
            try:
                returncode = self._run_child(request, CHECK_TIMEOUT_S)
            except _TimedOut:
                return _failed_check(
                    strategy_name,
                    f"checking the strategy took longer than {CHECK_TIMEOUT_S:g} s and was stopped; does its "
                    "module do slow work (or wait) at import? Import it alone to see",
                )
            if returncode == 0 and result_path.is_file():
                return StrategyCheck.model_validate_json(result_path.read_text(encoding="utf-8"))
            reason = job_error(error_path)
            tail = log_tail(root / "check.stderr", STDERR_TAIL_LINES)
            return _failed_check(
                strategy_name,
                f"the process checking the strategy failed (exit code {returncode}){reason}; fix what its "
                f"log says and validate again (`tradai strategy validate {strategy_name}`)"
                + (f"\n--- last lines of its log ---\n{tail}" if tail else ""),
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _run_worker(
        self,
        workspace: BacktestWorkspace,
        config: StrategyConfig,
        run: BacktestRunConfig,
        snapshot: Path,
        charts: ChartRequest | None = None,
    ) -> ChartedBacktest:
        result_path, error_path = workspace.root / "result.json", workspace.root / "error.json"
        indicators_path, charts_path = workspace.root / "indicators.feather", workspace.root / "charts.json"
        chart_job = None
        if charts is not None:
            chart_job = ChartJob(
                path=str(charts_path),
                candle_files={
                    pair: str(candle_file(workspace.datadir, pair, config.timeframe))
                    for pair in resolve_pairs(config, run)
                },
                trading_start=charts.trading_start,
                equity_title=charts.equity_title,
            )
        job = BacktestJob(
            argv=tuple(workspace.backtest_argv(config.name, run.timerange)),
            strategy=config.name,
            exchange=config.exchange,
            exchange_info_path=str(snapshot),
            result_path=str(result_path),
            error_path=str(error_path),
            vectorized_tick_size=self.vectorized_tick_size,
            indicators_path=str(indicators_path) if charts is not None else None,
            charts=chart_job,
        )
        job_path = write_job(job, workspace.root / "job.json")
        stdout_path, stderr_path = workspace.root / "worker.stdout", workspace.root / "worker.stderr"
        logger.info(
            "backtesting %s on %s over %s in a child process",
            config.name,
            ", ".join(resolve_pairs(config, run)),
            run.timerange,
        )
        started = time.monotonic()
        request = ForkRequest(
            job_path=str(job_path),
            cwd=str(workspace.root),
            stdout_path=str(stdout_path),
            stderr_path=str(stderr_path),
            env=child_env(),
        )
        try:
            returncode = self._run_child(request, self.timeout_seconds)
        except _TimedOut:
            raise BacktestError(
                f"backtest of {config.name} timed out after {self.timeout_seconds:g} s and was killed",
                "shorten the timerange or raise FreqtradeResource.timeout_seconds",
            ) from None
        elapsed = time.monotonic() - started
        if returncode != 0 or not result_path.is_file():
            reason = job_error(error_path)
            raise BacktestError(
                f"Freqtrade backtest of {config.name} failed (exit code {returncode}){reason}\n"
                f"--- last lines of the engine's log ---\n{log_tail(stderr_path, STDERR_TAIL_LINES)}",
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
        if charts is None:
            return ChartedBacktest(result=result, indicators={}, charts=None)
        return ChartedBacktest(
            result=result, indicators=read_indicators(indicators_path), charts=read_charts(charts_path)
        )

    def _run_child(self, request: ForkRequest, timeout: float) -> int:
        """Run the job in a child (forked from the zygote, else a fresh interpreter), the module its kind
        names; its exit code. Raises _TimedOut past `timeout` s."""
        try:
            done = self.launcher().run(request, timeout)
        except ChildTimeoutError:
            raise _TimedOut from None
        except ChildLostError as exc:
            raise BacktestError(
                f"the Freqtrade worker process was lost: {exc}",
                "re-run; if it repeats, set FreqtradeResource.start_method='spawn'",
            ) from exc
        except InterpreterError as exc:
            raise ConfigurationError(
                f"cannot start the backtest's interpreter: {exc}",
                "set FreqtradeResource.python_executable to a Python with the project installed",
            ) from exc
        logger.info(
            "the backtest's process used %.1f s of CPU, %.0f MB at most", done.cpu_seconds, done.max_rss_mb
        )
        return done.returncode


def _failed_check(strategy_name: str, message: str) -> StrategyCheck:
    """The check of a strategy whose checking process failed: invalid, saying why."""
    issue = ValidationIssue(check="validation", message=message, severity=Severity.ERROR)
    return StrategyCheck(report=StrategyValidationReport(name=strategy_name, issues=(issue,)))
