"""The user-path benchmark (issue #14): a backtest launched by a person, against the stock CLI.

`uv run python -m bench user_path` (or `python -m bench.user_path [user_path] [daemon] [--repeats N]`). On the
recorded 12-pair data:

1. **Three backtests, two at a time** — RsiMeanReversion, EmaAdxTrend, BollingerBreakout on their 6 default
   pairs over the 120-day holdout, each launched exactly as a user launches it,
   `dg launch --assets backtest_plan,backtest_report --partition <Strategy>` (no run config), against the
   stock `freqtrade backtesting` CLI (its default trade export on) on the same candles, config and markets,
   also two at a time. Wall time and CPU seconds (every process started and waited for, plus the shared
   Freqtrade worker's own and its children's); each report's trades must equal the CLI's, trade for trade
   (read back from the report's MLflow artifact `backtest/freqtrade_stats.json`). Rows: the shared worker
   stopped before each repetition (both sides start cold: every side imports Freqtrade once per
   backtest or per worker), and the worker left running from the previous repetition.
2. **One backtest through a running daemon**: `dagster-daemon` (QueuedRunCoordinator) runs, a run of the
   backtest job is submitted for EmaAdxTrend (what the UI's Materialize does), and the time from the run's
   queueing to the report's materialization (both read from the instance's own event log) is compared with
   one stock CLI run.

The candles are ingested once, untimed, through the real market-data assets from the loopback replay
server into a throw-away home (ArcticDB, MLflow, Dagster instance). Repetitions interleave (A B A B); every
figure prints its minimum and median. Every timed process, ours and the CLI's, may cache bytecode
(`bench.common.child_env`), so after the untimed warm-up both sides start equally warm.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd

from bench.common import (
    PROJECT_ROOT,
    Figure,
    candles_dir,
    child_env,
    record,
    report_figures,
    run_checked,
    stock_cli_backtest,
    stock_cli_workspace,
)
from tradai_core.urls import rebase_urls

logger = logging.getLogger(__name__)

STRATEGIES = ("RsiMeanReversion", "EmaAdxTrend", "BollingerBreakout")
DAEMON_STRATEGY = "EmaAdxTrend"
PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT", "LTC/USDT", "XRP/USDT", "DOGE/USDT")
HISTORY_START = date(2022, 6, 1)
HISTORY_END = date(2022, 10, 12)  # 120-day holdout: 2022-06-14 → 2022-10-12
PARALLEL = 2
REPEATS = 3
WALL_CLOCK_KEYS = {"backtest_run_start_ts", "backtest_run_end_ts"}
DG = Path(sys.executable).parent / "dg"
DAEMON = Path(sys.executable).parent / "dagster-daemon"
DAGSTER = Path(sys.executable).parent / "dagster"


class Lab:
    """A throw-away TradAI home with the candles ingested, and the environment of its `dg` commands."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root = root
        self.folder = folder
        self.dagster_home = root / "dagster"
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / "dagster.yaml", self.dagster_home / "dagster.yaml")
        self.worker_dir = root / "workers"
        env = child_env({key: value for key, value in os.environ.items() if not key.startswith("TRADAI_")})
        env.update(
            DAGSTER_HOME=str(self.dagster_home),
            VIRTUAL_ENV=sys.prefix,
            PYTHONPATH=str(PROJECT_ROOT),
            TRADAI_HOME=str(root / "tradai"),
            TRADAI_WORKER_DIR=str(self.worker_dir),
            TRADAI_PAIRS=",".join(PAIRS),
            TRADAI_HISTORY_START=HISTORY_START.isoformat(),
            TRADAI_HISTORY_END=HISTORY_END.isoformat(),
        )
        self.env = env

    def settings(self) -> Any:
        from tradai_core.settings import TradAISettings

        return TradAISettings(
            home=self.root / "tradai",
            pairs=PAIRS,
            history_start=HISTORY_START,
            history_end=HISTORY_END,
            worker_dir=self.worker_dir,
        )

    def ingest(self) -> None:
        """Materialize every ohlcv partition of the history through the real market-data path (untimed)."""
        from dagster import DagsterInstance, materialize
        from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

        from tradai_assets.market_data import build_market_data_assets
        from tradai_replay.server import ReplayServer
        from tradai_resources.arcticdb_store import ArcticDBResource
        from tradai_resources.ccxt_exchange import ExchangeResource

        settings = self.settings()
        last = (HISTORY_END - pd.Timedelta(days=1)).isoformat()
        with ReplayServer(self.folder) as server, DagsterInstance.from_config(str(self.dagster_home)) as inst:
            done = materialize(
                build_market_data_assets(settings),
                resources={
                    "candle_store": ArcticDBResource(uri=settings.resolved_arcticdb_uri),
                    "exchange": ExchangeResource(base_url=server.base_url),
                },
                instance=inst,
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: HISTORY_START.isoformat(),
                    ASSET_PARTITION_RANGE_END_TAG: last,
                },
            )
        if not done.success:
            raise RuntimeError("ingesting the bench candles failed")

    def stop_worker(self) -> None:
        from tradai_resources.workers.zygote_client import stop_shared_zygotes

        stop_shared_zygotes(self.worker_dir)


def worker_cpu(folder: Path) -> float:
    """CPU seconds of the shared workers with their socket in `folder`, their reaped children included."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if b"--shared" not in cmdline or not any(str(folder).encode() in a for a in cmdline):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total


@contextmanager
def children_cpu(extra: Callable[[], float] = lambda: 0.0) -> Iterator[list[float]]:
    """Yields a list that receives the CPU seconds of the processes waited for in the block (+ `extra`)."""
    import resource

    out: list[float] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    extra_before = extra()
    yield out
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime + extra() - extra_before)


class Cli:
    """The stock `freqtrade backtesting` on workspaces holding the very candles the reports read."""

    def __init__(self, lab: Lab, work: Path) -> None:
        from tradai_replay.markets import load_exchange_info
        from tradai_replay.server import ReplayServer
        from tradai_resources.freqtrade_backtester import DEFAULT_EXCHANGE_INFO, backtest_exchange_info

        self.lab = lab
        self.work = work
        self.candles = self._candles()
        markets = backtest_exchange_info(load_exchange_info(DEFAULT_EXCHANGE_INFO), PAIRS, self.candles)
        markets_path = None
        if markets is not None:
            markets_path = work / "exchange_info.json"
            markets_path.write_text(json.dumps(markets))
        self.server = ReplayServer(lab.folder, exchange_info_path=markets_path).start()
        self.api = rebase_urls(ccxt.binance().urls["api"], self.server.base_url)
        self.counter = 0

    def _candles(self) -> dict[str, pd.DataFrame]:
        """The candles of the longest startup (200) before the holdout, read from the lab's ArcticDB."""
        from tradai_core.backtest_plan import plan_window
        from tradai_resources.arcticdb_store import ArcticDBResource

        settings = self.lab.settings()
        window = plan_window(settings.holdout_start, settings.resolved_history_end, "1h", 200)
        store = ArcticDBResource(uri=settings.resolved_arcticdb_uri)
        candles, _ = store.read_pairs(
            "binance", "1h", PAIRS, window.data_start, pd.Timestamp(window.end, tz="UTC")
        )
        return candles

    def timerange(self) -> str:
        settings = self.lab.settings()
        return f"{settings.holdout_start:%Y%m%d}-{settings.resolved_history_end:%Y%m%d}"

    def prepare(self, name: str) -> Any:
        """A fresh workspace for one CLI run (written outside the timing)."""
        from tradai_core.backtest_config import BacktestRunConfig

        self.counter += 1
        root = self.work / f"cli-{name}-{self.counter}"
        root.mkdir()
        run = BacktestRunConfig(timerange=self.timerange(), pairs=PAIRS)
        return stock_cli_workspace(root, name, run, self.candles, self.api)

    def run(self, name: str, workspace: Any) -> dict[str, Any]:
        """`python -m freqtrade backtesting ...` as a user types it (trades exported); its statistics."""
        return stock_cli_backtest(name, self.timerange(), workspace)  # type: ignore[return-value]

    def close(self) -> None:
        self.server.stop()


def launch(lab: Lab, name: str) -> None:
    """`dg launch --assets backtest_plan,backtest_report --partition NAME`, as a user types it."""
    run_checked(
        [DG, "launch", "--assets", "backtest_plan,backtest_report", "--partition", name],
        PROJECT_ROOT,
        lab.env,
        f"dg launch of {name}",
    )


def reported_stats(lab: Lab, name: str) -> dict[str, Any]:
    """Freqtrade's statistics of the newest `backtest_report/NAME`, from its MLflow artifact."""
    import mlflow
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(lab.dagster_home)) as instance:
        records = instance.fetch_materializations(AssetKey("backtest_report"), limit=50).records
    metadata = next(
        r.asset_materialization.metadata for r in records if r.asset_materialization.partition == name
    )
    run_id = metadata["mlflow_run_id"].value
    client = mlflow.MlflowClient(tracking_uri=lab.settings().resolved_mlflow_uri)
    local = client.download_artifacts(run_id, "backtest/freqtrade_stats.json", tempfile.mkdtemp())
    return json.loads(Path(local).read_text())


def assert_same_trades(ours: dict[str, Any], cli: dict[str, Any], name: str) -> int:
    """Our report's statistics equal the CLI's key for key (trades included), wall clock aside."""
    mine = {k: v for k, v in ours.items() if k not in WALL_CLOCK_KEYS}
    theirs = {k: v for k, v in cli.items() if k not in WALL_CLOCK_KEYS}
    if mine["trades"] != theirs["trades"]:
        raise AssertionError(f"{name}: our trades differ from the stock CLI's")
    if mine != theirs:
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise AssertionError(f"{name}: our statistics differ from the stock CLI's in {differ}")
    return len(mine["trades"])


def two_at_a_time(fns: list[Callable[[], object]]) -> list[object]:
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return [f.result() for f in [pool.submit(fn) for fn in fns]]


def _summary(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def user_path(lab: Lab, cli: Cli, repeats: int = REPEATS) -> list[Figure]:
    """Three strategies, two at a time: `dg launch` (worker cold / warm) vs the stock CLI, interleaved."""
    wall: dict[str, list[float]] = {"cli": [], "cold": [], "warm": []}
    cpu: dict[str, list[float]] = {"cli": [], "cold": [], "warm": []}
    cli_stats: dict[str, dict[str, Any]] = {}

    def ours(case: str) -> None:
        if case == "cold":
            lab.stop_worker()
        started = time.perf_counter()
        with children_cpu(lambda: worker_cpu(lab.worker_dir)) as used:
            two_at_a_time([lambda n=n: launch(lab, n) for n in STRATEGIES])
        wall[case].append(time.perf_counter() - started)
        cpu[case].extend(used)
        for name in STRATEGIES:
            assert_same_trades(reported_stats(lab, name), cli_stats[name], name)

    def stock() -> None:
        workspaces = {name: cli.prepare(name) for name in STRATEGIES}
        out: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        with children_cpu() as used:
            two_at_a_time([lambda n=n: out.__setitem__(n, cli.run(n, workspaces[n])) for n in STRATEGIES])
        wall["cli"].append(time.perf_counter() - started)
        cpu["cli"].extend(used)
        cli_stats.update(out)

    stock()  # untimed warm-up of both sides: page cache, bytecode, the stats to compare with
    # one run alone first: two first runs at once race creating the fresh MLflow SQLite store (alembic)
    launch(lab, STRATEGIES[0])
    ours("warm")
    wall, cpu = {k: [] for k in wall}, {k: [] for k in cpu}
    for _ in range(repeats):
        stock()
        ours("cold")
        ours("warm")
    trades = {name: len(cli_stats[name]["trades"]) for name in STRATEGIES}
    print(f"user path: trades per strategy {trades}, identical to the stock CLI's in every repetition")
    for case in wall:
        (wmin, wmed), (cmin, cmed) = _summary(wall[case]), _summary(cpu[case])
        print(
            f"  {case:>4}: wall min {wmin:.2f} s median {wmed:.2f} s; "
            f"CPU min {cmin:.1f} s median {cmed:.1f} s"
        )
    n = f"{len(STRATEGIES)} strategies × {len(PAIRS)} pairs × 120 d, {PARALLEL} at a time"
    return [
        Figure.of(
            f"user path: dg launch vs stock CLI, {n}, shared worker cold",
            wall["cold"],
            wall["cli"],
            "s",
            "this launch starts the worker; every repetition's trades equal the CLI's",
        ),
        Figure.of(
            "user path: same, shared worker warm",
            wall["warm"],
            wall["cli"],
            "s",
            "target ≤ 1.5 (the issue's measure: the worker warm)",
        ),
        Figure.of(
            f"user path CPU: dg launch vs stock CLI, {n}, shared worker cold",
            cpu["cold"],
            cpu["cli"],
            "CPU s",
            "worker's CPU included",
        ),
        Figure.of("user path CPU: same, shared worker warm", cpu["warm"], cpu["cli"], "CPU s", ""),
    ]


@contextmanager
def running_daemon(lab: Lab) -> Iterator[None]:
    """`dagster-daemon run` on the lab's instance (its own code server), stopped by pid afterwards."""
    log = open(lab.root / "daemon.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(DAEMON), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT,
        env=lab.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "QueuedRunCoordinatorDaemon" not in (lab.root / "daemon.log").read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the daemon did not start:\n" + (lab.root / "daemon.log").read_text()[-3000:]
                )
            time.sleep(0.2)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def daemon_run(lab: Lab, name: str) -> tuple[float, dict[str, Any]]:
    """Submit a run of the backtest job for partition NAME (queued, as the UI does); seconds from queued to
    the report's materialization, from the instance's event log; and the report's statistics."""
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, EventRecordsFilter  # noqa: F401

    run_checked(
        [
            DAGSTER,
            "job",
            "launch",
            "-w",
            PROJECT_ROOT / "workspace.yaml",
            "-j",
            "backtest_reports_job",
            "--tags",
            json.dumps({"dagster/partition": name}),
        ],
        PROJECT_ROOT,
        lab.env,
        f"submitting the run of {name} to the daemon",
    )
    with DagsterInstance.from_config(str(lab.dagster_home)) as instance:
        [record_] = instance.get_run_records(limit=1)
        run = record_.dagster_run
        deadline = time.monotonic() + 600
        while True:
            status = instance.get_run_by_id(run.run_id).status
            if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run.run_id} still {status} after 600 s")
            time.sleep(0.1)
        if status != DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"run {run.run_id} ended {status}; see {lab.root / 'daemon.log'}")
        logs = instance.all_logs(run.run_id)
    queued = next(
        e.timestamp
        for e in logs
        if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RUN_ENQUEUED
    )
    materialized = next(
        e.timestamp
        for e in logs
        if e.dagster_event
        and e.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION
        and e.dagster_event.asset_key is not None
        and e.dagster_event.asset_key.path == ["backtest_report"]
    )
    return materialized - queued, reported_stats(lab, name)


def through_daemon(lab: Lab, cli: Cli, repeats: int = REPEATS) -> list[Figure]:
    """One backtest through a running daemon (queued → materialized) vs one stock CLI run, interleaved."""
    ours: list[float] = []
    stock: list[float] = []
    with running_daemon(lab):
        workspace = cli.prepare(DAEMON_STRATEGY)
        expected = cli.run(DAEMON_STRATEGY, workspace)  # warm-up of both sides, untimed
        daemon_run(lab, DAEMON_STRATEGY)
        for _ in range(repeats):
            workspace = cli.prepare(DAEMON_STRATEGY)
            started = time.perf_counter()
            cli.run(DAEMON_STRATEGY, workspace)
            stock.append(time.perf_counter() - started)
            seconds, stats = daemon_run(lab, DAEMON_STRATEGY)
            assert_same_trades(stats, expected, DAEMON_STRATEGY)
            ours.append(seconds)
    print(
        f"daemon: {DAEMON_STRATEGY} queued → report materialized {[round(s, 2) for s in ours]} s; "
        f"stock CLI {[round(s, 2) for s in stock]} s; trades identical"
    )
    return [
        Figure.of(
            f"one backtest through a running daemon (queued → report) vs one stock CLI run, "
            f"{DAEMON_STRATEGY} × {len(PAIRS)} pairs × 120 d",
            ours,
            stock,
            "s",
            "target ≤ 2.0",
        ),
    ]


def run(repeats: int = REPEATS, parts: tuple[str, ...] = ("user_path", "daemon")) -> list[Figure]:
    """Both user-path figures; printed, recorded, returned."""
    logging.getLogger("tradai_resources").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="tradai-bench-user-path-"))
    lab = Lab(root, candles_dir())
    figures: list[Figure] = []
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        lab.ingest()
        work = root / "cli"
        work.mkdir()
        cli = Cli(lab, work)
        try:
            if "user_path" in parts:
                figures += user_path(lab, cli, repeats)
            if "daemon" in parts:
                figures += through_daemon(lab, cli, repeats)
        finally:
            cli.close()
    finally:
        lab.stop_worker()
        shutil.rmtree(root, ignore_errors=True)
    report_figures("User path: a backtest launched by a person vs the stock CLI", figures)
    record(figures)
    print(
        f"(user-path benchmarks took {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores; "
        f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="user_path, daemon (default: both)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved repetitions of each side")
    args = parser.parse_args()
    unknown = set(args.parts) - {"user_path", "daemon"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from user_path, daemon")
    run(args.repeats, tuple(args.parts) or ("user_path", "daemon"))
