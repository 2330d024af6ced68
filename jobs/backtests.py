"""The backtest job: plan (with its blocking gates) and report, for one strategy partition."""

from typing import TYPE_CHECKING

from dagster import AssetSelection, define_asset_job

from tradai_assets.backtests import BACKTEST_GROUP

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

BACKTEST_JOB = "backtest_reports_job"


def build_backtest_job() -> "UnresolvedAssetJobDefinition":
    """Plan and report of one strategy (partition = strategy name); launch one run per strategy."""
    return define_asset_job(
        BACKTEST_JOB,
        selection=AssetSelection.groups(BACKTEST_GROUP),
        description="Validate a strategy, check its data, backtest it with Freqtrade, store the report.",
    )
