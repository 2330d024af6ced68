"""Candles launched as the UI launches a run (GraphQL → queued → daemon → code server) land in ArcticDB
on S3 (moto), identical to the recorded source, and concurrent runs of the same pair never interleave."""

from __future__ import annotations

from datetime import datetime

import boto3
import pandas as pd
import pytest
from dagster import DagsterRunStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster_graphql import DagsterGraphQLClient

from jobs.market_data import MARKET_DATA_JOB
from tests.conftest import load_recorded
from tests.stack.stack_control import DEMO_CANDLES, PAIRS, Stack
from tradai_resources.arcticdb_store import ArcticDBResource

pytestmark = pytest.mark.stack


def launch(stack: Stack, first_day: str, last_day: str, tags: dict[str, str] | None = None) -> str:
    """Submit a market-data run over `[first_day, last_day]` the way the UI does: through GraphQL."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.webserver_port, timeout=120)
    return client.submit_job_execution(
        MARKET_DATA_JOB,
        repository_location_name="tradai",
        repository_name="__repository__",
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first_day,
            ASSET_PARTITION_RANGE_END_TAG: last_day,
            **(tags or {}),
        },
    )


def assert_stored_as_recorded(stack: Stack, start: str, end: str) -> None:
    """Read the window back from the bucket and compare it with the recorded candles, pair by pair."""
    store = ArcticDBResource(uri=stack.env["TRADAI_ARCTICDB_URI"])
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    for pair in PAIRS:
        recorded = load_recorded(DEMO_CANDLES, pair)
        expected = recorded[(recorded.index >= lo) & (recorded.index < hi)]
        stored = store.read("binance", "1h", pair, lo.to_pydatetime(), hi.to_pydatetime()).candles
        assert not expected.empty
        pd.testing.assert_frame_equal(stored, expected, check_freq=False)


def test_launched_candles_land_in_arcticdb_on_s3_identical_to_the_source(stack: Stack) -> None:
    run_id = launch(stack, "2021-01-01", "2021-01-03")
    assert stack.wait_for_run(run_id) == DagsterRunStatus.SUCCESS
    run = stack.instance().get_run_by_id(run_id)
    assert run is not None and run.tags["tradai/exchange"] == "binance"
    assert_stored_as_recorded(stack, "2021-01-01", "2021-01-04")
    keys = [
        item["Key"]
        for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="tradai-arcticdb")
        for item in page.get("Contents", [])
    ]
    assert any("BTC_USDT" in key for key in keys) and any("ohlcv.binance.1h" in key for key in keys)


def test_two_runs_writing_the_same_pairs_are_queued_one_after_the_other(stack: Stack) -> None:
    first = launch(stack, "2021-02-01", "2021-02-03", {"tradai/symbol": "BTC_USDT"})
    second = launch(stack, "2021-02-02", "2021-02-04", {"tradai/symbol": "BTC_USDT"})
    assert stack.wait_for_run(first) == DagsterRunStatus.SUCCESS
    assert stack.wait_for_run(second) == DagsterRunStatus.SUCCESS
    records = {r.dagster_run.run_id: r for r in stack.instance().get_run_records()}
    spans = sorted((records[i].start_time, records[i].end_time) for i in (first, second))
    assert all(isinstance(t, float) for span in spans for t in span)
    (_, first_end), (second_start, _) = spans
    overlap = [datetime.fromtimestamp(t) for t in (second_start, first_end)]
    assert first_end <= second_start, f"overlap: 2nd started {overlap[0]}, 1st ended {overlap[1]}"
    assert_stored_as_recorded(stack, "2021-02-01", "2021-02-05")
