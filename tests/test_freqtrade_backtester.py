"""FreqtradeResource: real Freqtrade backtests on real recorded candles, offline, in a child process.

One reference backtest (RsiMeanReversion, 3 pairs, Q1 2021) runs inside a Dagster materialization and is
shared by the tests that read it. The failure paths run the child process for real (an engine crash, a
process killed by a signal, a timeout) and check that nothing is left behind. Every backtest is forked
from one pre-loaded worker process per test process (the zygote); its tests check that it is shared,
survives what kills a backtest, and never outlives its parent. The contract tests pin how markets reach
Freqtrade with no network, so a Freqtrade or ccxt upgrade that changes it fails here, loudly, rather than
in a backtest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ccxt.async_support as ccxt_async
import pandas as pd
import pytest
from conftest import DEMO_CANDLES, load_recorded
from dagster import DagsterInstance, asset, materialize_to_memory

from strategies.config import load_strategy_config
from strategies.validation import STRATEGIES_DIR, check_strategy, discover_strategies
from tradai_core.backtest_result import (
    BacktestMetrics,
    Trade,
    equity_curve_from_trades,
    market_exposure,
    max_drawdown_abs,
    parse_backtest_stats,
)
from tradai_core.errors import (
    BacktestError,
    ConfigurationError,
    NotFoundError,
    StrategyValidationError,
    TradAIError,
    ValidationError,
)
from tradai_replay.markets import derived_step_size, derived_tick_size
from tradai_resources.freqtrade_backtester import (
    DEFAULT_EXCHANGE_INFO,
    BacktestResult,
    BacktestRunConfig,
    FreqtradeResource,
    backtest_exchange_info,
)
from tradai_resources.freqtrade_workspace import FREQTRADE_USER_SUBDIRS, prepare_workspace
from tradai_resources.workers.backtest_child import NetworkBlockedError, network_guard, offline_markets
from tradai_resources.workers.jobs import EXIT_BAD_JOB
from tradai_resources.workers.protocol import ForkRequest
from tradai_resources.workers.zygote_client import ZygoteTimeoutError, running_zygotes, zygote_for

PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT")
RUN = BacktestRunConfig(timerange="20210101-20210401", pairs=PAIRS)
START, END = datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 4, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    """Real 1h candles for Q1 2021 plus a month of warm-up, as our candle store holds them."""
    return {pair: load_recorded(DEMO_CANDLES, pair).loc["2020-12-01":"2021-04-01"] for pair in PAIRS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, candles: dict[str, pd.DataFrame]) -> SimpleNamespace:
    """RsiMeanReversion backtested through the resource inside a Dagster asset materialization."""
    work = tmp_path_factory.mktemp("work")
    instance = DagsterInstance.ephemeral()

    @asset
    def rsi_backtest(context, freqtrade: FreqtradeResource) -> BacktestResult:  # type: ignore[no-untyped-def]
        context.log.info("starting the backtest")
        result = freqtrade.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, RUN)
        context.log.info(f"backtest finished with {result.metrics.trade_count} trades")
        return result

    handlers_before = list(logging.getLogger().handlers)
    outcome = materialize_to_memory(
        [rsi_backtest],
        resources={"freqtrade": FreqtradeResource(work_dir=str(work), start_method="prefork")},
        instance=instance,
    )
    return SimpleNamespace(
        outcome=outcome,
        result=outcome.output_for_node("rsi_backtest"),
        logs=[entry.user_message for entry in instance.all_logs(outcome.run_id)],
        handlers_before=handlers_before,
        handlers_after=list(logging.getLogger().handlers),
        work=work,
        zygote_pid=running_zygotes()[0].pid,
    )


WEEK = BacktestRunConfig(timerange="20210301-20210308", pairs=("BTC/USDT",))
"""A backtest small enough to show that the worker still works after something went wrong."""


# --- the reference backtest ---------------------------------------------------------------------------------


def test_backtest_returns_freqtrades_trades_and_metrics_typed(reference: SimpleNamespace) -> None:
    result: BacktestResult = reference.result
    metrics, stats = result.metrics, result.freqtrade_stats
    assert (result.strategy, result.timeframe, result.timerange) == ("RsiMeanReversion", "1h", RUN.timerange)
    assert result.pairs == PAIRS and result.stake_currency == "USDT"
    from freqtrade import __version__

    assert result.freqtrade_version == __version__ == "2026.9"

    assert len(result.trades) == metrics.trade_count == stats["total_trades"] > 10
    assert {t.pair for t in result.trades} <= set(PAIRS)
    assert all(START <= t.open_date <= t.close_date <= END for t in result.trades)
    assert all(t.fee_open == t.fee_close == RUN.fee for t in result.trades)
    assert metrics.wins + metrics.draws + metrics.losses == metrics.trade_count
    assert metrics.win_rate == pytest.approx(metrics.wins / metrics.trade_count)
    assert sum(t.profit_abs for t in result.trades) == pytest.approx(metrics.total_profit_abs)
    assert metrics.final_balance == pytest.approx(metrics.starting_balance + metrics.total_profit_abs)
    assert metrics.total_profit_pct == pytest.approx(metrics.total_profit_ratio * 100)
    assert (metrics.backtest_start, metrics.backtest_end) == (START, END)
    assert 0 < metrics.market_exposure < 1

    # every headline number is Freqtrade's own, unchanged
    for ours, theirs in {
        "total_profit_abs": "profit_total_abs",
        "total_profit_ratio": "profit_total",
        "cagr": "cagr",
        "sharpe": "sharpe",
        "sortino": "sortino",
        "calmar": "calmar",
        "max_drawdown_ratio": "max_drawdown_account",
        "max_drawdown_abs": "max_drawdown_abs",
        "win_rate": "winrate",
        "profit_factor": "profit_factor",
        "expectancy": "expectancy",
        "avg_duration_s": "holding_avg_s",
    }.items():
        assert getattr(metrics, ours) == stats[theirs], ours


def test_equity_curve_is_the_realized_balance_freqtrades_drawdown_uses(reference: SimpleNamespace) -> None:
    result: BacktestResult = reference.result
    curve = result.equity_curve
    assert (curve[0].date, curve[0].equity) == (START, result.metrics.starting_balance)
    assert curve[-1].equity == pytest.approx(result.metrics.final_balance)
    assert [p.date for p in curve] == sorted({p.date for p in curve})
    assert curve[-1].date == max(t.close_date for t in result.trades)
    assert max_drawdown_abs(curve) == pytest.approx(result.metrics.max_drawdown_abs)
    frame = result.equity_frame()
    assert frame.index.name == "date" and list(frame.columns) == ["equity"]
    assert len(result.trades_frame()) == len(result.trades)


def test_dagster_logging_stays_intact(reference: SimpleNamespace) -> None:
    assert reference.outcome.success
    assert reference.handlers_after == reference.handlers_before
    finished = [m for m in reference.logs if m.startswith("backtest finished with")]
    assert finished == [f"backtest finished with {reference.result.metrics.trade_count} trades"]


def test_no_temporary_folder_is_left_behind(reference: SimpleNamespace) -> None:
    assert list(reference.work.iterdir()) == []


# --- hyperopt parameter files and broken neighbours ---------------------------------------------------------


def test_stray_parameter_file_is_ignored_and_a_broken_strategy_does_not_stop_the_others(
    reference: SimpleNamespace, candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    for suffix in (".py", ".yaml"):
        shutil.copy(STRATEGIES_DIR / f"rsi_mean_reversion{suffix}", folder)
    stray = {
        "strategy_name": "RsiMeanReversion",
        "params": {"buy": {"buy_rsi": 40, "buy_trend_floor": 0.8}, "stoploss": {"stoploss": -0.01}},
    }
    (folder / "rsi_mean_reversion.json").write_text(json.dumps(stray))  # what a hyperopt run leaves behind
    (folder / "broken_import.py").write_text(
        "import package_that_does_not_exist\n\nfrom strategies.base import TradAIStrategy\n\n\n"
        "class BrokenImport(TradAIStrategy):\n    pass\n"
    )

    # Freqtrade itself would load the stray file from this folder ...
    from freqtrade.resolvers import StrategyResolver

    (tmp_path / "user_data").mkdir()
    loaded = StrategyResolver.load_strategy(
        {
            "strategy": "RsiMeanReversion",
            "strategy_path": str(folder),
            "user_data_dir": tmp_path / "user_data",
        }
    )
    assert loaded.stoploss == -0.01

    # ... our backtests never do, and the broken strategy fails alone, with a clear message
    resource = FreqtradeResource(work_dir=str(tmp_path / "work"))
    results: dict[str, BacktestResult] = {}
    failures: dict[str, TradAIError] = {}
    for name in discover_strategies(folder):
        try:
            results[name] = resource.backtest(name, folder, candles, RUN)
        except TradAIError as exc:
            failures[name] = exc
    assert list(failures) == ["BrokenImport"]
    assert isinstance(failures["BrokenImport"], StrategyValidationError)
    assert "No module named 'package_that_does_not_exist'" in str(failures["BrokenImport"])
    assert results["RsiMeanReversion"].trades == reference.result.trades
    assert results["RsiMeanReversion"].metrics == reference.result.metrics
    assert list((tmp_path / "work").iterdir()) == []


def test_the_workspace_has_every_user_data_folder_freqtrade_would_create(
    candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    from freqtrade.configuration.directory_operations import create_userdata_dir

    create_userdata_dir(str(tmp_path / "freqtrade"), create_dir=True)
    made_by_freqtrade = sorted(p.name for p in (tmp_path / "freqtrade").iterdir())
    assert sorted(FREQTRADE_USER_SUBDIRS) == made_by_freqtrade  # contract with the pinned Freqtrade
    (tmp_path / "ws").mkdir()
    config = load_strategy_config(STRATEGIES_DIR / "rsi_mean_reversion.yaml")
    source = STRATEGIES_DIR / "rsi_mean_reversion.py"
    workspace = prepare_workspace(tmp_path / "ws", source, config, RUN, candles)
    # parallel hyperopt workers on one workspace find them made: none races another to create them
    assert sorted(p.name for p in workspace.user_data_dir.iterdir()) == made_by_freqtrade


def test_the_workspace_holds_the_strategy_alone_with_the_configs_parameters(
    candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    source = tmp_path / "src"
    shutil.copytree(STRATEGIES_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "rsi_mean_reversion.json").write_text('{"strategy_name": "RsiMeanReversion", "params": {}}')
    config = load_strategy_config(source / "rsi_mean_reversion.yaml")
    (tmp_path / "ws").mkdir()
    workspace = prepare_workspace(tmp_path / "ws", source / "rsi_mean_reversion.py", config, RUN, candles)

    assert sorted(p.name for p in workspace.strategy_dir.iterdir()) == [
        "rsi_mean_reversion.json",
        "rsi_mean_reversion.py",
    ]
    params = json.loads((workspace.strategy_dir / "rsi_mean_reversion.json").read_text())
    assert params["params"] == {"buy": config.buy_params, "sell": config.sell_params}
    ft_config = json.loads(workspace.config_path.read_text())
    assert ft_config["backtest_cache"] == "none" and ft_config["exchange"]["pair_whitelist"] == list(PAIRS)
    argv = workspace.backtest_argv("RsiMeanReversion", RUN.timerange)
    assert argv[argv.index("--cache") + 1] == "none" and argv[argv.index("--strategy-path") + 1] == str(
        workspace.strategy_dir
    )

    # Freqtrade's own loader reads back exactly the candles we were given
    from freqtrade.data.history import load_pair_history

    for pair in PAIRS:
        read = load_pair_history(pair, "1h", workspace.datadir, data_format="feather", fill_up_missing=False)
        expected = candles[pair].reset_index()
        assert read["date"].tolist() == expected["date"].tolist()
        for column in ("open", "high", "low", "close", "volume"):
            assert read[column].tolist() == expected[column].tolist()


# --- failure paths ------------------------------------------------------------------------------------------

CRASHING_STRATEGY = """\
from typing import ClassVar

from pandas import DataFrame

from strategies.base import StrategyCategory, StrategyMetadata, TradAIStrategy


class Crashing(TradAIStrategy):
    timeframe = "1h"
    stoploss = -0.05
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.05}

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        return StrategyMetadata(
            name="Crashing", version="1.0.0", description="Valid, but crashes the engine.", timeframe="1h",
            category=StrategyCategory.MOMENTUM,
        )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        raise RuntimeError("indicator exploded on purpose")

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe
"""


def write_crashing(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "crashing.py").write_text(textwrap.dedent(CRASHING_STRATEGY))
    (folder / "crashing.yaml").write_text(
        "name: Crashing\nversion: 1.0.0\ntimeframe: 1h\npairs: [BTC/USDT]\n"
    )
    return folder


def test_an_engine_crash_fails_clearly_and_leaves_nothing_behind(
    candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    folder = write_crashing(tmp_path / "strategies")
    work = tmp_path / "work"
    with pytest.raises(BacktestError) as caught:
        FreqtradeResource(work_dir=str(work)).backtest("Crashing", folder, candles, RUN)
    message = str(caught.value)
    assert "Freqtrade backtest of Crashing failed (exit code 1)" in message
    assert "indicator exploded on purpose" in message  # the engine's own log tail
    assert "No report was written" in message
    assert list(work.iterdir()) == []


def test_a_backtest_process_killed_by_a_signal_fails_alone_and_the_next_one_runs(
    reference: SimpleNamespace, candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    folder = write_crashing(tmp_path / "strategies")
    module = folder / "crashing.py"
    module.write_text(
        "import os\nimport signal\n"
        + module.read_text().replace(
            'raise RuntimeError("indicator exploded on purpose")', "os.kill(os.getpid(), signal.SIGSEGV)"
        )
    )
    work = tmp_path / "work"
    resource = FreqtradeResource(work_dir=str(work), start_method="prefork")
    with pytest.raises(BacktestError, match=r"failed \(exit code -11\)"):  # as a segfault in C code would
        resource.backtest("Crashing", folder, candles, RUN)
    assert list(work.iterdir()) == []
    assert [zygote.pid for zygote in running_zygotes()] == [reference.zygote_pid]
    assert resource.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, WEEK).timerange == WEEK.timerange


def test_a_backtest_over_its_time_limit_is_killed_and_cleaned_up(
    reference: SimpleNamespace, candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    resource = FreqtradeResource(work_dir=str(work), timeout_seconds=0.5, start_method="prefork")
    with pytest.raises(BacktestError, match=r"timed out after 0\.5 s and was killed"):
        resource.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, RUN)
    assert list(work.iterdir()) == []
    assert [zygote.pid for zygote in running_zygotes()] == [reference.zygote_pid]  # only the child died


def test_invalid_inputs_fail_before_any_work(candles: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    work = tmp_path / "work"
    resource = FreqtradeResource(work_dir=str(work))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "wrong.py").write_text(
        CRASHING_STRATEGY.replace("stoploss = -0.05", "stoploss = 0.05").replace("Crashing", "Wrong")
    )
    (broken / "wrong.yaml").write_text("name: Wrong\nversion: 1.0.0\ntimeframe: 1h\npairs: [BTC/USDT]\n")
    with pytest.raises(StrategyValidationError, match=r"stoploss 0\.05 must be negative"):
        resource.backtest("Wrong", broken, candles, RUN)
    with pytest.raises(NotFoundError, match="no candles given for ADA/USDT"):
        resource.backtest("RsiMeanReversion", STRATEGIES_DIR, {p: candles[p] for p in PAIRS[:2]}, RUN)
    naive = {pair: frame.tz_localize(None) for pair, frame in candles.items()}
    with pytest.raises(ValidationError, match="not dated in UTC"):
        resource.backtest("RsiMeanReversion", STRATEGIES_DIR, naive, RUN)
    unsorted = {pair: frame.iloc[::-1] for pair, frame in candles.items()}
    with pytest.raises(ValidationError, match="not sorted"):
        resource.backtest("RsiMeanReversion", STRATEGIES_DIR, unsorted, RUN)
    kraken = load_strategy_config(STRATEGIES_DIR / "rsi_mean_reversion.yaml").model_copy(
        update={"exchange": "kraken"}
    )
    with pytest.raises(ConfigurationError, match="snapshots for binance only"):
        resource.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, RUN, strategy_config=kraken)
    with pytest.raises(ConfigurationError, match="exchangeInfo snapshot"):
        FreqtradeResource(work_dir=str(work), exchange_info_path=str(tmp_path / "none.json")).backtest(
            "RsiMeanReversion", STRATEGIES_DIR, candles, RUN
        )
    assert list(work.iterdir()) == []


# --- pre-forked workers -------------------------------------------------------------------------------------


def test_every_resource_and_thread_of_a_process_forks_its_backtests_from_one_zygote(
    reference: SimpleNamespace, candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    resources = [
        FreqtradeResource(work_dir=str(tmp_path / f"work-{i}"), start_method="prefork") for i in range(2)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda r: r.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, RUN), resources)
        )
    for result in results:  # each ran in a fresh process: no state carried over from the reference run
        assert result.trades == reference.result.trades and result.metrics == reference.result.metrics
    (zygote,) = running_zygotes()
    assert zygote.pid == reference.zygote_pid
    ready = zygote.wait_ready()
    assert ready["threads"] == 1, "fork() copies one thread: the zygote must have no other"
    assert ready["failed"] == {}, "every module a backtest needs is preloaded"


def test_when_the_zygote_cannot_start_the_backtest_runs_in_a_fresh_interpreter(
    reference: SimpleNamespace,
    candles: dict[str, pd.DataFrame],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    python = tmp_path / "python-without-zygote"
    python.write_text(
        '#!/bin/sh\nif [ "$3" = "--zygote" ]; then echo "no zygote here" >&2; exit 3; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    resource = FreqtradeResource(
        work_dir=str(tmp_path / "work"), python_executable=str(python), start_method="prefork"
    )
    with caplog.at_level(logging.WARNING, logger="tradai_resources.freqtrade_backtester"):
        result = resource.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, RUN)
    assert result.trades == reference.result.trades and result.metrics == reference.result.metrics
    # said for the strategy's check and for the backtest, each then run in a fresh interpreter
    warnings = [r.getMessage() for r in caplog.records if "zygote is unavailable" in r.getMessage()]
    assert len(warnings) == 2
    assert all("exit code 3" in warning for warning in warnings) and "no zygote here" in warnings[0]
    assert list((tmp_path / "work").iterdir()) == []
    assert zygote_for(str(python), {}, tmp_path).failed_to_start  # not started again by later backtests


def test_an_interpreter_that_does_not_exist_is_a_configuration_error(
    candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-python")
    for start_method in ("prefork", "spawn"):
        resource = FreqtradeResource(
            work_dir=str(tmp_path / "work"), python_executable=missing, start_method=start_method
        )
        with pytest.raises(ConfigurationError, match="cannot start the backtest's interpreter"):
            resource.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, WEEK)
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.slow
def test_a_fresh_interpreter_per_backtest_by_choice_gives_the_same_result(
    reference: SimpleNamespace, candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    spawned = FreqtradeResource(work_dir=str(tmp_path / "work"), start_method="spawn")
    result = spawned.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, RUN)
    assert result.trades == reference.result.trades and result.metrics == reference.result.metrics


def test_a_strategy_is_checked_in_a_child_and_one_that_ends_its_process_is_reported_invalid(
    reference: SimpleNamespace, tmp_path: Path
) -> None:
    """The validator runs in a child forked from the zygote (issue #14: the caller never imports
    Freqtrade): same check as in process, and a module that kills its interpreter at import takes only
    that child with it, reported as an invalid strategy saying what happened."""
    work = tmp_path / "work"
    resource = FreqtradeResource(work_dir=str(work), start_method="prefork")
    assert resource.check_strategy("RsiMeanReversion", STRATEGIES_DIR) == check_strategy(
        "RsiMeanReversion", STRATEGIES_DIR
    )
    folder = write_crashing(tmp_path / "strategies")
    module = folder / "crashing.py"
    module.write_text("import os\nos._exit(3)\n" + module.read_text())
    checked = resource.check_strategy("Crashing", folder)
    [issue] = checked.report.errors
    assert issue.check == "validation" and "failed (exit code 3)" in issue.message
    assert "tradai strategy validate Crashing" in issue.message
    assert list(work.iterdir()) == []
    assert [zygote.pid for zygote in running_zygotes()] == [reference.zygote_pid]


def test_the_zygote_runs_the_entry_a_job_file_names_and_refuses_an_unknown_kind(
    reference: SimpleNamespace, tmp_path: Path
) -> None:
    (zygote,) = running_zygotes()
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"kind": "nope", "result_path": "r.json", "error_path": "e.json"}))
    err = tmp_path / "child.stderr"
    request = ForkRequest(
        job_path=str(job), cwd=str(tmp_path), stdout_path=str(tmp_path / "out"), stderr_path=str(err), env={}
    )
    done = zygote.run(request, 60)
    assert done.returncode == EXIT_BAD_JOB
    assert "names the kind 'nope'; known kinds: backtest, hyperopt, strategy_check" in err.read_text()
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "e.json").exists()


def test_a_process_forked_from_the_parent_never_uses_the_parents_zygote(reference: SimpleNamespace) -> None:
    assert running_zygotes()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        os._exit(len(running_zygotes()))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [zygote.pid for zygote in running_zygotes()] == [reference.zygote_pid]


def test_the_zygote_kills_a_child_over_its_time_limit(reference: SimpleNamespace, tmp_path: Path) -> None:
    (zygote,) = running_zygotes()
    blocked = tmp_path / "job.json"
    os.mkfifo(blocked)  # the child blocks opening its job file, forever
    request = ForkRequest(
        job_path=str(blocked),
        cwd=str(tmp_path),
        stdout_path=str(tmp_path / "out"),
        stderr_path=str(tmp_path / "err"),
        env=dict(os.environ),
    )
    started = time.monotonic()
    with pytest.raises(ZygoteTimeoutError):
        zygote.run(request, timeout=0.3)
    assert time.monotonic() - started < 5
    assert _children(zygote.pid) == []


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


PARENT_SCRIPT = """
import os, sys, threading, time
from pathlib import Path
from tradai_resources.workers.protocol import ForkRequest
from tradai_resources.workers.zygote_client import zygote_for

folder = Path(sys.argv[1])
zygote = zygote_for(sys.executable, dict(os.environ), folder)
zygote.wait_ready()
job = folder / "job.json"
os.mkfifo(job)
request = ForkRequest(job_path=str(job), cwd=str(folder), stdout_path=str(folder / "out"),
                      stderr_path=str(folder / "err"), env=dict(os.environ))
threading.Thread(target=zygote.run, args=(request, 600), daemon=True).start()
print(zygote.pid, flush=True)
sys.stdin.readline()
if sys.argv[2] == "killed":
    os.kill(os.getpid(), 9)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("how", ["exits", "killed"])
def test_the_zygote_and_its_running_backtests_end_with_their_parent(how: str, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(tmp_path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        zygote = int(parent.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while not _children(zygote) and time.monotonic() < deadline:
            time.sleep(0.05)
        (backtest,) = _children(zygote)
        parent.communicate("go\n", timeout=30)  # the parent exits normally (atexit) or is SIGKILLed
        deadline = time.monotonic() + 10
        while (_running(zygote) or _running(backtest)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(zygote) and not _running(backtest)
    finally:
        parent.kill()
        parent.wait()


# --- markets for pairs the snapshot lacks -------------------------------------------------------------------


def test_pairs_missing_from_the_snapshot_get_markets_sized_from_their_last_price(
    candles: dict[str, pd.DataFrame],
) -> None:
    snapshot = json.loads(DEFAULT_EXCHANGE_INFO.read_text())
    assert backtest_exchange_info(snapshot, PAIRS, candles) is None  # nothing to add: the file is used as is

    newcomer = candles["BTC/USDT"] / 1000  # a pair trading near 58 USDT at the end of the candles
    info = backtest_exchange_info(snapshot, ("BTC/USDT", "NEW/USDT"), {**candles, "NEW/USDT": newcomer})
    assert info is not None
    assert info["symbols"][:-1] == snapshot["symbols"]  # the recorded markets, unchanged
    (added,) = info["symbols"][-1:]
    assert (added["symbol"], added["baseAsset"], added["quoteAsset"]) == ("NEWUSDT", "NEW", "USDT")
    last = float(newcomer["close"].iloc[-1])
    filters = {rule["filterType"]: rule for rule in added["filters"]}
    assert float(filters["PRICE_FILTER"]["tickSize"]) == pytest.approx(derived_tick_size(last))
    assert float(filters["LOT_SIZE"]["stepSize"]) == pytest.approx(derived_step_size(last))


def test_a_backtest_trades_pairs_the_snapshot_lacks(shared_candles_dir: Path, tmp_path: Path) -> None:
    pairs = ("BTC/USDT", "SOL/USDT", "AVAX/USDT")  # SOL and AVAX are not in the recorded exchangeInfo
    run = BacktestRunConfig(timerange="20210101-20210401", pairs=pairs)
    recorded = {p: load_recorded(shared_candles_dir, p).loc["2020-12-01":"2021-04-01"] for p in pairs}
    result = FreqtradeResource(work_dir=str(tmp_path / "work")).backtest(
        "RsiMeanReversion", STRATEGIES_DIR, recorded, run
    )
    assert result.pairs == pairs
    assert {"SOL/USDT", "AVAX/USDT"} <= {trade.pair for trade in result.trades}
    assert list((tmp_path / "work").iterdir()) == []


# --- the offline-markets contract ---------------------------------------------------------------------------


def _listening_socket() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server


def test_network_guard_refuses_every_connection_and_lookup_then_restores() -> None:
    server = _listening_socket()
    address = server.getsockname()
    try:
        with network_guard() as log:
            with pytest.raises(NetworkBlockedError):
                socket.create_connection(address, timeout=1)
            with pytest.raises(NetworkBlockedError):
                socket.getaddrinfo("api.binance.com", 443)
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with pytest.raises(NetworkBlockedError):
                raw.connect(address)
            raw.close()
            assert len(log.refused) == 3
        socket.create_connection(address, timeout=1).close()  # restored
    finally:
        server.close()


PREFETCHING_STRATEGY = """\
import socket
from typing import ClassVar

from pandas import DataFrame

from strategies.base import StrategyCategory, StrategyMetadata, TradAIStrategy

STORE = ("127.0.0.1", {port})


class Prefetching(TradAIStrategy):
    timeframe = "1h"
    stoploss = -0.05
    minimal_roi: ClassVar[dict[str, float]] = {{"0": 0.05}}
    fetched = False

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        return StrategyMetadata(
            name="Prefetching", version="1.0.0", description="Fetches from a store, then trades offline.",
            timeframe="1h", category=StrategyCategory.MOMENTUM,
        )

    def prefetch(self) -> None:
        socket.create_connection(STORE, timeout=5).close()
        self.fetched = True

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        if not self.fetched:
            raise RuntimeError("populate_indicators ran before prefetch")
        if {late}:
            socket.create_connection(STORE, timeout=5).close()
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe
"""


@pytest.mark.parametrize("late", [False, True], ids=["prefetch-only", "also-during-the-backtest"])
def test_only_the_strategys_prefetch_reaches_the_network(
    late: bool, candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    """On a deployment the ML strategy loads its model from an MLflow tracking server: it does so in its
    `prefetch` hook, the one step the offline worker runs with the network; a connection from anywhere
    else in the backtest (here populate_indicators, to the very same address) is still refused."""
    store = _listening_socket()
    store.settimeout(0)
    folder = tmp_path / "strategies"
    folder.mkdir()
    source = PREFETCHING_STRATEGY.format(port=store.getsockname()[1], late=late)
    (folder / "prefetching.py").write_text(source)
    (folder / "prefetching.yaml").write_text(
        "name: Prefetching\nversion: 1.0.0\ntimeframe: 1h\npairs: [BTC/USDT]\n"
    )
    resource = FreqtradeResource(work_dir=str(tmp_path / "work"))
    try:
        if late:
            with pytest.raises(BacktestError, match="network access is disabled in offline backtests"):
                resource.backtest("Prefetching", folder, candles, WEEK)
        else:
            result = resource.backtest("Prefetching", folder, candles, WEEK)
            assert result.strategy == "Prefetching"
        store.accept()[0].close()  # the prefetch's connection, and only that one
        with pytest.raises(BlockingIOError):
            store.accept()
    finally:
        store.close()


def test_contract_freqtrade_loads_markets_from_the_snapshot_with_no_network() -> None:
    """Pins the offline-markets hook: Freqtrade's async ccxt client is a `ccxt.async_support.binance`
    (`Exchange._api_async`) and loads markets through that class's `fetch`, exchangeInfo first. If a
    Freqtrade or ccxt upgrade changes either, this fails before any backtest silently goes online."""
    from freqtrade import __version__
    from freqtrade.enums import RunMode
    from freqtrade.resolvers import ExchangeResolver

    from tradai_core.backtest_config import build_freqtrade_config
    from tradai_core.strategy_config import StrategyConfig

    assert __version__ == "2026.9", "Freqtrade is pinned; re-check the offline-markets hook when it moves"
    snapshot = json.loads(DEFAULT_EXCHANGE_INFO.read_text())
    strategy = StrategyConfig(name="Contract", version="1.0.0", timeframe="1h", pairs=PAIRS)
    config: dict[str, Any] = build_freqtrade_config(strategy, RUN) | {"runmode": RunMode.BACKTEST}
    with network_guard() as network, offline_markets("binance", snapshot) as markets:
        exchange = ExchangeResolver.load_exchange(config, load_leverage_tiers=True)
    try:
        assert isinstance(exchange._api_async, ccxt_async.binance)
        assert "fetch" not in exchange._api_async.__class__.__dict__  # the class we patch serves it
        assert markets.answered[0] == "/api/v3/exchangeInfo"
        assert network.refused == [] and markets.refused == []
        symbols = {f"{s['baseAsset']}/{s['quoteAsset']}" for s in snapshot["symbols"]}
        assert set(exchange.markets) == symbols
        btc = exchange.markets["BTC/USDT"]
        assert btc["active"] and btc["spot"]
        assert btc["precision"]["price"] == 0.01 and btc["precision"]["amount"] == 0.00001
        assert btc["limits"]["cost"]["min"] == pytest.approx(5.0)
    finally:
        exchange.close()
    assert "fetch" not in ccxt_async.binance.__dict__  # restored


def test_offline_markets_refuse_anything_but_market_metadata() -> None:
    import asyncio

    import ccxt

    snapshot = json.loads(DEFAULT_EXCHANGE_INFO.read_text())
    client = ccxt_async.binance({"enableRateLimit": False})

    async def exercise() -> None:
        try:
            await client.load_markets()
            assert "ETH/USDT" in client.markets
            with pytest.raises(ccxt.ExchangeNotAvailable, match="no recorded answer"):
                await client.fetch_ticker("BTC/USDT")
        finally:
            await client.close()

    with network_guard() as network, offline_markets("binance", snapshot) as markets:
        asyncio.run(exercise())
    assert network.refused == [] and markets.refused[0].startswith("GET http")
    with pytest.raises(ValueError, match="only binance"), offline_markets("kraken", snapshot):
        pass


# --- result helpers -----------------------------------------------------------------------------------------


def _trade(pair: str, opened: str, closed: str, profit: float) -> Trade:
    return Trade(
        pair=pair,
        open_date=pd.Timestamp(opened, tz="UTC").to_pydatetime(),
        close_date=pd.Timestamp(closed, tz="UTC").to_pydatetime(),
        open_rate=1.0,
        close_rate=1.0 + profit / 100,
        amount=100.0,
        stake_amount=100.0,
        fee_open=0.001,
        fee_close=0.001,
        profit_abs=profit,
        profit_ratio=profit / 100,
        exit_reason="roi",
        duration_minutes=int((pd.Timestamp(closed) - pd.Timestamp(opened)).total_seconds() // 60),
    )


def test_equity_curve_has_one_point_per_close_time_and_exposure_counts_overlaps_once() -> None:
    trades = [
        _trade("BTC/USDT", "2021-01-01 00:00", "2021-01-02 00:00", 10.0),
        _trade("ETH/USDT", "2021-01-01 12:00", "2021-01-02 00:00", -4.0),
        _trade("BTC/USDT", "2021-01-03 00:00", "2021-01-04 00:00", -20.0),
    ]
    start = datetime(2021, 1, 1, tzinfo=UTC)
    curve = equity_curve_from_trades(trades, 1000.0, start)
    assert [(p.date.day, p.equity) for p in curve] == [(1, 1000.0), (2, 1006.0), (4, 986.0)]
    assert max_drawdown_abs(curve) == pytest.approx(20.0)
    assert market_exposure(trades, start, datetime(2021, 1, 5, tzinfo=UTC)) == pytest.approx(2 / 4)
    assert market_exposure([], start, datetime(2021, 1, 5, tzinfo=UTC)) == 0.0
    assert equity_curve_from_trades([], 1000.0, start)[0].equity == 1000.0


def test_unreadable_statistics_fail_with_a_clear_error(reference: SimpleNamespace) -> None:
    stats = dict(reference.result.freqtrade_stats)
    again = parse_backtest_stats(stats, "RsiMeanReversion", "2026.9")
    assert again.metrics == reference.result.metrics and isinstance(again.metrics, BacktestMetrics)
    del stats["sharpe"]
    with pytest.raises(BacktestError, match=r"cannot be read.*sharpe"):
        parse_backtest_stats(stats, "RsiMeanReversion", "2026.9")
