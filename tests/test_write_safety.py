"""Writes to ArcticDB (real LMDB in a temp folder) are safe: one writer per symbol, atomic replaces that
survive a `kill -9`, pruning to a stated retention, and pins that keep every version a model or report
names readable by number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import DagsterInstance, materialize

from tests.arcticdb_writers import BIG_ROWS, LIBRARY, OWN_DAYS, SHARED_DAY, SYMBOL, day_frame, own_day
from tests.conftest import PROJECT_ROOT, load_recorded
from tradai_assets.features import build_feature_assets, compute_window_features, features_library
from tradai_assets.models import build_model_assets
from tradai_core.errors import StorageError
from tradai_core.features import feature_set_hash
from tradai_core.settings import TradAISettings
from tradai_resources.arcticdb_store import META_PIN, ArcticDBResource

OTHER = "ohlcv.test.1h"


def store_at(tmp_path: Path, **config: object) -> ArcticDBResource:
    return ArcticDBResource(uri=f"lmdb://{tmp_path / 'arctic'}", **config)


def frame_of(version: int, day: str = "2021-01-01") -> pd.DataFrame:
    index = pd.date_range(day, periods=24, freq="h", tz="UTC")
    return pd.DataFrame({"value": np.full(24, float(version))}, index=index)


def write(store: ArcticDBResource, version: int, library: str = LIBRARY) -> int:
    frame = frame_of(version)
    written = store.write_frame_window(
        library, SYMBOL, frame, frame.index[0], frame.index[-1] + pd.Timedelta("1h")
    )
    assert written.version == version
    return version


def live_versions(store: ArcticDBResource, library: str = LIBRARY, symbol: str = SYMBOL) -> set[int]:
    infos = store.open_library(library).list_versions(symbol)
    return {key.version for key, info in infos.items() if not info.deleted}


def python(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.arcticdb_writers", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


# -- one writer per symbol -------------------------------------------------------------------------------


def test_every_arcticdb_writing_asset_runs_in_a_pool_of_one_per_symbol() -> None:
    settings = TradAISettings(pairs=("BTC/USDT", "ETH/USDT"))
    pools = {asset.key.to_user_string(): asset.op.pool for asset in build_feature_assets(settings)}
    assert pools == {
        "features/BTC_USDT": "arcticdb/features.binance.1h/BTC_USDT",
        "features/ETH_USDT": "arcticdb/features.binance.1h/ETH_USDT",
    }
    training_set = next(a for a in build_model_assets(settings) if a.key.to_user_string() == "training_set")
    assert training_set.op.pool == "arcticdb/training.binance.1h/training_set"
    pools_config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["concurrency"]["pools"]
    assert pools_config["default_limit"] == 1 and pools_config["granularity"] == "op"


@pytest.mark.slow  # a minute or more: separate writer processes, each importing the stack
def test_two_processes_writing_one_symbol_at_once_lose_nothing_and_never_interleave(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    go = tmp_path / "go"
    writers = [python("windows", uri, str(writer), str(go)) for writer in (0, 1)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go.ready{writer}").exists() for writer in (0, 1)):  # both imported, waiting
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
        time.sleep(0.01)
    go.touch()
    for writer in writers:
        code, _, err = finish(writer)
        assert code == 0, err
    stored = ArcticDBResource(uri=uri).read_frame(LIBRARY, SYMBOL)
    frame = stored.frame
    assert frame.index.is_unique
    for writer in (0, 1):  # every window of both writers is there, exactly as written
        for i in range(OWN_DAYS):
            day = own_day(writer, i)
            expected = day_frame(day, float(writer))
            got = frame.loc[day : day + pd.Timedelta("23h")]
            pd.testing.assert_frame_equal(got, expected, check_freq=False)
    shared = frame.loc[SHARED_DAY : SHARED_DAY + pd.Timedelta("23h")]
    assert len(shared) == 24 and shared["value"].nunique() == 1  # one writer's window, never a mix
    pd.testing.assert_frame_equal(shared, day_frame(SHARED_DAY, shared["value"].iloc[0]), check_freq=False)
    assert len(frame) == (2 * OWN_DAYS + 1) * 24
    assert stored.version == 4 * OWN_DAYS - 1  # one version per write: none overwrote another's


# -- atomic writes survive kill -9 -------------------------------------------------------------------------


@pytest.mark.slow  # a minute or more: separate writer processes, each importing the stack
def test_kill_9_in_the_middle_of_a_write_leaves_the_previous_version_and_a_rerun_repairs(
    tmp_path: Path,
) -> None:
    store = store_at(tmp_path)
    previous = frame_of(0)
    store.write_frame_window(
        LIBRARY, SYMBOL, previous, previous.index[0], previous.index[-1] + pd.Timedelta("1h")
    )
    data = tmp_path / "arctic" / Path(*LIBRARY.split(".")) / "data.mdb"  # features/test/1h
    before = data.stat().st_size
    writer = python("big", store.uri)
    deadline = time.monotonic() + 120
    while data.stat().st_size < before + 8 * 2**20:  # some MB of segments written, the version not yet
        assert writer.poll() is None, writer.communicate()
        assert time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.002)
    writer.send_signal(signal.SIGKILL)
    code, out, _ = finish(writer)
    assert code == -signal.SIGKILL and "WRITING" in out and "DONE" not in out

    after_crash = store.read_frame(LIBRARY, SYMBOL)
    assert after_crash.version == 0
    pd.testing.assert_frame_equal(after_crash.frame, previous, check_freq=False)

    code, out, err = finish(python("big", store.uri))
    assert code == 0 and "DONE" in out, err
    repaired = store.read_frame(LIBRARY, SYMBOL)
    assert repaired.version == 1 and len(repaired.frame) == BIG_ROWS and repaired.frame.index.is_unique
    pd.testing.assert_frame_equal(
        store.read_frame(LIBRARY, SYMBOL, as_of=0).frame, previous, check_freq=False
    )


@pytest.fixture
def feature_home(
    tmp_path: Path, demo_candles_dir: Path
) -> tuple[TradAISettings, ArcticDBResource, pd.DataFrame]:
    """BTC candles of 2020-10-12 → 2021-01-11 stored, and features of 2020-12-01 by an older feature set."""
    settings = TradAISettings(
        home=tmp_path, pairs=("BTC/USDT",), history_start=date(2020, 10, 12), history_end=date(2021, 1, 11)
    )
    store = ArcticDBResource(uri=settings.resolved_arcticdb_uri)
    candles = load_recorded(demo_candles_dir, "BTC/USDT").loc[:"2021-01-10 23:00"]
    start, end = pd.Timestamp("2020-10-12", tz="UTC"), pd.Timestamp("2021-01-11", tz="UTC")
    store.write_window("binance", "1h", "BTC/USDT", candles, start, end)
    day, next_day = pd.Timestamp("2020-12-01", tz="UTC"), pd.Timestamp("2020-12-02", tz="UTC")
    old = compute_window_features(candles, day, next_day)
    store.write_frame_window(
        features_library("binance", "1h"),
        "BTC_USDT",
        old,
        day,
        next_day,
        metadata={"feature_set_hash": "0" * 16},
    )
    return settings, store, old


@pytest.mark.slow  # a minute or more: separate writer processes, each importing the stack
def test_kill_9_while_replacing_the_feature_set_leaves_the_old_features_and_a_rerun_repairs(
    feature_home: tuple[TradAISettings, ArcticDBResource, pd.DataFrame],
) -> None:
    settings, store, old = feature_home
    library = features_library("binance", "1h")
    code, out, err = finish(python("features-replace", str(settings.home), "BTC/USDT", "2020-12-05"))
    assert code == -signal.SIGKILL and "KILLED IN WRITE" in out, (out, err)

    survived = store.read_frame(library, "BTC_USDT")
    assert survived.version == 0 and survived.metadata == {"feature_set_hash": "0" * 16}
    pd.testing.assert_frame_equal(survived.frame, old, check_freq=False)

    op = "features__BTC_USDT"
    rerun = materialize(
        build_feature_assets(settings),
        resources={"candle_store": store},
        instance=DagsterInstance.ephemeral(),
        partition_key="2020-12-05",
        run_config={"ops": {op: {"config": {"replace_stored_features": True}}}},
    )
    assert rerun.success
    now = store.read_frame(library, "BTC_USDT")
    assert now.metadata is not None and now.metadata["feature_set_hash"] == feature_set_hash()
    assert (now.frame.index[0], len(now.frame)) == (pd.Timestamp("2020-12-05", tz="UTC"), 24)
    pd.testing.assert_frame_equal(store.read_frame(library, "BTC_USDT", as_of=0).frame, old, check_freq=False)


# -- retention and pins ----------------------------------------------------------------------------------


def test_old_versions_are_pruned_to_the_newest_n_plus_every_pinned_one(tmp_path: Path) -> None:
    store = store_at(tmp_path, keep_versions=3)
    for version in range(3):
        write(store, version)
    store.pin_versions("tradai.model.run-1", {f"{LIBRARY}/{SYMBOL}": 1})
    for version in range(3, 8):
        write(store, version)
    assert live_versions(store) == {1, 5, 6, 7}
    pd.testing.assert_frame_equal(
        store.read_frame(LIBRARY, SYMBOL, as_of=1).frame, frame_of(1), check_freq=False
    )

    store.unpin("tradai.model.run-1")
    write(store, 8)
    assert live_versions(store) == {6, 7, 8}


def test_the_retention_comes_from_tradai_arcticdb_keep_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADAI_ARCTICDB_KEEP_VERSIONS", "2")
    store = store_at(tmp_path)
    assert store.retention() == 2
    for version in range(5):
        write(store, version)
    assert live_versions(store) == {3, 4}
    monkeypatch.setenv("TRADAI_ARCTICDB_KEEP_VERSIONS", "0")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        store.retention()


def test_a_pin_of_a_pruned_version_is_refused_and_pins_nothing(tmp_path: Path) -> None:
    store = store_at(tmp_path, keep_versions=1)
    write(store, 0, OTHER)
    write(store, 0)
    write(store, 1)  # prunes version 0
    with pytest.raises(StorageError, match="pruned before it could be pinned"):
        store.pin_versions("tradai.backtest.run-2", {f"{OTHER}/{SYMBOL}": 0, f"{LIBRARY}/{SYMBOL}": 0})
    assert store.pinned_versions("tradai.backtest.run-2") == {}
    assert (
        store.pin_versions("tradai.backtest.run-2", {f"{OTHER}/{SYMBOL}": 0}).name == "tradai.backtest.run-2"
    )
    assert store.pinned_versions("tradai.backtest.run-2") == {f"{OTHER}/{SYMBOL}": 0}
    store.pin_versions("tradai.backtest.run-2", {f"{OTHER}/{SYMBOL}": 0})  # the same pin again: a no-op
    with pytest.raises(StorageError, match="already holds"):
        store.pin_versions("tradai.backtest.run-2", {f"{LIBRARY}/{SYMBOL}": 1})


def test_a_version_that_pinned_its_inputs_releases_them_when_it_is_pruned(tmp_path: Path) -> None:
    store = store_at(tmp_path, keep_versions=1)
    write(store, 0, OTHER)
    store.pin_versions("tradai.training_set.run-3", {f"{OTHER}/{SYMBOL}": 0})
    store.write_frame(
        "training.test.1h", "training_set", frame_of(0), metadata={META_PIN: "tradai.training_set.run-3"}
    )
    write(store, 1, OTHER)
    assert live_versions(store, OTHER) == {0, 1}  # held by the training set's pin
    store.write_frame("training.test.1h", "training_set", frame_of(1))  # prunes training set v0
    assert store.pinned_versions("tradai.training_set.run-3") == {}
    write(store, 2, OTHER)
    assert live_versions(store, OTHER) == {2}
