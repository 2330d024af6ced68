"""Shared fixtures: the recorded real candles, and where they live."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster._core.storage.defs_state import base as defs_state
from dagster._core.storage.defs_state.base import DefsStateStorage

from tradai_core.candles import normalize_candles
from tradai_resources.workers.zygote_client import stop_shared_zygotes

pytest_plugins = ["tests.replay_fixtures"]  # replay_server, replay_client, make_binance_client

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = PROJECT_ROOT / "demo_data"
DEMO_CANDLES = DEMO_DATA / "binance_spot_1h"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SHARED_CANDLES = SHARED_DATA / "binance_spot_1h"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite runs in random order (pytest-randomly); its header names the seed, but `-q` drops the
    header, so say it then too: a failure that depends on order is reproduced with that seed."""
    config = session.config
    seed = getattr(config.option, "randomly_seed", None)  # absent under `-p no:randomly`
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if seed is not None and reporter is not None and config.get_verbosity() < 0:
        reporter.write_line(f"Using --randomly-seed={seed}")


@pytest.fixture(scope="session", autouse=True)
def no_defs_state_storage_of_a_collected_instance() -> Iterator[None]:
    """Dagster 1.13 keeps a "current defs-state storage" (a ContextVar) set by `with instance:`; when the
    context that set it is finalised late (a generator closed when the garbage collector gets to it, after
    an exception), it restores the storage of an instance long gone, at any moment of a later test, and the
    next `Definitions` load fails with "Attempted to resolve undefined DagsterInstance weakref" (CI, at two
    random orders). In this suite such a storage counts as none: there is no instance to read state from.
    Production processes keep one instance for their lifetime and never meet it."""
    original = DefsStateStorage.__dict__["get"].__func__

    def live_only(cls: type[DefsStateStorage]) -> DefsStateStorage | None:
        storage = original(cls)
        reference = getattr(storage, "_instance_weakref", None)
        return None if reference is not None and reference() is None else storage

    DefsStateStorage.get = classmethod(live_only)  # type: ignore[method-assign,assignment]
    yield
    DefsStateStorage.get = classmethod(original)  # type: ignore[method-assign,assignment]


@pytest.fixture(autouse=True)
def no_leaked_dagster_instance() -> Iterator[None]:
    """Clear Dagster's "current defs-state storage" before and after each test as well: a test that enters
    an instance and never exits it (or fails on run config inside `execute_in_process`) must not leave its
    live storage to the tests after it."""
    defs_state._current_storage.set(None)
    yield
    defs_state._current_storage.set(None)


@pytest.fixture(scope="session", autouse=True)
def test_worker_dir() -> Iterator[Path]:
    """A private folder for the shared Freqtrade workers the suite's Definitions start (`TRADAI_WORKER_DIR`,
    inherited by the runs and CLIs it launches), stopped when the session ends: none outlives the tests."""
    folder = Path(tempfile.mkdtemp(prefix="tradai-workers-", dir="/tmp"))
    previous = os.environ.get("TRADAI_WORKER_DIR")
    os.environ["TRADAI_WORKER_DIR"] = str(folder)
    yield folder
    stop_shared_zygotes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if previous is None:
        os.environ.pop("TRADAI_WORKER_DIR", None)
    else:
        os.environ["TRADAI_WORKER_DIR"] = previous


@pytest.fixture(scope="session")
def shared_candles_dir() -> Path:
    """`../shared/data/binance_spot_1h` (12 pairs, 2017–2022); tests needing it skip on a bare clone."""
    if not SHARED_CANDLES.is_dir():
        pytest.skip("../shared/data is not beside this clone")
    return SHARED_CANDLES


@pytest.fixture(scope="session")
def demo_candles_dir() -> Path:
    """The project's own recorded candles (6 pairs, 2020-10-12 → 2022-10-11)."""
    return DEMO_CANDLES


def load_recorded(folder: Path, pair: str, timeframe: str = "1h") -> pd.DataFrame:
    """A recorded parquet file as a canonical candle frame."""
    return normalize_candles(pd.read_parquet(folder / f"{pair.replace('/', '_')}-{timeframe}.parquet"))
