"""Feature assets through real Dagster runs on real ArcticDB (LMDB in a temp folder), seeded with recorded
candles: the stored features depend on the candles only, never on how the days were materialized."""

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, ExecuteInProcessResult, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tests.conftest import load_recorded
from tradai_assets.features import build_feature_assets, compute_window_features, features_library
from tradai_core.features import FEATURE_NAMES, WARMUP_BARS, compute_features, feature_set_hash
from tradai_core.settings import TradAISettings
from tradai_resources.arcticdb_store import ArcticDBResource

PAIRS = ("BTC/USDT", "ETH/USDT")
LIBRARY = features_library("binance", "1h")
TOLERANCE = 1e-9  # tests/test_features.py: full-history vs warm-up-started values


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture(scope="module")
def recorded(demo_candles_dir: Path) -> dict[str, pd.DataFrame]:
    """Real candles of the first 3 months of the demo history (BTC has the 2020-12-21 outage)."""
    return {pair: load_recorded(demo_candles_dir, pair).loc[:"2021-01-10 23:00"] for pair in PAIRS}


@pytest.fixture
def settings(tmp_path: Path) -> TradAISettings:
    return TradAISettings(
        home=tmp_path, pairs=PAIRS, history_start=date(2020, 10, 12), history_end=date(2021, 1, 11)
    )


Seed = Callable[..., ArcticDBResource]


@pytest.fixture
def seed(settings: TradAISettings, recorded: dict[str, pd.DataFrame]) -> Seed:
    """Write recorded candles of `[start, end)` into the settings' candle store, as the ohlcv assets do."""

    def write(start: str = "2020-10-12", end: str = "2021-01-11", uri: str | None = None) -> ArcticDBResource:
        store = ArcticDBResource(uri=uri or settings.resolved_arcticdb_uri)
        for pair, candles in recorded.items():
            part = candles[(candles.index >= ts(start)) & (candles.index < ts(end))]
            store.write_window("binance", "1h", pair, part, ts(start), ts(end))
        return store

    return write


def run(
    settings: TradAISettings, store: ArcticDBResource, first: str, last: str, **config: object
) -> ExecuteInProcessResult:
    run_config = {"ops": {f"features__{p.replace('/', '_')}": {"config": config} for p in settings.pairs}}
    return materialize(
        build_feature_assets(settings),
        resources={"candle_store": store},
        instance=DagsterInstance.ephemeral(),
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        run_config=run_config if config else None,
        raise_on_error=False,
    )


def stored(store: ArcticDBResource, pair: str, as_of: int | None = None) -> pd.DataFrame:
    return store.read_frame(LIBRARY, pair.replace("/", "_"), as_of=as_of).frame


def failure(result: ExecuteInProcessResult) -> str:
    event = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    return event.step_failure_data.error.to_string()


def test_one_run_over_many_days_stores_exactly_what_day_by_day_runs_store(
    settings: TradAISettings, seed: Seed, tmp_path: Path, recorded: dict[str, pd.DataFrame]
) -> None:
    at_once = seed()
    assert run(settings, at_once, "2020-12-18", "2020-12-24").success
    day_by_day = seed(uri=f"lmdb://{tmp_path / 'day-by-day'}")
    for day in pd.date_range("2020-12-18", "2020-12-24", freq="D"):
        assert run(settings, day_by_day, f"{day:%Y-%m-%d}", f"{day:%Y-%m-%d}").success
    for pair in PAIRS:
        one_go, daily = stored(at_once, pair), stored(day_by_day, pair)
        pd.testing.assert_frame_equal(one_go, daily, check_exact=True, check_freq=False)
        candles = recorded[pair]
        window = candles[(candles.index >= ts("2020-12-18")) & (candles.index < ts("2020-12-25"))]
        assert one_go.index.equals(window.index)  # BTC: the 4-hour outage of 2020-12-21 has no rows
        # ...and they are the full-history values, to the warm-up's documented precision.
        full = compute_features(candles).loc[one_go.index]
        error = ((one_go - full).abs() / full.abs().clip(lower=full.std(), axis=1)).max()
        assert (error <= TOLERANCE).all(), error[error > TOLERANCE]


def test_appending_future_candles_never_changes_stored_features(settings: TradAISettings, seed: Seed) -> None:
    store = seed(end="2020-12-06")
    assert run(settings, store, "2020-12-01", "2020-12-05").success
    before = {pair: store.read_frame(LIBRARY, pair.replace("/", "_")) for pair in PAIRS}

    seed(start="2020-12-06", end="2020-12-11")  # the exchange moved on
    assert run(settings, store, "2020-12-06", "2020-12-10").success
    assert run(settings, store, "2020-12-03", "2020-12-03").success  # and an old day is re-materialized
    for pair in PAIRS:
        now = stored(store, pair)
        assert now.index[-1] == ts("2020-12-10 23:00")
        pd.testing.assert_frame_equal(
            now.loc[: ts("2020-12-05 23:00")], before[pair].frame, check_exact=True, check_freq=False
        )
        assert store.read_frame(LIBRARY, pair.replace("/", "_"), as_of=before[pair].version).frame.equals(
            before[pair].frame
        )


def test_the_first_warmup_bars_of_the_history_get_no_features(
    settings: TradAISettings, seed: Seed, recorded: dict[str, pd.DataFrame]
) -> None:
    store = seed()
    instance = DagsterInstance.ephemeral()
    result = materialize(
        build_feature_assets(settings),
        resources={"candle_store": store},
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: "2020-10-12", ASSET_PARTITION_RANGE_END_TAG: "2020-11-20"},
    )
    assert result.success
    for pair in PAIRS:
        features = stored(store, pair)
        assert features.index[0] == recorded[pair].index[WARMUP_BARS]
        assert list(features.columns) == list(FEATURE_NAMES)
        [record] = instance.fetch_materializations(
            AssetKey(["features", pair.replace("/", "_")]), limit=1
        ).records
        metadata = record.asset_materialization.metadata
        assert metadata["rows_without_features"].value == WARMUP_BARS
        assert metadata["at_history_start"].value is True
        assert metadata["feature_set_hash"].value == feature_set_hash()
        assert (
            metadata["candles_version"].value == 0 and metadata["candles_library"].value == "ohlcv.binance.1h"
        )
        assert metadata["arcticdb_library"].value == LIBRARY
        assert "| rsi_14 " in metadata["summary"].value
    checks = result.get_asset_check_evaluations()
    assert {(c.check_name, c.passed) for c in checks} == {
        ("rows_match_candles", True),
        ("finite_values", True),
    }


def test_too_little_warmup_is_refused_naming_the_partitions_to_materialize(
    settings: TradAISettings, seed: Seed
) -> None:
    store = seed(start="2020-11-25")
    result = run(settings, store, "2020-12-01", "2020-12-01")
    assert not result.success
    message = failure(result)
    assert f"need {WARMUP_BARS} candles of warm-up before 2020-12-01 00:00" in message
    assert "materialize ohlcv/BTC_USDT partitions 2020-10-31 to 2020-11-30 first" in message
    assert not store.arctic().has_library(LIBRARY) or not store.arctic()[LIBRARY].has_symbol("BTC_USDT")


def test_a_day_missing_inside_the_warmup_is_refused_unless_declared_an_outage(
    settings: TradAISettings, seed: Seed
) -> None:
    store = seed()
    for pair in PAIRS:  # as if the ohlcv partition of 2020-11-20 had never been materialized
        store.write_window(
            "binance", "1h", pair, store.read("binance", "1h", pair).candles.iloc[:0],
            ts("2020-11-20"), ts("2020-11-21"), allow_removal=True,
        )  # fmt: skip
    result = run(settings, store, "2020-12-01", "2020-12-01")
    assert not result.success
    assert "has no candle on 2020-11-20" in failure(result)
    assert "allow_missing_warmup_days: true" in failure(result)
    assert run(settings, store, "2020-12-01", "2020-12-01", allow_missing_warmup_days=True).success
    assert len(stored(store, "BTC/USDT")) == 24


def test_features_of_another_feature_set_are_never_mixed_in(
    settings: TradAISettings, seed: Seed, recorded: dict[str, pd.DataFrame]
) -> None:
    store = seed()
    old = compute_window_features(recorded["BTC/USDT"], ts("2020-12-01"), ts("2020-12-02"))
    store.write_frame_window(
        LIBRARY, "BTC_USDT", old, ts("2020-12-01"), ts("2020-12-02"), metadata={"feature_set_hash": "0" * 16}
    )
    refused = run(settings.model_copy(update={"pairs": ("BTC/USDT",)}), store, "2020-12-05", "2020-12-05")
    assert not refused.success
    assert "holds features of feature set 0000000000000000" in failure(refused)
    assert "replace_stored_features: true" in failure(refused)

    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    assert run(one_pair, store, "2020-12-05", "2020-12-05", replace_stored_features=True).success
    now = store.read_frame(LIBRARY, "BTC_USDT")
    assert now.metadata is not None and now.metadata["feature_set_hash"] == feature_set_hash()
    assert now.frame.index[0] == ts("2020-12-05")  # the old feature set's rows are gone


def test_replacing_the_feature_set_is_one_new_version_and_keeps_earlier_ones_readable(
    settings: TradAISettings, seed: Seed, recorded: dict[str, pd.DataFrame]
) -> None:
    store = seed()
    old = compute_window_features(recorded["BTC/USDT"], ts("2020-12-01"), ts("2020-12-02"))
    first = store.write_frame_window(
        LIBRARY, "BTC_USDT", old, ts("2020-12-01"), ts("2020-12-02"), metadata={"feature_set_hash": "0" * 16}
    )
    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    assert run(one_pair, store, "2020-12-05", "2020-12-05", replace_stored_features=True).success
    now = store.read_frame(LIBRARY, "BTC_USDT")
    assert now.version == first.version + 1  # one write, not a delete and a write
    earlier = store.read_frame(LIBRARY, "BTC_USDT", as_of=first.version)  # what a model may name
    assert earlier.metadata == {"feature_set_hash": "0" * 16}
    pd.testing.assert_frame_equal(earlier.frame, old, check_freq=False)
