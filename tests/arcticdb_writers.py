"""Writer processes for tests/test_write_safety.py: `python -m tests.arcticdb_writers <command> …`.

- `windows URI K GO`: touch GO.readyK, wait for the file GO, then write `OWN_DAYS` days of its own (value K)
  and, between them, the same shared day (value K), each through `ArcticDBResource.write_frame_window`.
- `big URI`: replace the symbol with a million-row frame (seconds of native ArcticDB writing), print DONE.
- `features-replace HOME PAIR DAY`: materialize `features/<PAIR>` for DAY with replace_stored_features,
  SIGKILLing itself the moment the feature write reaches ArcticDB (a crash in the middle of the write).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from tradai_resources.arcticdb_store import ArcticDBResource

LIBRARY = "features.test.1h"
SYMBOL = "BTC_USDT"
SHARED_DAY = pd.Timestamp("2021-06-01", tz="UTC")
BIG_ROWS = 1_000_000
OWN_DAYS = 16


def own_day(writer: int, i: int) -> pd.Timestamp:
    return pd.Timestamp("2021-01-01", tz="UTC") + pd.Timedelta(days=2 * i + writer)


def day_frame(day: pd.Timestamp, value: float) -> pd.DataFrame:
    index = pd.date_range(day, periods=24, freq="h")
    return pd.DataFrame({"value": np.full(24, value), "hour": np.arange(24.0)}, index=index)


def big_frame() -> pd.DataFrame:
    index = pd.date_range("2000-01-01", periods=BIG_ROWS, freq="min", tz="UTC")
    data = np.random.default_rng(7).random((BIG_ROWS, 4))
    return pd.DataFrame(data, index=index, columns=["a", "b", "c", "d"])


def windows(uri: str, writer: int, go: Path) -> None:
    store = ArcticDBResource(uri=uri)
    store.open_library(LIBRARY)
    go.with_name(f"{go.name}.ready{writer}").touch()
    while not go.exists():
        time.sleep(0.001)
    for i in range(OWN_DAYS):
        for day in (own_day(writer, i), SHARED_DAY):
            frame = day_frame(day, float(writer))
            store.write_frame_window(LIBRARY, SYMBOL, frame, day, day + pd.Timedelta(days=1))


def big(uri: str) -> None:
    store = ArcticDBResource(uri=uri, rows_per_segment=1000)
    frame = big_frame()
    print("WRITING", flush=True)
    store.write_frame_window(
        LIBRARY, SYMBOL, frame, frame.index[0], frame.index[-1] + pd.Timedelta(minutes=1), replace_symbol=True
    )
    print("DONE", flush=True)


def features_replace(home: str, pair: str, day: str) -> None:
    from arcticdb.version_store.library import Library
    from dagster import DagsterInstance, materialize

    from tradai_assets.features import build_feature_assets
    from tradai_core.settings import TradAISettings

    def crash(self: Library, *args: object, **kwargs: object) -> None:
        print("KILLED IN WRITE", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    original_write, original_update = Library.write, Library.update

    def write(self: Library, *args: object, **kwargs: object) -> object:
        return crash(self) if self.name.startswith("features.") else original_write(self, *args, **kwargs)

    def update(self: Library, *args: object, **kwargs: object) -> object:
        return crash(self) if self.name.startswith("features.") else original_update(self, *args, **kwargs)

    Library.write, Library.update = write, update  # type: ignore[method-assign]
    settings = TradAISettings(
        home=Path(home), pairs=(pair,), history_start=date(2020, 10, 12), history_end=date(2021, 1, 11)
    )
    op = f"features__{pair.replace('/', '_')}"
    materialize(
        build_feature_assets(settings),
        resources={"candle_store": ArcticDBResource(uri=settings.resolved_arcticdb_uri)},
        instance=DagsterInstance.ephemeral(),
        partition_key=day,
        run_config={"ops": {op: {"config": {"replace_stored_features": True}}}},
        raise_on_error=False,
    )
    print("FINISHED WITHOUT WRITING", flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "windows":
        windows(args[0], int(args[1]), Path(args[2]))
    elif command == "big":
        big(args[0])
    elif command == "features-replace":
        features_replace(*args)
    else:
        raise SystemExit(f"unknown command {command}")
