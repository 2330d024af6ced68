"""Feature assets: `features/<PAIR>`, the model features of every candle, partitioned like the candles.

Each daily partition depends on the same day of `ohlcv/<PAIR>` and is stored in ArcticDB
(`features.<exchange>.<timeframe>`, symbol `BTC_USDT`), replacing exactly its day, like the candles.

**Every day is computed the same way, however it is materialized.** A day's features are computed from
exactly the `WARMUP_BARS` candles before the day's first candle plus the day's own candles
(`tradai_core.features.compute_window_features`). A value at candle t therefore uses only candles up to
t, and the stored values of a day are a function of the candles alone: a one-run backfill of a year
writes bit for bit what 365 one-day runs write, and appending later days never changes an earlier one.

**Warm-up.** A materialization refuses to run (and says which `ohlcv` partitions to materialize first)
when the candle store holds fewer than `WARMUP_BARS` candles before the window, or has days without any
candle between the start of the warm-up and the end of the window. The exception is the very start of
the history (`TRADAI_HISTORY_START`): the first `WARMUP_BARS` candles of the history have no earlier
candles to warm up on, so they get no feature row (about 31 days of 1h candles), and the rows after them
are computed from the start of the history.

**Feature-set changes.** Every write records `feature_set_hash()`; a write whose hash differs from the one
stored is refused (a symbol must never mix two definitions of a feature) unless the run config says
`replace_stored_features: true`, which writes the window as the symbol's whole content in one new
version (one atomic write: a crash leaves the previous version readable; earlier versions stay readable
by number until pruned, and for good when a model or report pinned them): backfill the whole range in one
run with it.

**One writer per symbol.** Each pair's asset runs in the Dagster pool `arcticdb/<library>/<symbol>`
(limit 1, dagster.yaml's default), and holds the store's symbol lock from the feature-set check to the
write, so two runs never interleave their writes to one symbol.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from tradai_assets.keys import (
    FEATURES_GROUP,
    META_FEATURE_SET_HASH,
    features_key,
    features_library,
    ohlcv_key,
)
from tradai_assets.market_data import preview_markdown
from tradai_assets.partitions import daily_partitions
from tradai_core.candles import utc_timestamp
from tradai_core.errors import NotFoundError, ValidationError
from tradai_core.features import (
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    WARMUP_BARS,
    compute_window_features,
    feature_set_hash,
)
from tradai_core.settings import TradAISettings, pair_slug
from tradai_core.timeframes import timeframe_delta
from tradai_resources.arcticdb_store import ArcticDBResource, FrameWrite, StoredCandles, symbol_pool

PARTITION = timedelta(days=1)
CHECK_DESCRIPTIONS = {
    "rows_match_candles": "The stored window holds exactly one feature row per candle (none for the first "
    "WARMUP_BARS candles of the history).",
    "finite_values": "Every stored feature value in the window is finite (NaN where a feature is undefined, "
    "e.g. a volume ratio over a window without volume, is reported).",
}


class FeaturesConfig(Config):
    """Run config of a feature materialization."""

    replace_stored_features: bool = False
    """When the pair's stored features were computed by another feature set, make this run's window the
    symbol's whole content, as one new version (off: such a write is refused; turn on for a full
    backfill in one run after changing the features)."""
    allow_missing_warmup_days: bool = False
    """Compute even when a day between the warm-up start and the window end has no candle at all (off:
    such a day is taken to be an unmaterialized candle partition; turn on for a real day-long outage)."""


# -- plain logic (no Dagster): what a window's features are and whether its warm-up is there ---------------


def days_without_candles(
    index: pd.DatetimeIndex, start: datetime, end: datetime, now: datetime | None = None
) -> list[pd.Timestamp]:
    """UTC days in `[start, end)` holding no candle at all, except a day still in progress at `now`."""
    now_ts = utc_timestamp(now or datetime.now(tz=UTC))
    days = pd.date_range(utc_timestamp(start).floor("D"), utc_timestamp(end), freq="D", inclusive="left")
    present = set(index.floor("D"))
    return [day for day in days if day not in present and day + PARTITION <= now_ts]


def _day_ranges(days: list[pd.Timestamp]) -> str:
    """`2021-01-03 … 2021-01-05, 2021-02-01` for a sorted list of days."""
    ranges: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for day in days:
        if ranges and day - ranges[-1][1] == PARTITION:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ", ".join(
        f"{a:%Y-%m-%d}" if a == b else f"{a:%Y-%m-%d} … {b:%Y-%m-%d}" for a, b in ranges[:10]
    ) + (f" and {len(ranges) - 10} more ranges" if len(ranges) > 10 else "")


def check_warmup(
    pair: str,
    candles: pd.DataFrame,
    start: datetime,
    end: datetime,
    history_start: datetime,
    timeframe: str,
    allow_missing_days: bool = False,
    now: datetime | None = None,
) -> bool:
    """Raise NotFoundError (naming the candle partitions to materialize) unless `candles` hold the
    warm-up of `[start, end)`; return True when the window is at the start of the history, where the
    first `WARMUP_BARS` candles get no feature row instead.

    `candles` must hold every stored candle from well before the warm-up (or from the first stored one)
    to `end`.
    """
    lo = utc_timestamp(start)
    need_from = lo - WARMUP_BARS * pd.Timedelta(timeframe_delta(timeframe))
    history_lo = utc_timestamp(history_start)
    at_history_start = need_from < history_lo
    before = int(candles.index.searchsorted(lo))
    key = "/".join(ohlcv_key(pair).path)
    if before < WARMUP_BARS and not at_history_start:
        first_day = need_from.floor("D")
        raise NotFoundError(
            f"features/{pair_slug(pair)} for [{lo:%Y-%m-%d}, {utc_timestamp(end):%Y-%m-%d}) need "
            f"{WARMUP_BARS} candles of warm-up before {lo:%Y-%m-%d %H:%M}, but the candle store holds "
            f"{before}",
            f"materialize {key} partitions {first_day:%Y-%m-%d} to {(lo - PARTITION):%Y-%m-%d} first",
        )
    check_from = max(need_from, history_lo)
    if not allow_missing_days:
        empty = days_without_candles(candles.index, check_from, end, now)
        if empty:
            raise NotFoundError(
                f"features/{pair_slug(pair)} for [{lo:%Y-%m-%d}, {utc_timestamp(end):%Y-%m-%d}) need the "
                f"candles from {check_from:%Y-%m-%d} on, but {key} has no candle on {_day_ranges(empty)}",
                f"materialize those {key} partitions first (if they are a real exchange outage, re-run "
                "with config allow_missing_warmup_days: true)",
            )
    return at_history_start and before < WARMUP_BARS


def summary_markdown(features: pd.DataFrame) -> str:
    """Per-feature mean, std, min, max and NaN count of a window, as a markdown table."""
    if features.empty:
        return "No feature rows in this window."
    table = pd.DataFrame(
        {
            "mean": features.mean(),
            "std": features.std(),
            "min": features.min(),
            "max": features.max(),
            "NaN": features.isna().sum(),
        }
    )
    return table.rename_axis("feature").reset_index().to_markdown(index=False, floatfmt=".4g")


# -- the assets ---------------------------------------------------------------------------------------


def read_candles_for_features(
    store: ArcticDBResource, exchange_id: str, tf: str, pair: str, start: Any, end: Any
) -> StoredCandles:
    """The candles features on `[start, end)` need: the window and the warm-up before it (further back
    when gaps leave fewer than `WARMUP_BARS` candles in twice the warm-up span)."""
    warmup_span = WARMUP_BARS * pd.Timedelta(timeframe_delta(tf))
    candles = store.read(exchange_id, tf, pair, utc_timestamp(start) - 2 * warmup_span, end)
    if int(candles.candles.index.searchsorted(utc_timestamp(start))) < WARMUP_BARS:
        candles = store.read(exchange_id, tf, pair, None, end)  # gaps: look further back
    return candles


def store_window_features(
    store: ArcticDBResource,
    exchange_id: str,
    tf: str,
    pair: str,
    candles: StoredCandles,
    start: Any,
    end: Any,
    metadata: dict[str, Any],
    replace_symbol: bool = False,
) -> tuple[pd.DataFrame, FrameWrite]:
    """Compute the features of `[start, end)` from `candles` and write them as that window of the pair's
    feature symbol, tagged with the feature set; the features and the write's outcome."""
    features = compute_window_features(candles.candles, start, end)
    written = store.write_frame_window(
        features_library(exchange_id, tf),
        pair_slug(pair),
        features,
        start,
        end,
        metadata={
            META_FEATURE_SET_HASH: feature_set_hash(),
            "feature_set_version": FEATURE_SET_VERSION,
            "candles_version": candles.version,
            "window": [str(start), str(end)],
            **metadata,
        },
        replace_symbol=replace_symbol,
    )
    return features, written


def build_features_asset(pair: str, settings: TradAISettings) -> AssetsDefinition:
    """The daily-partitioned feature asset of one pair, with its checks."""
    key = features_key(pair)
    tf = settings.timeframe
    exchange_id = settings.exchange_id
    library = features_library(exchange_id, tf)
    symbol = pair_slug(pair)
    history_start = datetime(
        settings.history_start.year, settings.history_start.month, settings.history_start.day, tzinfo=UTC
    )

    @asset(
        key=key,
        group_name=FEATURES_GROUP,
        description=f"{len(FEATURE_NAMES)} model features of every {pair} {tf} candle (TA-Lib trend, "
        "momentum, volatility and volume indicators, returns, realized volatility), stored in ArcticDB; "
        "each value uses only candles up to its own. See docs/features.md.",
        deps=[ohlcv_key(pair)],
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        pool=symbol_pool(library, symbol),
        kinds={"talib", "arcticdb"},
        check_specs=[
            AssetCheckSpec(name, asset=key, blocking=name == "rows_match_candles", description=text)
            for name, text in CHECK_DESCRIPTIONS.items()
        ],
        metadata={
            "pair": pair,
            "timeframe": tf,
            "exchange": exchange_id,
            "warmup_bars": WARMUP_BARS,
            "features": ", ".join(FEATURE_NAMES),
        },
    )
    def _features(
        context: AssetExecutionContext, config: FeaturesConfig, candle_store: ArcticDBResource
    ) -> MaterializeResult:
        window = context.partition_time_window
        start, end = utc_timestamp(window.start), utc_timestamp(window.end)
        with candle_store.symbol_lock(library, symbol):  # from the feature-set check to the write
            return _materialize(context, config, candle_store, start, end)

    def _materialize(
        context: AssetExecutionContext,
        config: FeaturesConfig,
        candle_store: ArcticDBResource,
        start: pd.Timestamp,
        end: pd.Timestamp,
    ) -> MaterializeResult:
        digest = feature_set_hash()
        stored_meta = candle_store.frame_metadata(library, symbol)
        stored_digest = stored_meta[1].get(META_FEATURE_SET_HASH) if stored_meta is not None else None
        replace = stored_digest not in (None, digest)
        if replace:
            if not config.replace_stored_features:
                raise ValidationError(
                    f"{library}/{symbol} holds features of feature set {stored_digest}, the code computes "
                    f"feature set {digest}; nothing was written",
                    f"backfill every partition of features/{symbol} in one run with config "
                    "replace_stored_features: true (the window becomes the symbol's whole content)",
                )
            context.log.warning(
                "feature set changed (%s → %s): %s/%s will hold only [%s, %s)",
                stored_digest,
                digest,
                library,
                symbol,
                start,
                end,
            )

        candles = read_candles_for_features(candle_store, exchange_id, tf, pair, start, end)
        at_history_start = check_warmup(
            pair,
            candles.candles,
            start,
            end,
            history_start,
            tf,
            allow_missing_days=config.allow_missing_warmup_days,
            now=settings.clock.now(),
        )
        features, written = store_window_features(
            candle_store,
            exchange_id,
            tf,
            pair,
            candles,
            start,
            end,
            {"dagster_run_id": context.run.run_id},
            replace_symbol=replace,
        )
        if written.version is None:  # nothing stored yet and nothing to store
            stored_frame, stored_version = features, -1
        else:
            stored = candle_store.read_frame(library, symbol, start, end)
            stored_frame, stored_version = stored.frame, stored.version
        window_candles = candles.candles.index[
            (candles.candles.index >= start) & (candles.candles.index < end)
        ]
        before = int(candles.candles.index.searchsorted(start))
        expected = window_candles[max(0, WARMUP_BARS - before) :]
        checks = _checks(stored_frame, expected)
        first_used = max(0, before - WARMUP_BARS)
        warmup_from = candles.candles.index[first_used] if len(candles.candles) else None
        context.log.info(
            "%s: %d feature rows for [%s, %s) from candles v%s → %s/%s v%s",
            pair,
            len(stored_frame),
            start,
            end,
            candles.version,
            library,
            symbol,
            stored_version,
        )
        metadata: dict[str, object] = {
            "dagster/row_count": len(stored_frame),
            "window_start": MetadataValue.timestamp(start),
            "window_end": MetadataValue.timestamp(end),
            "first_row": str(stored_frame.index[0]) if len(stored_frame) else "none",
            "last_row": str(stored_frame.index[-1]) if len(stored_frame) else "none",
            "rows_without_features": len(window_candles) - len(stored_frame),
            "at_history_start": at_history_start,
            "warmup_from": str(warmup_from) if warmup_from is not None else "none",
            "feature_set_hash": digest,
            "feature_count": len(FEATURE_NAMES),
            "candles_library": candles.library,
            "candles_symbol": candles.symbol,
            "candles_version": candles.version,
            "arcticdb_library": library,
            "arcticdb_symbol": symbol,
            "arcticdb_version": stored_version,
            "summary": MetadataValue.md(summary_markdown(stored_frame)),
            "preview": MetadataValue.md(preview_markdown(stored_frame[list(FEATURE_NAMES[:8])])),
        }
        return MaterializeResult(metadata=metadata, check_results=checks)

    return _features


def _checks(stored: pd.DataFrame, expected: pd.DatetimeIndex) -> list[AssetCheckResult]:
    missing = expected.difference(stored.index)
    extra = stored.index.difference(expected)
    rows_ok = len(missing) == 0 and len(extra) == 0 and list(stored.columns) == list(FEATURE_NAMES)
    values = stored.to_numpy(dtype="float64") if len(stored) else np.empty((0, len(FEATURE_NAMES)))
    bad = ~np.isfinite(values)
    bad_by_feature = {
        name: int(count) for name, count in zip(stored.columns, bad.sum(axis=0), strict=True) if count
    }
    return [
        AssetCheckResult(
            check_name="rows_match_candles",
            passed=rows_ok,
            severity=AssetCheckSeverity.ERROR,
            description=f"{len(stored)} rows for {len(expected)} candles: {len(missing)} missing, "
            f"{len(extra)} extra",
            metadata={
                "rows": len(stored),
                "expected": len(expected),
                "missing": len(missing),
                "extra": len(extra),
                "first_missing": str(missing[0]) if len(missing) else "none",
            },
        ),
        AssetCheckResult(
            check_name="finite_values",
            passed=not bad_by_feature,
            severity=AssetCheckSeverity.WARN,
            description="all values finite"
            if not bad_by_feature
            else f"{int(bad.sum())} non-finite values in {len(bad_by_feature)} features",
            metadata={"non_finite_by_feature": MetadataValue.json(bad_by_feature)},
        ),
    ]


def build_feature_assets(settings: TradAISettings) -> list[AssetsDefinition]:
    """One feature asset per pair of the configured universe."""
    return [build_features_asset(pair, settings) for pair in settings.pairs]
