"""The shared Freqtrade worker (`start_method="shared"`): one pre-loaded zygote per user and interpreter that
every process on the machine forks its backtests from.

Each test gets a private socket folder of its own, so the zygotes here never meet the user's or each
other's, and stops them at the end. The backtests are real; the jobs that only probe the fork path are
job files the worker rejects at once (exit code 2), which still go through election, socket and fork.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from conftest import DEMO_CANDLES, load_recorded

from strategies.validation import STRATEGIES_DIR
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.settings import PROJECT_ROOT
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.workers.jobs import EXIT_BAD_JOB
from tradai_resources.workers.protocol import ForkRequest
from tradai_resources.workers.zygote_client import (
    SharedZygote,
    ZygoteError,
    private_folder,
    shared_socket_path,
    shared_zygote_for,
    stop_shared_zygotes,
)

PAIRS = ("BTC/USDT", "ETH/USDT")
RUN = BacktestRunConfig(timerange="20210301-20210401", pairs=PAIRS)


@pytest.fixture
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private socket folder short enough for a Unix socket path; its zygotes are stopped afterwards."""
    path = Path(f"/tmp/tradai-test-{os.getpid()}-{time.monotonic_ns()}")
    path.mkdir(mode=0o700)
    yield path
    stop_shared_zygotes(path)
    for leftover in path.iterdir():
        leftover.unlink()
    path.rmdir()


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    return {pair: load_recorded(DEMO_CANDLES, pair).loc["2021-01-01":"2021-04-01"] for pair in PAIRS}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **extra}


def _probe(zygote: SharedZygote, tmp_path: Path, name: str = "probe") -> int:
    """Fork one child from `zygote` for a job file the worker rejects; its exit code."""
    job = tmp_path / f"{name}.json"
    job.write_text("not a job", encoding="utf-8")
    request = ForkRequest(
        job_path=str(job),
        cwd=str(tmp_path),
        stdout_path=str(tmp_path / f"{name}.out"),
        stderr_path=str(tmp_path / f"{name}.err"),
        env=_env(),
    )
    return zygote.run(request, timeout=60).returncode


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


SECOND_PROCESS = """
import sys
from pathlib import Path
import pandas as pd
from strategies.validation import STRATEGIES_DIR
from tradai_core.backtest_config import BacktestRunConfig
from tradai_resources.freqtrade_backtester import FreqtradeResource

folder, work, data = sys.argv[1:4]
pairs = ("BTC/USDT", "ETH/USDT")
candles = {p: pd.read_parquet(Path(data) / f"{p.replace('/', '_')}.parquet") for p in pairs}
resource = FreqtradeResource(start_method="shared", shared_worker_folder=folder, work_dir=work)
result = resource.backtest(
    "EmaAdxTrend", STRATEGIES_DIR, candles,
    BacktestRunConfig(timerange="20210301-20210401", pairs=pairs),
)
print(result.metrics.trade_count, result.metrics.total_profit_abs)
"""


def test_backtests_from_different_processes_fork_from_one_shared_worker_with_identical_results(
    folder: Path, tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    shared = FreqtradeResource(
        start_method="shared", shared_worker_folder=str(folder), work_dir=str(tmp_path)
    )
    private = FreqtradeResource(start_method="prefork", work_dir=str(tmp_path))
    ours = shared.backtest("EmaAdxTrend", STRATEGIES_DIR, candles, RUN)
    assert ours.trades == private.backtest("EmaAdxTrend", STRATEGIES_DIR, candles, RUN).trades
    assert ours.metrics == private.backtest("EmaAdxTrend", STRATEGIES_DIR, candles, RUN).metrics

    (lock,) = folder.glob("*.sock.lock")
    serving = int(lock.read_text())
    data = tmp_path / "candles"
    data.mkdir()
    for pair, frame in candles.items():
        frame.to_parquet(data / f"{pair.replace('/', '_')}.parquet")
    other = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(folder), str(tmp_path), str(data)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    trades, profit = other.stdout.split()
    assert (int(trades), float(profit)) == (ours.metrics.trade_count, ours.metrics.total_profit_abs)
    assert int(lock.read_text()) == serving  # the second process found the first one's worker
    assert not _wait_gone(serving, timeout=0.5)  # and it outlives both users, until idle


def test_zygotes_started_at_once_for_one_socket_elect_one_and_the_others_step_aside(
    folder: Path, tmp_path: Path
) -> None:
    path = shared_socket_path(folder, sys.executable, _env(), PROJECT_ROOT)
    users = [SharedZygote(sys.executable, _env(), PROJECT_ROOT, path, idle_timeout=60) for _ in range(3)]
    for user in users:
        user.start()  # three processes race for the socket
    with ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda i: _probe(users[i], tmp_path, f"p{i}"), range(3)))
    assert codes == [EXIT_BAD_JOB] * 3
    assert "invalid job file" in (tmp_path / "p0.err").read_text()  # the child ran the worker's main
    assert len({user.pid for user in users}) == 1
    spawned = [user._spawned for user in users]
    deadline = time.monotonic() + 20
    while sum(p is not None and p.poll() is None for p in spawned) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the losers leave as soon as they see the winner answer
    assert [p is not None and p.poll() for p in spawned].count(None) == 1
    assert all(p is not None and p.poll() in (None, 0) for p in spawned)
    assert sorted(folder.iterdir()) == sorted(
        [path, path.with_name(path.name + ".lock"), path.with_name(path.name + ".log")]
    )  # the losers removed their start-up logs


def test_an_idle_shared_worker_stops_and_the_next_backtest_starts_a_new_one(
    folder: Path, tmp_path: Path
) -> None:
    zygote = shared_zygote_for(sys.executable, _env(), PROJECT_ROOT, folder, idle_timeout=1.0)
    assert _probe(zygote, tmp_path) == EXIT_BAD_JOB
    first = zygote.pid
    assert first is not None and _wait_gone(first)
    assert not zygote.socket_path.exists()
    assert _probe(zygote, tmp_path) == EXIT_BAD_JOB  # started again, transparently
    assert zygote.pid not in (None, first)


def test_a_shared_worker_on_outdated_code_hands_over_to_one_on_the_current_code(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    module = site / "sitecustomize.py"  # imported by the zygote at start-up, like every preloaded module
    module.write_text("VERSION = 1\n", encoding="utf-8")
    env = _env(PYTHONPATH=f"{site}{os.pathsep}{PROJECT_ROOT}")
    zygote = SharedZygote(
        sys.executable, env, PROJECT_ROOT, shared_socket_path(folder, sys.executable, env, PROJECT_ROOT), 60
    )
    assert _probe(zygote, tmp_path) == EXIT_BAD_JOB
    outdated = zygote.pid
    module.write_text("VERSION = 2 # edited\n", encoding="utf-8")
    caplog.set_level(logging.INFO, logger="tradai_resources.workers.zygote_client")
    assert _probe(zygote, tmp_path) == EXIT_BAD_JOB  # refused as stale, then run by a fresh zygote
    assert zygote.pid not in (None, outdated)
    assert outdated is not None and _wait_gone(outdated)
    assert any(f"outdated code ({module} changed)" in r.getMessage() for r in caplog.records)


def test_stopping_shared_workers_ends_them_and_frees_the_socket(folder: Path, tmp_path: Path) -> None:
    zygote = shared_zygote_for(sys.executable, _env(), PROJECT_ROOT, folder, idle_timeout=600)
    assert _probe(zygote, tmp_path) == EXIT_BAD_JOB
    assert stop_shared_zygotes(folder) == [zygote.pid]
    assert not zygote.socket_path.exists()
    assert stop_shared_zygotes(folder) == []  # nothing left to stop


def test_a_socket_folder_other_users_can_enter_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "open"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(ZygoteError, match="mode 0700"):
        private_folder(shared)


def test_without_a_usable_shared_worker_the_backtest_runs_in_a_fresh_interpreter(
    tmp_path: Path, candles: dict[str, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "open"
    shared.mkdir()
    shared.chmod(0o755)
    resource = FreqtradeResource(
        start_method="shared", shared_worker_folder=str(shared), work_dir=str(tmp_path)
    )
    week = BacktestRunConfig(timerange="20210301-20210308", pairs=("BTC/USDT",))
    result = resource.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, week)
    assert result.timerange == week.timerange
    assert any("must belong to this user with mode 0700" in r.getMessage() for r in caplog.records)
    assert not list(shared.iterdir())  # no socket was opened there


def test_the_code_location_forks_backtests_from_the_shared_worker_unless_configured_otherwise(
    tmp_path: Path,
) -> None:
    from tradai.definitions import build_definitions
    from tradai_core.settings import TradAISettings

    def freqtrade(settings: TradAISettings) -> FreqtradeResource:
        resource = build_definitions(settings).resources["freqtrade"]
        assert isinstance(resource, FreqtradeResource)
        return resource

    default = freqtrade(TradAISettings(home=tmp_path, worker_dir=tmp_path / "workers"))
    assert (default.start_method, default.shared_worker_folder) == ("shared", str(tmp_path / "workers"))
    assert freqtrade(TradAISettings(home=tmp_path, backtest_workers="prefork")).start_method == "prefork"
    for settings in (  # study-workers fork from the same worker
        TradAISettings(home=tmp_path, worker_dir=tmp_path / "workers"),
        TradAISettings(home=tmp_path, backtest_workers="prefork"),
    ):
        hyperopt = build_definitions(settings).resources["hyperopt"]
        assert isinstance(hyperopt, HyperoptResource)
        assert hyperopt.launcher() == freqtrade(settings).launcher()


def test_tradai_workers_stop_ends_the_shared_workers_of_the_configured_folder(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tradai.cli import main

    zygote = shared_zygote_for(sys.executable, _env(), PROJECT_ROOT, folder, idle_timeout=600)
    assert _probe(zygote, tmp_path) == EXIT_BAD_JOB
    monkeypatch.setenv("TRADAI_WORKER_DIR", str(folder))
    assert main(["workers", "stop"]) == 0
    assert f"stopped 1 shared worker(s) in {folder}: [{zygote.pid}]" in capsys.readouterr().out
    assert not zygote.socket_path.exists()
