"""Two runs computing the same pair's features at the same time, launched as the UI launches them, never
interleave their writes or corrupt the stored features (ArcticDB allows one writer per symbol): each
pair's feature step takes the Dagster pool `arcticdb/<library>/<symbol>` (limit 1, held in the Postgres
instance, so it holds across run workers and Celery workers on other machines)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime

import pandas as pd
import pytest
import sqlalchemy.exc
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster_graphql import DagsterGraphQLClient

from jobs.ml import FEATURES_JOB
from tests.model_loop_fixtures import seed_candles
from tests.stack.model_loop_scene import wait_until
from tests.stack.stack_control import DEMO_CANDLES, PAIRS, Stack
from tradai_assets.features import compute_window_features, features_library
from tradai_core.settings import TradAISettings, pair_slug
from tradai_resources.arcticdb_store import ArcticDBResource, symbol_pool

pytestmark = pytest.mark.stack

LIBRARY = features_library("binance", "1h")


def launch(stack: Stack, first_day: str, last_day: str) -> str:
    """Submit a features run over `[first_day, last_day]` through GraphQL, as the UI does (no tags)."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.webserver_port, timeout=120)
    return client.submit_job_execution(
        FEATURES_JOB,
        repository_location_name="tradai",
        repository_name="__repository__",
        tags={ASSET_PARTITION_RANGE_START_TAG: first_day, ASSET_PARTITION_RANGE_END_TAG: last_day},
    )


def step_span(instance: DagsterInstance, run_id: str, step: str) -> tuple[float, float]:
    """When the step started and when it succeeded in the run (event timestamps)."""
    times = {
        e.dagster_event.event_type: e.timestamp
        for e in instance.all_logs(run_id)
        if e.step_key == step and e.dagster_event is not None
    }
    return times[DagsterEventType.STEP_START], times[DagsterEventType.STEP_SUCCESS]


def waiting_for(instance: DagsterInstance, pool: str) -> set[str]:
    """The runs with a step waiting for a slot of `pool`, as the instance records them (Celery's
    executor reports no 'blocked' event, the instance's pending steps are the record)."""
    return instance.event_log_storage.get_concurrency_info(pool).pending_run_ids


@contextmanager
def writer_holding(instance: DagsterInstance, pool: str) -> Iterator[None]:
    """The pool's one slot held for the block, as a third writer of the symbol would hold it."""
    storage = instance.event_log_storage
    # limit 1, deploy/dagster.yaml's default; a run of the daemon may create the pool's row at the same moment
    with suppress(sqlalchemy.exc.DBAPIError):
        storage.initialize_concurrency_limit_to_default(pool)
    assert storage.get_concurrency_info(pool).slot_count == 1
    holder = f"stack-test-writer-{uuid.uuid4().hex[:8]}"
    assert storage.claim_concurrency_slot(pool, holder, "write").is_claimed
    try:
        yield
    finally:
        storage.free_concurrency_slot_for_step(holder, "write")


def test_two_runs_writing_the_same_pairs_features_at_once_never_interleave(stack: Stack) -> None:
    settings = TradAISettings()  # the stack's environment
    store = ArcticDBResource(uri=settings.resolved_arcticdb_uri)
    seed_candles(store, DEMO_CANDLES, settings.history_start, settings.resolved_history_end)
    instance = stack.instance()
    btc = symbol_pool(LIBRARY, "BTC_USDT")
    # While another writer holds BTC's slot, both runs start and both wait for it: they are in flight at
    # the same time, and what follows shows the pool (not their timing) keeps their writes apart.
    with writer_holding(instance, btc):
        first = launch(stack, "2021-03-01", "2021-03-20")
        second = launch(stack, "2021-03-10", "2021-03-31")
        wait_until(
            "both runs waiting for BTC's pool slot",
            lambda: {first, second} <= waiting_for(instance, btc) or None,
            900,
        )
    assert stack.wait_for_run(first, timeout_s=900) == DagsterRunStatus.SUCCESS
    assert stack.wait_for_run(second, timeout_s=900) == DagsterRunStatus.SUCCESS

    for pair in PAIRS:
        step = f"features__{pair_slug(pair)}"
        (_, first_end), (second_start, _) = sorted(step_span(instance, run, step) for run in (first, second))
        overlap = [datetime.fromtimestamp(t) for t in (second_start, first_end)]
        assert first_end <= second_start, (
            f"{step} overlapped: 2nd started {overlap[0]}, 1st ended {overlap[1]}"
        )

        # What is stored is exactly the features of the stored candles, each hour once.
        lo, hi = pd.Timestamp("2021-03-01", tz="UTC"), pd.Timestamp("2021-04-01", tz="UTC")
        candles = store.read("binance", "1h", pair, None, hi.to_pydatetime()).candles
        expected = compute_window_features(candles, lo.to_pydatetime(), hi.to_pydatetime())
        stored = store.read_frame(LIBRARY, pair_slug(pair), lo.to_pydatetime(), hi.to_pydatetime()).frame
        assert stored.index.is_unique and len(stored) == len(expected) > 0
        pd.testing.assert_frame_equal(stored, expected, check_freq=False, check_names=False)
