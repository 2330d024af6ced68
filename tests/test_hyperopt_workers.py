"""Study-workers fork from the pre-loaded Freqtrade worker (zygote) backtests fork from, each still a process
of its own: one shared worker for both, a failing or overdue study-worker killed with the others, the job
file's kind choosing what a forked child runs. Real zygotes, real Freqtrade, real Optuna on SQLite.

Each test that starts a shared worker gives it a private socket folder of its own and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import DEMO_CANDLES, load_recorded

from strategies.validation import STRATEGIES_DIR
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.errors import BacktestError
from tradai_core.hyperopt import StudySpec
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.workers.jobs import JOB_MODULES, BacktestJob, job_module
from tradai_resources.workers.launch import ChildLauncher, child_env
from tradai_resources.workers.processes import process_info
from tradai_resources.workers.protocol import ForkRequest
from tradai_resources.workers.zygote_client import ZygoteStoppedError, stop_shared_zygotes

WEEK = BacktestRunConfig(timerange="20210301-20210308", pairs=("BTC/USDT",))
ONE_EACH = StudySpec(n_trials=2, workers=2, seed=3, min_trades=0, startup_trials=2)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A private socket folder under /tmp (short enough for a socket path); its workers stopped after."""
    path = Path(tempfile.mkdtemp(prefix="tradai-how-", dir="/tmp"))
    yield path
    stop_shared_zygotes(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    return {"BTC/USDT": load_recorded(DEMO_CANDLES, "BTC/USDT").loc["2021-01-01":"2021-03-09"]}


PROBE = """
    _os = __import__("os")
    if _os.getpid() != {parent}:  # in a child only (the parent imports the module to validate it)
        with open({log!r}, "a") as _log:
            _log.write(f"{{_os.getpid()}} {{_os.getppid()}}\\n")
{extra}"""

CRASH_ONE_HANG_THE_OTHER = """
        try:  # the first study-worker here crashes once the other is in, the other hangs
            _os.close(_os.open({marker!r}, _os.O_CREAT | _os.O_EXCL))
        except FileExistsError:
            __import__("time").sleep(600)
        else:
            _deadline = __import__("time").monotonic() + 120
            while len(set(open({log!r}).read().split("\\n")) - {{""}}) < 2:
                assert __import__("time").monotonic() < _deadline, "the other worker never came"
                __import__("time").sleep(0.05)
            raise RuntimeError("study-worker crashed on purpose")
"""

HANG = """
        __import__("time").sleep(600)
"""


def _probe_strategy(folder: Path, log: Path, extra: str = "") -> Path:
    """RsiMeanReversion, copied into `folder`, logging "pid ppid" of each child process that computes its
    indicators to `log`, then running `extra` there."""
    folder.mkdir()
    for suffix in (".py", ".yaml"):
        shutil.copy(STRATEGIES_DIR / f"rsi_mean_reversion{suffix}", folder)
    module = folder / "rsi_mean_reversion.py"
    hook = '        """RSI(14) and EMA(200) from TA-Lib."""\n'
    source = module.read_text()
    assert hook in source
    probe = PROBE.format(parent=os.getpid(), log=str(log), extra=extra).replace("\n    ", "\n        ")
    module.write_text(source.replace(hook, hook + probe.lstrip("\n")))
    return folder


def _processes(log: Path) -> dict[int, int]:
    """{pid: parent pid} of every child the probe strategy ran in."""
    return {int(pid): int(ppid) for pid, ppid in (line.split() for line in log.read_text().splitlines())}


def _loaded(pid: int, library: str) -> bool:
    """True if process `pid` has a shared library whose path contains `library` mapped."""
    return library in Path(f"/proc/{pid}/maps").read_text()


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = process_info(pid)
        if info is None or info.zombie:
            return True
        time.sleep(0.05)
    return False


def test_study_workers_fork_from_the_shared_worker_backtests_fork_from(
    folder: Path, tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    log = tmp_path / "processes.txt"
    strategies = _probe_strategy(tmp_path / "strategies", log)
    shared = {"start_method": "shared", "shared_worker_folder": str(folder)}
    backtester = FreqtradeResource(work_dir=str(tmp_path / "bt"), **shared)
    assert backtester.backtest("RsiMeanReversion", strategies, candles, WEEK).timerange == WEEK.timerange
    (backtest_parent,) = set(_processes(log).values())
    log.unlink()
    # a zygote that ran only backtests never loaded a study-worker's Numba kernel (LLVM): it starts faster
    assert not _loaded(backtest_parent, "llvmlite")

    study = HyperoptResource(
        storage_url=f"sqlite:///{tmp_path / 'study.db'}", work_dir=str(tmp_path / "ho"), **shared
    ).optimize("RsiMeanReversion", strategies, candles, WEEK, ONE_EACH)

    assert study.trials_run == 2
    workers = _processes(log)
    assert len(workers) == 2 and os.getpid() not in workers  # two processes of their own
    (lock,) = folder.glob("*.sock.lock")
    assert set(workers.values()) == {backtest_parent} == {int(lock.read_text())}  # forked from the one
    assert all(_gone(pid) for pid in workers)  # and gone with their job
    assert _loaded(backtest_parent, "llvmlite")  # loaded by the zygote for its first study, then kept


def test_a_failing_study_worker_stops_the_other_forked_one(
    tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    log = tmp_path / "processes.txt"
    extra = CRASH_ONE_HANG_THE_OTHER.format(marker=str(tmp_path / "first"), log=str(log))
    strategies = _probe_strategy(tmp_path / "strategies", log, extra)
    resource = HyperoptResource(
        storage_url=f"sqlite:///{tmp_path / 'study.db'}",
        work_dir=str(tmp_path / "ho"),
        start_method="prefork",
    )
    started = time.monotonic()
    with pytest.raises(BacktestError, match="study-worker crashed on purpose"):
        resource.optimize("RsiMeanReversion", strategies, candles, WEEK, ONE_EACH)
    assert time.monotonic() - started < 300, "the hanging worker was waited for"
    workers = _processes(log)
    assert len(workers) == 2
    zygote = resource.launcher().zygote()
    assert set(workers.values()) == {zygote.pid}  # forked children, not fresh interpreters
    assert all(_gone(pid) for pid in workers)  # the hanging one was killed
    assert list((tmp_path / "ho").iterdir()) == []


def test_a_forked_study_worker_over_the_time_limit_is_killed(
    tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    log = tmp_path / "processes.txt"
    strategies = _probe_strategy(tmp_path / "strategies", log, HANG)
    resource = HyperoptResource(
        storage_url=f"sqlite:///{tmp_path / 'study.db'}",
        work_dir=str(tmp_path / "ho"),
        start_method="prefork",
        timeout_seconds=20,
    )
    one = ONE_EACH.model_copy(update={"n_trials": 1, "workers": 1})
    with pytest.raises(BacktestError, match=r"timed out after 20 s and was stopped"):
        resource.optimize("RsiMeanReversion", strategies, candles, WEEK, one)
    ((pid, parent),) = _processes(log).items()
    zygote = resource.launcher().zygote()
    assert parent == zygote.pid and _gone(pid)
    assert zygote.usable  # only the study-worker died


def test_the_job_files_kind_names_the_module_that_runs_it(tmp_path: Path) -> None:
    job = BacktestJob(
        argv=("backtesting",),
        strategy="S",
        exchange="binance",
        exchange_info_path="info.json",
        result_path="result.json",
        error_path="error.json",
    )
    path = tmp_path / "job.json"
    path.write_text(job.model_dump_json())
    assert json.loads(path.read_text())["kind"] == "backtest"
    assert job_module(path) == JOB_MODULES["backtest"] == "tradai_resources.workers.backtest_child"
    path.write_text(json.dumps({"kind": "hyperopt"}))
    assert job_module(path) == "tradai_resources.workers.hyperopt_child"
    path.write_text("not a job")  # the backtest worker says what is wrong with it
    assert job_module(path) == "tradai_resources.workers.backtest_child"
    path.write_text(json.dumps({"kind": "mine"}))
    with pytest.raises(ValueError, match="names the kind 'mine'; known kinds: backtest, hyperopt"):
        job_module(path)


def test_a_forked_child_is_killed_when_its_requester_says_stop(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    os.mkfifo(job)  # the child blocks reading its job file, forever
    request = ForkRequest(
        job_path=str(job),
        cwd=str(tmp_path),
        stdout_path=str(tmp_path / "out"),
        stderr_path=str(tmp_path / "err"),
        env=child_env(),
    )
    zygote = ChildLauncher(python=sys.executable, start_method="prefork").zygote()
    zygote.wait_ready()
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ZygoteStoppedError):
        zygote.run(request, timeout=600, stop=stop)
    assert time.monotonic() - started < 10
    assert zygote.usable
    assert not Path(f"/proc/{zygote.pid}/task/{zygote.pid}/children").read_text().split()
