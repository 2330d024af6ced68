"""The market-data job and the hourly schedule that keeps today's partition fresh."""

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

from tradai_assets.market_data import MARKET_DATA_GROUP
from tradai_assets.partitions import daily_partitions
from tradai_core.settings import TradAISettings

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

MARKET_DATA_JOB = "market_data_job"
EXCHANGE_TAG = "tradai/exchange"


def build_market_data_job(settings: TradAISettings) -> "UnresolvedAssetJobDefinition":
    """Every pair's candles (and their checks) for one day or a range of days."""
    return define_asset_job(
        MARKET_DATA_JOB,
        selection=AssetSelection.groups(MARKET_DATA_GROUP),
        partitions_def=daily_partitions(settings),
        description="Fetch candles of every configured pair from the exchange into ArcticDB.",
        # Read by the production instance's run queue (deploy/dagster.yaml): one stream per exchange.
        tags={EXCHANGE_TAG: settings.exchange_id},
    )


def build_market_data_schedule(settings: TradAISettings) -> ScheduleDefinition:
    """Hourly, five minutes past the hour (after the last candle has closed): refresh today's partition.

    Off by default: the offline demo's data ends in 2022, so there is no "today" to refresh; switch it on
    in the UI (Automation → market_data_hourly) or with `dagster schedule start` against a live exchange.
    """
    partitions = daily_partitions(settings)

    @schedule(
        name="market_data_hourly",
        cron_schedule="5 * * * *",
        job_name=MARKET_DATA_JOB,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Refresh today's candles of every pair, hourly.",
    )
    def _market_data_hourly(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        tick = context.scheduled_execution_time
        today = tick.strftime("%Y-%m-%d")
        if not partitions.has_partition_key(today):
            return SkipReason(f"no market-data partition for {today}: history ends before it")
        return RunRequest(run_key=f"market_data:{tick.isoformat()}", partition_key=today)

    return _market_data_hourly
