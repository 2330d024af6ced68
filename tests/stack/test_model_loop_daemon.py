"""The model loop run by the stack's daemon, not by the test (issue #12, test "e").

The test only sets the scene, as the platform's own jobs would have left it: recorded candles of
2020-10-12 → 2021-07-01 in ArcticDB on S3, their features, a first champion trained on the bull market
(2020-10-12 → 2021-01-12) and registered in the MLflow server, and the drift scores of both pairs, which
are severe. From there the daemon works alone: its drift sensor ticks and requests a retraining run, the
queued run coordinator starts it, and the run trains the challenger and compares it with the champion.
Everything is observed from the Postgres instance (runs, their tags and events) with bounded waits.
"""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import (
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
)
from dagster_graphql import DagsterGraphQLClient

from jobs.model_loop import PERFORMANCE_JOB, PROMOTE_JOB, RETRAINING_JOB, ROLLBACK_JOB
from sensors.model_loop import DRIFT_SENSOR, PROMOTION_SENSOR, ROLLBACK_SENSOR
from tests.stack.model_loop_scene import NAME, metadata, runs_of, set_the_scene, wait_until
from tests.stack.stack_control import Stack
from tradai.definitions import build_definitions
from tradai_assets.models import CHALLENGER, CHAMPION
from tradai_resources.mlflow_tracking import MLflowResource

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ENQUEUED, STARTING, STARTED = (
    DagsterEventType.RUN_ENQUEUED.value,
    DagsterEventType.RUN_STARTING.value,
    DagsterEventType.RUN_START.value,
)
TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 200) { status runIds } } }
    ... on PythonError { message }
  }
}
"""


def ticks_with_runs(stack: Stack, sensor: str) -> set[str]:
    """The run ids the daemon's ticks of `sensor` requested, as the UI's sensor page shows them."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.webserver_port, timeout=120)
    selector = {"repositoryLocationName": "tradai", "repositoryName": "__repository__", "sensorName": sensor}
    answer = client._execute(TICKS, {"selector": selector})["sensorOrError"]
    assert answer["__typename"] == "Sensor", answer
    return {run_id for tick in answer["sensorState"]["ticks"] for run_id in tick["runIds"]}


RETRAINING_STEPS = {
    "training_set": "tradai-1",
    "model": "tradai-1",
    "validation_backtest__champion": "tradai-1",
    "validation_backtest__challenger": "tradai-1",
    "model_comparison": "tradai-1",
}
"""The retraining run's steps and the Celery worker (node name, deploy/stack.sh) each must run on."""


def celery_steps(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """The run's succeeded steps, each with the Celery worker that executed it, read from the engine
    events: the run worker's 'Submitting celery task for step "X"' and the task's '[CeleryExecutor]
    Executing steps X in celery worker' (metadata 'Celery worker' = node@host). A step without both is
    missing from the map."""
    submitted: set[str] = set()
    worker_of: dict[str, str] = {}
    succeeded: set[str] = set()
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_SUCCESS:
            succeeded.add(entry.step_key)
        elif event.event_type == DagsterEventType.ENGINE_EVENT and event.message:
            if event.message.startswith(f'Submitting celery task for step "{entry.step_key}"'):
                submitted.add(entry.step_key)
            elif event.message.endswith(f"Executing steps {entry.step_key} in celery worker"):
                worker = event.engine_event_data.metadata["Celery worker"].value  # type: ignore[union-attr]
                worker_of[entry.step_key] = str(worker).split("@", 1)[0]
    return {step: worker_of[step] for step in succeeded if step in submitted and step in worker_of}


def test_the_daemon_retrains_on_severe_drift(stack: Stack) -> None:
    defs = build_definitions()
    mlflow = MLflowResource(tracking_uri=stack.env["TRADAI_MLFLOW_URI"])  # the stack's tracking server
    set_the_scene(stack, defs)
    assert mlflow.alias_version(NAME, CHAMPION) == 1
    instance = stack.instance()

    # The daemon's drift sensor (running by default) ticks and requests one retraining run.
    def retraining_run() -> DagsterRun | None:
        runs = instance.get_runs(RunsFilter(job_name=RETRAINING_JOB, tags={"tradai/trigger": "drift"}))
        return runs[0] if runs else None

    run = wait_until("a retraining run requested by the daemon's drift sensor", retraining_run, 600)
    assert run.tags[SENSOR_NAME_TAG] == DRIFT_SENSOR
    assert run.tags[RUN_KEY_TAG].startswith("retrain:drift_score:")
    assert run.tags["tradai/model_loop"] == "retraining" and run.tags["tradai/drift_model_version"] == "1"
    assert stack.wait_for_run(run.run_id, timeout_s=1800) == DagsterRunStatus.SUCCESS
    statuses = [
        e.dagster_event.event_type_value
        for e in instance.all_logs(run.run_id)
        if e.is_dagster_event and e.dagster_event is not None
    ]
    # The queued run coordinator started it: it went through the queue, not straight to a worker.
    assert statuses.index(ENQUEUED) < statuses.index(STARTING) < statuses.index(STARTED)
    # Every step of the retraining run ran on a Celery worker of the stack (Redis broker), not in the run
    # worker: the run worker submitted each step as a Celery task, and dagster-celery's task reported
    # which worker executed it (engine events of the run's event log).
    assert celery_steps(instance, run.run_id) == RETRAINING_STEPS
    # One run only: the second pair's severe score falls in the cooldown of the first.
    assert len(instance.get_runs(RunsFilter(job_name=RETRAINING_JOB))) == 1

    # The run trained challenger v2 and compared it with champion v1 on the holdout neither saw.
    model = metadata(stack, run.run_id, "model")
    assert (model["model_version"], model["aliases"]) == (2, "challenger")
    assert model["training_window"] == "train [2020-10-12, 2021-05-22), holdout [2021-05-22, 2021-07-01)"
    comparison = metadata(stack, run.run_id, "model_comparison")
    assert (comparison["champion_version"], comparison["challenger_version"]) == (1, 2)
    assert comparison["decision"] in {"promote", "keep", "inconclusive"}
    assert mlflow.get_version(NAME, 2).tags["tradai.validation.decision"] == comparison["decision"]
    assert mlflow.alias_version(NAME, CHALLENGER) == 2

    # The daemon's promotion sensor acts on the comparison: promote moves `champion`, keep/inconclusive
    # keep it; either way one promote_champion_job run writes the audit entry.
    action = "promote" if comparison["decision"] == "promote" else "keep"
    decided = wait_until(
        "the promotion sensor's run for the comparison",
        lambda: next(iter(runs_of(instance, PROMOTE_JOB, "comparison")), None),
        600,
    )
    assert decided.tags[SENSOR_NAME_TAG] == PROMOTION_SENSOR
    assert decided.tags[RUN_KEY_TAG].startswith(f"{action}:model_comparison:")
    assert stack.wait_for_run(decided.run_id, timeout_s=600) == DagsterRunStatus.SUCCESS
    audit = metadata(stack, decided.run_id, "champion_model")
    assert (audit["action"], audit["decision"]) == (action, comparison["decision"])
    assert audit["p_value"] == pytest.approx(comparison["p_value"])
    new_champion = 2 if action == "promote" else 1
    assert mlflow.alias_version(NAME, CHAMPION) == new_champion
    [bootstrap] = runs_of(instance, PROMOTE_JOB, "bootstrap")
    assert (
        bootstrap.status == DagsterRunStatus.SUCCESS and bootstrap.tags[SENSOR_NAME_TAG] == PROMOTION_SENSOR
    )
    assert [e.action.value for e in mlflow.audit_history(NAME)] == ["bootstrap", action]
    assert ticks_with_runs(stack, PROMOTION_SENSOR) >= {bootstrap.run_id, decided.run_id}
    assert ticks_with_runs(stack, DRIFT_SENSOR) == {run.run_id}

    # The champion's rolling performance (a run the daemon starts, as the daily schedule would) breaches
    # the limits (a Sharpe floor of 50): the daemon's rollback sensor returns `champion` to v1.
    assert action == "promote", f"the challenger was not promoted ({comparison['decision']}): no rollback"
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.webserver_port, timeout=120)
    judged_id = client.submit_job_execution(
        PERFORMANCE_JOB,
        repository_location_name="tradai",
        repository_name="__repository__",
        run_config={"ops": {"champion_performance": {"config": {"window_days": 20}}}},
    )
    assert stack.wait_for_run(judged_id, timeout_s=900) == DagsterRunStatus.SUCCESS
    judged = metadata(stack, judged_id, "champion_performance")
    assert (judged["model_version"], judged["timerange"]) == (2, "20210611-20210701")
    rollback = wait_until(
        "the rollback sensor's run",
        lambda: next(iter(runs_of(instance, ROLLBACK_JOB, "rollback")), None),
        600,
    )
    assert rollback.tags[SENSOR_NAME_TAG] == ROLLBACK_SENSOR
    assert rollback.tags[RUN_KEY_TAG].startswith("rollback:champion_performance:")
    assert stack.wait_for_run(rollback.run_id, timeout_s=600) == DagsterRunStatus.SUCCESS
    assert metadata(stack, rollback.run_id, "champion_model")["action"] == "rollback"
    assert mlflow.alias_version(NAME, CHAMPION) == 1
    assert "tradai.rolled_back" in mlflow.get_version(NAME, 2).tags
    assert [e.action.value for e in mlflow.audit_history(NAME)] == ["bootstrap", "promote", "rollback"]
    assert ticks_with_runs(stack, ROLLBACK_SENSOR) == {rollback.run_id}
