"""The promotion sensor: acts on every champion/challenger decision, once.

It reads new `model_comparison` materializations and decides with
`tradai_core.model_lifecycle.decide_promotion`:

- `promote` → a run of the promote job moving `champion` to the challenger (the old champion is tagged
  archived), recorded in the audit history;
- `keep` or `inconclusive` → a run recording that the champion was kept, and why;
- a decision already in the audit history, about a champion that has since changed, or promoting a
  version that is already champion → nothing.

It also records the **bootstrap** of the first champion: a `model` materialization that set `champion`
because none existed becomes the first entry of the audit history.

Idempotency has three layers: the cursor (the last storage id handled) means an event is read once; the
run key (`promote:model_comparison:<storage id>`) means Dagster never launches a second run for it; and
the `champion_model` run itself checks the audit history for the event and does nothing if it is there.
"""

import json

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
from tradai_assets.keys import COMPARISON_KEY, MODEL_KEY
from tradai_core.model_lifecycle import (
    AuditEntry,
    ComparisonOutcome,
    already_recorded,
    decide_promotion,
    float_metrics,
)
from tradai_core.registry import CHAMPION
from tradai_resources.mlflow_tracking import MLflowResource

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
