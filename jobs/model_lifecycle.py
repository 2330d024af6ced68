"""The model loop's wiring: promote and rollback jobs, the champion's daily performance, every asset,
job, schedule and sensor of the loop in one dict for the code location, and the demo's view of the loop.

    drift_every_6_hours ─► drift_score/<pair> ─► drift_sensor ─► retraining_job
    retraining_weekly ───────────────────────────────────────────► (training_set → model →
                                                                    validation_backtest/* → model_comparison)
    model_comparison ─► promotion_sensor ─► promote_champion_job ─► champion_model (audit entry)
    champion_performance_daily ─► champion_performance ─► rollback_sensor ─► rollback_champion_job
    a person ─► rollback_champion_job (UI, with a reason) ─► champion_model (audit entry)
"""

import json
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    Definitions,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    build_sensor_context,
    define_asset_job,
    schedule,
)
from dagster._core.storage.tags import RUN_KEY_TAG
from pydantic import BaseModel, ConfigDict

from jobs.drift import DRIFT_JOB, build_drift_job, build_drift_schedule
from jobs.retraining import RETRAINING_JOB, build_retraining_job, build_retraining_schedule
from sensors.drift import DRIFT_SENSOR, build_drift_sensor, drift_decisions
from sensors.events import materializations_after
from sensors.promotion import PROMOTION_SENSOR, build_promotion_sensor
from sensors.rollback import build_rollback_sensor
from tradai_assets.drift import DRIFT_KEY, build_drift_asset
from tradai_assets.model_lifecycle import (
    CHAMPION_MODEL_KEY,
    COMPARISON_KEY,
    alias_version,
    build_champion_model_asset,
    read_audit_history,
)
from tradai_assets.models import CHALLENGER, CHAMPION, MODEL_KEY, default_model_name
from tradai_assets.validation import PERFORMANCE_KEY, build_validation_assets, last_candle_end, model_pairs
from tradai_core.errors import NotFoundError
from tradai_core.model_lifecycle import DriftPolicy, RollbackLimits
from tradai_core.settings import TradAISettings, pair_slug
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.mlflow_tracking import MLflowResource

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

PROMOTE_JOB = "promote_champion_job"
ROLLBACK_JOB = "rollback_champion_job"
PERFORMANCE_JOB = "champion_performance_job"
PERFORMANCE_SCHEDULE = "champion_performance_daily"


def build_promote_job() -> "UnresolvedAssetJobDefinition":
    """Carry out a promotion (or record a keep / the bootstrap): what the promotion sensor launches."""
    return define_asset_job(
        PROMOTE_JOB,
        selection=AssetSelection.assets(CHAMPION_MODEL_KEY),
        config={
            "ops": {
                "champion_model": {
                    "config": {"action": "promote", "reason": "manual promotion from the Dagster UI"}
                }
            }
        },
        description="Move `champion` to the challenger, archive the old champion, append to the audit "
        "history. Launched by the promotion sensor; by hand it promotes the current challenger without a "
        "comparison.",
    )


def build_rollback_job() -> "UnresolvedAssetJobDefinition":
    """Return `champion` to the previous version: the rollback sensor's job, and the UI's."""
    return define_asset_job(
        ROLLBACK_JOB,
        selection=AssetSelection.assets(CHAMPION_MODEL_KEY),
        config={
            "ops": {
                "champion_model": {
                    "config": {
                        "action": "rollback",
                        "reason": "manual rollback from the Dagster UI",
                        "trigger": "manual",
                    }
                }
            }
        },
        description="Return `champion` to the previous champion in the audit history (or `to_version`), tag "
        "the rolled-back version, append to the audit history. From the UI: Launchpad, write the reason.",
    )


def build_performance_job() -> "UnresolvedAssetJobDefinition":
    """Backtest the champion over the last days (its rolling performance)."""
    return define_asset_job(
        PERFORMANCE_JOB,
        selection=AssetSelection.assets(PERFORMANCE_KEY),
        description="The champion's rolling performance; the rollback sensor judges it.",
    )


def build_performance_schedule(
    settings: TradAISettings, performance_job: "UnresolvedAssetJobDefinition"
) -> ScheduleDefinition:
    """Daily at 01:00 UTC. Safe offline: skips without a champion, and its run key (champion version, end
    of the newest candle) launches nothing when neither changed since the last run."""
    model = default_model_name(settings.timeframe)

    @schedule(
        name=PERFORMANCE_SCHEDULE,
        cron_schedule="0 1 * * *",
        job=performance_job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Backtest the champion over the last 30 days, daily (nothing new: nothing run).",
    )
    def _performance_schedule(
        context: ScheduleEvaluationContext, mlflow: MLflowResource, candle_store: ArcticDBResource
    ) -> RunRequest | SkipReason:
        try:
            champion = mlflow.get_version_by_alias(model, CHAMPION)
            end = last_candle_end(candle_store, settings, model_pairs(champion, settings))
        except NotFoundError as exc:
            return SkipReason(f"nothing to judge: {exc}")
        return RunRequest(
            run_key=f"performance:v{champion.version}:{end:%Y%m%dT%H%M}", tags={"tradai/trigger": "schedule"}
        )

    return _performance_schedule


def build_model_loop_definitions(
    settings: TradAISettings,
    *,
    retraining_config: dict[str, Any] | None = None,
    drift_policy: DriftPolicy | None = None,
    rollback_limits: RollbackLimits | None = None,
) -> dict[str, list[Any]]:
    """Every asset, job, schedule and sensor of the model loop, to merge into the code location:

        loop = build_model_loop_definitions(settings)
        Definitions(assets=[..., *loop["assets"]], jobs=[..., *loop["jobs"]],
                    schedules=[..., *loop["schedules"]], sensors=[..., *loop["sensors"]], resources=...)

    The retraining job selects `training_set` and `model` (tradai_assets.models), which must be in the same
    Definitions. Resources used: `mlflow`, `candle_store`, `freqtrade`, `notifier`.
    """
    drift_job = build_drift_job(settings)
    retraining_job = build_retraining_job(settings, retraining_config)
    promote_job = build_promote_job()
    rollback_job = build_rollback_job()
    performance_job = build_performance_job()
    return {
        "assets": [
            build_drift_asset(settings),
            *build_validation_assets(settings, rollback_limits),
            build_champion_model_asset(settings),
        ],
        "jobs": [drift_job, retraining_job, promote_job, rollback_job, performance_job],
        "schedules": [
            build_drift_schedule(settings, drift_job),
            build_retraining_schedule(retraining_job),
            build_performance_schedule(settings, performance_job),
        ],
        "sensors": [
            build_drift_sensor(retraining_job, drift_policy),
            build_promotion_sensor(promote_job),
            build_rollback_sensor(rollback_job, rollback_limits),
        ],
    }


# -- the demo's view of the loop ----------------------------------------------------------------------


class PairDriftLine(BaseModel):
    """One pair's drift score in the demo summary."""

    model_config = ConfigDict(frozen=True)

    pair: str
    severity: str
    median_psi: float
    prediction_psi: float | None
    top_features: str
    run_id: str


class DriftLoopSummary(BaseModel):
    """What the demo's drift step did and where the loop stands."""

    model_config = ConfigDict(frozen=True)

    model: str
    champion: int | None
    challenger: int | None
    drift: tuple[PairDriftLine, ...]
    drift_sensor: tuple[str, ...]
    loop_runs: tuple[str, ...]
    audit: tuple[str, ...]

    def text(self) -> str:
        """A printable summary."""
        lines = [f"model {self.model}: champion v{self.champion}, challenger v{self.challenger}"]
        for line in self.drift:
            prediction = f"{line.prediction_psi:.3f}" if line.prediction_psi is not None else "-"
            lines.append(
                f"  {line.pair:<10} {line.severity:<12} median feature PSI {line.median_psi:.3f}, "
                f"prediction PSI {prediction}; most drifted: {line.top_features}"
            )
        lines += [f"  drift sensor: {text}" for text in self.drift_sensor] or [
            "  drift sensor: nothing to do"
        ]
        lines += [f"  loop: {text}" for text in self.loop_runs]
        lines += [f"  audit: {text}" for text in self.audit] or ["  audit: no entries yet"]
        return "\n".join(lines)


def _latest_storage_id(instance: DagsterInstance, key: Any) -> int:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else 0


def _act_on_promotions(
    definitions: Definitions,
    instance: DagsterInstance,
    resources: dict[str, Any],
    cursor: dict[str, int],
    loggers: dict[str, Any] | None = None,
) -> list[str]:
    """Evaluate the promotion sensor from `cursor` and execute what it requests (with its run keys)."""
    promotion = definitions.resolve_sensor_def(PROMOTION_SENSOR)
    # A context manager: a generator resource (a deployment's S3 IO manager) needs its scope open.
    with build_sensor_context(
        instance=instance, cursor=json.dumps(cursor), resources=resources, definitions=definitions
    ) as context:
        requests = promotion.evaluate_tick(context).run_requests
    promote_job = definitions.resolve_job_def(PROMOTE_JOB)
    done = []
    for request in requests:
        run = promote_job.execute_in_process(
            instance=instance,
            run_config={**(request.run_config or {}), "loggers": loggers or {}},
            tags={**request.tags, RUN_KEY_TAG: request.run_key or ""},
            raise_on_error=False,
        )
        done.append(f"{request.run_key}: run {run.run_id} {'succeeded' if run.success else 'failed'}")
    return done


def demo_drift_loop(
    settings: TradAISettings,
    instance: DagsterInstance,
    *,
    definitions: Definitions | None = None,
    run_requested: bool = False,
    loggers: dict[str, Any] | None = None,
) -> DriftLoopSummary:
    """After the first model: score drift of every pair, show what the drift sensor decides, and (with
    `run_requested`) run what it requests — retraining, then what the promotion sensor requests.

    Runs execute in process on `instance` with the run keys the sensors gave them, so a daemon started
    later on the same instance does not launch them again. The summary says where the loop stands.
    `loggers` is the runs' logger config (the demo passes a quiet console logger).
    """
    if definitions is None:
        from tradai.definitions import build_definitions

        definitions = build_definitions(settings)
    resources = dict(definitions.resources or {})
    mlflow: MLflowResource = resources["mlflow"].process_config_and_initialize()  # resolves its EnvVars
    model = default_model_name(settings.timeframe)
    loop_runs: list[str] = []
    if run_requested:  # record the bootstrap of the first champion, as the promotion sensor would
        comparisons_seen = _latest_storage_id(instance, COMPARISON_KEY)
        loop_runs += _act_on_promotions(
            definitions, instance, resources, {"comparison": comparisons_seen, "model": 0}, loggers
        )
    drift_job = definitions.resolve_job_def(DRIFT_JOB)
    drift_cursor = _latest_storage_id(instance, DRIFT_KEY)
    lines = []
    for pair in settings.pairs:
        result = drift_job.execute_in_process(
            instance=instance,
            partition_key=pair_slug(pair),
            run_config={"loggers": loggers or {}},
            raise_on_error=False,
            tags={"tradai/trigger": "demo"},
        )
        scored = result.asset_materializations_for_node("drift_score")
        if not result.success or not scored:
            lines.append(
                PairDriftLine(
                    pair=pair,
                    severity="failed",
                    median_psi=0.0,
                    prediction_psi=None,
                    top_features=f"see run {result.run_id}",
                    run_id=result.run_id,
                )
            )
            continue
        meta = {key: value.value for key, value in scored[0].metadata.items()}
        lines.append(
            PairDriftLine(
                pair=pair,
                severity=str(meta["severity"]),
                median_psi=float(meta["median_psi"]),
                prediction_psi=float(meta["prediction_psi"])
                if meta.get("prediction_psi") is not None
                else None,
                top_features=str(meta.get("top_features", "")),
                run_id=result.run_id,
            )
        )
    comparison_cursor = _latest_storage_id(instance, COMPARISON_KEY)
    model_cursor = _latest_storage_id(instance, MODEL_KEY)
    new_scores = materializations_after(instance, DRIFT_KEY, drift_cursor)
    decided = drift_decisions(instance, new_scores, mlflow, RETRAINING_JOB, DriftPolicy())
    sensor = definitions.resolve_sensor_def(DRIFT_SENSOR)
    with build_sensor_context(
        instance=instance, cursor=str(drift_cursor), resources=resources, definitions=definitions
    ) as context:
        tick = sensor.evaluate_tick(context)
    sensor_lines = [f"{event.pair}: {decision.action} — {decision.reason}" for event, decision in decided]
    sensor_lines += [f"requested {request.run_key}" for request in tick.run_requests]
    if run_requested and tick.run_requests:
        retraining = definitions.resolve_job_def(RETRAINING_JOB)
        request = tick.run_requests[0]
        result = retraining.execute_in_process(
            instance=instance,
            run_config={"loggers": loggers or {}},
            tags={**request.tags, RUN_KEY_TAG: request.run_key or ""},
            raise_on_error=False,
        )
        comparisons = result.asset_materializations_for_node("model_comparison")
        if comparisons:
            meta = {key: value.value for key, value in comparisons[0].metadata.items()}
            loop_runs.append(
                f"retraining run {result.run_id}: challenger v{meta['challenger_version']} vs champion "
                f"v{meta['champion_version']} → {meta['decision']} (p={float(meta['p_value']):.4f})"
            )
        else:
            loop_runs.append(f"retraining run {result.run_id} failed: see the UI")
        loop_runs += _act_on_promotions(
            definitions,
            instance,
            resources,
            {"comparison": comparison_cursor, "model": model_cursor},
            loggers,
        )
    return DriftLoopSummary(
        model=model,
        champion=alias_version(mlflow, model, CHAMPION),
        challenger=alias_version(mlflow, model, CHALLENGER),
        drift=tuple(lines),
        drift_sensor=tuple(sensor_lines),
        loop_runs=tuple(loop_runs),
        audit=tuple(entry.summary for entry in read_audit_history(mlflow, model)),
    )
