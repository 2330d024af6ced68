"""The retraining job — training set → challenger → validation backtests of both aliases → comparison —
and its weekly schedule. The drift sensor and people start the same job."""

from typing import TYPE_CHECKING, Any

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from tradai_assets.keys import COMPARISON_KEY, MODEL_KEY, TRAINING_SET_KEY, VALIDATION_KEYS
from tradai_core.settings import TradAISettings

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

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
