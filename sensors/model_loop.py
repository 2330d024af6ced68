"""The model loop's sensors, in the order drift travels through them: severe drift retrains, a comparison's
decision promotes or keeps, a breach of the champion's performance rolls back.

Each reads new materializations of one asset with a storage-id cursor (`materializations_after`: every
event seen once, in order, a storm worked through a page at a time) and decides with the rules of
`tradai_core.model_lifecycle`; the jobs they launch are `jobs.model_loop`.

**Drift sensor** (`drift_score` → `retraining_job`, `decide_drift_action`):

- **severe** (of the current champion) → a notification and a run of the retraining job, with run key
  `retrain:drift_score:<storage id>` (unique to the drift event, so Dagster never launches it twice) and
  tags naming the pair, the model and the event;
- **moderate** → a notification only;
- **none / insufficient**, or a score of a version that is no longer champion → nothing.

Cooldown: no retraining request when a retraining run of the model was requested within
`TRADAI_DRIFT_COOLDOWN_HOURS` (default 24) before the event, or after it — by this sensor, the weekly
schedule or a person. Requests made earlier in the same tick count too, so six pairs turning severe at
once start one retraining (every pair is in the training set), not six.

**Promotion sensor** (`model_comparison` → `promote_champion_job`, `decide_promotion`):

- `promote` → a run of the promote job moving `champion` to the challenger (the old champion is tagged
  archived), recorded in the audit history;
- `keep` or `inconclusive` → a run recording that the champion was kept, and why;
- a decision already in the audit history, about a champion that has since changed, or promoting a
  version that is already champion → nothing.

It also records the **bootstrap** of the first champion: a `model` materialization that set `champion`
because none existed becomes the first entry of the audit history. Idempotency has three layers: the
cursor means an event is read once; the run key (`promote:model_comparison:<storage id>`) means Dagster
never launches a second run for it; and the `champion_model` run itself checks the audit history for the
event and does nothing if it is there.

**Rollback sensor** (`champion_performance` → `rollback_champion_job`, `decide_rollback` against
`RollbackLimits`: `TRADAI_ROLLBACK_MAX_DRAWDOWN`, default 0.20; `TRADAI_ROLLBACK_MIN_SHARPE`, default −1.0;
`TRADAI_ROLLBACK_MIN_TRADES`, default 10):

- a judged breach by the current champion → a run of the rollback job (run key
  `rollback:champion_performance:<storage id>`), recorded in the audit history and notified;
- a breach that cannot be acted on — the champion is itself the result of a rollback (rollbacks do not
  cascade on their own), or there is no earlier champion — → a critical notification for a person;
- anything else (within limits, too few trades, a version no longer champion) → nothing.

A person rolls back by hand with the rollback job from the UI (its config: a reason, optionally the
version to return to); both paths write the same audit entry.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    EventLogRecord,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import BaseModel, ConfigDict

from tradai_assets.keys import COMPARISON_KEY, DRIFT_KEY, MODEL_KEY, PERFORMANCE_KEY
from tradai_core.model_lifecycle import (
    AuditEntry,
    ChampionPerformance,
    ComparisonOutcome,
    DriftDecision,
    DriftEvent,
    DriftPolicy,
    RollbackLimits,
    already_recorded,
    decide_drift_action,
    decide_promotion,
    decide_rollback,
    float_metrics,
)
from tradai_core.registry import CHAMPION
from tradai_resources.mlflow_tracking import MLflowResource
from tradai_resources.notifier import Notification, NotifierResource

logger = logging.getLogger(__name__)

# -- reading new materializations ----------------------------------------------------------------------

PAGE = 100


class Materialized(BaseModel):
    """One materialization a sensor reads: where it sits in the event log, when, which run, its metadata."""

    model_config = ConfigDict(frozen=True)

    storage_id: int
    at: datetime
    run_id: str
    partition: str | None
    metadata: dict[str, Any]


def materializations_after(
    instance: DagsterInstance, key: AssetKey, after_storage_id: int, limit: int = PAGE
) -> list[Materialized]:
    """Materializations of `key` with a storage id above `after_storage_id`, oldest first, at most `limit`.

    A sensor keeps the last storage id it handled as its cursor and reads from there: every event is seen
    once, in order, and a storm of events is worked through `limit` at a time.
    """
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, after_storage_id=after_storage_id), limit=limit, ascending=True
    ).records
    return [_materialized(record) for record in records if record.asset_materialization is not None]


def _materialized(record: EventLogRecord) -> Materialized:
    materialization = record.asset_materialization
    assert materialization is not None
    return Materialized(
        storage_id=record.storage_id,
        at=datetime.fromtimestamp(record.timestamp, tz=UTC),
        run_id=record.run_id,
        partition=materialization.partition,
        metadata={key: value.value for key, value in materialization.metadata.items()},
    )


# -- 1. drift → retraining -----------------------------------------------------------------------------

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

    A retraining decided for an earlier event counts, for the cooldown, as a run requested when that
    event was scored.
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
            last_request = event.at  # event time, as the run records it reads: no wall clock
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


# -- 2. comparison → promotion (and the first champion's bootstrap) ------------------------------------

PROMOTION_SENSOR = "promotion_sensor"
_METRIC_KEYS = (
    "sharpe_diff",
    "ci_low",
    "ci_high",
    "n_bars",
    "champion_sharpe",
    "challenger_sharpe",
    "champion_total_profit",
    "challenger_total_profit",
    "champion_win_rate",
    "challenger_win_rate",
    "champion_trade_count",
    "challenger_trade_count",
)


def comparison_outcome(event: Materialized) -> ComparisonOutcome | None:
    """The decision a `model_comparison` materialization recorded (None when it lacks the fields)."""
    meta = event.metadata
    try:
        return ComparisonOutcome(
            model=str(meta["model_name"]),
            decision=str(meta["decision"]),  # type: ignore[arg-type]
            reason=str(meta["reason"]),
            champion_version=int(meta["champion_version"]),
            challenger_version=int(meta["challenger_version"]),
            p_value=float(meta["p_value"]),
            metrics=float_metrics({key: meta.get(key) for key in _METRIC_KEYS}),
            storage_id=event.storage_id,
            at=event.at,
            dagster_run_id=event.run_id,
        )
    except (KeyError, TypeError, ValueError):
        return None


def champion_run_config(**config: object) -> dict[str, object]:
    """Run config of the `champion_model` asset."""
    return {"ops": {"champion_model": {"config": {k: v for k, v in config.items() if v is not None}}}}


def _cursor(raw: str | None) -> dict[str, int]:
    state = json.loads(raw) if raw else {}
    return {"comparison": int(state.get("comparison", 0)), "model": int(state.get("model", 0))}


def build_promotion_sensor(promote_job: UnresolvedAssetJobDefinition) -> SensorDefinition:
    """The promotion sensor, requesting runs of `promote_job` (the job materializing `champion_model`)."""

    @sensor(
        name=PROMOTION_SENSOR,
        job=promote_job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="On a model_comparison decision: promote → the challenger becomes champion (old one "
        "archived); keep/inconclusive → recorded. Also records the bootstrap of the first champion. Every "
        "decision is acted on once (cursor, run key, audit history).",
    )
    def promotion_sensor(
        context: SensorEvaluationContext, mlflow: MLflowResource
    ) -> SensorResult | SkipReason:
        cursor = _cursor(context.cursor)
        comparisons = materializations_after(context.instance, COMPARISON_KEY, cursor["comparison"])
        models = materializations_after(context.instance, MODEL_KEY, cursor["model"])
        if not comparisons and not models:
            return SkipReason("no new comparisons or models")
        histories: dict[str, list[AuditEntry]] = {}
        requests: list[RunRequest] = []
        for event in models:
            meta = event.metadata
            if meta.get("bootstrapped_champion") is not True:
                continue
            name, version = str(meta["model_name"]), int(meta["model_version"])
            if name not in histories:
                histories[name] = mlflow.audit_history(name)
            if already_recorded(histories[name], f"model:{event.storage_id}") is not None:
                continue
            requests.append(
                RunRequest(
                    run_key=f"bootstrap:model:{event.storage_id}",
                    run_config=champion_run_config(
                        action="bootstrap",
                        model_name=name,
                        reason=f"v{version} was the first sane model and became champion (none existed)",
                        trigger="sensor",
                        expected_champion=version,
                        event_key=f"model:{event.storage_id}",
                    ),
                    tags={"tradai/trigger": "bootstrap", "tradai/model": name},
                )
            )
        for event in comparisons:
            outcome = comparison_outcome(event)
            if outcome is None:
                context.log.warning("comparison %s lacks the sensor's fields; skipped", event.storage_id)
                continue
            if outcome.model not in histories:
                histories[outcome.model] = mlflow.audit_history(outcome.model)
            champion = mlflow.alias_version(outcome.model, CHAMPION)
            decision = decide_promotion(outcome, champion, histories[outcome.model])
            context.log.info("%s: %s — %s", outcome.event_key, decision.action, decision.reason)
            if decision.action == "none":
                continue
            requests.append(
                RunRequest(
                    run_key=f"{decision.action}:{outcome.event_key}",
                    run_config=champion_run_config(
                        action=decision.action,
                        model_name=outcome.model,
                        reason=outcome.reason,
                        trigger="sensor",
                        to_version=outcome.challenger_version if decision.action == "promote" else None,
                        expected_champion=outcome.champion_version,
                        challenger_version=outcome.challenger_version,
                        event_key=outcome.event_key,
                        p_value=outcome.p_value,
                        decision=outcome.decision,
                        metrics=outcome.metrics,
                    ),
                    tags={"tradai/trigger": "comparison", "tradai/model": outcome.model},
                )
            )
        new_cursor = {
            "comparison": comparisons[-1].storage_id if comparisons else cursor["comparison"],
            "model": models[-1].storage_id if models else cursor["model"],
        }
        return SensorResult(run_requests=requests, cursor=json.dumps(new_cursor))

    return promotion_sensor


# -- 3. the champion's performance → rollback ----------------------------------------------------------

ROLLBACK_SENSOR = "rollback_sensor"


def champion_performance(event: Materialized) -> ChampionPerformance | None:
    """The performance a `champion_performance` materialization reports (None when it lacks fields)."""
    meta = event.metadata
    # An undefined Sharpe is recorded as text `n/a (why)`: no number, and no evidence of a breach.
    if "sharpe" not in meta:
        return None
    sharpe_value = meta["sharpe"]
    numeric = isinstance(sharpe_value, int | float) and not isinstance(sharpe_value, bool)
    sharpe = float(sharpe_value) if numeric else None  # type: ignore[arg-type]
    undefined = None if numeric else str(sharpe_value or "n/a")
    try:
        return ChampionPerformance(
            model=str(meta["model_name"]),
            version=int(meta["model_version"]),
            window_start=datetime.fromtimestamp(float(meta["window_start"]), tz=UTC),
            window_end=datetime.fromtimestamp(float(meta["window_end"]), tz=UTC),
            trade_count=int(meta["trade_count"]),
            total_profit=float(meta["total_profit"]),
            max_drawdown=float(meta["max_drawdown"]),
            sharpe=sharpe,
            sharpe_undefined=undefined,
            storage_id=event.storage_id,
            at=event.at,
        )
    except (KeyError, TypeError, ValueError):
        return None


def build_rollback_sensor(
    rollback_job: UnresolvedAssetJobDefinition, limits: RollbackLimits | None = None
) -> SensorDefinition:
    """The rollback sensor, requesting runs of `rollback_job` (limits default: from the environment)."""

    @sensor(
        name=ROLLBACK_SENSOR,
        job=rollback_job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="When champion_performance breaches the rollback limits (TRADAI_ROLLBACK_*: drawdown, "
        "Sharpe floor, minimum trades), the champion returns to the previous version; breaches it cannot "
        "act on (no earlier champion, champion restored by a rollback) are notified.",
    )
    def rollback_sensor(
        context: SensorEvaluationContext, mlflow: MLflowResource, notifier: NotifierResource
    ) -> SensorResult | SkipReason:
        after = int(context.cursor or 0)
        events = materializations_after(context.instance, PERFORMANCE_KEY, after)
        if not events:
            return SkipReason(f"no champion performance after storage id {after}")
        rules = limits or RollbackLimits()
        requests: list[RunRequest] = []
        for event in events:
            performance = champion_performance(event)
            if performance is None:
                context.log.warning("performance %s lacks the sensor's fields; skipped", event.storage_id)
                continue
            history = mlflow.audit_history(performance.model)
            champion = mlflow.alias_version(performance.model, CHAMPION)
            decision = decide_rollback(performance, champion, history, rules)
            context.log.info("%s: %s — %s", performance.event_key, decision.action, decision.reason)
            if decision.action == "alert":
                notifier.notify(
                    Notification(
                        kind="rollback_needed",
                        severity="critical",
                        title=f"{performance.model} v{performance.version} breaches its limits; no automatic "
                        "rollback",
                        details={"why": decision.reason, **performance.metrics()},
                        dagster_run_id=event.run_id,
                    )
                )
            elif decision.action == "rollback":
                requests.append(
                    RunRequest(
                        run_key=f"rollback:{performance.event_key}",
                        run_config=champion_run_config(
                            action="rollback",
                            model_name=performance.model,
                            reason=decision.reason,
                            trigger="sensor",
                            to_version=decision.to_version,
                            expected_champion=performance.version,
                            event_key=performance.event_key,
                            metrics={
                                **performance.metrics(),
                                "limit_max_drawdown": rules.max_drawdown,
                                "limit_min_sharpe": rules.min_sharpe,
                            },
                        ),
                        tags={"tradai/trigger": "rollback", "tradai/model": performance.model},
                    )
                )
        return SensorResult(run_requests=requests, cursor=str(events[-1].storage_id))

    return rollback_sensor
