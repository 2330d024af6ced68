"""Market-data assets end to end: replay server → CCXT → ArcticDB through real Dagster runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    build_schedule_context,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from jobs.market_data import build_market_data_schedule
from tests.conftest import PROJECT_ROOT, load_recorded
from tradai.definitions import build_definitions
from tradai_assets.market_data import build_market_data_assets
from tradai_core.candles import diff_candles
from tradai_core.settings import TradAISettings
from tradai_replay.faults import Fault
from tradai_replay.server import ReplayServer
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource

PAIRS = ("BTC/USDT", "SOL/USDT")


@pytest.fixture(scope="module")
def server(shared_candles_dir: Path) -> Iterator[ReplayServer]:
    with ReplayServer(shared_candles_dir) as replay:
        yield replay


@pytest.fixture(autouse=True)
def no_faults_left(server: ReplayServer) -> Iterator[None]:
    """The server is shared by the module: no test sees a fault another one queued but did not use up
    (e.g. because it failed before its run reached the exchange)."""
    server.clear_faults()
    yield
    server.clear_faults()


@pytest.fixture
def settings(tmp_path: Path) -> TradAISettings:
    return TradAISettings(
        home=tmp_path, pairs=PAIRS, history_start=date(2021, 5, 1), history_end=date(2021, 5, 5)
    )


def run(
    settings: TradAISettings,
    base_url: str,
    first: str,
    last: str,
    instance: DagsterInstance | None = None,
    **config: object,
) -> ExecuteInProcessResult:
    resources = {
        "exchange": ExchangeResource(base_url=base_url, backoff_base_s=0.01, max_retries=2, timeout_ms=1000),
        "candle_store": ArcticDBResource(uri=settings.resolved_arcticdb_uri),
    }
    run_config = {"ops": {f"ohlcv__{p.replace('/', '_')}": {"config": config} for p in settings.pairs}}
    return materialize(
        build_market_data_assets(settings),
        resources=resources,
        instance=instance or DagsterInstance.ephemeral(),
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        run_config=run_config if config else None,
        raise_on_error=False,
    )


def stored(settings: TradAISettings, pair: str) -> pd.DataFrame:
    return ArcticDBResource(uri=settings.resolved_arcticdb_uri).read("binance", "1h", pair).candles


def test_pairs_by_days_land_candle_for_candle(
    settings: TradAISettings, server: ReplayServer, shared_candles_dir: Path
) -> None:
    instance = DagsterInstance.ephemeral()
    result = run(settings, server.base_url, "2021-05-01", "2021-05-04", instance)
    assert result.success
    for pair in PAIRS:
        source = load_recorded(shared_candles_dir, pair)
        source = source[(source.index >= "2021-05-01") & (source.index < "2021-05-05")]
        assert diff_candles(source, stored(settings, pair)).identical
        key = AssetKey(["ohlcv", pair.replace("/", "_")])
        records = instance.fetch_materializations(key, limit=10).records
        assert sorted(r.partition_key for r in records) == [
            "2021-05-01",
            "2021-05-02",
            "2021-05-03",
            "2021-05-04",
        ]
        metadata = records[0].asset_materialization.metadata
        assert metadata["dagster/row_count"].value == 96
        assert metadata["arcticdb_version"].value == 0
        assert metadata["missing_candles"].value == 0
    checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert len(checks) == 6 * len(PAIRS) and all(c.passed for c in checks)


def test_an_outage_is_reported_as_a_warning_with_its_range(
    settings: TradAISettings, server: ReplayServer
) -> None:
    outage_day = settings.model_copy(update={"history_start": date(2020, 12, 20), "pairs": ("BTC/USDT",)})
    result = run(outage_day, server.base_url, "2020-12-21", "2020-12-21")
    assert result.success
    gaps = next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == "gaps"
    )
    assert not gaps.passed and gaps.severity.value == "WARN"
    assert "2020-12-21" in gaps.metadata["missing_ranges"].value


def test_a_malformed_candle_fails_its_partition_and_leaves_earlier_data_intact(
    settings: TradAISettings, server: ReplayServer
) -> None:
    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    assert run(one_pair, server.base_url, "2021-05-01", "2021-05-02").success
    before = stored(one_pair, "BTC/USDT")
    server.inject(Fault(kind="malformed", count=1, variant="high_below_low"))
    result = run(one_pair, server.base_url, "2021-05-02", "2021-05-03")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "breaks rule 'high >= max(open, close)'" in failure.step_failure_data.error.to_string()
    pd.testing.assert_frame_equal(stored(one_pair, "BTC/USDT"), before)


def test_a_fault_outlasting_the_retries_fails_clearly_and_loses_nothing(
    settings: TradAISettings, server: ReplayServer
) -> None:
    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    assert run(one_pair, server.base_url, "2021-05-01", "2021-05-01").success
    before = stored(one_pair, "BTC/USDT")
    server.inject(Fault(kind="http_5xx", count=10, status=502, path_prefix="/api/v3/klines"))
    result = run(one_pair, server.base_url, "2021-05-01", "2021-05-03")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "kept failing" in failure.step_failure_data.error.to_string()
    pd.testing.assert_frame_equal(stored(one_pair, "BTC/USDT"), before)


def test_a_retriable_fault_recovers_and_is_counted(settings: TradAISettings, server: ReplayServer) -> None:
    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    server.inject(Fault(kind="http_429", count=1, retry_after_s=0.05, path_prefix="/api/v3/klines"))
    result = run(one_pair, server.base_url, "2021-05-01", "2021-05-02")
    assert result.success
    [materialization] = [e for e in result.get_asset_materialization_events()][:1]
    assert materialization.materialization.metadata["exchange_retries"].value == 1


def test_refreshing_today_adds_the_new_candles_only(
    settings: TradAISettings, shared_candles_dir: Path
) -> None:
    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    for hour, expected in ((10, 10), (20, 20)):
        now = pd.Timestamp(f"2021-05-04 {hour}:30", tz="UTC")
        with ReplayServer(shared_candles_dir, now_ms=int(now.value // 1_000_000)) as replay:
            assert run(one_pair, replay.base_url, "2021-05-04", "2021-05-04").success
        day = stored(one_pair, "BTC/USDT")
        assert len(day) == expected and day.index.is_unique


def test_the_hourly_schedule_refreshes_today_and_skips_past_the_history() -> None:
    live_defs = build_definitions(TradAISettings(history_end=None))
    live = live_defs.get_schedule_def("market_data_hourly")
    tick = pd.Timestamp.now(tz="UTC").floor("h").to_pydatetime()
    context = build_schedule_context(
        scheduled_execution_time=tick, repository_def=live_defs.get_repository_def()
    )
    request = live.evaluate_tick(context).run_requests[0]
    assert request.partition_key == tick.strftime("%Y-%m-%d")
    assert tick.isoformat() in request.run_key
    offline = build_market_data_schedule(TradAISettings(history_end=date(2022, 10, 12)))
    skipped = offline.evaluate_tick(build_schedule_context(scheduled_execution_time=tick))
    assert not skipped.run_requests and "history ends" in skipped.skip_message


def test_dagster_definitions_validate_passes(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "TRADAI_HOME": str(tmp_path / "tradai")}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All code locations passed validation" in done.stderr + done.stdout


def check_evaluation(result: ExecuteInProcessResult, name: str) -> Any:
    return next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == name
    )


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(kind="malformed", variant="zero_price"), "breaks rule 'prices are positive"),
        (Fault(kind="malformed", variant="negative_price"), "breaks rule 'prices are positive"),
        (Fault(kind="malformed", variant="nan_price"), "breaks rule 'prices and volume are finite numbers'"),
        (Fault(kind="malformed", variant="duplicate_row"), "breaks rule 'no duplicate candles'"),
        (Fault(kind="malformed", variant="out_of_order"), "breaks rule 'timestamps strictly increasing'"),
        (Fault(kind="malformed", variant="null_timestamp"), "breaks rule 'every candle has an open time"),
        (Fault(kind="stale_page", count=99), "never arrived"),
    ],
    ids=lambda value: value.variant or value.kind if isinstance(value, Fault) else "",
)
def test_bad_candle_content_fails_the_partition_clearly_and_writes_nothing(
    settings: TradAISettings, server: ReplayServer, fault: Fault, expected: str
) -> None:
    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    assert run(one_pair, server.base_url, "2021-05-02", "2021-05-02").success
    before = stored(one_pair, "BTC/USDT")
    server.inject(fault)
    try:
        result = run(one_pair, server.base_url, "2021-05-02", "2021-05-02")
    finally:
        server.clear_faults()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.to_string()
    assert expected in message and "BTC/USDT" in message and "nothing was written" in message
    if fault.kind == "malformed" and fault.variant != "null_timestamp":
        assert "2021-05-02T12:00:00+00:00" in message
    pd.testing.assert_frame_equal(stored(one_pair, "BTC/USDT"), before)


def test_a_price_spike_is_stored_and_warned_about_with_its_timestamp(
    settings: TradAISettings, server: ReplayServer
) -> None:
    one_pair = settings.model_copy(update={"pairs": ("BTC/USDT",)})
    assert run(one_pair, server.base_url, "2021-05-01", "2021-05-01").success  # history to judge against
    server.inject(Fault(kind="malformed", variant="price_spike"))
    try:
        result = run(one_pair, server.base_url, "2021-05-02", "2021-05-02")
    finally:
        server.clear_faults()
    assert result.success  # a spike is valid data: stored, and a person is told
    spiked = pd.Timestamp("2021-05-02 12:00", tz="UTC")
    day = stored(one_pair, "BTC/USDT").loc["2021-05-02"]
    assert day.loc[spiked, "close"] > 1000 * day["close"].drop(spiked).max() / 2
    outliers = check_evaluation(result, "outliers")
    assert not outliers.passed and outliers.severity.value == "WARN"
    assert spiked.isoformat() in outliers.metadata["offending_timestamps"].value
    assert all(
        check_evaluation(result, name).passed
        for name in ("no_duplicates", "monotonic_index", "ohlc_consistent", "timeframe_grid", "gaps")
    )


def test_a_real_crash_does_not_raise_the_outlier_warning(
    settings: TradAISettings, server: ReplayServer
) -> None:
    crash_week = settings.model_copy(update={"history_end": date(2021, 5, 25)})
    result = run(crash_week, server.base_url, "2021-05-17", "2021-05-23")  # BTC -30 % on 2021-05-19
    assert result.success
    outliers = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == "outliers"
    ]
    assert len(outliers) == len(PAIRS) and all(c.passed for c in outliers)  # one single-run backfill each
