"""The drift sensor: severe drift retrains, moderate drift warns, a cooldown keeps a storm to one retrain.

It reads every new `drift_score` materialization (cursor: the last storage id handled) and decides with
`tradai_core.model_lifecycle.decide_drift_action`:

- **severe** (of the current champion) → a notification and a run of the retraining job, with run key
  `retrain:drift_score:<storage id>` (unique to the drift event, so Dagster never launches it twice) and
  tags naming the pair, the model and the event;
- **moderate** → a notification only;
- **none / insufficient**, or a score of a version that is no longer champion → nothing.

Cooldown: no retraining request when a retraining run of the model was requested within
`TRADAI_DRIFT_COOLDOWN_HOURS` (default 24) before the event, or after it — by this sensor, the weekly
schedule or a person. Requests made earlier in the same tick count too, so six pairs turning severe at
once start one retraining (every pair is in the training set), not six.
"""

import logging
from datetime import UTC, datetime

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from sensors.events import Materialized, materializations_after
from tradai_assets.keys import DRIFT_KEY
from tradai_core.model_lifecycle import DriftDecision, DriftEvent, DriftPolicy, decide_drift_action
from tradai_core.registry import CHAMPION
from tradai_resources.mlflow_tracking import MLflowResource
from tradai_resources.notifier import Notification, NotifierResource

logger = logging.getLogger(__name__)

DRIFT_SENSOR = "drift_sensor"
TAG_TRIGGER = "tradai/trigger"
TAG_MODEL = "tradai/model"


def drift_event(event: Materialized) -> DriftEvent | None:
    """The drift event a `drift_score` materialization reports (None when it lacks the fields)."""
    meta = event.metadata
    try:
        return DriftEvent(
            model=str(meta["model_name"]),
            model_version=int(meta["model_version"]),
            pair=str(meta.get("pair") or event.partition),
            severity=str(meta["severity"]),  # type: ignore[arg-type]
            psi=float(meta["median_psi"]),
            prediction_psi=float(meta["prediction_psi"]) if meta.get("prediction_psi") is not None else None,
            top_features=tuple(f.strip() for f in str(meta.get("top_features", "")).split(",") if f.strip()),
            at=event.at,
            storage_id=event.storage_id,
            dagster_run_id=event.run_id,
        )
    except (KeyError, TypeError, ValueError):
        return None


def last_retraining_request(instance: DagsterInstance, job_name: str) -> datetime | None:
    """When the newest run of the retraining job was created (whatever started it), if any."""
    records = instance.get_run_records(RunsFilter(job_name=job_name), limit=1)
    if not records:
        return None
    created = records[0].create_timestamp
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def drift_decisions(
    instance: DagsterInstance,
    events: list[Materialized],
    mlflow: MLflowResource,
    job_name: str,
    policy: DriftPolicy,
) -> list[tuple[DriftEvent, DriftDecision]]:
    """What to do about each drift event, in order, without doing it: the sensor's reasoning.

    A retraining decided for an earlier event counts, for the cooldown, as a run requested now.
    """
    champions: dict[str, int | None] = {}
    last_request = last_retraining_request(instance, job_name)
    decided: list[tuple[DriftEvent, DriftDecision]] = []
    for materialized in events:
        event = drift_event(materialized)
        if event is None:
            logger.warning("drift score %s lacks the sensor's fields; skipped", materialized.storage_id)
            continue
        if event.model not in champions:
            champions[event.model] = mlflow.alias_version(event.model, CHAMPION)
        decision = decide_drift_action(event, champions[event.model], last_request, policy)
        if decision.action == "retrain":
            last_request = datetime.now(tz=UTC)
        decided.append((event, decision))
    return decided


def drift_notification(event: DriftEvent, decision: DriftDecision) -> Notification:
    """What people are told about a moderate or severe drift event."""
    assert decision.notify is not None
    return Notification(
        kind="drift_alert" if event.severity == "severe" else "drift_warning",
        severity=decision.notify,
        title=f"{event.severity} drift on {event.pair} for {event.model} v{event.model_version}",
        details={
            "median_feature_psi": round(event.psi, 4),
            "prediction_psi": round(event.prediction_psi, 4) if event.prediction_psi is not None else "-",
            "most_drifted": ", ".join(event.top_features[:5]),
            "action": decision.action,
            "why": decision.reason,
        },
        dagster_run_id=event.dagster_run_id,
    )


def build_drift_sensor(
    retraining_job: UnresolvedAssetJobDefinition, policy: DriftPolicy | None = None
) -> SensorDefinition:
    """The drift sensor, requesting runs of `retraining_job` (policy default: from the environment)."""

    @sensor(
        name=DRIFT_SENSOR,
        job=retraining_job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Severe drift of the champion → notification + retraining run (one per cooldown, "
        "TRADAI_DRIFT_COOLDOWN_HOURS, default 24 h); moderate drift → notification only.",
    )
    def drift_sensor(
        context: SensorEvaluationContext, mlflow: MLflowResource, notifier: NotifierResource
    ) -> SensorResult | SkipReason:
        after = int(context.cursor or 0)
        events = materializations_after(context.instance, DRIFT_KEY, after)
        if not events:
            return SkipReason(f"no drift scores after storage id {after}")
        requests: list[RunRequest] = []
        decided = drift_decisions(
            context.instance, events, mlflow, retraining_job.name, policy or DriftPolicy()
        )
        for event, decision in decided:
            context.log.info("%s: %s — %s", event.event_key, decision.action, decision.reason)
            if decision.notify is not None:
                notifier.notify(drift_notification(event, decision))
            if decision.action == "retrain":
                requests.append(
                    RunRequest(
                        run_key=f"retrain:{event.event_key}",
                        tags={
                            TAG_TRIGGER: "drift",
                            TAG_MODEL: event.model,
                            "tradai/drift_pair": event.pair,
                            "tradai/drift_event": event.event_key,
                            "tradai/drift_psi": f"{event.psi:.4f}",
                            "tradai/drift_model_version": str(event.model_version),
                        },
                    )
                )
        return SensorResult(run_requests=requests, cursor=str(events[-1].storage_id))

    return drift_sensor
