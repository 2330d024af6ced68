"""The candle store on real ArcticDB (LMDB in a temp folder): window writes are idempotent and exact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import load_recorded
from tradai_core.errors import DataLossRefusedError, NotFoundError, ValidationError
from tradai_resources.arcticdb_store import ArcticDBResource

PAIR = "BTC/USDT"


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture(scope="module")
def btc(demo_candles_dir: Path) -> pd.DataFrame:
    return load_recorded(demo_candles_dir, PAIR)


@pytest.fixture
def store(tmp_path: Path) -> ArcticDBResource:
    return ArcticDBResource(uri=f"lmdb://{tmp_path / 'arctic'}")


def window(candles: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    return candles[(candles.index >= day(start)) & (candles.index < day(end))]


def write(store: ArcticDBResource, candles: pd.DataFrame, start: str, end: str) -> int | None:
    return store.write_window(
        "binance", "1h", PAIR, window(candles, start, end), day(start), day(end)
    ).version


def test_the_same_window_twice_gives_the_same_rows(store: ArcticDBResource, btc: pd.DataFrame) -> None:
    write(store, btc, "2021-01-01", "2021-01-08")
    first = store.read("binance", "1h", PAIR).candles
    write(store, btc, "2021-01-01", "2021-01-08")
    second = store.read("binance", "1h", PAIR)
    pd.testing.assert_frame_equal(first, second.candles)
    pd.testing.assert_frame_equal(second.candles, window(btc, "2021-01-01", "2021-01-08"), check_freq=False)
    assert second.version == 1


def test_overlapping_windows_never_duplicate_and_never_touch_neighbours(
    store: ArcticDBResource, btc: pd.DataFrame
) -> None:
    write(store, btc, "2021-01-01", "2021-01-05")
    write(store, btc, "2021-01-07", "2021-01-09")
    write(store, btc, "2021-01-03", "2021-01-08")  # overlaps both
    stored = store.read("binance", "1h", PAIR).candles
    pd.testing.assert_frame_equal(stored, window(btc, "2021-01-01", "2021-01-09"), check_freq=False)
    assert stored.index.is_unique


def test_rewriting_a_window_replaces_exactly_that_window(store: ArcticDBResource, btc: pd.DataFrame) -> None:
    write(store, btc, "2021-01-01", "2021-01-04")
    corrected = window(btc, "2021-01-02", "2021-01-03").iloc[:20] * 1.0
    corrected["volume"] = 1.0
    store.write_window(
        "binance", "1h", PAIR, corrected, day("2021-01-02"), day("2021-01-03"), allow_removal=True
    )
    stored = store.read("binance", "1h", PAIR).candles
    pd.testing.assert_frame_equal(
        window(stored, "2021-01-01", "2021-01-02"), window(btc, "2021-01-01", "2021-01-02")
    )
    pd.testing.assert_frame_equal(window(stored, "2021-01-02", "2021-01-03"), corrected, check_freq=False)
    pd.testing.assert_frame_equal(
        window(stored, "2021-01-03", "2021-01-04"), window(btc, "2021-01-03", "2021-01-04")
    )


def test_fewer_candles_than_stored_are_refused_and_lose_nothing(
    store: ArcticDBResource, btc: pd.DataFrame
) -> None:
    version = write(store, btc, "2021-01-01", "2021-01-04")
    for fewer in (btc.iloc[:0], window(btc, "2021-01-02", "2021-01-03").iloc[:-1]):
        with pytest.raises(DataLossRefusedError, match="would remove") as caught:
            store.write_window("binance", "1h", PAIR, fewer, day("2021-01-02"), day("2021-01-03"))
        assert "allow_removing_candles" in str(caught.value)
    after = store.read("binance", "1h", PAIR)
    assert after.version == version
    pd.testing.assert_frame_equal(after.candles, window(btc, "2021-01-01", "2021-01-04"), check_freq=False)


def test_an_empty_window_empties_only_that_window_when_allowed(
    store: ArcticDBResource, btc: pd.DataFrame
) -> None:
    write(store, btc, "2021-01-01", "2021-01-04")
    store.write_window(
        "binance", "1h", PAIR, btc.iloc[:0], day("2021-01-02"), day("2021-01-03"), allow_removal=True
    )
    stored = store.read("binance", "1h", PAIR).candles
    assert len(stored) == 48
    assert window(stored, "2021-01-02", "2021-01-03").empty


def test_a_failed_write_leaves_the_previous_version_readable(
    store: ArcticDBResource, btc: pd.DataFrame
) -> None:
    version = write(store, btc, "2021-01-01", "2021-01-03")
    bad = window(btc, "2021-01-02", "2021-01-03").astype({"close": object})
    bad.iloc[5, bad.columns.get_loc("close")] = "not a number"
    with pytest.raises(ValidationError, match="non-numeric"):
        store.write_window("binance", "1h", PAIR, bad, day("2021-01-02"), day("2021-01-03"))
    after = store.read("binance", "1h", PAIR)
    assert after.version == version
    pd.testing.assert_frame_equal(after.candles, window(btc, "2021-01-01", "2021-01-03"), check_freq=False)


def test_a_schema_change_is_refused_by_arcticdb_and_loses_nothing(
    store: ArcticDBResource, btc: pd.DataFrame
) -> None:
    version = write(store, btc, "2021-01-01", "2021-01-03")
    lib = store.library("binance", "1h")
    with pytest.raises(Exception, match=r"(?i)schema|descriptor|column|type"):
        lib.update("BTC_USDT", window(btc, "2021-01-02", "2021-01-03").astype(str))
    assert store.read("binance", "1h", PAIR).version == version


def test_candles_outside_the_window_are_refused(store: ArcticDBResource, btc: pd.DataFrame) -> None:
    with pytest.raises(ValidationError, match="outside the window"):
        store.write_window(
            "binance",
            "1h",
            PAIR,
            window(btc, "2021-01-01", "2021-01-03"),
            day("2021-01-01"),
            day("2021-01-02"),
        )
    assert store.latest_version("binance", "1h", PAIR) is None


def test_reads_by_date_range_and_by_version(store: ArcticDBResource, btc: pd.DataFrame) -> None:
    first = write(store, btc, "2021-01-01", "2021-01-03")
    write(store, btc, "2021-01-03", "2021-01-05")
    part = store.read("binance", "1h", PAIR, day("2021-01-02"), day("2021-01-04")).candles
    pd.testing.assert_frame_equal(part, window(btc, "2021-01-02", "2021-01-04"), check_freq=False)
    old = store.read("binance", "1h", PAIR, as_of=first)
    assert old.version == first and len(old.candles) == 48


def test_reading_a_pair_never_stored_says_what_to_do(store: ArcticDBResource, btc: pd.DataFrame) -> None:
    write(store, btc, "2021-01-01", "2021-01-02")
    with pytest.raises(NotFoundError, match="materialize the market-data asset for ETH/USDT"):
        store.read("binance", "1h", "ETH/USDT")
