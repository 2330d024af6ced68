"""The drift job (one pair per run) and the schedule that scores every pair every six hours."""

from typing import TYPE_CHECKING

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)

from tradai_assets.drift import drift_partitions
from tradai_assets.keys import DRIFT_KEY
from tradai_core.errors import NotFoundError
from tradai_core.registry import CHAMPION, default_model_name
from tradai_core.settings import TradAISettings, pair_slug
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.mlflow_tracking import MLflowResource

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

DRIFT_JOB = "drift_job"
DRIFT_SCHEDULE = "drift_every_6_hours"


def build_drift_job(settings: TradAISettings) -> "UnresolvedAssetJobDefinition":
    """Score one pair's drift against the champion (partition = pair)."""
    return define_asset_job(
        DRIFT_JOB,
        selection=AssetSelection.assets(DRIFT_KEY),
        partitions_def=drift_partitions(settings),
        description="PSI of the features and predictions of one pair against the champion's training data.",
    )


def build_drift_schedule(
    settings: TradAISettings, drift_job: "UnresolvedAssetJobDefinition"
) -> ScheduleDefinition:
    """Every six hours, one run per pair scoring the window that ends after the pair's newest candle.

    Safe to leave on offline: it skips when there is no champion yet, and its run key (pair, champion
    version, window end) makes Dagster launch nothing when neither new candles nor a new champion arrived
    since the last score — as with the offline data, which ends in 2022.
    """
    model = default_model_name(settings.timeframe)

    @schedule(
        name=DRIFT_SCHEDULE,
        cron_schedule="0 */6 * * *",
        job=drift_job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Score drift of every pair against the champion every 6 hours (nothing new: no run).",
    )
    def _drift_schedule(
        context: ScheduleEvaluationContext, mlflow: MLflowResource, candle_store: ArcticDBResource
    ) -> list[RunRequest] | SkipReason:
        version = mlflow.alias_version(model, CHAMPION)
        if version is None:
            return SkipReason(f"no champion of {model} yet: train one (features → training_set → model)")
        requests = []
        for pair in settings.pairs:
            try:
                end = candle_store.last_candle_end(
                    settings.exchange_id, settings.timeframe, (pair,), settings.clock.now()
                )
            except NotFoundError:
                context.log.info("no candles stored for %s; not scored", pair)
                continue
            slug = pair_slug(pair)
            requests.append(
                RunRequest(
                    run_key=f"drift:{slug}:v{version}:{end:%Y%m%dT%H%M}",
                    partition_key=slug,
                    run_config={"ops": {"drift_score": {"config": {"end": end.isoformat()}}}},
                    tags={"tradai/trigger": "schedule"},
                )
            )
        return requests or SkipReason("no candles stored for any pair")

    return _drift_schedule
