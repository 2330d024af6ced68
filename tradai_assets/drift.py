"""`drift_score`: how far a pair's recent market has moved from what the champion model was trained on.

One partition per pair (`BTC_USDT`, ...); the model is always the current `champion`. A materialization

1. loads the champion's version and its stored reference distribution (per pair; pooled when the pair was
   not in its training set) — `tradai_assets.models.load_reference_distribution`;
2. takes the pair's features over the recent window (`window_days`, default 14, ending after the newest
   stored candle or at `end`; never inside the champion's training period: `drift_window` refuses a
   window that ends there and cuts one that starts there) from the feature store
   (`features.<exchange>.<tf>`), or — when the store does not cover the window or holds another feature
   set — computes them from the stored candles exactly as the feature assets do
   (`compute_window_features`), and says which in its metadata;
3. scores PSI of every feature against the reference (`tradai_core.psi`: quantile bins, Jeffreys smoothing,
   the sampling-noise floor beside every score, `insufficient` when the window is too small);
4. scores prediction drift: PSI of the champion's predicted probabilities on the window against its
   predictions on its own training rows of the pair (the training set at the ArcticDB version recorded on
   the model version, read `as_of` that version);
5. combines them into the pair's verdict (`tradai_core.drift.drift_verdict`: median feature PSI band,
   worse of that and the prediction band).

Metadata: the verdict and its reason, features ranked by PSI with severity and noise floor, the
prediction drift bins, the window, where the features came from, and PSI over time drawn from the
partition's previous materializations. The drift sensor acts on `severity`.
"""

import itertools
import math
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetRecordsFilter,
    AssetsDefinition,
    Config,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import BaseModel, ConfigDict

from tradai_assets.backtest_runner import holdout_start
from tradai_assets.keys import (
    CHAMPION_MODEL_KEY,
    DRIFT_KEY,
    LIFECYCLE_GROUP,
    META_FEATURE_SET_HASH,
    features_key,
    features_library,
)
from tradai_assets.models import load_reference_distribution, load_training_set
from tradai_core.drift import DEFAULT_WINDOW_DAYS, DriftVerdict, drift_verdict, drift_window
from tradai_core.errors import ConfigurationError, NotFoundError, ValidationError
from tradai_core.features import FEATURE_NAMES, WARMUP_BARS, compute_window_features, feature_set_hash
from tradai_core.lazy import LazyModule
from tradai_core.plots import plt, png_markdown
from tradai_core.psi import (
    DEFAULT_MIN_ROWS,
    MODERATE_PSI,
    SEVERE_PSI,
    PSIResult,
    ReferenceSummary,
    score_features,
    score_psi,
    summarize_reference,
)
from tradai_core.registry import CHAMPION, TAG_TRAINING_SET, default_model_name
from tradai_core.settings import TradAISettings, pair_slug
from tradai_core.timeframes import timeframe_delta
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.mlflow_tracking import MLflowResource, ModelVersionInfo

CALIBRATED_FALSE_ALARMS = (
    "2 of 54 (3.7%) 14-day windows inside the training period read moderate, 0 severe (demo data, 6 pairs, "
    "features only; 51 of 54 alarmed with the iid noise floor) — bench/drift_false_alarms.py, docs/drift.md"
)
"""The verdict's false-alarm rate where nothing drifted, as measured by the bench (stated in metadata)."""

_arctic_exceptions = LazyModule("arcticdb.exceptions")  # imported on first use


def drift_partitions(settings: TradAISettings) -> StaticPartitionsDefinition:
    """One partition per pair of the universe, keyed by slug (`BTC_USDT`)."""
    return StaticPartitionsDefinition([pair_slug(pair) for pair in settings.pairs])


def pair_of(settings: TradAISettings, partition_key: str) -> str:
    """The pair (`BTC/USDT`) of a drift partition key (`BTC_USDT`)."""
    for pair in settings.pairs:
        if pair_slug(pair) == partition_key:
            return pair
    raise ValidationError(f"{partition_key} is not a pair of the universe", "add it to TRADAI_PAIRS")


class DriftConfig(Config):
    """Run config of a drift score."""

    window_days: int = DEFAULT_WINDOW_DAYS
    """Days of candles in the recent window (14: see tradai_core.drift for why not 7 at 1h)."""
    end: str | None = None
    """End (exclusive) of the window, YYYY-MM-DD or an ISO timestamp; default after the newest candle."""
    min_rows: int = DEFAULT_MIN_ROWS
    """Fewer current rows than this: the score is `insufficient`, whatever its value."""
    prediction_drift: bool = True
    """Also score the PSI of the champion's predicted probabilities."""
    model_name: str | None = None
    """Registered model; default `tradai-lgbm-<timeframe>`."""
    history_points: int = 60
    """Previous materializations drawn in the PSI-over-time plot."""


class CurrentFeatures(BaseModel):
    """The window's features and where they came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    frame: pd.DataFrame
    source: str
    candles: int
    versions: dict[str, int]


class PairDrift(BaseModel):
    """Everything one drift score found."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    pair: str
    model: str
    version: ModelVersionInfo
    window_start: datetime
    window_end: datetime
    trained_until: datetime
    window_note: str
    reference: str
    features: CurrentFeatures
    verdict: DriftVerdict
    prediction_note: str


def _end(text: str | None, store: ArcticDBResource, settings: TradAISettings, pair: str) -> datetime:
    if text is None:
        return store.last_candle_end(settings.exchange_id, settings.timeframe, (pair,), settings.clock.now())
    try:
        stamp = pd.Timestamp(date.fromisoformat(text)) if len(text) == 10 else pd.Timestamp(text)
    except ValueError as exc:
        raise ValidationError(f"end {text!r} is not a date or timestamp", "write YYYY-MM-DD") from exc
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def current_features(
    store: ArcticDBResource, settings: TradAISettings, pair: str, start: datetime, end: datetime
) -> CurrentFeatures:
    """The pair's features in `[start, end)`: from the feature store when it covers every candle of the
    window with the code's feature set, else computed from the stored candles as the feature assets do."""
    exchange, tf = settings.exchange_id, settings.timeframe
    window = store.read(exchange, tf, pair, start, end)
    if window.candles.empty:
        raise NotFoundError(
            f"no {pair} candles stored in [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})",
            f"materialize ohlcv/{pair_slug(pair)} for those days first, or set `end`",
        )
    library, symbol = features_library(exchange, tf), pair_slug(pair)
    versions = {f"{window.library}/{window.symbol}": window.version}
    try:
        stored = store.read_frame(library, symbol, start, end)
    except NotFoundError:
        stored = None
    if stored is not None:
        digest = (stored.metadata or {}).get(META_FEATURE_SET_HASH)
        covered = window.candles.index.difference(stored.frame.index).empty
        if digest == feature_set_hash() and covered:
            return CurrentFeatures(
                frame=stored.frame[list(FEATURE_NAMES)],
                source=f"feature store {library}/{symbol} v{stored.version}",
                candles=len(window.candles),
                versions={**versions, f"{library}/{symbol}": stored.version},
            )
        why = "another feature set" if digest != feature_set_hash() else "not every candle of the window"
    else:
        why = "nothing stored"
    warmup = WARMUP_BARS * timeframe_delta(tf)
    history = store.read(exchange, tf, pair, start - 2 * warmup, end)
    if int(history.candles.index.searchsorted(pd.Timestamp(start))) < WARMUP_BARS:
        history = store.read(exchange, tf, pair, None, end)
    frame = compute_window_features(history.candles, start, end)
    return CurrentFeatures(
        frame=frame[list(FEATURE_NAMES)],
        source=f"computed from candles {history.library}/{history.symbol} v{history.version} "
        f"(feature store: {why})",
        candles=len(window.candles),
        versions={f"{history.library}/{history.symbol}": history.version},
    )


def training_set_version(version: ModelVersionInfo) -> int:
    """The ArcticDB version of the training set a model version learned from (tag `tradai.training_set`)."""
    raw = version.tags.get(TAG_TRAINING_SET, "")
    _, _, number = raw.rpartition("@v")
    if not number.isdigit():
        raise NotFoundError(
            f"{version.name} v{version.version} does not record its training set "
            f"({TAG_TRAINING_SET}={raw!r})",
            "retrain it with the model asset",
        )
    return int(number)


def prediction_drift(
    mlflow: MLflowResource,
    store: ArcticDBResource,
    settings: TradAISettings,
    version: ModelVersionInfo,
    pair: str,
    current: pd.DataFrame,
    n_bins: int,
    min_rows: int,
) -> PSIResult:
    """PSI of the champion's predicted probabilities on `current` against its predictions on its own
    training rows of `pair` (all its training rows when the pair was not among them)."""
    booster = mlflow.load_model(version.name, CHAMPION, flavor="lightgbm")
    if mlflow.alias_version(version.name, CHAMPION) != version.version:
        raise ValidationError(
            f"the champion of {version.name} moved while drift was being scored", "re-run the drift score"
        )
    as_of = training_set_version(version)
    try:
        training = load_training_set(store, settings.exchange_id, settings.timeframe, as_of=as_of)
    except _arctic_exceptions.ArcticException as exc:  # e.g. that version was pruned
        raise NotFoundError(
            f"training set v{as_of} of {version.name} v{version.version} is not readable ({exc})",
            "retrain the model, or keep training-set versions (never prune them)",
        ) from exc
    rows = training.frame[training.frame["pair"] == pair]
    if rows.empty:
        rows = training.frame
    names = list(FEATURE_NAMES)
    reference = summarize_reference(booster.predict(rows[names]), "prediction", n_bins)
    return score_psi(reference, booster.predict(current[names]), min_rows=min_rows)


def score_pair_drift(
    settings: TradAISettings,
    config: DriftConfig,
    pair: str,
    mlflow: MLflowResource,
    store: ArcticDBResource,
) -> PairDrift:
    """Score one pair against the current champion (module docstring, steps 1–5)."""
    name = config.model_name or default_model_name(settings.timeframe)
    version, reference = load_reference_distribution(mlflow, name, CHAMPION)
    if reference.feature_set_hash != feature_set_hash():
        raise ConfigurationError(
            f"{name} v{version.version} was trained on feature set {reference.feature_set_hash}, the code "
            f"computes {feature_set_hash()}: its drift cannot be scored (and the strategy cannot use it)",
            "retrain the model on the current features (run the retraining job)",
        )
    summaries: dict[str, ReferenceSummary] = reference.by_pair.get(pair) or reference.pooled
    reference_text = f"{pair} rows of the training set" if pair in reference.by_pair else "all pairs pooled"
    trained_until = holdout_start(version)
    window = drift_window(_end(config.end, store, settings, pair), config.window_days, trained_until)
    start, end = window.start, window.end
    features = current_features(store, settings, pair, start, end)
    results = score_features(summaries, features.frame, min_rows=config.min_rows)
    prediction: PSIResult | None = None
    note = "off (config prediction_drift: false)"
    if config.prediction_drift:
        try:
            prediction = prediction_drift(
                mlflow, store, settings, version, pair, features.frame, reference.n_bins, config.min_rows
            )
            note = f"champion's probabilities vs its training rows ({reference_text})"
        except NotFoundError as exc:
            note = f"not scored: {exc}"
    return PairDrift(
        pair=pair,
        model=name,
        version=version,
        window_start=start,
        window_end=end,
        trained_until=trained_until,
        window_note=window.note,
        reference=reference_text,
        features=features,
        verdict=drift_verdict(results, prediction),
        prediction_note=note,
    )


# -- metadata ----------------------------------------------------------------------------------------


def features_markdown(results: tuple[PSIResult, ...]) -> str:
    """Features ranked by PSI, with severity, noise floor and p-value."""
    lines = [
        "| rank | feature | PSI | severity | noise floor (mean) | noise q95 | p-value | rows | n_eff "
        "| autocorrelated gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, r in enumerate(results, start=1):
        n_eff = f"{r.n_cur_eff:.0f}" if r.n_cur_eff is not None else ""
        gate = f"{r.effective_gate:.4f}" if r.effective_gate is not None else ""
        lines.append(
            f"| {rank} | {r.feature} | {r.psi:.4f} | {r.severity.value} | {r.noise_floor.mean:.4f} | "
            f"{r.noise_floor.quantile:.4f} | {r.p_value:.3g} | {r.n_cur} | {n_eff} | {gate} |"
        )
    return "\n".join(lines)


def prediction_markdown(result: PSIResult | None, note: str) -> str:
    """The prediction drift: score, noise floor and bins."""
    if result is None:
        return f"Prediction drift {note}."
    bins = result.bins_table()
    bins["lower"] = bins["lower"].map(lambda v: "−∞" if pd.isna(v) else f"{v:.4f}")
    bins["upper"] = bins["upper"].map(lambda v: "+∞" if pd.isna(v) else f"{v:.4f}")
    head = (
        f"PSI {result.psi:.4f} ({result.severity.value}); noise floor {result.noise_floor.mean:.4f}, "
        f"q95 {result.noise_floor.quantile:.4f}; {note}\n\n"
    )
    return head + bins.to_markdown(index=False, floatfmt=".4f")


class DriftPoint(BaseModel):
    """One point of a partition's PSI history."""

    model_config = ConfigDict(frozen=True)

    window_end: datetime
    median_psi: float
    prediction_psi: float | None
    max_psi: float
    model_version: int | None
    severity: str
    feature_psi: dict[str, float] = {}
    """PSI of every scored feature (empty for scores made before it was recorded)."""


def drift_history(instance: DagsterInstance, partition_key: str, limit: int) -> list[DriftPoint]:
    """The partition's previous drift scores, oldest first (from `instance.fetch_materializations`)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=DRIFT_KEY, asset_partitions=[partition_key]), limit=limit
    ).records
    points = []
    for record in reversed(records):
        materialization = record.asset_materialization
        if materialization is None:
            continue
        meta = {key: value.value for key, value in materialization.metadata.items()}
        if "median_psi" not in meta or "window_end" not in meta:
            continue
        points.append(
            DriftPoint(
                window_end=datetime.fromtimestamp(float(meta["window_end"]), tz=UTC),
                median_psi=float(meta["median_psi"]),
                prediction_psi=float(meta["prediction_psi"])
                if meta.get("prediction_psi") is not None
                else None,
                max_psi=float(meta.get("max_psi", 0.0)),
                model_version=int(meta["model_version"]) if meta.get("model_version") is not None else None,
                severity=str(meta.get("severity", "")),
                feature_psi=dict(meta.get("feature_psi") or {}),
            )
        )
    return points


def history_figure(points: list[DriftPoint], title: str) -> "plt.Figure":
    """Median feature PSI and prediction PSI per scored window, over the band lines."""
    figure, axes = plt.subplots(figsize=(8, 3.4))
    order = sorted(points, key=lambda p: p.window_end)
    x = [p.window_end for p in order]
    axes.plot(x, [p.median_psi for p in order], marker="o", color="#1f6feb", label="median feature PSI")
    predicted = [(p.window_end, p.prediction_psi) for p in order if p.prediction_psi is not None]
    if predicted:
        axes.plot(*zip(*predicted, strict=True), marker="s", color="#8250df", label="prediction PSI")
    axes.axhline(MODERATE_PSI, color="#bf8700", linestyle="--", linewidth=1, label="moderate (0.1)")
    axes.axhline(SEVERE_PSI, color="#cf222e", linestyle="--", linewidth=1, label="severe (0.25)")
    versions = [(p.window_end, p.model_version) for p in order]
    for (_, before), (when, after) in itertools.pairwise(versions):
        if before != after:
            axes.axvline(when, color="#6e7781", linewidth=0.8, alpha=0.6)
            axes.annotate(f"v{after}", (when, axes.get_ylim()[1]), fontsize=7, va="top")
    axes.set_ylabel("PSI")
    axes.set_xlabel("window end")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.autofmt_xdate()
    return figure


def feature_history_figure(points: list[DriftPoint], title: str, top: int = 12) -> "plt.Figure":
    """PSI of each feature per scored window as a heat map (features with the highest latest PSI first;
    a cell is white below the moderate band, amber to red above it)."""
    order = [p for p in sorted(points, key=lambda p: p.window_end) if p.feature_psi]
    latest = order[-1].feature_psi if order else {}
    features = sorted(latest, key=lambda name: latest[name], reverse=True)[:top]
    grid = np.array([[p.feature_psi.get(name, np.nan) for p in order] for name in features], dtype=float)
    figure, axes = plt.subplots(figsize=(8, 0.9 + 0.22 * max(len(features), 1)))
    if features:
        image = axes.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            cmap="YlOrRd",
            vmin=0.0,
            vmax=max(SEVERE_PSI * 2, float(np.nanmax(grid)) if np.isfinite(grid).any() else 0.0),
            interpolation="nearest",
        )
        axes.set_yticks(range(len(features)), features, fontsize=7)
        step = max(1, len(order) // 8)
        axes.set_xticks(
            range(0, len(order), step), [f"{p.window_end:%Y-%m-%d}" for p in order[::step]], fontsize=7
        )
        figure.colorbar(image, ax=axes, label="PSI", pad=0.01)
    axes.set_title(title, fontsize=9)
    return figure


def history_markdown(points: list[DriftPoint], rows: int = 12) -> str:
    """The last `rows` scores as a table, newest first."""
    lines = [
        "| window end | model | severity | median PSI | prediction PSI | max PSI |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: p.window_end, reverse=True)[:rows]:
        prediction = f"{p.prediction_psi:.4f}" if p.prediction_psi is not None else ""
        lines.append(
            f"| {p.window_end:%Y-%m-%d %H:%M} | v{p.model_version} | {p.severity} | {p.median_psi:.4f} | "
            f"{prediction} | {p.max_psi:.4f} |"
        )
    return "\n".join(lines)


def drift_metadata(result: PairDrift, history: list[DriftPoint], config: DriftConfig) -> dict[str, Any]:
    """Dagster metadata of one drift score (the keys the drift sensor reads: severity, model_name,
    model_version, pair, median_psi, prediction_psi, top_features)."""
    verdict = result.verdict
    prediction = verdict.prediction
    current = DriftPoint(
        window_end=result.window_end,
        median_psi=verdict.median_psi,
        prediction_psi=prediction.psi if prediction is not None else None,
        max_psi=verdict.max_psi,
        model_version=result.version.version,
        severity=verdict.severity.value,
        feature_psi={r.feature: r.psi for r in verdict.features if math.isfinite(r.psi)},
    )
    points = [*history, current]
    counts = verdict.severity_counts
    median_feature = verdict.features[len(verdict.features) // 2] if verdict.features else None
    return {
        "severity": verdict.severity.value,
        "feature_severity": verdict.feature_severity.value,
        "prediction_severity": prediction.severity.value if prediction is not None else "not scored",
        "reason": MetadataValue.text(verdict.reason),
        "pair": result.pair,
        "model_name": result.model,
        "model_version": result.version.version,
        "median_psi": verdict.median_psi,
        "max_psi": verdict.max_psi,
        "prediction_psi": MetadataValue.float(prediction.psi)
        if prediction is not None
        else MetadataValue.null(),
        "top_features": ", ".join(r.feature for r in verdict.features[:5]),
        "features_severe": counts["severe"],
        "features_moderate": counts["moderate"],
        "features_none": counts["none"],
        "features_insufficient": counts["insufficient"],
        "noise_floor_mean": median_feature.noise_floor.mean if median_feature else 0.0,
        "noise_floor_q95": median_feature.noise_floor.quantile if median_feature else 0.0,
        "median_feature_n_eff": MetadataValue.float(median_feature.n_cur_eff)
        if median_feature is not None and median_feature.n_cur_eff is not None
        else MetadataValue.null(),
        "autocorrelated_noise_gate": MetadataValue.float(median_feature.effective_gate)
        if median_feature is not None and median_feature.effective_gate is not None
        else MetadataValue.null(),
        "calibrated_false_alarm_rate": MetadataValue.text(CALIBRATED_FALSE_ALARMS),
        "features": MetadataValue.md(features_markdown(verdict.features)),
        "prediction_drift": MetadataValue.md(prediction_markdown(prediction, result.prediction_note)),
        "psi_over_time": MetadataValue.md(
            png_markdown(
                history_figure(points, f"{result.pair} drift vs {result.model} champion"), "PSI over time"
            )
        ),
        "feature_psi_over_time": MetadataValue.md(
            png_markdown(
                feature_history_figure(points, f"{result.pair} PSI per feature over time"),
                "PSI per feature over time",
            )
        ),
        "feature_psi": MetadataValue.json({name: round(psi, 6) for name, psi in current.feature_psi.items()}),
        "psi_history": MetadataValue.md(history_markdown(points)),
        "window_start": MetadataValue.timestamp(result.window_start),
        "window_end": MetadataValue.timestamp(result.window_end),
        "window_days": config.window_days,
        "trained_until": MetadataValue.timestamp(result.trained_until),
        "window_note": result.window_note or "the whole window lies after the model's training data",
        "rows": len(result.features.frame),
        "candles_in_window": result.features.candles,
        "feature_source": result.features.source,
        "reference": result.reference,
        "data_versions": MetadataValue.json(result.features.versions),
    }


def build_drift_asset(settings: TradAISettings) -> AssetsDefinition:
    """The `drift_score` asset, one partition per pair."""

    @asset(
        key=DRIFT_KEY,
        group_name=LIFECYCLE_GROUP,
        partitions_def=drift_partitions(settings),
        deps=[
            CHAMPION_MODEL_KEY,
            *(
                AssetDep(features_key(pair), partition_mapping=AllPartitionMapping())
                for pair in settings.pairs
            ),
        ],
        description="PSI of every model feature and of the champion's predictions, recent window (default "
        "14 days) vs the champion's training data, with the sampling-noise floor beside every score. "
        "Severity (< 0.1 none, 0.1–0.25 moderate, ≥ 0.25 severe; `insufficient` when the window is too "
        "small) is the worse of the median feature PSI's band and the prediction PSI's band. The drift "
        "sensor retrains on severe and warns on moderate.",
        kinds={"mlflow", "arcticdb"},
    )
    def drift_score(
        context: AssetExecutionContext,
        config: DriftConfig,
        mlflow: MLflowResource,
        candle_store: ArcticDBResource,
    ) -> MaterializeResult:
        pair = pair_of(settings, context.partition_key)
        result = score_pair_drift(settings, config, pair, mlflow, candle_store)
        history = drift_history(context.instance, context.partition_key, config.history_points)
        context.log.info(
            "%s vs %s v%s: %s", pair, result.model, result.version.version, result.verdict.reason
        )
        return MaterializeResult(metadata=drift_metadata(result, history, config))

    return drift_score
