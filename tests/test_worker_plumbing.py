"""The worker plumbing's shared pieces: one worker-mode default, one shared-worker folder for the resource
and `tradai workers stop`, and one way to kill a child with everything it started. Real processes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradai_core.settings import DEFAULT_WORKER_MODE, TradAISettings
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.workers.processes import kill_group, process_info
from tradai_resources.workers.zygote_client import BOOT_TIMEOUT_S, stop_shared_zygotes


def test_the_resource_and_the_settings_default_to_the_same_worker_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRADAI_BACKTEST_WORKERS", raising=False)
    assert FreqtradeResource().start_method == TradAISettings().backtest_workers == DEFAULT_WORKER_MODE
    assert DEFAULT_WORKER_MODE == "shared"  # what the code location has always run


@pytest.fixture
def worker_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`TRADAI_WORKER_DIR`: a fresh folder under /tmp (short enough for socket paths), its workers stopped."""
    folder = Path(tempfile.mkdtemp(prefix="tradai-plumb-", dir="/tmp"))
    monkeypatch.setenv("TRADAI_WORKER_DIR", str(folder))
    yield folder
    stop_shared_zygotes(folder)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_resource_given_no_folder_starts_its_worker_where_tradai_workers_stop_looks(
    worker_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tradai.cli import main

    FreqtradeResource(work_dir=str(tmp_path / "work")).prestart()  # no start_method, no folder: defaults
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while not list(worker_dir.glob("freqtrade-*.sock")):  # the socket appears once the worker is ready
        assert time.monotonic() < deadline, f"no shared worker answered in {worker_dir}"
        time.sleep(0.1)
    assert main(["workers", "stop"]) == 0  # no --folder either
    assert f"stopped 1 shared worker(s) in {worker_dir}" in capsys.readouterr().out


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` no longer runs (a zombie counts as gone: it was killed, only not reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = process_info(pid)
        if info is None or info.zombie:
            return True
        time.sleep(0.05)
    return False


def test_kill_group_kills_a_child_in_its_own_session_with_everything_it_started() -> None:
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        grandchild = int(leader.stdout.readline())
        kill_group(leader.pid)
        assert leader.wait(timeout=10) == -9
        assert _gone(grandchild), "the child's own child outlived the kill"
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


def test_kill_group_kills_a_child_that_leads_no_group_yet() -> None:
    child = subprocess.Popen(["sleep", "60"])  # in our process group, as a forked child before its setsid
    try:
        kill_group(child.pid)
        assert child.wait(timeout=10) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
