"""One clock for the platform (issue #15, item 1): "now" is configuration, real time by default; the
replay exchange's clock advances when told; the same ingest step at two clock values stores only the
candles that closed before each."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tests.conftest import load_recorded
from tradai_assets.market_data import build_market_data_assets
from tradai_assets.partitions import daily_partitions
from tradai_core.clock import Clock
from tradai_core.errors import ConfigurationError
from tradai_core.settings import TradAISettings
from tradai_core.training import training_window
from tradai_replay.server import ReplayServer
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource

HOUR = timedelta(hours=1)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def post_now(server: ReplayServer, payload: Any) -> tuple[int, dict[str, Any]]:
    """`POST /_replay/now`, as a person with curl (or a simulation) would."""
    request = urllib.request.Request(
        server.base_url + "/_replay/now", data=json.dumps(payload).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_clock_is_real_time_unless_now_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Clock()
    assert real.is_real_time and abs(real.now() - datetime.now(tz=UTC)) < timedelta(seconds=5)
    monkeypatch.setenv("TRADAI_NOW", "2021-05-03T10:30:00")  # no offset: UTC
    settings = TradAISettings(history_start=date(2021, 5, 1), history_end=date(2021, 5, 5), holdout_days=1)
    assert settings.clock.now() == datetime(2021, 5, 3, 10, 30, tzinfo=UTC)
    # the history in force ends with the clock's day, although the recorded history goes on
    assert settings.resolved_history_end == date(2021, 5, 4)
    assert settings.holdout_start == date(2021, 5, 3)
    later = TradAISettings(history_end=date(2021, 5, 5), now=datetime(2022, 1, 1, tzinfo=UTC))
    assert later.resolved_history_end == date(2021, 5, 5)  # a later clock does not invent candles


def test_the_replay_clock_advances_when_told_and_never_backwards(shared_candles_dir: Path) -> None:
    start = datetime(2021, 5, 4, 10, 30, tzinfo=UTC)
    with ReplayServer(shared_candles_dir, now_ms=ms(start)) as server:
        assert post_now(server, {"advance_ms": ms(start + HOUR) - ms(start)}) == (
            200,
            {"now_ms": ms(start + HOUR)},
        )
        assert post_now(server, {"now_ms": ms(start + 3 * HOUR)}) == (200, {"now_ms": ms(start + 3 * HOUR)})
        status, answer = post_now(server, {"now_ms": ms(start)})
        assert status == 400 and "only moves forward" in answer["detail"]
        status, answer = post_now(server, {"later": 1})
        assert status == 400 and answer["error"] == "clock not moved"
        assert server.now_ms == ms(start + 3 * HOUR)
        with pytest.raises(ConfigurationError, match="exactly one"):
            server.advance(to_ms=1, by_ms=1)


def ingest_day(settings: TradAISettings, server: ReplayServer, day: str) -> pd.DataFrame:
    """The market-data step for one pair and one day, through ccxt and the replay exchange; what is stored."""
    resources = {
        "exchange": ExchangeResource(base_url=server.base_url, backoff_base_s=0.01, max_retries=2),
        "candle_store": ArcticDBResource(uri=settings.resolved_arcticdb_uri),
    }
    result = materialize(
        build_market_data_assets(settings),
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        tags={ASSET_PARTITION_RANGE_START_TAG: day, ASSET_PARTITION_RANGE_END_TAG: day},
        raise_on_error=False,
    )
    assert result.success
    return ArcticDBResource(uri=settings.resolved_arcticdb_uri).read("binance", "1h", "BTC/USDT").candles


def test_the_same_ingest_step_at_two_clock_values_stores_only_the_candles_before_each(
    tmp_path: Path, shared_candles_dir: Path
) -> None:
    first, second = datetime(2021, 5, 4, 10, 30, tzinfo=UTC), datetime(2021, 5, 4, 20, 30, tzinfo=UTC)
    with ReplayServer(shared_candles_dir, now_ms=ms(first)) as server:
        seen = {}
        for now in (first, second):
            assert post_now(server, {"now_ms": ms(now)})[0] == 200
            settings = TradAISettings(
                home=tmp_path, pairs=("BTC/USDT",), history_start=date(2021, 5, 1), now=now
            )
            assert settings.resolved_history_end == date(2021, 5, 5)
            seen[now] = ingest_day(settings, server, "2021-05-04")
    for now, candles in seen.items():
        closes = candles.index + pd.Timedelta(HOUR)
        assert (closes <= pd.Timestamp(now)).all()  # nothing that had not closed at the clock
        assert candles.index[-1] == pd.Timestamp(now).floor("h") - pd.Timedelta(HOUR)  # and all that had
    assert (len(seen[first]), len(seen[second])) == (10, 20)


def test_partitions_the_training_window_and_the_newest_candle_follow_the_clock(
    tmp_path: Path, shared_candles_dir: Path
) -> None:
    pinned = TradAISettings(
        home=tmp_path,
        pairs=("BTC/USDT",),
        history_start=date(2021, 5, 1),
        history_end=date(2021, 5, 10),
        now=datetime(2021, 5, 3, 10, 30, tzinfo=UTC),
    )
    real = pinned.model_copy(update={"now": None})
    assert daily_partitions(pinned).get_partition_keys()[-1] == "2021-05-03"
    assert daily_partitions(real).get_partition_keys()[-1] == "2021-05-09"
    window = training_window(pinned.history_start, pinned.training_history_end, holdout_days=1)
    assert (window.end, window.holdout_end) == (
        datetime(2021, 5, 2, tzinfo=UTC),
        datetime(2021, 5, 3, tzinfo=UTC),  # the clock's day is still arriving: not in the holdout
    )
    # a store already filled past the clock (a simulation stepping over recorded data) is read up to it:
    # the drift window and the performance window end there
    store = ArcticDBResource(uri=pinned.resolved_arcticdb_uri)
    lo, hi = pd.Timestamp("2021-05-01", tz="UTC"), pd.Timestamp("2021-05-10", tz="UTC")
    candles = load_recorded(shared_candles_dir, "BTC/USDT")
    store.write_window(
        "binance", "1h", "BTC/USDT", candles[(candles.index >= lo) & (candles.index < hi)], lo, hi
    )
    assert store.last_candle_end(
        pinned.exchange_id, pinned.timeframe, ("BTC/USDT",), pinned.clock.now()
    ) == datetime(2021, 5, 3, 10, tzinfo=UTC)
    assert store.last_candle_end(
        real.exchange_id, real.timeframe, ("BTC/USDT",), real.clock.now()
    ) == datetime(2021, 5, 10, tzinfo=UTC)
