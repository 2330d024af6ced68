"""The model loop's jobs and schedules, in the order drift travels through them.

1. `drift_job` scores one pair's drift (partition = pair); `drift_every_6_hours` runs it for every pair.
2. `retraining_job`: training set → challenger → validation backtests of both aliases → comparison; the
   drift sensor, the weekly schedule `retraining_weekly` (off by default) and people start it.
3. The champion's jobs: `promote_champion_job` and `rollback_champion_job` (the sensors in
   `sensors.model_loop` launch them, a person can from the UI) and `champion_performance_job`, the daily
   backtest of the champion's rolling performance (`champion_performance_daily`).

The sensors deciding between them are `sensors.model_loop`; the whole loop is wired in
`tradai.defs.model_loop`.
"""

from typing import TYPE_CHECKING, Any

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
from tradai_assets.keys import (
    CHAMPION_MODEL_KEY,
    COMPARISON_KEY,
    DRIFT_KEY,
    MODEL_KEY,
    PERFORMANCE_KEY,
    TRAINING_SET_KEY,
    VALIDATION_KEYS,
)
from tradai_assets.validation import model_pairs
from tradai_core.errors import NotFoundError
from tradai_core.registry import CHAMPION, default_model_name
from tradai_core.settings import TradAISettings, pair_slug
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.mlflow_tracking import MLflowResource

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# -- 1. drift ------------------------------------------------------------------------------------------

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


# -- 2. retraining -------------------------------------------------------------------------------------

RETRAINING_JOB = "retraining_job"
RETRAINING_SCHEDULE = "retraining_weekly"


def default_retraining_config(settings: TradAISettings) -> dict[str, Any]:
    """The retraining job's default run config: the training window keeps the settings' holdout, which
    the validation backtests then trade."""
    return {"ops": {"training_set": {"config": {"holdout_days": settings.holdout_days}}}}


def build_retraining_job(
    settings: TradAISettings, run_config: dict[str, Any] | None = None
) -> "UnresolvedAssetJobDefinition":
    """Train a challenger, backtest it and the champion on the challenger's holdout, compare them.

    `run_config` replaces the default run config (e.g. a smaller model in tests); a run may override it.
    """
    return define_asset_job(
        RETRAINING_JOB,
        selection=AssetSelection.assets(
            TRAINING_SET_KEY, MODEL_KEY, COMPARISON_KEY, *VALIDATION_KEYS.values()
        ),
        config=run_config if run_config is not None else default_retraining_config(settings),
        description="Retrain: training set → model (new challenger) → validation backtests of challenger and "
        "champion on the same out-of-sample window → comparison (the promotion sensor acts on it).",
        tags={"tradai/model_loop": "retraining"},
    )


def build_retraining_schedule(retraining_job: "UnresolvedAssetJobDefinition") -> ScheduleDefinition:
    """Weekly retraining, Mondays 03:00 UTC.

    Off by default: offline the candles end in 2022, so a weekly retrain would fit the same rows again and
    again (a new, identical version each week, kept by an inconclusive comparison). Switch it on against
    a live exchange; drift-triggered retraining works either way.
    """
    return ScheduleDefinition(
        name=RETRAINING_SCHEDULE,
        cron_schedule="0 3 * * 1",
        job=retraining_job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        tags={"tradai/trigger": "schedule"},
        description="Retrain, validate and compare every Monday at 03:00 UTC (off by default offline).",
    )


# -- 3. the champion: promote, roll back, judge its performance ----------------------------------------

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
