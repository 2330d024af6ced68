"""The champion's jobs: promote, roll back, and the daily backtest of its performance.

The sensors launch them (`sensors.promotion`, `sensors.rollback`) and a person can from the UI; the whole
loop is wired in `tradai.defs.model_loop`.
"""

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

from tradai_assets.keys import CHAMPION_MODEL_KEY, PERFORMANCE_KEY
from tradai_assets.validation import model_pairs
from tradai_core.errors import NotFoundError
from tradai_core.registry import CHAMPION, default_model_name
from tradai_core.settings import TradAISettings
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
            end = candle_store.last_candle_end(
                settings.exchange_id,
                settings.timeframe,
                model_pairs(champion, settings),
                settings.clock.now(),
            )
        except NotFoundError as exc:
            return SkipReason(f"nothing to judge: {exc}")
        return RunRequest(
            run_key=f"performance:v{champion.version}:{end:%Y%m%dT%H%M}", tags={"tradai/trigger": "schedule"}
        )

    return _performance_schedule
