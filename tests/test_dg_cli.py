"""The project through Dagster's current CLI, `dg`, as a user runs it: `dg check defs`, `dg list defs`, and
`dg launch` of candle partitions and of a backtest over a universe wider than the demo's, against the
loopback replay server. Each command is a real subprocess over a private DAGSTER_HOME and TRADAI_HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance

from tradai_replay.server import ReplayServer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"
SUPERSEDED = "superseded"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
"""Run config: every step in the run's own process (no step subprocess to start on a busy machine)."""


def dg_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a `dg` command: a private Dagster instance (with the project's dagster.yaml) and
    TradAI home, this interpreter's venv as the active one, and the given TRADAI_* settings."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRADAI_")}
    env.update(
        DAGSTER_HOME=str(dagster_home),
        VIRTUAL_ENV=sys.prefix,
        TRADAI_HOME=str(home / "tradai"),
        TRADAI_WORKER_DIR=os.environ.get("TRADAI_WORKER_DIR", str(home / "workers")),
        **settings,
    )
    return env


def dg(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `dg ARGS` in the project root; fail the test with its output when it fails."""
    done = subprocess.run(
        [str(DG), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"dg {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    assert SUPERSEDED not in (done.stdout + done.stderr).lower(), done.stderr[-2000:]
    return done


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The offline settings (`offline.env`) over a private home, with no replay server."""
    yield dg_env(tmp_path, TRADAI_HISTORY_START="2022-07-01", TRADAI_HISTORY_END="2022-10-12")


def test_dg_check_and_list_defs(offline: dict[str, str]) -> None:
    checked = dg(offline, "check", "defs")
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = dg(offline, "list", "defs", "--json")
    defs = json.loads(listed.stdout)
    keys = {asset["asset_key"] for asset in defs["assets"]}
    assert {"ohlcv/BTC_USDT", "backtest_plan", "backtest_report"} <= keys
    assert "backtest_reports_job" in {job["name"] for job in defs["jobs"]}
    assert "backtest_plan:data_coverage" in {check["key"] for check in defs["asset_checks"]}


@pytest.mark.slow
def test_dg_launch_a_candle_partition(tmp_path: Path, demo_candles_dir: Path) -> None:
    with ReplayServer(demo_candles_dir) as server:
        env = dg_env(
            tmp_path,
            TRADAI_EXCHANGE_BASE_URL=server.base_url,
            TRADAI_HISTORY_START="2022-07-01",
            TRADAI_HISTORY_END="2022-10-12",
            TRADAI_PAIRS="BTC/USDT",
        )
        dg(env, "launch", "--assets", "ohlcv/BTC_USDT", "--partition", "2022-08-01")
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        done = instance.get_materialized_partitions(AssetKey(["ohlcv", "BTC_USDT"]))
    assert done == {"2022-08-01"}


@pytest.mark.slow
def test_dg_launch_backtests_a_universe_beyond_the_demo_pairs(
    tmp_path: Path, shared_candles_dir: Path
) -> None:
    """SOL/USDT and BNB/USDT (outside the bundled exchangeInfo snapshot) ingested through the replay server,
    then backtested from the CLI with run-config pairs and timerange; the report names those pairs."""
    universe = "BTC/USDT,SOL/USDT,BNB/USDT"
    with ReplayServer(shared_candles_dir) as server:
        env = dg_env(
            tmp_path,
            TRADAI_EXCHANGE_BASE_URL=server.base_url,
            TRADAI_HISTORY_START="2022-07-01",
            TRADAI_HISTORY_END="2022-10-12",
            TRADAI_PAIRS=universe,
        )
        candles = ",".join(f"ohlcv/{pair.replace('/', '_')}" for pair in universe.split(","))
        dg(
            env,
            "launch",
            "--assets",
            candles,
            "--partition-range",
            "2022-07-22...2022-08-14",  # the window, and RsiMeanReversion's 200 startup candles before it
            "--config-json",
            json.dumps(IN_PROCESS),
            timeout=1800,
        )
    config = {"pairs": ["SOL/USDT", "BNB/USDT", "BTC/USDT"], "timerange": "20220801-20220815"}
    # no execution config, as a user types it: the default executor runs a backtest in the run's process
    run_config = {"ops": {"backtest_plan": {"config": config}, "backtest_report": {"config": config}}}
    dg(
        env,
        "launch",
        "--assets",
        "backtest_plan,backtest_report",
        "--partition",
        "RsiMeanReversion",
        "--config-json",
        json.dumps(run_config),
        timeout=1800,
    )
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [event] = instance.fetch_materializations(AssetKey("backtest_report"), limit=1).records
        engine = [
            entry.message
            for entry in instance.all_logs(event.run_id)
            if entry.dagster_event is not None
            and entry.dagster_event.event_type == DagsterEventType.ENGINE_EVENT
        ]
    assert any(message.startswith("Executing steps in process") for message in engine), engine
    metadata = event.asset_materialization.metadata
    assert metadata["pairs"].value == "SOL/USDT, BNB/USDT, BTC/USDT"
    assert metadata["timerange"].value == "20220801-20220815"
    assert {"ohlcv.binance.1h/SOL_USDT", "ohlcv.binance.1h/BNB_USDT"} <= set(metadata["data_versions"].value)
