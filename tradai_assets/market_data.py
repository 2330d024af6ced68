"""Market-data assets: `ohlcv/<PAIR>` for every pair of the universe, partitioned by UTC day.

Why this shape: one asset per pair, each daily-partitioned with a single-run backfill policy, gives the UI
a per-pair, per-day view of what is materialized; backfilling years of all pairs is a handful of runs (one
range per asset, grouped) rather than thousands; refreshing today costs one day of candles whatever the
history length; and adding a pair is a change of `TRADAI_PAIRS`. (A pair × date multi-partition would
give one asset, but single-run backfills over multi-partitions have open bugs in Dagster 1.13.)
"""

from datetime import timedelta

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from tradai_assets.partitions import daily_partitions
from tradai_core.candles import Gap
from tradai_core.outliers import DEFAULT_K, DEFAULT_WINDOW
from tradai_core.quality import QualityResult, run_quality_checks
from tradai_core.settings import TradAISettings, pair_slug
from tradai_core.timeframes import candle_grid, timeframe_delta, timeframe_ms
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource

MARKET_DATA_GROUP = "market_data"
BLOCKING_CHECKS = ("no_duplicates", "monotonic_index", "ohlc_consistent", "timeframe_grid")
CHECK_DESCRIPTIONS = {
    "no_duplicates": "No two candles share an open time.",
    "monotonic_index": "Open times strictly increase.",
    "ohlc_consistent": "high ≥ max(open, close), low ≤ min(open, close); finite values, prices > 0, "
    "volume ≥ 0.",
    "timeframe_grid": "Every open time sits on the exchange's grid for the timeframe (Binance: weeks open "
    "Monday 00:00 UTC).",
    "gaps": "Missing candles in the window, listed as ranges (real exchange outages are warnings).",
    "outliers": f"Price jumps beyond {DEFAULT_K:g} rolling robust sigmas (|log return| against 1.4826 × "
    f"median |return| of the previous {DEFAULT_WINDOW} candles) and runs of zero-volume candles, with "
    "their timestamps. A warning to look at, never a gate: real markets crash too.",
}


class MarketDataConfig(Config):
    """Run config of a market-data materialization."""

    allow_removing_candles: bool = False
    """Let a re-fetch remove candles already stored in its window (off: exchanges never delete history,
    so an answer with fewer candles than before is refused and nothing is written)."""


def ohlcv_key(pair: str) -> AssetKey:
    """Asset key of a pair's candles: `ohlcv/BTC_USDT`."""
    return AssetKey(["ohlcv", pair_slug(pair)])


def exchange_pool(exchange_id: str) -> str:
    """Concurrency pool capping simultaneous requests to one exchange (limit set in dagster.yaml)."""
    return f"exchange_{exchange_id}"


def gaps_markdown(gaps: list[Gap], limit: int = 50) -> str:
    """Markdown table of missing-candle ranges, for asset metadata."""
    if not gaps:
        return "No missing candles."
    fmt = "%Y-%m-%d %H:%M"
    rows = [f"| {g.first_missing:{fmt}} | {g.last_missing:{fmt}} | {g.missing} |" for g in gaps]
    if len(rows) > limit:
        rows = [*rows[:limit], f"| … {len(rows) - limit} more | | |"]
    return "\n".join(["| first missing (UTC) | last missing (UTC) | candles |", "|---|---|---|", *rows])


def preview_markdown(candles: pd.DataFrame, rows: int = 3) -> str:
    """First and last few candles as a markdown table."""
    if candles.empty:
        return "No candles in this window."
    shown = candles if len(candles) <= 2 * rows else pd.concat([candles.head(rows), candles.tail(rows)])
    return shown.reset_index().to_markdown(index=False, floatfmt=".8g")


def _check_result(result: QualityResult) -> AssetCheckResult:
    metadata: dict[str, object] = {"summary": result.summary}
    if result.offending:
        metadata["offending_timestamps"] = MetadataValue.json(result.offending)
    if result.name == "gaps":
        metadata["missing_candles"] = sum(g.missing for g in result.gaps)
        metadata["missing_ranges"] = MetadataValue.md(gaps_markdown(result.gaps))
    return AssetCheckResult(
        check_name=result.name,
        passed=result.passed,
        severity=AssetCheckSeverity.ERROR if result.name in BLOCKING_CHECKS else AssetCheckSeverity.WARN,
        metadata=metadata,
        description=result.summary,
    )


def build_ohlcv_asset(pair: str, settings: TradAISettings) -> AssetsDefinition:
    """The daily-partitioned candle asset of one pair, with its data-quality checks."""
    key = ohlcv_key(pair)
    tf = settings.timeframe
    tf_ms = timeframe_ms(tf)
    grid = candle_grid(tf, settings.exchange_id)
    lookback = timeframe_delta(tf) * DEFAULT_WINDOW  # the history the outlier check judges against

    @asset(
        key=key,
        group_name=MARKET_DATA_GROUP,
        description=f"{pair} {tf} candles from {settings.exchange_id} (CCXT) stored in ArcticDB, one "
        "partition per UTC day.",
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        pool=exchange_pool(settings.exchange_id),
        kinds={"ccxt", "arcticdb"},
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(hours=3), warn_window=timedelta(hours=2)
        ),
        check_specs=[
            AssetCheckSpec(name, asset=key, blocking=name in BLOCKING_CHECKS, description=text)
            for name, text in CHECK_DESCRIPTIONS.items()
        ],
        metadata={"pair": pair, "timeframe": tf, "exchange": settings.exchange_id},
    )
    def _ohlcv(
        context: AssetExecutionContext,
        config: MarketDataConfig,
        exchange: ExchangeResource,
        candle_store: ArcticDBResource,
    ) -> MaterializeResult:
        window = context.partition_time_window
        fetched = exchange.fetch_candles(pair, tf, window.start, window.end)
        written = candle_store.write_window(
            exchange.exchange_id,
            tf,
            pair,
            fetched.candles,
            window.start,
            window.end,
            metadata={"dagster_run_id": context.run.run_id, "window": [str(window.start), str(window.end)]},
            allow_removal=config.allow_removing_candles,
        )
        stored = candle_store.read(exchange.exchange_id, tf, pair, window.start, window.end)
        history = candle_store.read(exchange.exchange_id, tf, pair, window.start - lookback, window.end)
        checks = run_quality_checks(
            stored.candles, window.start, window.end, tf_ms, grid=grid, history=history.candles
        )
        gaps = next(c.gaps for c in checks if c.name == "gaps")
        context.log.info(
            "%s: %d candles for [%s, %s) in %d requests (%d retries) → %s v%s; %d gaps",
            pair,
            written.rows,
            window.start,
            window.end,
            fetched.requests,
            fetched.retries,
            written.library,
            written.version,
            len(gaps),
        )
        candles = stored.candles
        metadata: dict[str, object] = {
            "dagster/row_count": len(candles),
            "window_start": MetadataValue.timestamp(window.start),
            "window_end": MetadataValue.timestamp(window.end),
            "first_candle": str(candles.index[0]) if len(candles) else "none",
            "last_candle": str(candles.index[-1]) if len(candles) else "none",
            "missing_candles": sum(g.missing for g in gaps),
            "gaps": MetadataValue.md(gaps_markdown(gaps)),
            "arcticdb_library": written.library,
            "arcticdb_symbol": written.symbol,
            "arcticdb_version": stored.version,
            "exchange_requests": fetched.requests,
            "exchange_retries": fetched.retries,
            "open_candle_dropped": fetched.dropped_open_candle,
            "preview": MetadataValue.md(preview_markdown(candles)),
        }
        return MaterializeResult(metadata=metadata, check_results=[_check_result(c) for c in checks])

    return _ohlcv


def build_market_data_assets(settings: TradAISettings) -> list[AssetsDefinition]:
    """One candle asset per pair of the configured universe."""
    return [build_ohlcv_asset(pair, settings) for pair in settings.pairs]
