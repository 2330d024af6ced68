"""Our backtests are Freqtrade's, bit for bit: the stock `freqtrade backtesting` CLI agrees exactly.

For each case the same strategy, pairs, timerange, config and candles go through
- our path: `FreqtradeResource.backtest` (a child process forked from the pre-loaded worker, markets
  from the exchangeInfo snapshot, no network), and
- the stock CLI: `python -m freqtrade backtesting ...` as a user would type it, on the same workspace
  layout, exporting its results; it loads markets from the exchange at start-up, so its ccxt client is
  pointed at the loopback replay server (serving the same markets: the snapshot, plus the entries our
  path makes up for pairs the snapshot lacks) through the config's `ccxt_config`.

The CLI's exported statistics (read from its result zip with the standard JSON parser) must equal ours
key for key — trades, every metric, every breakdown — except the wall-clock run timestamps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest
from conftest import DEMO_CANDLES, PROJECT_ROOT, load_recorded

from strategies.config import load_strategy_config
from strategies.validation import STRATEGIES_DIR, find_strategy_file
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.backtest_result import parse_backtest_stats
from tradai_core.urls import rebase_urls
from tradai_replay.markets import load_exchange_info
from tradai_replay.server import ReplayServer
from tradai_resources.freqtrade_backtester import (
    DEFAULT_EXCHANGE_INFO,
    FreqtradeResource,
    backtest_exchange_info,
)
from tradai_resources.freqtrade_workspace import prepare_workspace

WALL_CLOCK_KEYS = {"backtest_run_start_ts", "backtest_run_end_ts"}
PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT")

CASES = [
    pytest.param("RsiMeanReversion", BacktestRunConfig(timerange="20210101-20210401", pairs=PAIRS), id="rsi"),
    pytest.param(
        "BollingerBreakout",
        # fee from the markets (so market metadata must agree too), fixed stake, fewer slots
        BacktestRunConfig(
            timerange="20210101-20210401", pairs=PAIRS, fee=None, stake_amount=100.0, max_open_trades=2
        ),
        id="bollinger-market-fee",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        "EmaAdxTrend",
        BacktestRunConfig(timerange="20210601-20211001", pairs=(*PAIRS, "DOGE/USDT", "XRP/USDT")),
        id="ema-adx-5-pairs",
        marks=pytest.mark.slow,
    ),
]


def candles_for(run: BacktestRunConfig, folder: Path = DEMO_CANDLES) -> dict[str, pd.DataFrame]:
    """Real candles covering the run plus two months of warm-up."""
    start = pd.Timestamp(run.timerange[:8], tz="UTC") - pd.Timedelta(days=60)
    end = pd.Timestamp(run.timerange[9:], tz="UTC") + pd.Timedelta(days=3)
    assert run.pairs is not None
    return {pair: load_recorded(folder, pair).loc[start:end] for pair in run.pairs}


def run_stock_cli(
    name: str,
    run: BacktestRunConfig,
    candles: dict[str, pd.DataFrame],
    root: Path,
    candles_dir: Path = DEMO_CANDLES,
) -> dict:
    """Run `freqtrade backtesting` on its own workspace; return its exported statistics for `name`."""
    strategy_file = find_strategy_file(name, STRATEGIES_DIR)
    config = load_strategy_config(strategy_file.with_suffix(".yaml"))
    root.mkdir()
    workspace = prepare_workspace(root, strategy_file, config, run, candles)
    assert run.pairs is not None
    markets = backtest_exchange_info(load_exchange_info(DEFAULT_EXCHANGE_INFO), run.pairs, candles)
    markets_path = None
    if markets is not None:  # the replay server serves the markets our path makes up, verbatim
        markets_path = root.with_name(f"{root.name}-exchange_info.json")
        markets_path.write_text(json.dumps(markets))
    with ReplayServer(candles_dir, exchange_info_path=markets_path) as server:
        ft_config = json.loads(workspace.config_path.read_text())
        ft_config["exchange"]["ccxt_config"] = {
            "urls": {"api": rebase_urls(ccxt.binance().urls["api"], server.base_url)}
        }
        workspace.config_path.write_text(json.dumps(ft_config, indent=2))
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "freqtrade",
                *workspace.backtest_argv(name, run.timerange, export="trades"),
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        served = [(request.method, request.path) for request in server.requests]
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("GET", "/api/v3/exchangeInfo") in served  # the CLI really loaded markets over HTTP
    assert not any(path.endswith("klines") for _, path in served)  # and read candles from our files
    results = workspace.user_data_dir / "backtest_results"
    archive = results / json.loads((results / ".last_result.json").read_text())["latest_backtest"]
    with zipfile.ZipFile(archive) as zipped:
        stats = json.loads(zipped.read(archive.with_suffix(".json").name))
    return stats["strategy"][name]


def without_wall_clock(stats: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in stats.items() if key not in WALL_CLOCK_KEYS}


def assert_ours_equals_the_cli(
    name: str, run: BacktestRunConfig, tmp_path: Path, candles_dir: Path = DEMO_CANDLES
) -> None:
    candles = candles_for(run, candles_dir)
    ours = FreqtradeResource(work_dir=str(tmp_path / "work")).backtest(name, STRATEGIES_DIR, candles, run)
    cli_stats = run_stock_cli(name, run, candles, tmp_path / "cli", candles_dir)

    assert ours.metrics.trade_count > 5, "the comparison needs trades"
    assert without_wall_clock(ours.freqtrade_stats) == without_wall_clock(cli_stats)
    cli = parse_backtest_stats(cli_stats, name, ours.freqtrade_version)
    assert cli.trades == ours.trades
    assert cli.metrics == ours.metrics
    assert cli.equity_curve == ours.equity_curve


@pytest.mark.parametrize(("name", "run"), CASES)
def test_our_backtest_equals_the_stock_cli(name: str, run: BacktestRunConfig, tmp_path: Path) -> None:
    assert_ours_equals_the_cli(name, run, tmp_path)


@pytest.mark.slow
def test_our_backtest_equals_the_stock_cli_on_twelve_pairs_five_of_them_missing_from_the_snapshot(
    shared_candles_dir: Path, tmp_path: Path
) -> None:
    pairs = tuple(
        sorted(f.name.split("-")[0].replace("_", "/") for f in shared_candles_dir.glob("*-1h.parquet"))
    )
    assert len(pairs) == 12
    run = BacktestRunConfig(timerange="20210101-20210401", pairs=pairs)
    assert_ours_equals_the_cli("BollingerBreakout", run, tmp_path, shared_candles_dir)
