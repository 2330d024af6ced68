"""The scene of the daemon-driven model loop, shared by tests/stack/test_model_loop_daemon.py and
bench/stack.py: what earlier runs would leave on the stack (candles, features, a first champion, severe
drift scores), and bounded waits on what the daemon does next."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from dagster import DagsterInstance, DagsterRun, Definitions, RunsFilter
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from jobs.ml import FEATURES_JOB
from jobs.model_loop import DRIFT_JOB
from tests.model_loop_fixtures import MODEL, PAIRS, seed_candles
from tests.stack.stack_control import DEMO_CANDLES, Stack
from tradai_assets.models import MODEL_KEY, TRAINING_SET_KEY
from tradai_core.settings import TradAISettings, pair_slug
from tradai_resources.arcticdb_store import ArcticDBResource

NAME = "tradai-lgbm-1h"
CRASH_END = "2021-05-25"
"""End of the drift window scored: 2021-05-11 → 05-25, the crash (as in tests/test_model_loop.py)."""
T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 2) -> T:
    """Poll `probe` until it returns something (bounded); that something."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(every_s)
    raise AssertionError(f"{what}: not seen within {timeout_s}s")


def runs_of(instance: DagsterInstance, job: str, trigger: str) -> list[DagsterRun]:
    """Runs of `job` carrying tradai/trigger=`trigger`, newest first."""
    return list(instance.get_runs(RunsFilter(job_name=job, tags={"tradai/trigger": trigger})))


def metadata(stack: Stack, run_id: str, asset: str) -> dict[str, object]:
    """The metadata of the one materialization of `asset` by the run."""
    events = [
        e
        for e in stack.instance().all_logs(run_id)
        if e.is_dagster_event
        and e.dagster_event is not None
        and e.dagster_event.is_step_materialization
        and e.dagster_event.asset_key is not None
        and e.dagster_event.asset_key.to_user_string() == asset
    ]
    assert len(events) == 1, f"{asset}: {len(events)} materializations in run {run_id}"
    materialization = events[0].dagster_event.step_materialization_data.materialization  # type: ignore[union-attr]
    return {key: value.value for key, value in materialization.metadata.items()}


def set_the_scene(stack: Stack, defs: Definitions) -> None:
    """Candles, features, the first champion and severe drift scores, as earlier runs would leave them."""
    settings = TradAISettings()
    seed_candles(
        ArcticDBResource(uri=settings.resolved_arcticdb_uri),
        DEMO_CANDLES,
        settings.history_start,
        settings.resolved_history_end,
    )
    instance = stack.instance()
    features = defs.resolve_job_def(FEATURES_JOB).execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: "2020-10-12", ASSET_PARTITION_RANGE_END_TAG: "2021-06-30"},
    )
    assert features.success
    first = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        asset_selection=[TRAINING_SET_KEY, MODEL_KEY],
        run_config={
            "ops": {"training_set": {"config": {"train_end": "2021-01-12"}}, "model": {"config": MODEL}}
        },
    )
    [registered] = first.asset_materializations_for_node("model")
    assert registered.metadata["aliases"].value == "challenger, champion"
    for pair in PAIRS:  # the two weeks of the May 2021 crash: severe under the calibrated floor
        scored = defs.resolve_job_def(DRIFT_JOB).execute_in_process(
            instance=instance,
            partition_key=pair_slug(pair),
            run_config={"ops": {"drift_score": {"config": {"end": CRASH_END}}}},
        )
        [score] = scored.asset_materializations_for_node("drift_score")
        assert score.metadata["severity"].value == "severe"
