"""The rollback sensor: returns `champion` to the previous version when the champion's rolling
performance breaches the configured limits.

It reads new `champion_performance` materializations and decides with
`tradai_core.model_lifecycle.decide_rollback` against `RollbackLimits` (`TRADAI_ROLLBACK_MAX_DRAWDOWN`,
default 0.20; `TRADAI_ROLLBACK_MIN_SHARPE`, default −1.0; `TRADAI_ROLLBACK_MIN_TRADES`, default 10):

- a judged breach by the current champion → a run of the rollback job (run key
  `rollback:champion_performance:<storage id>`), recorded in the audit history and notified;
- a breach that cannot be acted on — the champion is itself the result of a rollback (rollbacks do not
  cascade on their own), or there is no earlier champion — → a critical notification for a person;
- anything else (within limits, too few trades, a version no longer champion) → nothing.

A person rolls back by hand with the rollback job from the UI (its config: a reason, optionally the
version to return to); both paths write the same audit entry.
"""

from datetime import UTC, datetime

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from sensors.events import Materialized, materializations_after
from sensors.promotion import champion_run_config
from tradai_assets.model_lifecycle import alias_version, read_audit_history
from tradai_assets.models import CHAMPION
from tradai_assets.validation import PERFORMANCE_KEY
from tradai_core.model_lifecycle import ChampionPerformance, RollbackLimits, decide_rollback
from tradai_resources.mlflow_tracking import MLflowResource
from tradai_resources.notifier import Notification, NotifierResource

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
            history = read_audit_history(mlflow, performance.model)
            champion = alias_version(mlflow, performance.model, CHAMPION)
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
