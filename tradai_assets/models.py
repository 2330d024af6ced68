"""Training-set and model assets: features + labels → purged walk-forward LightGBM → MLflow model version.

- `training_set` (unpartitioned) stacks the features and labels of every pair over the training window
  and stores them in ArcticDB (`training.<exchange>.<timeframe>`, symbol `training_set`): a new version
  per materialization, so the exact rows any model learned from stay readable by version, in the same
  store (LMDB locally, S3 when scaled out) as the candles and features they came from.
- `model` (unpartitioned) scores LightGBM by purged walk-forward validation on that training set, fits the
  final model on all of it, and registers it in MLflow as a new version of `tradai-lgbm-<timeframe>` with
  its signature, input example, lineage tags and the reference distribution of every feature (what drift
  is scored against). The new version gets the alias `challenger`.

**Holdout.** The training window ends `holdout_days` (default 120) days before the end of the history;
backtests validating an ML strategy use that holdout (tags `tradai.holdout_start` / `tradai.holdout_end`
on every model version say where it is), so they never score a model on data it learned from.

**Bootstrap rule.** When the registered model has no `champion` yet, the first sane version (walk-forward
folds non-empty, every metric finite) becomes `champion` as well as `challenger`; after that only the
promotion flow moves `champion`. A version that is not sane is registered (the registry keeps every
attempt, tagged `tradai.rejected`) but gets no alias, and the blocking check `walk_forward_sane` fails.
"""

import base64
import io
import itertools
import json
import math
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from tradai_assets.features import META_FEATURE_SET_HASH, features_key, features_library
from tradai_assets.market_data import ohlcv_key
from tradai_core.errors import ConfigurationError, NotFoundError, ValidationError
from tradai_core.features import WARMUP_BARS, feature_set_hash
from tradai_core.labels import LabelSpec
from tradai_core.settings import TradAISettings, pair_slug
from tradai_core.training import (
    LightGBMParams,
    ReferenceDistribution,
    TrainingResult,
    TrainingSet,
    TrainingWindow,
    build_training_set,
    reference_distribution,
    train_walk_forward,
    training_window,
    validate_training_frame,
)
from tradai_core.walk_forward import WalkForwardSpec
from tradai_resources.arcticdb_store import META_PIN, ArcticDBResource, symbol_pool
from tradai_resources.mlflow_tracking import MLflowResource, ModelVersionInfo, project_git_commit

MODELS_GROUP = "models"
TRAINING_SET_KEY = AssetKey(["training_set"])
MODEL_KEY = AssetKey(["model"])
TRAINING_SET_SYMBOL = "training_set"
CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
REFERENCE_ARTIFACT = "reference/feature_distribution.json"
TAG_REJECTED = "tradai.rejected"
TAG_BOOTSTRAP = "tradai.bootstrap_champion"
TAG_FEATURE_SET_HASH = "tradai.feature_set_hash"
TAG_HOLDOUT_START = "tradai.holdout_start"
TAG_HOLDOUT_END = "tradai.holdout_end"
TAG_ARCTICDB_PIN = "tradai.arcticdb_snapshot"


def training_library(exchange_id: str, timeframe: str) -> str:
    """ArcticDB library holding the training sets of one exchange and timeframe."""
    return f"training.{exchange_id}.{timeframe}"


def arcticdb_inputs(input_versions: Mapping[str, int], exchange_id: str, timeframe: str) -> dict[str, int]:
    """A training set's inputs as ArcticDB `library/symbol` → version (`features/BTC_USDT` →
    `features.binance.1h/BTC_USDT`, `ohlcv/BTC_USDT` → `ohlcv.binance.1h/BTC_USDT`)."""
    libraries = {
        "features": features_library(exchange_id, timeframe),
        "ohlcv": ArcticDBResource.library_name(exchange_id, timeframe),
    }
    out: dict[str, int] = {}
    for key, version in input_versions.items():
        kind, _, symbol = key.partition("/")
        if kind not in libraries or not symbol:
            raise ValidationError(
                f"unknown training-set input {key!r}", "inputs are features/<PAIR> or ohlcv/<PAIR>"
            )
        out[f"{libraries[kind]}/{symbol}"] = int(version)
    return out


def pin_name(kind: str, dagster_run_id: str | None) -> str:
    """Name of the ArcticDB snapshot pinning what a run read: `tradai.<kind>.<run id>`."""
    return f"tradai.{kind}.{dagster_run_id or 'local-' + uuid.uuid4().hex}"


def default_model_name(timeframe: str) -> str:
    """Registered-model name of the LightGBM model of a timeframe: `tradai-lgbm-1h`."""
    return f"tradai-lgbm-{timeframe}"


# -- run config ----------------------------------------------------------------------------------------


class TrainingSetConfig(Config):
    """Run config of the training set: its window, its labels, its pairs."""

    train_start: str | None = None
    """First day (YYYY-MM-DD) of the training window; default the start of the history."""
    train_end: str | None = None
    """Day (YYYY-MM-DD, exclusive) the training window ends; default `holdout_days` before the end of the
    history. Everything after it is the holdout used by validation backtests."""
    holdout_days: int = 120
    """Days at the end of the history kept out of training for validation backtests."""
    label_horizon: int = 4
    """Candles ahead the label looks."""
    label_kind: Literal["classification", "regression"] = "classification"
    label_threshold: float = 0.002
    """Forward return a trade must beat to be labelled 1 (classification): 0.2 % ≈ round-trip fees."""
    pairs: list[str] | None = None
    """Pairs to train on; default every pair of the universe."""


_LGB_DEFAULTS = LightGBMParams()


class ModelConfig(Config):
    """Run config of the model: walk-forward layout and LightGBM settings (all deterministic)."""

    model_name: str | None = None
    """Registered-model name; default `tradai-lgbm-<timeframe>`."""
    n_folds: int = 5
    min_train: int = 2000
    """Fewest bars (distinct candle times) the first fold trains on."""
    test_size: int | None = None
    """Bars per test fold; default: the folds share the data after `min_train`."""
    embargo: int = 24
    """Bars between a training span and its test fold; must be ≥ the label horizon."""
    window: Literal["expanding", "sliding"] = "expanding"
    train_size: int | None = None
    """Bars per training window when `window` is sliding."""
    num_boost_round: int = _LGB_DEFAULTS.num_boost_round
    learning_rate: float = _LGB_DEFAULTS.learning_rate
    num_leaves: int = _LGB_DEFAULTS.num_leaves
    max_depth: int = _LGB_DEFAULTS.max_depth
    min_data_in_leaf: int = _LGB_DEFAULTS.min_data_in_leaf
    feature_fraction: float = _LGB_DEFAULTS.feature_fraction
    bagging_fraction: float = _LGB_DEFAULTS.bagging_fraction
    bagging_freq: int = _LGB_DEFAULTS.bagging_freq
    lambda_l2: float = _LGB_DEFAULTS.lambda_l2
    seed: int = _LGB_DEFAULTS.seed
    num_threads: int = _LGB_DEFAULTS.num_threads
    reference_bins: int = 10
    """Quantile bins of the stored reference distribution (PSI)."""

    def lightgbm_params(self) -> LightGBMParams:
        """The LightGBM settings of this config."""
        return LightGBMParams(**{name: getattr(self, name) for name in LightGBMParams.model_fields})

    def walk_forward_spec(self, label_horizon: int) -> WalkForwardSpec:
        """The walk-forward layout; ConfigurationError when it is inconsistent (e.g. embargo < horizon)."""
        try:
            return WalkForwardSpec(
                n_folds=self.n_folds,
                min_train=self.min_train,
                test_size=self.test_size,
                embargo=self.embargo,
                label_horizon=label_horizon,
                window=self.window,
                train_size=self.train_size,
            )
        except PydanticValidationError as exc:
            problems = "; ".join(str(error["msg"]) for error in exc.errors())
            raise ConfigurationError(
                f"invalid walk-forward config: {problems}", "fix the model config"
            ) from exc


def _day(text: str | None, what: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"{what} {text!r} is not a date", "write it as YYYY-MM-DD") from exc


# -- the stored training set ---------------------------------------------------------------------------


class StoredTrainingSet(BaseModel):
    """A training set read back from ArcticDB, with what made it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    library: str
    symbol: str
    version: int
    frame: pd.DataFrame
    label_spec: LabelSpec
    window: TrainingWindow
    feature_names: tuple[str, ...]
    feature_set_hash: str
    pairs: tuple[str, ...]
    input_versions: dict[str, int]
    dagster_run_id: str | None = None


def store_training_set(
    store: ArcticDBResource,
    exchange_id: str,
    training: TrainingSet,
    input_versions: dict[str, int],
    dagster_run_id: str | None,
    inputs_pin: str | None = None,
) -> StoredTrainingSet:
    """Write a training set as a new version of `training.<exchange>.<tf>/training_set`.

    With `inputs_pin`, the input versions are first pinned under that snapshot name, released when this
    training-set version is pruned: a model trained from it later still finds every version it names."""
    library = training_library(exchange_id, training.label_spec.timeframe)
    frame = training.frame.copy()
    for column in ("date", "label_end"):  # ArcticDB keeps column datetimes naive: store UTC
        frame[column] = pd.DatetimeIndex(frame[column]).tz_convert("UTC").tz_localize(None)
    metadata = {
        "label_spec": training.label_spec.model_dump(mode="json"),
        "window": training.window.model_dump(mode="json"),
        "feature_names": list(training.feature_names),
        META_FEATURE_SET_HASH: feature_set_hash(),
        "pairs": sorted(training.pairs),
        "input_versions": input_versions,
        "dagster_run_id": dagster_run_id,
    }
    if inputs_pin is None:
        written = store.write_frame(library, TRAINING_SET_SYMBOL, frame, metadata=metadata)
    else:
        timeframe = training.label_spec.timeframe
        store.pin_versions(
            inputs_pin, arcticdb_inputs(input_versions, exchange_id, timeframe), "training set"
        )
        try:
            written = store.write_frame(
                library, TRAINING_SET_SYMBOL, frame, metadata={**metadata, META_PIN: inputs_pin}
            )
        except Exception:
            store.unpin(inputs_pin)
            raise
    return load_training_set(store, exchange_id, training.label_spec.timeframe, as_of=written.version)


def load_training_set(
    store: ArcticDBResource, exchange_id: str, timeframe: str, as_of: int | None = None
) -> StoredTrainingSet:
    """The stored training set (latest version, or `as_of`), dates back in UTC; NotFoundError if none."""
    library = training_library(exchange_id, timeframe)
    try:
        stored = store.read_frame(library, TRAINING_SET_SYMBOL, as_of=as_of)
    except NotFoundError as exc:
        raise NotFoundError(
            f"no training set stored in {library}", "materialize the training_set asset first"
        ) from exc
    meta = stored.metadata or {}
    frame = stored.frame
    for column in ("date", "label_end"):
        frame[column] = pd.DatetimeIndex(frame[column]).tz_localize("UTC")
    return StoredTrainingSet(
        library=library,
        symbol=TRAINING_SET_SYMBOL,
        version=stored.version,
        frame=frame,
        label_spec=LabelSpec.model_validate(meta["label_spec"]),
        window=TrainingWindow.model_validate(meta["window"]),
        feature_names=tuple(meta["feature_names"]),
        feature_set_hash=str(meta[META_FEATURE_SET_HASH]),
        pairs=tuple(meta["pairs"]),
        input_versions={str(k): int(v) for k, v in meta["input_versions"].items()},
        dagster_run_id=meta.get("dagster_run_id"),
    )


# -- MLflow: log, register, alias ----------------------------------------------------------------------


class RegisteredModel(BaseModel):
    """What registering a trained model did."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    run_id: str
    experiment_id: str
    aliases: tuple[str, ...]
    bootstrapped_champion: bool
    rejected: str | None = None

    @property
    def uri(self) -> str:
        """`models:/<name>/<version>`."""
        return f"models:/{self.name}/{self.version}"


def sanity_problems(result: TrainingResult) -> list[str]:
    """Why a trained model must not get an alias: empty folds, non-finite metrics, overlapping or
    un-embargoed test folds. Empty when it is sane."""
    problems = []
    for fold in result.folds:
        if fold.n_train == 0 or fold.n_test == 0:
            problems.append(f"fold {fold.number} has {fold.n_train} training and {fold.n_test} test rows")
        bad = sorted(name for name, value in fold.metrics.items() if not math.isfinite(value))
        if bad:
            problems.append(f"fold {fold.number}: metrics {bad} are not finite")
        if fold.train_end >= fold.test_start:
            problems.append(f"fold {fold.number} trains up to {fold.train_end}, into its test fold")
    for earlier, later in itertools.pairwise(result.folds):
        if later.test_start <= earlier.test_end:
            problems.append(f"test folds {earlier.number} and {later.number} overlap")
    bad = sorted(name for name, value in result.oos_metrics.items() if not math.isfinite(value))
    if bad:
        problems.append(f"out-of-sample metrics {bad} are not finite")
    return problems


def _importance_png(importances: pd.DataFrame) -> bytes:
    """Horizontal bar chart of the gain share per feature, as PNG bytes (matplotlib, no pyplot state)."""
    from matplotlib.figure import Figure

    shown = importances.iloc[::-1]
    figure = Figure(figsize=(7, 0.25 * len(shown) + 1.0), dpi=90)
    axes = figure.add_subplot()
    axes.barh(shown["feature"], shown["gain_share"], color="#4c72b0")
    axes.set_xlabel("share of total gain")
    axes.set_title("LightGBM feature importance (final model)")
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def register_trained_model(
    mlflow: MLflowResource,
    name: str,
    result: TrainingResult,
    reference: ReferenceDistribution,
    training: StoredTrainingSet,
    dagster_run_id: str | None,
    arcticdb_pin: str | None = None,
) -> RegisteredModel:
    """Log a trained model with its evidence to MLflow, register it as a new version of `name`, and set
    its aliases: `challenger` always, `champion` too when no champion exists (bootstrap rule), neither
    when `sanity_problems` finds something (the version is then tagged `tradai.rejected`)."""
    label = training.label_spec
    window = training.window
    features_frame = training.frame[list(result.feature_names)]
    example = features_frame.head(5)
    lineage = {
        "dagster.run_id": dagster_run_id or "outside-dagster",
        "tradai.code_version": project_git_commit(),
        TAG_FEATURE_SET_HASH: training.feature_set_hash,
        "tradai.label": label.description,
        "tradai.label_spec": json.dumps(label.model_dump(mode="json"), sort_keys=True),
        "tradai.walk_forward": result.walk_forward.description,
        "tradai.training_set": f"{training.library}/{training.symbol}@v{training.version}",
        "tradai.train_start": window.start.isoformat(),
        "tradai.train_end": window.end.isoformat(),
        TAG_HOLDOUT_START: window.end.isoformat(),
        TAG_HOLDOUT_END: window.holdout_end.isoformat(),
        "tradai.pairs": ",".join(training.pairs),
        "tradai.timeframe": label.timeframe,
        "tradai.rows": str(result.n_rows),
    }
    if arcticdb_pin:
        lineage[TAG_ARCTICDB_PIN] = arcticdb_pin
    data_versions = {training.library + "/" + training.symbol: str(training.version)}
    data_versions.update({key: str(version) for key, version in training.input_versions.items()})
    problems = sanity_problems(result)
    with mlflow.start_run(
        name,
        run_name=f"{name}-{(dagster_run_id or 'local')[:8]}",
        dagster_run_id=dagster_run_id,
        data_versions=data_versions,
        tags=lineage,
    ) as run:
        run.log_params(
            {
                **result.params.booster_params(result.kind),
                "num_boost_round": result.params.num_boost_round,
                **{f"wf_{k}": v for k, v in result.walk_forward.model_dump().items()},
                **{f"label_{k}": v for k, v in label.model_dump().items()},
                "train_start": window.start.isoformat(),
                "train_end": window.end.isoformat(),
                "n_rows": result.n_rows,
                "n_features": len(result.feature_names),
                "feature_set_hash": training.feature_set_hash,
            }
        )
        run.log_metrics({f"oos_{key}": value for key, value in result.oos_metrics.items()})
        for fold in result.folds:
            run.log_metrics({f"fold_{key}": value for key, value in fold.metrics.items()}, step=fold.number)
        run.log_dict(reference.model_dump(mode="json"), REFERENCE_ARTIFACT)
        run.log_dataframe(result.folds_frame(), "evaluation/folds.csv")
        run.log_dataframe(result.importances, "evaluation/feature_importance.csv")
        run.log_dataframe(result.oos_predictions, "evaluation/oos_predictions.parquet")
        run.log_dict({pair: len(rows) for pair, rows in training.frame.groupby("pair")}, "data/rows.json")
        run.log_image_bytes(_importance_png(result.importances), "evaluation/feature_importance.png")
        from mlflow.models import infer_signature

        signature = infer_signature(example, result.booster.predict(example))
        run.log_model(
            result.booster, MODEL_ARTIFACT, flavor="lightgbm", signature=signature, input_example=example
        )
    tags = dict(lineage)
    tags.update({f"tradai.input.{key}": str(value) for key, value in training.input_versions.items()})
    tags.update({f"tradai.oos_{key}": f"{value:.6g}" for key, value in result.oos_metrics.items()})
    if problems:
        tags[TAG_REJECTED] = "; ".join(problems)[:4000]
    version = mlflow.register_model(run.run_id, MODEL_ARTIFACT, name, tags=tags)
    bootstrapped = False
    if not problems:
        mlflow.set_alias(name, CHALLENGER, version)
        try:
            mlflow.get_version_by_alias(name, CHAMPION)
        except NotFoundError:
            mlflow.set_alias(name, CHAMPION, version)
            mlflow.set_version_tag(name, version, TAG_BOOTSTRAP, "true: no champion existed")
            bootstrapped = True
    info = mlflow.get_version(name, version)
    aliases = next((v.aliases for v in mlflow.list_versions(name) if v.version == version), info.aliases)
    return RegisteredModel(
        name=name,
        version=version,
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        aliases=tuple(aliases),
        bootstrapped_champion=bootstrapped,
        rejected="; ".join(problems) or None,
    )


def load_reference_distribution(
    mlflow: MLflowResource, name: str, alias: str = CHAMPION
) -> tuple[ModelVersionInfo, ReferenceDistribution]:
    """The model version `alias` points at and the feature distribution of its training window."""
    version = mlflow.get_version_by_alias(name, alias)
    if version.run_id is None:
        raise NotFoundError(f"{name} version {version.version} has no MLflow run", "re-register the model")
    data = mlflow.load_dict(version.run_id, REFERENCE_ARTIFACT)
    return version, ReferenceDistribution.model_validate(data)


# -- metadata helpers ----------------------------------------------------------------------------------


def _metrics_markdown(metrics: dict[str, float]) -> str:
    rows = [f"| {key} | {value:.4f} |" for key, value in metrics.items()]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def _folds_markdown(result: TrainingResult) -> str:
    frame = result.folds_frame()
    for column in ("train_start", "train_end", "test_start", "test_end"):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.strftime("%Y-%m-%d %H:%M")
    return frame.to_markdown(index=False, floatfmt=".4f")


def _importances_markdown(importances: pd.DataFrame) -> str:
    return importances.to_markdown(index=False, floatfmt=".4f")


def _pairs_markdown(training: TrainingSet) -> str:
    rows = []
    for pair, stats in training.pairs.items():
        rows.append(
            {
                "pair": pair,
                "candles": stats.candles,
                "rows": stats.rows,
                "no features": stats.dropped_no_features,
                "unlabeled": stats.dropped_unlabeled,
                "positive rate": stats.positive_rate if stats.positive_rate is not None else float("nan"),
                "first": f"{stats.first:%Y-%m-%d %H:%M}" if stats.first else "",
                "last": f"{stats.last:%Y-%m-%d %H:%M}" if stats.last else "",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f")


# -- the assets ----------------------------------------------------------------------------------------


def build_training_set_asset(settings: TradAISettings) -> AssetsDefinition:
    """The unpartitioned training-set asset over every pair of the universe."""
    tf = settings.timeframe
    exchange_id = settings.exchange_id
    universe = tuple(settings.pairs)

    @asset(
        key=TRAINING_SET_KEY,
        group_name=MODELS_GROUP,
        description="Features and forward-return labels of every pair over the training window (which ends "
        "`holdout_days` before the end of the history), stacked and stored in ArcticDB. Rows whose label is "
        "not known inside the window, or spans an outage, are dropped.",
        deps=[features_key(pair) for pair in universe] + [ohlcv_key(pair) for pair in universe],
        kinds={"arcticdb", "pandas"},
        pool=symbol_pool(training_library(exchange_id, tf), TRAINING_SET_SYMBOL),
        check_specs=[
            AssetCheckSpec(
                "features_cover_window",
                asset=TRAINING_SET_KEY,
                description="Every candle of the window has features, except the first WARMUP_BARS of the "
                "history.",
            )
        ],
    )
    def _training_set(
        context: AssetExecutionContext, config: TrainingSetConfig, candle_store: ArcticDBResource
    ) -> MaterializeResult:
        pairs = tuple(config.pairs or universe)
        unknown = sorted(set(pairs) - set(universe))
        if unknown:
            raise ConfigurationError(
                f"pairs {unknown} are not in the universe {list(universe)}", "add them to TRADAI_PAIRS"
            )
        window = training_window(
            settings.history_start,
            settings.history_end,
            holdout_days=config.holdout_days,
            start=_day(config.train_start, "train_start"),
            end=_day(config.train_end, "train_end"),
        )
        try:
            label_spec = LabelSpec(
                horizon=config.label_horizon,
                kind=config.label_kind,
                threshold=config.label_threshold,
                timeframe=tf,
            )
        except PydanticValidationError as exc:
            raise ConfigurationError(f"invalid label config: {exc}", "fix the training_set config") from exc
        digest = feature_set_hash()
        library = features_library(exchange_id, tf)
        features: dict[str, pd.DataFrame] = {}
        candles: dict[str, pd.DataFrame] = {}
        versions: dict[str, int] = {}
        for pair in pairs:
            key = "/".join(features_key(pair).path)
            try:
                stored = candle_store.read_frame(library, pair_slug(pair), window.start, window.end)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"no features stored for {pair} ({library}/{pair_slug(pair)})",
                    f"materialize {key} for {window.description} first",
                ) from exc
            stored_digest = (stored.metadata or {}).get(META_FEATURE_SET_HASH)
            if stored_digest != digest:
                raise ValidationError(
                    f"{key} was computed by feature set {stored_digest}, the code's is {digest}",
                    f"re-materialize {key} with config replace_stored_features: true first",
                )
            pair_candles = candle_store.read(exchange_id, tf, pair, window.start, window.end)
            features[pair], candles[pair] = stored.frame, pair_candles.candles
            versions[key] = stored.version
            versions["/".join(ohlcv_key(pair).path)] = pair_candles.version
        training = build_training_set(features, candles, label_spec, window)
        if training.frame.empty:
            raise NotFoundError(
                f"the training window {window.description} holds no labelled feature rows",
                "materialize the features of the window first, or widen the window",
            )
        stored_set = store_training_set(
            candle_store,
            exchange_id,
            training,
            versions,
            context.run.run_id,
            inputs_pin=pin_name("training_set", context.run.run_id),
        )
        context.log.info(
            "training set: %d rows of %d pairs, %s → %s/%s v%s",
            len(training.frame),
            len(pairs),
            window.description,
            stored_set.library,
            stored_set.symbol,
            stored_set.version,
        )
        uncovered = {
            pair: stats.dropped_no_features
            for pair, stats in training.pairs.items()
            if stats.dropped_no_features > WARMUP_BARS
        }
        balance = training.positive_rate
        metadata: dict[str, Any] = {
            "dagster/row_count": len(training.frame),
            "window": window.description,
            "train_start": MetadataValue.timestamp(window.start),
            "train_end": MetadataValue.timestamp(window.end),
            "holdout_start": MetadataValue.timestamp(window.end),
            "holdout_end": MetadataValue.timestamp(window.holdout_end),
            "label": label_spec.description,
            "positive_rate": float(balance) if balance is not None else MetadataValue.null(),
            "pairs": MetadataValue.md(_pairs_markdown(training)),
            "feature_set_hash": digest,
            "input_versions": MetadataValue.json(versions),
            "arcticdb_library": stored_set.library,
            "arcticdb_symbol": stored_set.symbol,
            "arcticdb_version": stored_set.version,
        }
        check = AssetCheckResult(
            check_name="features_cover_window",
            passed=not uncovered,
            severity=AssetCheckSeverity.WARN,
            description="every candle after the warm-up has features"
            if not uncovered
            else f"candles without features beyond the warm-up: {uncovered}; materialize their features",
            metadata={"candles_without_features": MetadataValue.json(uncovered)},
        )
        return MaterializeResult(metadata=metadata, check_results=[check])

    return _training_set


def build_model_asset(settings: TradAISettings) -> AssetsDefinition:
    """The unpartitioned model asset: walk-forward evaluation, final fit, MLflow registration."""
    tf = settings.timeframe
    exchange_id = settings.exchange_id

    @asset(
        key=MODEL_KEY,
        group_name=MODELS_GROUP,
        description="LightGBM on the training set: purged walk-forward evaluation, final fit on the whole "
        "window, registered in MLflow (alias challenger; champion when none exists) with lineage tags and "
        "the reference feature distribution.",
        deps=[TRAINING_SET_KEY],
        kinds={"lightgbm", "mlflow"},
        check_specs=[
            AssetCheckSpec(
                "walk_forward_sane",
                asset=MODEL_KEY,
                blocking=True,
                description="Every fold has training and test rows, test folds are disjoint and after "
                "their training span, every metric is finite; only then does the version get aliases.",
            ),
            AssetCheckSpec(
                "beats_constant_baseline",
                asset=MODEL_KEY,
                description="Out-of-sample log loss (RMSE) below that of always predicting the training "
                "prevalence (mean): the model knows more than nothing.",
            ),
        ],
    )
    def _model(
        context: AssetExecutionContext,
        config: ModelConfig,
        candle_store: ArcticDBResource,
        mlflow: MLflowResource,
    ) -> MaterializeResult:
        training = load_training_set(candle_store, exchange_id, tf)
        if training.feature_set_hash != feature_set_hash():
            raise ValidationError(
                f"training set v{training.version} holds features of feature set "
                f"{training.feature_set_hash}, the code's is {feature_set_hash()}",
                "re-materialize the features and the training set first",
            )
        validate_training_frame(training.frame, training.feature_names)
        name = config.model_name or default_model_name(tf)
        spec = config.walk_forward_spec(training.label_spec.horizon)
        result = train_walk_forward(
            training.frame, training.label_spec.kind, spec, config.lightgbm_params(), training.feature_names
        )
        reference = reference_distribution(
            training.frame, training.window, training.feature_names, config.reference_bins
        )
        pin = candle_store.pin_versions(  # before registering: no model names a version that may go
            pin_name("model", context.run.run_id),
            {
                f"{training.library}/{training.symbol}": training.version,
                **arcticdb_inputs(training.input_versions, exchange_id, tf),
            },
            note=f"model {name}",
        )
        registered = register_trained_model(
            mlflow, name, result, reference, training, context.run.run_id, arcticdb_pin=pin.name
        )
        context.log.info(
            "%s v%s (aliases %s) from run %s: OOS %s",
            name,
            registered.version,
            ", ".join(registered.aliases) or "none",
            registered.run_id,
            {k: round(v, 4) for k, v in result.oos_metrics.items()},
        )
        png = base64.b64encode(_importance_png(result.importances)).decode("ascii")
        url = mlflow.model_version_url(name, registered.version)
        metadata: dict[str, Any] = {
            "model_name": name,
            "model_version": registered.version,
            "model_uri": registered.uri,
            "aliases": ", ".join(registered.aliases) or "none",
            "bootstrapped_champion": registered.bootstrapped_champion,
            **mlflow.run_metadata(registered.run_id, registered.experiment_id),
            "oos_metrics": MetadataValue.md(_metrics_markdown(result.oos_metrics)),
            "folds": MetadataValue.md(_folds_markdown(result)),
            "feature_importance": MetadataValue.md(_importances_markdown(result.importances)),
            "feature_importance_plot": MetadataValue.md(
                f"![feature importance](data:image/png;base64,{png})"
            ),
            "walk_forward": spec.description,
            "label": training.label_spec.description,
            "training_window": training.window.description,
            "training_set_version": training.version,
            "arcticdb_snapshot": pin.name,
            "training_rows": result.n_rows,
            "feature_set_hash": training.feature_set_hash,
        }
        if url:
            metadata["mlflow_model_version"] = MetadataValue.url(url)
        for key, value in result.oos_metrics.items():
            metadata[f"oos_{key}"] = float(value) if math.isfinite(value) else MetadataValue.null()
        return MaterializeResult(metadata=metadata, check_results=_model_checks(result, registered))

    return _model


def _model_checks(result: TrainingResult, registered: RegisteredModel) -> list[AssetCheckResult]:
    sane = registered.rejected is None
    metric, baseline = (
        ("logloss", "baseline_logloss") if result.kind == "classification" else ("rmse", "baseline_rmse")
    )
    ours, theirs = result.oos_metrics[metric], result.oos_metrics[baseline]
    beats = bool(np.isfinite(ours) and np.isfinite(theirs) and ours < theirs)
    return [
        AssetCheckResult(
            check_name="walk_forward_sane",
            passed=sane,
            severity=AssetCheckSeverity.ERROR,
            description=f"{len(result.folds)} folds, every metric finite; aliases {registered.aliases}"
            if sane
            else f"version {registered.version} rejected: {registered.rejected}",
            metadata={
                "folds": len(result.folds),
                "min_test_rows": min(fold.n_test for fold in result.folds),
                "min_train_rows": min(fold.n_train for fold in result.folds),
            },
        ),
        AssetCheckResult(
            check_name="beats_constant_baseline",
            passed=beats,
            severity=AssetCheckSeverity.WARN,
            description=f"OOS {metric} {ours:.5f} vs constant predictor {theirs:.5f}",
            metadata={f"oos_{metric}": float(ours), f"oos_{baseline}": float(theirs)},
        ),
    ]


def build_model_assets(settings: TradAISettings) -> list[AssetsDefinition]:
    """The training-set and model assets (their checks are part of them)."""
    return [build_training_set_asset(settings), build_model_asset(settings)]
