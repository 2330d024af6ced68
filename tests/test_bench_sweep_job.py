"""The sweep benchmark's Dagster job runs every strategy as its own step and gets the resource's results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest

from bench import sweep_job
from strategies.validation import STRATEGIES_DIR
from tests.conftest import DEMO_CANDLES
from tradai_core.backtest_config import BacktestRunConfig
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.workers.zygote_client import stop_shared_zygotes

STRATEGIES = ["EmaAdxTrend", "RsiMeanReversion"]
PAIRS = ("BTC/USDT", "ETH/USDT")
TIMERANGE = "20210301-20210501"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("start_method", "shared"),
    [("spawn", False), ("forkserver", True)],
    ids=["dagster-defaults", "forkserver-and-shared-worker"],
)
def test_the_sweep_job_backtests_each_strategy_in_its_own_step_like_the_resource(
    start_method: Literal["spawn", "forkserver"], shared: bool, tmp_path: Path, test_worker_dir: Path
) -> None:
    workers = test_worker_dir / f"sweep-{start_method}"
    folder = workers if shared else None
    config = sweep_job.run_config(
        STRATEGIES, DEMO_CANDLES, PAIRS, TIMERANGE, tmp_path / "work", start_method, folder
    )
    done = sweep_job.launch(STRATEGIES, config, tmp_path, timeout=600)

    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "RUN_SUCCESS" in log
    run = BacktestRunConfig(timerange=TIMERANGE, pairs=PAIRS)
    candles = sweep_job.recorded_candles(DEMO_CANDLES, PAIRS, run)
    resource = FreqtradeResource(work_dir=str(tmp_path / "direct"))
    for name in STRATEGIES:
        found = re.search(rf"backtest_{name} - {name}: (\d+) trades", log)
        assert found, f"no result logged by the step of {name}"
        expected = resource.backtest(name, STRATEGIES_DIR, candles, run).metrics.trade_count
        assert int(found.group(1)) == expected
    if shared:  # the steps met at one shared worker, still serving
        (lock,) = workers.glob("*.sock.lock")
        assert stop_shared_zygotes(workers) == [int(lock.read_text())]
