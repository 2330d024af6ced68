"""Software-defined assets of TradAI."""

import warnings

from dagster import BetaWarning

# Single-run backfills are the point of the market-data and feature partitioning; say it once, not per asset.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)
