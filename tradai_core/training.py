"""Training sets and purged walk-forward LightGBM training: plain Python on DataFrames, no Dagster, no I/O.

Honesty rules this module enforces (see `docs/features.md`):

- **The training window ends before the holdout.** `training_window` ends `holdout_days` before the end
  of the history; validation backtests of ML strategies run on the holdout, which no model has seen.
- **Labels never look past the training window.** `build_training_set` labels a pair from its candles
  inside the window only, so a row whose horizon reaches the window end (or spans an outage) is dropped,
  never labelled from holdout candles.
- **Scores come from data the model did not train on.** `train_walk_forward` scores every fold on test
  bars its training rows never touch (purged walk-forward, embargo ≥ label horizon), and reports a
  constant predictor's score beside the model's so "better than nothing" can be read off.
- **Same data, same model.** LightGBM runs with fixed seeds, `deterministic=True`, `force_row_wise=True`
  and a fixed thread count, so retraining on the same rows gives the same trees and the same metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradai_core.errors import ValidationError
from tradai_core.features import FEATURE_NAMES, feature_set_hash
from tradai_core.labels import LabelSpec, make_labels
from tradai_core.lazy import LazyModule
from tradai_core.psi import ReferenceSummary, summarize_reference_frame
from tradai_core.walk_forward import Fold, WalkForwardSpec, walk_forward_splits

# imported on first use, not when the code location loads
lgb = LazyModule("lightgbm")
stats = LazyModule("scipy.stats")

#: Columns of a training set besides the features, in order.
KEY_COLUMNS: tuple[str, ...] = ("date", "pair")
LABEL_COLUMNS: tuple[str, ...] = ("forward_return", "label", "label_end")
#: Clip of probabilities before log loss, so one confident miss cannot make it infinite.
LOGLOSS_EPS = 1e-15


# -- the training window -----------------------------------------------------------------------------


class TrainingWindow(BaseModel):
    """Where a model learns (`[start, end)`) and the holdout after it (`[end, holdout_end)`) that is
    kept for validation backtests."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    holdout_end: datetime

    @model_validator(mode="after")
    def _check(self) -> TrainingWindow:
        for moment in (self.start, self.end, self.holdout_end):
            if moment.tzinfo is None:
                raise ValueError("training window bounds must be timezone-aware (UTC)")
        if self.end <= self.start:
            raise ValueError(f"training window ends ({self.end}) before it starts ({self.start})")
        if self.holdout_end < self.end:
            raise ValueError(f"holdout ends ({self.holdout_end}) before the training window ({self.end})")
        return self

    @property
    def description(self) -> str:
        """One line for lineage: `train [2020-10-12, 2022-06-14), holdout [2022-06-14, 2022-10-12)`."""
        return (
            f"train [{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d}), holdout "
            f"[{self.end:%Y-%m-%d}, {self.holdout_end:%Y-%m-%d})"
        )


def _utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def training_window(
    history_start: date,
    history_end: date | None,
    *,
    holdout_days: int = 120,
    start: date | None = None,
    end: date | None = None,
    today: date | None = None,
) -> TrainingWindow:
    """The training window and its holdout.

    By default the window runs from `history_start` to `holdout_days` days before the end of the history
    (`history_end`, exclusive, or today when the history is open), and the holdout is what remains: the
    period validation backtests of ML strategies use, which the model never sees. `start`/`end` override
    either bound; an explicit `end` moves the holdout start with it.
    """
    if holdout_days < 0:
        raise ValidationError(f"holdout_days is {holdout_days}", "use 0 or more days")
    last = history_end or today or datetime.now(tz=UTC).date()
    train_start = start or history_start
    train_end = end or (last - timedelta(days=holdout_days))
    if train_start < history_start:
        raise ValidationError(
            f"training window starts {train_start}, before the history ({history_start})",
            "start the training window on or after TRADAI_HISTORY_START",
        )
    if train_end > last:
        raise ValidationError(
            f"training window ends {train_end}, after the history ({last})",
            "end the training window on or before the end of the history",
        )
    if train_end <= train_start:
        raise ValidationError(
            f"training window [{train_start}, {train_end}) is empty (history ends {last}, holdout "
            f"{holdout_days} days)",
            "lower holdout_days, or set train_start/train_end explicitly",
        )
    return TrainingWindow(
        start=_utc_midnight(train_start), end=_utc_midnight(train_end), holdout_end=_utc_midnight(last)
    )


# -- the training set --------------------------------------------------------------------------------


class PairStats(BaseModel):
    """How one pair's candles became training rows."""

    model_config = ConfigDict(frozen=True)

    candles: int = Field(description="Candles in the training window.")
    with_features: int = Field(description="Of those, candles with a feature row.")
    rows: int = Field(description="Training rows: feature rows with a label.")
    dropped_no_features: int = Field(description="Candles without a feature row (warm-up, not materialized).")
    dropped_unlabeled: int = Field(
        description="Feature rows without a label: horizon past the window end, or across an outage."
    )
    positive_rate: float | None = Field(description="Share of label 1 (classification), else None.")
    first: datetime | None = None
    last: datetime | None = None


@dataclass(frozen=True)
class TrainingSet:
    """Features and labels of every pair over the training window, stacked.

    `frame` has a RangeIndex and columns `date` (UTC candle time), `pair`, the features, `forward_return`,
    `label` and `label_end`, sorted by (date, pair): the order walk-forward splitting needs.
    """

    frame: pd.DataFrame
    label_spec: LabelSpec
    window: TrainingWindow
    feature_names: tuple[str, ...]
    pairs: dict[str, PairStats]

    @property
    def positive_rate(self) -> float | None:
        """Share of label 1 over all pairs (classification), else None."""
        if self.label_spec.kind != "classification" or self.frame.empty:
            return None
        return float(self.frame["label"].mean())


def build_training_set(
    features: Mapping[str, pd.DataFrame],
    candles: Mapping[str, pd.DataFrame],
    label_spec: LabelSpec,
    window: TrainingWindow,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> TrainingSet:
    """Stack features and labels of every pair over `window` (candles and features indexed by UTC time).

    Labels come from the pair's candles *inside* the window only: a row whose label would need a candle at
    or after `window.end` (not yet seen, or the holdout), or whose horizon spans a missing candle, is
    dropped. Feature rows are joined on their candle time; candles without a feature row (the first
    `WARMUP_BARS` of the history) are dropped and counted.
    """
    if set(features) != set(candles):
        raise ValidationError(
            f"features for {sorted(features)} but candles for {sorted(candles)}",
            "pass the same pairs to both",
        )
    names = list(feature_names)
    lo, hi = pd.Timestamp(window.start), pd.Timestamp(window.end)
    parts: list[pd.DataFrame] = []
    pair_stats: dict[str, PairStats] = {}
    for pair in sorted(features):
        frame = features[pair]
        missing = [name for name in names if name not in frame.columns]
        if missing:
            raise ValidationError(
                f"{pair} features lack columns {missing}",
                "re-materialize the features with the current feature set",
            )
        pair_candles = candles[pair]
        pair_candles = pair_candles[(pair_candles.index >= lo) & (pair_candles.index < hi)]
        in_window = frame.loc[(frame.index >= lo) & (frame.index < hi), names]
        with_features = in_window.index.intersection(pair_candles.index)
        labels = make_labels(pair_candles, label_spec)
        joined = in_window.loc[with_features].join(labels, how="inner")
        rows = joined.reset_index(names="date")
        rows.insert(1, "pair", pair)
        parts.append(rows)
        pair_stats[pair] = PairStats(
            candles=len(pair_candles),
            with_features=len(with_features),
            rows=len(rows),
            dropped_no_features=len(pair_candles) - len(with_features),
            dropped_unlabeled=len(with_features) - len(rows),
            positive_rate=float(joined["label"].mean())
            if label_spec.kind == "classification" and len(joined)
            else None,
            first=joined.index[0].to_pydatetime() if len(joined) else None,
            last=joined.index[-1].to_pydatetime() if len(joined) else None,
        )
    stacked = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["date", "pair"])
    stacked = stacked.sort_values(["date", "pair"], kind="stable").reset_index(drop=True)
    stacked = stacked[[*KEY_COLUMNS, *names, *LABEL_COLUMNS]]
    return TrainingSet(
        frame=stacked, label_spec=label_spec, window=window, feature_names=tuple(names), pairs=pair_stats
    )


def validate_training_frame(frame: pd.DataFrame, feature_names: Sequence[str]) -> None:
    """Raise ValidationError unless `frame` looks like `TrainingSet.frame` (columns, order, UTC dates)."""
    missing = [c for c in (*KEY_COLUMNS, *feature_names, *LABEL_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValidationError(f"training set lacks columns {missing}", "rebuild it with build_training_set")
    if frame.empty:
        raise ValidationError(
            "the training set has no rows", "materialize features for the training window first"
        )
    dates = pd.DatetimeIndex(frame["date"])
    if dates.tz is None:
        raise ValidationError("training set dates are not timezone-aware", "store dates in UTC")
    if not dates.is_monotonic_increasing:
        raise ValidationError("training set rows are not sorted by date", "sort by (date, pair)")


# -- LightGBM ----------------------------------------------------------------------------------------


class LightGBMParams(BaseModel):
    """LightGBM settings. Determinism is not optional: `deterministic`, `force_row_wise`, the seed and
    the thread count are always passed, so the same rows always give the same model."""

    model_config = ConfigDict(frozen=True)

    num_boost_round: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=0.02, gt=0, le=1)
    num_leaves: int = Field(default=7, ge=2)
    max_depth: int = Field(default=-1)
    min_data_in_leaf: int = Field(default=500, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_freq: int = Field(default=1, ge=0)
    lambda_l2: float = Field(default=1.0, ge=0)
    seed: int = 42
    num_threads: int = Field(
        default=1,
        ge=1,
        description="Fixed thread count: histogram sums are reduced per thread, so results depend on it.",
    )

    def booster_params(self, kind: str) -> dict[str, Any]:
        """The parameter dict for `lightgbm.train` for a classification or regression label."""
        return {
            "objective": "binary" if kind == "classification" else "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "bagging_seed": self.seed,
            "feature_fraction_seed": self.seed,
            "data_random_seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }


def fit_booster(features: pd.DataFrame, target: np.ndarray, params: LightGBMParams, kind: str) -> lgb.Booster:
    """One LightGBM model on `features` (named columns; NaN allowed) and `target`."""
    dataset = lgb.Dataset(features, label=target, free_raw_data=True)
    return lgb.train(params.booster_params(kind), dataset, num_boost_round=params.num_boost_round)


# -- metrics -----------------------------------------------------------------------------------------


def roc_auc(target: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN when only one class is present."""
    positives = int(target.sum())
    negatives = len(target) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = stats.rankdata(score)
    return float((ranks[target == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(target: np.ndarray, probability: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-15, 1 - 1e-15]."""
    p = np.clip(probability, LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    return float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))


def classification_metrics(
    target: np.ndarray, probability: np.ndarray, train_rate: float
) -> dict[str, float]:
    """AUC, accuracy (at 0.5), log loss and Brier score of predicted probabilities, beside the log loss
    of always predicting the training prevalence (`baseline_logloss`: what knowing nothing scores)."""
    target = target.astype("float64")
    if len(target) == 0:
        return dict.fromkeys(
            ("auc", "accuracy", "logloss", "brier", "baseline_logloss", "base_rate"), math.nan
        )
    return {
        "auc": roc_auc(target, probability),
        "accuracy": float(((probability > 0.5) == (target == 1)).mean()),
        "logloss": log_loss(target, probability),
        "brier": float(np.mean((probability - target) ** 2)),
        "baseline_logloss": log_loss(target, np.full(len(target), train_rate)),
        "base_rate": float(target.mean()),
    }


def regression_metrics(target: np.ndarray, prediction: np.ndarray, train_mean: float) -> dict[str, float]:
    """Information coefficient (Spearman), RMSE, direction hit rate, beside the RMSE of always predicting
    the training mean (`baseline_rmse`)."""
    if len(target) < 2:
        return dict.fromkeys(("ic", "rmse", "direction_accuracy", "baseline_rmse"), math.nan)
    ic = stats.spearmanr(prediction, target).statistic if np.ptp(prediction) > 0 else math.nan
    return {
        "ic": float(ic),
        "rmse": float(np.sqrt(np.mean((prediction - target) ** 2))),
        "direction_accuracy": float((np.sign(prediction) == np.sign(target)).mean()),
        "baseline_rmse": float(np.sqrt(np.mean((train_mean - target) ** 2))),
    }


def _metrics(kind: str, target: np.ndarray, prediction: np.ndarray, train_target: np.ndarray) -> dict:
    if kind == "classification":
        return classification_metrics(target, prediction, float(np.mean(train_target)))
    return regression_metrics(target, prediction, float(np.mean(train_target)))


# -- walk-forward training ---------------------------------------------------------------------------


class FoldResult(BaseModel):
    """One walk-forward fold: its spans, its sizes and its out-of-sample metrics."""

    model_config = ConfigDict(frozen=True)

    number: int
    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime
    n_train: int
    n_test: int
    n_purged: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrainingResult:
    """What `train_walk_forward` produced: the final model (fitted on every row), the walk-forward
    evidence for it, and the importances of its features."""

    booster: lgb.Booster
    kind: str
    feature_names: tuple[str, ...]
    params: LightGBMParams
    walk_forward: WalkForwardSpec
    folds: tuple[FoldResult, ...]
    oos_metrics: dict[str, float]
    oos_predictions: pd.DataFrame
    importances: pd.DataFrame
    n_rows: int

    def folds_frame(self) -> pd.DataFrame:
        """One row per fold: spans, sizes and metrics."""
        rows = []
        for fold in self.folds:
            row: dict[str, Any] = {
                "fold": fold.number,
                "train_start": fold.train_start,
                "train_end": fold.train_end,
                "test_start": fold.test_start,
                "test_end": fold.test_end,
                "n_train": fold.n_train,
                "n_test": fold.n_test,
                "n_purged": fold.n_purged,
            }
            row.update(fold.metrics)
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def all_metrics_finite(self) -> bool:
        """Every out-of-sample and per-fold metric is a finite number."""
        values = [*self.oos_metrics.values(), *(v for f in self.folds for v in f.metrics.values())]
        return all(math.isfinite(v) for v in values)


def _fold_result(fold: Fold, metrics: dict[str, float]) -> FoldResult:
    return FoldResult(
        number=fold.number,
        train_start=fold.train_start.to_pydatetime(),
        train_end=fold.train_end.to_pydatetime(),
        test_start=fold.test_start.to_pydatetime(),
        test_end=fold.test_end.to_pydatetime(),
        n_train=len(fold.train),
        n_test=len(fold.test),
        n_purged=fold.n_purged,
        metrics=metrics,
    )


def train_walk_forward(
    frame: pd.DataFrame,
    kind: str,
    walk_forward: WalkForwardSpec,
    params: LightGBMParams,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> TrainingResult:
    """Purged walk-forward evaluation of LightGBM on a training set, then the final model on all of it.

    Each fold trains on its (purged) training rows and predicts its test rows; the per-fold metrics and the
    metrics of all test predictions pooled (`oos_metrics`, each row predicted by a model that never saw
    it or anything after its embargo) are what the model is judged on. The returned booster is then fitted
    on every row with the same parameters: that is the model that gets registered. Importances are the
    final model's total gain per feature (`gain_share` sums to 1) and split counts.
    """
    names = list(feature_names)
    validate_training_frame(frame, names)
    if kind not in ("classification", "regression"):
        raise ValidationError(f"label kind {kind!r} is unknown", "use classification or regression")
    features = frame[names].astype("float64")
    target = frame["label"].to_numpy(dtype="float64")
    folds = walk_forward_splits(frame["date"], frame["label_end"], walk_forward)
    fold_results: list[FoldResult] = []
    predicted: list[pd.DataFrame] = []
    for fold in folds:
        if len(fold.train) == 0 or len(fold.test) == 0:
            raise ValidationError(
                f"walk-forward fold {fold.number} has {len(fold.train)} training and {len(fold.test)} test "
                "rows",
                "supply more history or fewer/smaller folds",
            )
        booster = fit_booster(features.iloc[fold.train], target[fold.train], params, kind)
        prediction = booster.predict(features.iloc[fold.test])
        fold_results.append(
            _fold_result(fold, _metrics(kind, target[fold.test], prediction, target[fold.train]))
        )
        predicted.append(
            pd.DataFrame(
                {
                    "date": frame["date"].iloc[fold.test].reset_index(drop=True),
                    "pair": frame["pair"].iloc[fold.test].reset_index(drop=True),
                    "fold": fold.number,
                    "label": target[fold.test],
                    "prediction": prediction,
                    "train_reference": float(np.mean(target[fold.train])),
                }
            )
        )
    oos = pd.concat(predicted, ignore_index=True)
    oos_metrics = _pooled_metrics(kind, oos)
    oos_metrics.update(_fold_spread(fold_results))
    final = fit_booster(features, target, params, kind)
    return TrainingResult(
        booster=final,
        kind=kind,
        feature_names=tuple(names),
        params=params,
        walk_forward=walk_forward,
        folds=tuple(fold_results),
        oos_metrics=oos_metrics,
        oos_predictions=oos,
        importances=feature_importances(final),
        n_rows=len(frame),
    )


def _pooled_metrics(kind: str, oos: pd.DataFrame) -> dict[str, float]:
    """Metrics over every out-of-sample prediction; the baseline uses each fold's own training reference."""
    target = oos["label"].to_numpy(dtype="float64")
    prediction = oos["prediction"].to_numpy(dtype="float64")
    reference = oos["train_reference"].to_numpy(dtype="float64")
    if kind == "classification":
        metrics = classification_metrics(target, prediction, 0.5)
        metrics["baseline_logloss"] = log_loss(target, reference)
    else:
        metrics = regression_metrics(target, prediction, 0.0)
        metrics["baseline_rmse"] = float(np.sqrt(np.mean((reference - target) ** 2)))
    return metrics


def _fold_spread(folds: Sequence[FoldResult]) -> dict[str, float]:
    """Mean and standard deviation over folds of the headline metric (auc or ic)."""
    headline = "auc" if "auc" in folds[0].metrics else "ic"
    values = np.array([fold.metrics[headline] for fold in folds], dtype="float64")
    return {
        f"{headline}_fold_mean": float(values.mean()),
        f"{headline}_fold_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        f"{headline}_fold_min": float(values.min()),
    }


def feature_importances(booster: lgb.Booster) -> pd.DataFrame:
    """Total gain, share of gain and split count per feature, largest gain first."""
    gain = booster.feature_importance(importance_type="gain")
    split = booster.feature_importance(importance_type="split")
    total = float(gain.sum())
    frame = pd.DataFrame(
        {
            "feature": booster.feature_name(),
            "gain": gain.astype("float64"),
            "gain_share": gain / total if total > 0 else np.zeros(len(gain)),
            "splits": split.astype("int64"),
        }
    )
    return frame.sort_values(["gain", "feature"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


# -- the reference distribution drift is scored against ----------------------------------------------


class ReferenceDistribution(BaseModel):
    """The distribution of every feature over the training window, kept with the model.

    `pooled` summarises all pairs together (the model is trained on them together); `by_pair` each pair
    alone, for per-pair drift. JSON round-trips through `model_dump(mode="json")` / `model_validate`.
    """

    model_config = ConfigDict(frozen=True)

    feature_set_hash: str
    window_start: datetime
    window_end: datetime
    n_rows: int
    n_bins: int
    pooled: dict[str, ReferenceSummary]
    by_pair: dict[str, dict[str, ReferenceSummary]]


def reference_distribution(
    frame: pd.DataFrame,
    window: TrainingWindow,
    feature_names: Sequence[str] = FEATURE_NAMES,
    n_bins: int = 10,
) -> ReferenceDistribution:
    """Quantile-binned summaries (`tradai_core.psi`) of every feature of a training set."""
    names = list(feature_names)
    validate_training_frame(frame, names)
    return ReferenceDistribution(
        feature_set_hash=feature_set_hash(),
        window_start=window.start,
        window_end=window.end,
        n_rows=len(frame),
        n_bins=n_bins,
        pooled=summarize_reference_frame(frame, names, n_bins),
        by_pair={
            str(pair): summarize_reference_frame(rows, names, n_bins)
            for pair, rows in frame.groupby("pair", sort=True)
        },
    )
