"""Backtest benchmarks (issue: backtests).

1. **One backtest** — EmaAdxTrend, 5 pairs × 1 year — through `FreqtradeResource.backtest` (candles handed
   over in memory, validated, written, backtested in a child forked from the pre-loaded worker, parsed)
   against the stock CLI, `python -m freqtrade backtesting ... --cache none --export trades` (its default
   export, which the trade comparison reads), on the same candles (already on disk as its data files),
   config and markets (its ccxt pointed at the loopback replay server serving the same exchangeInfo).
   Rows: the first backtest of a process, which starts the worker (cold, as every CLI run is: its imports
   overlap our validation and candle writing); every later one, with and without the vectorized tick
   size; and a fresh interpreter per backtest (`spawn`). Every row's trades equal the CLI's. Target ≤ 1.0.
2. **Start-up per backtest**: a 1 pair × 1 week backtest (almost no engine work) through the resource,
   forked from the pre-loaded worker vs a fresh interpreter per backtest (`start_method="spawn"`, what
   every backtest paid before). The difference is the start-up each backtest no longer pays.
3. **Sweep**: every strategy in `strategies/` over 12 pairs × 2 years (the 6 demo pairs on a bare clone)
   against the CLI run at our parallelism (two strategies at a time, as our runs do). Every row's trades
   equal the CLI's, strategy for strategy. Target ≥ 1.7× faster (ratio ≤ 0.59). Rows:
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

Repetitions interleave (A B A B); every figure prints its median and minimum and goes to the results JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import ccxt
import pandas as pd

from bench import sweep_job
from bench.common import (
    Figure,
    assert_same_trades,
    candles_dir,
    interleaved,
    record,
    report_figures,
    stock_cli_backtest,
    stock_cli_workspace,
    trades_digest,
)
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
from tradai_resources.freqtrade_workspace import BacktestWorkspace
from tradai_resources.workers.zygote_client import shutdown_zygotes, stop_shared_zygotes

TF = "1h"
SINGLE_STRATEGY = "EmaAdxTrend"
SINGLE_PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT", "XRP/USDT", "DOGE/USDT")
SINGLE_RUN = BacktestRunConfig(timerange="20210101-20220101", pairs=SINGLE_PAIRS)
TINY_RUN = BacktestRunConfig(timerange="20210301-20210308", pairs=("BTC/USDT",))
POOL_SIZE = 2
SWEEP_REPEATS = 2
SINGLE_REPEATS = 3


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
        root = Path(tempfile.mkdtemp(prefix=f"cli-{name}-", dir=self._work))
        return stock_cli_workspace(root, name, run, candles, self._api)

    @staticmethod
    def run(name: str, run: BacktestRunConfig, workspace: BacktestWorkspace) -> list[object]:
        """`python -m freqtrade backtesting ...`, as a user types it (trades exported); its trades."""
        return stock_cli_backtest(name, run.timerange, workspace)["trades"]  # type: ignore[return-value]

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


def _single(folder: Path, work: Path) -> list[Figure]:
    candles = _load(folder, SINGLE_PAIRS, SINGLE_RUN)
    prefork = FreqtradeResource(work_dir=str(work / "ours"), start_method="prefork")
    stock_tick = FreqtradeResource(
        work_dir=str(work / "stock_tick"), start_method="prefork", vectorized_tick_size=False
    )
    spawn = FreqtradeResource(work_dir=str(work / "spawn"), start_method="spawn")
    cli = StockCli(folder, _markets_file(SINGLE_PAIRS, candles, work), work)
    trades: dict[str, list[str]] = {}

    def ours(case: str, resource_: FreqtradeResource) -> Callable[[], None]:
        def backtest() -> None:
            result = resource_.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, SINGLE_RUN)
            trades.setdefault(case, []).append(trades_digest(result.freqtrade_stats["trades"]))

        return backtest

    try:
        workspace = cli.prepare(SINGLE_STRATEGY, SINGLE_RUN, candles)
        expected = trades_digest(cli.run(SINGLE_STRATEGY, SINGLE_RUN, workspace))  # untimed warm-up
        seconds = interleaved(
            {
                "cli": lambda: trades.setdefault("cli", []).append(
                    trades_digest(cli.run(SINGLE_STRATEGY, SINGLE_RUN, workspace))
                ),
                "first": ours("first", prefork),
                "later": ours("later", prefork),
                "stock_tick": ours("stock_tick", stock_tick),
                "spawn": ours("spawn", spawn),
            },
            SINGLE_REPEATS,
            {"first": shutdown_zygotes},  # the first backtest of a process starts the worker
        )
    finally:
        cli.close()
    for case, digests in trades.items():
        for digest in digests:
            assert_same_trades(digest, expected, f"single backtest, {case}")
    case = f"{SINGLE_STRATEGY}, {len(SINGLE_PAIRS)} pairs × 1 y: resource vs stock CLI"
    cli_s = seconds["cli"]
    note = "trades equal the CLI's"
    return [
        Figure.of(f"{case}, first", seconds["first"], cli_s, "s", f"worker start-up included; {note}; ≤ 1.0"),
        Figure.of(f"{case}, later", seconds["later"], cli_s, "s", f"vectorized tick size; {note}; ≤ 1.0"),
        Figure.of(f"{case}, later, Freqtrade's own tick size", seconds["stock_tick"], cli_s, "s", note),
        Figure.of(
            f"{case}, spawn", seconds["spawn"], cli_s, "s", f"a fresh interpreter per backtest; {note}"
        ),
    ]


def _startup(folder: Path, work: Path) -> list[Figure]:
    candles = _load(folder, TINY_RUN.pairs or (), TINY_RUN)
    prefork = FreqtradeResource(work_dir=str(work / "prefork"), start_method="prefork")
    spawn = FreqtradeResource(work_dir=str(work / "spawn"), start_method="spawn")
    prefork.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, TINY_RUN)  # the worker is up
    seconds = interleaved(
        {
            "forked": lambda: prefork.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, TINY_RUN),
            "fresh": lambda: spawn.backtest(SINGLE_STRATEGY, STRATEGIES_DIR, candles, TINY_RUN),
        },
        3,
    )
    return [
        Figure.of(
            "1 pair × 1 week backtest: forked from the worker vs spawn",
            seconds["forked"],
            seconds["fresh"],
            "s",
            "≈ start-up cost per backtest",
        ),
    ]


_POOL_RESOURCE: FreqtradeResource | None = None


def _pool_backtest(
    name: str, folder: str, pairs: tuple[str, ...], timerange: str, work: str, vectorized_tick_size: bool
) -> str:
    """One sweep task in a pool process: what a Dagster step does — set the resource up, read the
    candles, backtest. Returns the trades' fingerprint."""
    global _POOL_RESOURCE
    if _POOL_RESOURCE is None:
        _POOL_RESOURCE = FreqtradeResource(
            work_dir=work, vectorized_tick_size=vectorized_tick_size, start_method="prefork"
        )
        _POOL_RESOURCE.prestart()  # as Dagster's setup_for_execution does
    run = BacktestRunConfig(timerange=timerange, pairs=pairs)
    result = _POOL_RESOURCE.backtest(name, STRATEGIES_DIR, _load(Path(folder), pairs, run), run)
    return trades_digest(result.freqtrade_stats["trades"])


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

    # each side's trades fingerprint per strategy, every repetition; all must equal the CLI's
    trades: dict[str, list[dict[str, str]]] = {}

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
                case = "pool" if vectorized_tick_size else "pool_stock"
                trades.setdefault(case, []).append({name: f.result() for name, f in futures.items()})

        return sweep

    shared_folder = Path(tempfile.mkdtemp(prefix="tradai-bench-workers-", dir="/tmp"))

    def dagster_run(
        case: str, start_method: Literal["spawn", "forkserver"], shared: bool
    ) -> Callable[[], None]:
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
            log = done.stdout + done.stderr
            found = {
                name: re.search(rf"backtest_{name} - {name}: \d+ trades, digest (\w+)", log) for name in names
            }
            missing = [name for name, match in found.items() if match is None]
            if missing:
                raise RuntimeError(f"the sweep job logged no trades for {missing}:\n{log[-3000:]}")
            trades.setdefault(case, []).append({name: m.group(1) for name, m in found.items() if m})

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

    def stock_sweep() -> None:
        """The stock CLI for every strategy, `POOL_SIZE` at a time: the parallelism our runs have."""
        with ThreadPoolExecutor(max_workers=POOL_SIZE) as threads:
            futures = {name: threads.submit(cli.run, name, run, workspaces[name]) for name in names}
            trades.setdefault("cli", []).append({n: trades_digest(f.result()) for n, f in futures.items()})

    try:
        workspaces = {name: cli.prepare(name, run, candles) for name in names}
        stock_sweep()  # untimed warm-up of the CLI side (bytecode, page cache) and the trades to compare
        seconds = interleaved(
            {
                "cli": counted("cli", stock_sweep),
                "dagster": counted("dagster", dagster_run("dagster", "spawn", shared=False)),
                # neither the forkserver's steps nor the shared worker are our children: no CPU count
                "dagster_shared": dagster_run("dagster_shared", "forkserver", shared=True),
                "dagster_shared_warm": dagster_run("dagster_shared_warm", "forkserver", shared=True),
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
    expected = trades["cli"][0]
    for case, repetitions in trades.items():
        for digests in repetitions:
            for name in names:
                assert_same_trades(digests[name], expected[name], f"sweep, {case}, {name}")
    print(
        f"sweep: every side's trades equal the stock CLI's, strategy for strategy ({len(names)} strategies)"
    )
    print(
        "sweep: CPU seconds used (median): "
        + ", ".join(f"{name} {statistics.median(values):.1f}" for name, values in cpu.items())
        + " (processes started and waited for, workers' start-up included); wall-clock gains need both "
        "cores free"
    )
    case = f"sweep {len(names)} strategies × {len(pairs)} pairs × 2 y"
    base = seconds["cli"]
    vs = f"vs CLI {POOL_SIZE} at a time"

    def faster(ours_s: list[float]) -> str:
        return f"{statistics.median(base) / statistics.median(ours_s):.2f}× faster"

    return [
        Figure.of(
            f"{case}: Dagster run, multiprocess executor (max {POOL_SIZE}) {vs}",
            seconds["dagster_shared"],
            base,
            "s",
            f"{faster(seconds['dagster_shared'])}; forkserver, shared worker started by the run",
        ),
        Figure.of(
            f"{case}: same, the shared worker still running from an earlier run",
            seconds["dagster_shared_warm"],
            base,
            "s",
            faster(seconds["dagster_shared_warm"]),
        ),
        Figure.of(
            f"{case}: same, Dagster's defaults (spawned steps, a worker each)",
            seconds["dagster"],
            base,
            "s",
            faster(seconds["dagster"]),
        ),
        Figure.of(
            f"{case}: the resource alone, {POOL_SIZE} long-lived processes {vs}",
            seconds["pool"],
            base,
            "s",
            f"{faster(seconds['pool'])}; no step process or run start-up",
        ),
        Figure.of(
            f"{case}: same, Freqtrade's own tick size (vectorized_tick_size off)",
            seconds["pool_stock"],
            base,
            "s",
            faster(seconds["pool_stock"]),
        ),
    ]


def run() -> None:
    """Run the backtest benchmarks and print their ratios."""
    logging.getLogger("tradai_resources").setLevel(logging.WARNING)
    folder = candles_dir()
    work = Path(tempfile.mkdtemp(prefix="tradai-bench-backtest-"))
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        figures = _single(folder, work) + _startup(folder, work) + _sweep(folder, work)
    finally:
        shutdown_zygotes()
        shutil.rmtree(work, ignore_errors=True)
    report_figures("Backtests (Freqtrade): ours vs the stock CLI, medians and minimums", figures)
    record(figures)
    print(
        f"(backtest benchmarks took {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores; "
        f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: other processes "
        "on these cores slow the parallel sweep most)"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run()
