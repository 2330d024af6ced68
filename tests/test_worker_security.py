"""The shared Freqtrade worker under attack: one test per finding of the security review.

Its folder defaults to `<tmp>/tradai-<uid>` (world-writable /tmp), its job requests cross a socket to
another process, and it signals pids it is told about. Each test below stages one attack — a symbolic link
in place of the folder (before and after the check), a file squatting the folder's name, a lock file
naming an unrelated process, secrets in the requester's environment, a forged pid report — and shows it
fails. Real processes throughout: the real zygote, real `sleep` victims, a real backtest child.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import DEMO_CANDLES, load_recorded

from strategies.validation import STRATEGIES_DIR
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.hyperopt import StudySpec
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

WEEK = BacktestRunConfig(timerange="20210301-20210308", pairs=("BTC/USDT",))
CANARIES = {
    "TRADAI_EXCHANGE_API_KEY": "canary-api-key-3f9a",
    "TRADAI_EXCHANGE_API_SECRET": "canary-api-secret-77c1",
    "TRADAI_WEBHOOK_URL": "https://hooks.example.invalid/services/canary-webhook-token",
    "TRADAI_ARCTICDB_URI": "s3://canary-user:canary-password@bucket/arctic",
    "TRADAI_OPTUNA_STORAGE": "postgresql+psycopg2://canary:canary-db-password@db/optuna",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-0d2e",
    # a model strategy trades a booster file its parent exported: no tracking URI reaches a child either
    "TRADAI_MLFLOW_URI": "http://tradai:canary-mlflow-password@127.0.0.1:9/",
}


@pytest.fixture
def base() -> Iterator[Path]:
    """A fresh private folder under /tmp (short enough for socket paths); zygotes in it stopped after."""
    path = Path(tempfile.mkdtemp(prefix="tradai-sec-", dir="/tmp"))
    yield path
    for folder in path.iterdir():
        if folder.is_dir() and not folder.is_symlink() and any(folder.glob("*.sock.lock")):
            stop_shared_zygotes(folder)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    return {"BTC/USDT": load_recorded(DEMO_CANDLES, "BTC/USDT").loc["2021-01-01":"2021-03-09"]}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def _probe(zygote: SharedZygote, folder: Path) -> int:
    """Fork one child from `zygote` for a job file the worker rejects at once; its exit code."""
    job = folder / "probe.json"
    job.write_text("not a job", encoding="utf-8")
    request = ForkRequest(
        job_path=str(job),
        cwd=str(folder),
        stdout_path=str(folder / "probe.out"),
        stderr_path=str(folder / "probe.err"),
        env=_env(),
    )
    return zygote.run(request, timeout=120).returncode


def _victim() -> subprocess.Popen[bytes]:
    """A harmless process of ours that no worker has any business signalling (own session, like a
    backtest child, so a process-group kill would reach it)."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the folder ---------------------------------------------------------------------------------------------


def test_a_symbolic_link_at_the_folder_name_is_refused_even_to_a_private_folder_of_ours(base: Path) -> None:
    target = base / "target"
    target.mkdir(mode=0o700)
    link = base / "link"
    link.symlink_to(target)  # what anyone can plant at /tmp/tradai-<uid> before we first run
    with pytest.raises(ZygoteError, match="is a symbolic link"):
        private_folder(link)
    assert list(target.iterdir()) == []


def test_a_symbolic_link_swapped_in_after_the_check_redirects_nothing(base: Path) -> None:
    checked = base / "workers"
    checked.mkdir(mode=0o700)
    attacker = base / "attacker"
    attacker.mkdir(mode=0o700)
    zygote = shared_zygote_for(sys.executable, _env(), PROJECT_ROOT, checked, idle_timeout=120)
    moved = base / "moved"
    checked.rename(moved)  # the checked folder is swapped for a link while the zygote starts
    checked.symlink_to(attacker)
    assert _probe(zygote, base) == EXIT_BAD_JOB  # the backtest path still works ...
    assert list(attacker.iterdir()) == []  # ... and nothing — socket, lock, log — went through the link
    assert {p.suffix for p in moved.iterdir()} == {".sock", ".lock", ".log"}
    assert stop_shared_zygotes(moved) == [zygote.pid]


def test_a_file_squatting_the_default_folder_sends_backtests_to_a_fresh_interpreter(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    candles: dict[str, pd.DataFrame],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # as in CI, containers and cron
    monkeypatch.delenv("TRADAI_WORKER_DIR", raising=False)  # the suite's own folder (conftest) is not set
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    squat = tmp_path / f"tradai-{os.getuid()}"
    squat.write_text("squatted")
    resource = FreqtradeResource(start_method="shared", work_dir=str(tmp_path / "work"))
    caplog.set_level(logging.WARNING, logger="tradai_resources.freqtrade_backtester")
    resource.prestart()  # promises never to raise
    result = resource.backtest("RsiMeanReversion", STRATEGIES_DIR, candles, WEEK)
    assert result.timerange == WEEK.timerange
    assert any(f"{squat} is not a folder" in r.getMessage() for r in caplog.records)
    assert squat.read_text() == "squatted"


# --- tradai workers stop ------------------------------------------------------------------------------------


def test_workers_stop_leaves_alive_a_process_a_forged_lock_names(
    base: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from tradai.cli import main

    folder = base / "workers"
    folder.mkdir(mode=0o700)
    victim = _victim()
    lock = folder / "freqtrade-0123456789abcdef.sock.lock"
    lock.write_text(f"{victim.pid}\n")
    held = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # looks exactly like a zygote's held election lock
        assert main(["workers", "stop", "--folder", str(folder)]) == 0
        time.sleep(0.5)
        assert victim.poll() is None, "tradai workers stop killed an unrelated process"
        assert "stopped 0 shared worker(s)" in capsys.readouterr().out
        assert any("not a shared worker of this folder" in r.getMessage() for r in caplog.records)
    finally:
        os.close(held)
        _stop(victim)


def test_workers_stop_refuses_a_folder_that_is_a_symbolic_link(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tradai.cli import main

    target = base / "target"
    target.mkdir(mode=0o700)
    link = base / "link"
    link.symlink_to(target)
    assert main(["workers", "stop", "--folder", str(link)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err


# --- what reaches the child ---------------------------------------------------------------------------------

ENV_PROBE = """
    _pid = __import__("os").getpid()
    if _pid != {parent}:  # in the backtest child only (the parent imports the module to validate it)
        import json as _json, os as _os, pathlib as _pathlib
        _pathlib.Path({out!r}).write_text(_json.dumps({{
            "environ": dict(_os.environ),
            "proc": _pathlib.Path("/proc/self/environ").read_bytes().decode(errors="replace"),
        }}))
"""


def _env_probe_strategy(folder: Path, out: Path) -> Path:
    """RsiMeanReversion, copied into `folder`, writing the environment of the process that computes its
    indicators (as Python sees it, and as the process was started with) to `out`."""
    folder.mkdir()
    for suffix in (".py", ".yaml"):
        shutil.copy(STRATEGIES_DIR / f"rsi_mean_reversion{suffix}", folder)
    module = folder / "rsi_mean_reversion.py"
    hook = '        """RSI(14) and EMA(200) from TA-Lib."""\n'
    source = module.read_text()
    assert hook in source
    probe = ENV_PROBE.format(parent=os.getpid(), out=str(out)).replace("\n    ", "\n        ")
    module.write_text(source.replace(hook, hook + probe.lstrip("\n")))
    return folder


def _plant_canaries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)


def _assert_no_canary(out: Path) -> None:
    seen = json.loads(out.read_text())
    for value in CANARIES.values():
        assert value not in json.dumps(seen["environ"])
        assert value not in seen["proc"]  # nor in the environment the process was started with
    assert "TRADAI_MLFLOW_URI" not in seen["environ"]
    assert seen["environ"]["PATH"] == os.environ["PATH"]
    assert str(PROJECT_ROOT) in seen["environ"]["PYTHONPATH"]


def test_secrets_in_the_requesters_environment_never_reach_the_backtest_child(
    base: Path, monkeypatch: pytest.MonkeyPatch, candles: dict[str, pd.DataFrame]
) -> None:
    _plant_canaries(monkeypatch)
    out = base / "child_env.json"
    strategies = _env_probe_strategy(base / "strategies", out)
    folder = base / "workers"  # a zygote started now, by a requester holding the secrets
    resource = FreqtradeResource(
        start_method="shared", shared_worker_folder=str(folder), work_dir=str(base / "work")
    )
    assert resource.backtest("RsiMeanReversion", strategies, candles, WEEK).timerange == WEEK.timerange
    _assert_no_canary(out)


def test_secrets_in_the_requesters_environment_never_reach_a_hyperopt_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candles: dict[str, pd.DataFrame]
) -> None:
    _plant_canaries(monkeypatch)
    out = tmp_path / "worker_env.json"
    strategies = _env_probe_strategy(tmp_path / "strategies", out)
    study = HyperoptResource(storage_url=f"sqlite:///{tmp_path / 'study.db'}", work_dir=str(tmp_path / "w"))
    spec = StudySpec(n_trials=1, workers=1, seed=1, min_trades=0, startup_trials=1)
    assert study.optimize("RsiMeanReversion", strategies, candles, WEEK, spec).trials_run == 1
    _assert_no_canary(out)


def test_a_fork_request_never_carries_a_secret_over_the_socket() -> None:
    request = ForkRequest(
        job_path="job.json", cwd=".", stdout_path="out", stderr_path="err", env={**os.environ, **CANARIES}
    )
    wire = request.model_dump_json()
    assert not [value for value in CANARIES.values() if value in wire]
    assert request.env["PATH"] == os.environ["PATH"]


# --- a forged pid report ------------------------------------------------------------------------------------

FORGER = """
import json, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(8)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    request = conn.recv(1 << 20)
    if request:  # a job: claim a pid that is none of our children, then vanish
        conn.sendall(json.dumps({"pid": int(sys.argv[2])}).encode() + b"\\n")
    conn.close()
"""


def test_a_pid_a_forged_worker_reports_is_not_signalled(base: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = base / "workers"
    folder.mkdir(mode=0o700)
    victim = _victim()
    path = shared_socket_path(folder, sys.executable, _env(), PROJECT_ROOT)
    forger = subprocess.Popen(
        [sys.executable, "-c", FORGER, str(path), str(victim.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert forger.stdout is not None and forger.stdout.readline().strip() == "ready"
        zygote = shared_zygote_for(sys.executable, _env(), PROJECT_ROOT, folder, idle_timeout=60)
        with pytest.raises(ZygoteError, match="exited while its child ran"):
            _probe(zygote, base)
        time.sleep(0.5)
        assert victim.poll() is None, "the client killed the process a forged worker named"
        assert any(
            f"reported pid {victim.pid}, which is not its child" in r.getMessage() for r in caplog.records
        )
    finally:
        _stop(forger)
        _stop(victim)


@pytest.mark.parametrize("damage", ["fields", "truncated"])
def test_an_invalid_job_file_error_never_quotes_the_storage_password(tmp_path: Path, damage: str) -> None:
    password = "s3cr3t-Pa55-canary"  # planted, to be looked for
    job = {  # a study-worker job with a wrong and a missing field; its storage URL comes last
        "argv": ["hyperopt"],
        "strategy": "RsiMeanReversion",
        "exchange": "binance",
        "exchange_info_path": str(tmp_path / "info.json"),
        "result_path": str(tmp_path / "result.json"),
        "error_path": str(tmp_path / "error.json"),
        "study_name": "s",
        "n_trials": "many",
        "sampler_seed": 1,
        "objective": "sharpe",
        "search_space": {"strategy": "RsiMeanReversion", "spaces": ["buy"], "parameters": []},
        "storage_url": f"postgresql+psycopg2://tradai@db.internal:5432/optuna?password={password}",
    }
    text = json.dumps(job)
    if damage == "truncated":  # a job file cut short right after the password (a full disk, a crash)
        text = text[: text.index(password) + len(password)]
    path = tmp_path / "job.json"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "tradai_resources.workers.hyperopt_child", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_BAD_JOB
    assert "invalid job file" in done.stderr
    if damage == "fields":
        assert "min_trades" in done.stderr and "n_trials" in done.stderr  # still says what is wrong
    else:
        assert "JSON" in done.stderr
    assert password not in done.stderr and password not in done.stdout
    assert not (tmp_path / "error.json").exists()
