"""Backtest benchmarks (issue: backtests).

1. **One backtest** — EmaAdxTrend, 5 pairs × 1 year — through `FreqtradeResource.backtest` (candles handed
   over in memory, validated, written, backtested in a child forked from the pre-loaded worker, parsed)
   against the stock CLI, `python -m freqtrade backtesting ... --cache none --export none`, on the same
   candles (already on disk as its data files), config and markets (its ccxt pointed at the loopback
   replay server serving the same exchangeInfo). Two rows: the first backtest of a process, which starts
   the worker (its imports overlap our validation and candle writing), and every later one. Target ≤ 1.0.
2. **Start-up per backtest**: a 1 pair × 1 week backtest (almost no engine work) through the resource,
   forked from the pre-loaded worker vs a fresh interpreter per backtest (`start_method="spawn"`, what
   every backtest paid before). The difference is the start-up each backtest no longer pays.
3. **Sweep**: every strategy in `strategies/` over 12 pairs × 2 years (the 6 demo pairs on a bare clone)
   against the CLI run for each strategy in turn. Target ≥ 1.7× faster (ratio ≤ 0.59). Rows:
   - a real Dagster run (`bench.sweep_job`, launched as a fresh process): one step per strategy on the
     multiprocess executor, at most 2 at a time, each step setting up `FreqtradeResource`, reading the
     candles and backtesting. Headline: step processes forked from Dagster's forkserver (which imported the
     job and the strategy API once) and backtests forked from the machine's shared Freqtrade worker, which
     the run itself starts (stopped before each timed run); then the same with the shared worker left
     running by the previous run; then Dagster's defaults (`spawn`: each step imports the job afresh and
     starts a worker of its own), what the sweep cost before;
   - the resource alone: 2 long-lived processes sharing the strategies (no run or step start-up), with
     and without the vectorized tick size — the ceiling the Dagster run approaches as its start-up shrinks.
   A strategy that cannot run here (a machine-learning strategy without a trained model, an invalid one) is
   left out of every side, and the output says so.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import ccxt
import pandas as pd

from bench import sweep_job
from bench.common import PROJECT_ROOT, candles_dir, median_seconds, report
from strategies.metadata import StrategyCategory
from strategies.validation import STRATEGIES_DIR, discover_strategies, validate_strategy
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.candles import normalize_candles
from tradai_core.errors import TradAIError
from tradai_core.urls import rebase_urls
from tradai_replay.markets import load_exchange_info
from tradai_replay.server import ReplayServer
from tradai_resources.freqtrade_backtester import (
    DEFAULT_EXCHANGE_INFO,
    FreqtradeResource,
    backtest_exchange_info,
)
from tradai_resources.freqtrade_workspace import BacktestWorkspace, prepare_workspace
from tradai_resources.workers.zygote_client import shutdown_zygotes, stop_shared_zygotes

TF = "1h"
SINGLE_STRATEGY = "EmaAdxTrend"
SINGLE_PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT", "XRP/USDT", "DOGE/USDT")
SINGLE_RUN = BacktestRunConfig(timerange="20210101-20220101", pairs=SINGLE_PAIRS)
TINY_RUN = BacktestRunConfig(timerange="20210301-20210308", pairs=("BTC/USDT",))
POOL_SIZE = 2
SWEEP_REPEATS = 2


_load = sweep_job.recorded_candles


class StockCli:
    """The stock `freqtrade backtesting` CLI on prepared workspaces, markets served over loopback HTTP."""

    def __init__(self, folder: Path, markets: Path | None, work: Path) -> None:
        self._server = ReplayServer(folder, exchange_info_path=markets).start()
        self._work = work
        self._api = rebase_urls(ccxt.binance().urls["api"], self._server.base_url)

    def prepare(
        self, name: str, run: BacktestRunConfig, candles: dict[str, pd.DataFrame]
    ) -> BacktestWorkspace:
        """Write the CLI's workspace (candle files, strategy, config) once, outside any timing."""
        report_ = validate_strategy(name, STRATEGIES_DIR)
        assert report_.config is not None and report_.path is not None
        root = Path(tempfile.mkdtemp(prefix=f"cli-{name}-", dir=self._work))
        workspace = prepare_workspace(root, Path(report_.path), report_.config, run, candles)
        config = json.loads(workspace.config_path.read_text())
        config["exchange"]["ccxt_config"] = {"urls": {"api": self._api}}
        workspace.config_path.write_text(json.dumps(config, indent=2))
        return workspace

    @staticmethod
    def run(name: str, run: BacktestRunConfig, workspace: BacktestWorkspace) -> None:
        """`python -m freqtrade backtesting ...`, as a user types it; fails loudly if it fails."""
        done = subprocess.run(
            [sys.executable, "-m", "freqtrade", *workspace.backtest_argv(name, run.timerange)],
            cwd=workspace.root,
            env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the CLI failed on {name}:\n{done.stderr[-3000:]}")

    def close(self) -> None:
        """Stop the replay server."""
        self._server.stop()


def _markets_file(pairs: tuple[str, ...], candles: dict[str, pd.DataFrame], work: Path) -> Path | None:
    """The exchangeInfo our resource builds for `pairs`, for the CLI's replay server (None: the snapshot)."""
    markets = backtest_exchange_info(load_exchange_info(DEFAULT_EXCHANGE_INFO), pairs, candles)
    if markets is None:
        return None
    path = work / "exchange_info.json"
    path.write_text(json.dumps(markets))
    return path


def _interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, setups: dict[str, Callable[[], object]]
) -> dict[str, float]:
    """Median seconds of each case, the cases taking turns (so load from other processes hits them alike)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(median_seconds(fn, 1, setups.get(name)))
    return {name: statistics.median(values) for name, values in times.items()}


def _single(folder: Path, work: Path) -> list[tuple[str, float, float, str]]:
    candles = _load(folder, SINGLE_PAIRS, SINGLE_RUN)
    prefork = FreqtradeResource(work_dir=str(work / "ours"), start_method="prefork")
    spawn = FreqtradeResource(work_dir=str(work / "spawn"), start_method="spawn")
    cli = StockCli(folder, _markets_file(SINGLE_PAIRS, candles, work), work)
    try:
        workspace = cli.prepare(SINGLE_STRATEGY, SINGLE_RUN, candles)
        seconds = _interleaved(
            {
                "cli": lambda: cli.run(SINGLE_STRATEGY, SINGLE_RUN, workspace),
                "first": lambda: prefork.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, SINGLE_RUN),
                "later": lambda: prefork.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, SINGLE_RUN),
                "spawn": lambda: spawn.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, SINGLE_RUN),
            },
            3,
            {"first": shutdown_zygotes},  # the first backtest of a process starts the worker
        )
    finally:
        cli.close()
    case = f"{SINGLE_STRATEGY}, {len(SINGLE_PAIRS)} pairs × 1 y: resource vs stock CLI"
    return [
        (f"{case}, first", seconds["first"], seconds["cli"], "worker start-up included; target ≤ 1.0"),
        (f"{case}, later", seconds["later"], seconds["cli"], "target ≤ 1.0"),
        (f"{case}, spawn", seconds["spawn"], seconds["cli"], "before: a fresh interpreter per backtest"),
    ]


def _startup(folder: Path, work: Path) -> list[tuple[str, float, float, str]]:
    candles = _load(folder, TINY_RUN.pairs or (), TINY_RUN)
    prefork = FreqtradeResource(work_dir=str(work / "prefork"), start_method="prefork")
    spawn = FreqtradeResource(work_dir=str(work / "spawn"), start_method="spawn")
    prefork.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, TINY_RUN)  # the worker is up
    forked = median_seconds(lambda: prefork.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, TINY_RUN), 5)
    fresh = median_seconds(lambda: spawn.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, TINY_RUN), 3)
    print(
        f"start-up per backtest: fresh interpreter {fresh:.2f} s, forked ≤ {forked:.2f} s (1 pair × 1 week)"
    )
    return [
        ("1 pair × 1 week backtest: forked from the worker vs spawn", forked, fresh, "≈ start-up cost"),
    ]


_POOL_RESOURCE: FreqtradeResource | None = None


def _pool_backtest(
    name: str, folder: str, pairs: tuple[str, ...], timerange: str, work: str, vectorized_tick_size: bool
) -> int:
    """One sweep task in a pool process: what a Dagster step does — set the resource up, read the
    candles, backtest. Returns the trade count."""
    global _POOL_RESOURCE
    if _POOL_RESOURCE is None:
        _POOL_RESOURCE = FreqtradeResource(
            work_dir=work, vectorized_tick_size=vectorized_tick_size, start_method="prefork"
        )
        _POOL_RESOURCE.prestart()  # as Dagster's setup_for_execution does
    run = BacktestRunConfig(timerange=timerange, pairs=pairs)
    return _POOL_RESOURCE.backtest(
        name, STRATEGIES_DIR, _load(Path(folder), pairs, run), run
    ).metrics.trade_count


def _runnable(names: list[str], folder: Path, work: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The strategies that can run here, and (name, why) for those that cannot."""
    tiny = _load(folder, TINY_RUN.pairs or (), TINY_RUN)
    probe = FreqtradeResource(work_dir=str(work / "probe"), start_method="prefork")
    runnable, skipped = [], []
    for name in names:
        report_ = validate_strategy(name, STRATEGIES_DIR)
        if not report_.ok:
            skipped.append((name, "invalid: " + "; ".join(i.message for i in report_.errors)))
            continue
        if report_.metadata is not None and report_.metadata.category is StrategyCategory.MACHINE_LEARNING:
            try:
                probe.backtest(name, STRATEGIES_DIR, tiny, TINY_RUN)
            except TradAIError as exc:
                reason = str(exc).splitlines()[0]
                skipped.append((name, f"machine learning, needs a trained model: {reason[:200]}"))
                continue
        runnable.append(name)
    return runnable, skipped


def _sweep(folder: Path, work: Path) -> list[tuple[str, float, float, str]]:
    pairs = tuple(sorted(f.name.split("-")[0].replace("_", "/") for f in folder.glob(f"*-{TF}.parquet")))
    last = min(
        normalize_candles(pd.read_parquet(folder / f"{p.replace('/', '_')}-{TF}.parquet")).index[-1]
        for p in pairs
    ).floor("D")
    run = BacktestRunConfig(timerange=f"{last - pd.DateOffset(years=2):%Y%m%d}-{last:%Y%m%d}", pairs=pairs)
    names, skipped = _runnable(discover_strategies(STRATEGIES_DIR), folder, work)
    for name, why in skipped:
        print(f"sweep: {name} left out ({why})")
    candles = _load(folder, pairs, run)
    print(f"sweep: {', '.join(names)} × {len(pairs)} pairs × {run.timerange}")

    trades: dict[bool, dict[str, int]] = {True: {}, False: {}}

    def ours(vectorized_tick_size: bool) -> Callable[[], None]:
        def sweep() -> None:
            with ProcessPoolExecutor(max_workers=POOL_SIZE, mp_context=get_context("spawn")) as pool:
                futures = {
                    name: pool.submit(
                        _pool_backtest,
                        name,
                        str(folder),
                        pairs,
                        run.timerange,
                        str(work / "pool"),
                        vectorized_tick_size,
                    )
                    for name in names
                }
                trades[vectorized_tick_size].update({name: f.result() for name, f in futures.items()})

        return sweep

    shared_folder = Path(tempfile.mkdtemp(prefix="tradai-bench-workers-", dir="/tmp"))

    def dagster_run(start_method: Literal["spawn", "forkserver"], shared: bool) -> Callable[[], None]:
        config = sweep_job.run_config(
            names,
            folder,
            pairs,
            run.timerange,
            work / "steps",
            start_method,
            shared_folder if shared else None,
        )

        def launch() -> None:
            """`python -m bench.sweep_job`: a fresh process runs the job on the multiprocess executor."""
            done = sweep_job.launch(names, config, work / f"sweep_{start_method}_{shared}")
            if done.returncode != 0:
                raise RuntimeError(f"the sweep job failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

        return launch

    cpu: dict[str, list[float]] = {"cli": [], "dagster": [], "pool": [], "pool_stock": []}

    def counted(name: str, fn: Callable[[], object]) -> Callable[[], None]:
        """`fn`, adding the CPU seconds of the processes it ran (and waited for) to `cpu[name]`."""

        def call() -> None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            fn()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

        return call

    cli = StockCli(folder, _markets_file(pairs, candles, work), work)
    try:
        workspaces = {name: cli.prepare(name, run, candles) for name in names}
        seconds = _interleaved(
            {
                "cli": counted("cli", lambda: [cli.run(n, run, workspaces[n]) for n in names]),
                "dagster": counted("dagster", dagster_run("spawn", shared=False)),
                # neither the forkserver's steps nor the shared worker are our children: no CPU count
                "dagster_shared": dagster_run("forkserver", shared=True),
                "dagster_shared_warm": dagster_run("forkserver", shared=True),
                "pool": counted("pool", ours(vectorized_tick_size=True)),
                "pool_stock": counted("pool_stock", ours(vectorized_tick_size=False)),
            },
            SWEEP_REPEATS,
            # the cold run starts the shared worker; the warm one, right after, finds it running
            {"dagster_shared": lambda: stop_shared_zygotes(shared_folder)},
        )
    finally:
        cli.close()
        stop_shared_zygotes(shared_folder)
        shutil.rmtree(shared_folder, ignore_errors=True)
    if trades[True] != trades[False]:
        raise RuntimeError(f"the tick-size replacement changed trade counts: {trades}")
    before, dagster, warm = seconds["dagster"], seconds["dagster_shared"], seconds["dagster_shared_warm"]
    parallel, stock = seconds["pool"], seconds["pool_stock"]
    baseline = seconds["cli"]
    print(f"sweep: trades per strategy {trades[True]}")
    print(
        "sweep: CPU seconds used (median): "
        + ", ".join(f"{name} {statistics.median(values):.1f}" for name, values in cpu.items())
        + " (processes started and waited for, workers' start-up included); wall-clock gains need both "
        "cores free"
    )
    case = f"sweep {len(names)} strategies × {len(pairs)} pairs × 2 y"
    return [
        (
            f"{case}: Dagster run, multiprocess executor (max 2) vs CLI in turn",
            dagster,
            baseline,
            f"{baseline / dagster:.2f}× faster; target ≥ 1.7×: forkserver, shared worker started by the run",
        ),
        (
            "  same, the shared worker still running from an earlier run",
            warm,
            baseline,
            f"{baseline / warm:.2f}× faster",
        ),
        (
            "  same, Dagster's defaults: spawned steps, each starting a worker of its own",
            before,
            baseline,
            f"{baseline / before:.2f}× faster",
        ),
        (
            f"  the resource alone: {POOL_SIZE} long-lived processes vs CLI in turn",
            parallel,
            baseline,
            f"{baseline / parallel:.2f}× faster: no step process or run start-up",
        ),
        (
            "  same, Freqtrade's own tick-size code (vectorized_tick_size off)",
            stock,
            baseline,
            f"{baseline / stock:.2f}× faster",
        ),
    ]


def run() -> None:
    """Run the backtest benchmarks and print their ratios."""
    logging.getLogger("tradai_resources").setLevel(logging.WARNING)
    folder = candles_dir()
    work = Path(tempfile.mkdtemp(prefix="tradai-bench-backtest-"))
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        rows = _single(folder, work) + _startup(folder, work) + _sweep(folder, work)
    finally:
        shutdown_zygotes()
        shutil.rmtree(work, ignore_errors=True)
    report("Backtests (Freqtrade)", rows)
    print(
        f"(backtest benchmarks took {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores; "
        f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: other processes "
        "on these cores slow the parallel sweep most)"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run()
