"""Training sets and walk-forward LightGBM on real recorded candles: honest labels, honest folds, same data
→ same model."""

import itertools
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import load_recorded
from tradai_core.errors import ValidationError
from tradai_core.features import FEATURE_NAMES, compute_features
from tradai_core.labels import LabelSpec, find_gaps, make_labels
from tradai_core.psi import score_psi
from tradai_core.training import (
    LightGBMParams,
    ReferenceDistribution,
    TrainingResult,
    TrainingSet,
    build_training_set,
    log_loss,
    reference_distribution,
    roc_auc,
    train_walk_forward,
    training_window,
)
from tradai_core.walk_forward import WalkForwardSpec, walk_forward_splits

PAIRS = ("BTC/USDT", "ETH/USDT")
HORIZON = 4
EMBARGO = 24
# Small and quick: 2 pairs × ~4 months of hourly rows, 3 folds.
PARAMS = LightGBMParams(num_boost_round=60, min_data_in_leaf=100)
SPEC = WalkForwardSpec(n_folds=3, min_train=800, embargo=EMBARGO, label_horizon=HORIZON)


@pytest.fixture(scope="module")
def candles(demo_candles_dir: Path) -> dict[str, pd.DataFrame]:
    """Real candles 2020-10-12 → 2021-04-01; BTC has the 4-hour outage of 2020-12-21 in it."""
    return {pair: load_recorded(demo_candles_dir, pair).loc[:"2021-03-31 23:00"] for pair in PAIRS}


@pytest.fixture(scope="module")
def features(candles: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {pair: compute_features(frame) for pair, frame in candles.items()}


@pytest.fixture(scope="module")
def training(candles: dict[str, pd.DataFrame], features: dict[str, pd.DataFrame]) -> TrainingSet:
    window = training_window(date(2020, 10, 12), date(2021, 4, 1), holdout_days=30)
    return build_training_set(features, candles, LabelSpec(horizon=HORIZON), window)


@pytest.fixture(scope="module")
def trained(training: TrainingSet) -> TrainingResult:
    return train_walk_forward(training.frame, "classification", SPEC, PARAMS)


# -- the training window and its holdout ------------------------------------------------------------------


def test_the_training_window_ends_holdout_days_before_the_end_of_the_history() -> None:
    window = training_window(date(2020, 10, 12), date(2022, 10, 12), holdout_days=120)
    assert window.start.isoformat() == "2020-10-12T00:00:00+00:00"
    assert window.end.date() == date(2022, 10, 12) - timedelta(days=120) == date(2022, 6, 14)
    assert window.holdout_end.date() == date(2022, 10, 12)
    assert window.description == "train [2020-10-12, 2022-06-14), holdout [2022-06-14, 2022-10-12)"

    explicit = training_window(date(2020, 10, 12), date(2022, 10, 12), end=date(2022, 1, 1))
    assert (explicit.end.date(), explicit.holdout_end.date()) == (date(2022, 1, 1), date(2022, 10, 12))
    open_ended = training_window(date(2020, 10, 12), None, holdout_days=10, today=date(2021, 1, 11))
    assert (open_ended.end.date(), open_ended.holdout_end.date()) == (date(2021, 1, 1), date(2021, 1, 11))

    with pytest.raises(ValidationError, match="is empty"):
        training_window(date(2020, 10, 12), date(2020, 12, 1), holdout_days=60)
    with pytest.raises(ValidationError, match="after the history"):
        training_window(date(2020, 10, 12), date(2021, 1, 1), end=date(2021, 2, 1))


# -- the training set --------------------------------------------------------------------------------------


def test_labels_never_use_a_candle_at_or_after_the_end_of_the_training_window(
    training: TrainingSet, candles: dict[str, pd.DataFrame]
) -> None:
    frame, end = training.frame, pd.Timestamp(training.window.end)
    assert (frame["label_end"] < end).all() and (frame["date"] < end).all()
    # With the holdout's candles the last rows *could* be labelled; they must not be.
    everything = make_labels(candles["BTC/USDT"], LabelSpec(horizon=HORIZON))
    could = everything[(everything.index < end) & (everything["label_end"] >= end)]
    btc = frame[frame["pair"] == "BTC/USDT"]
    assert len(could) == HORIZON and not btc["date"].isin(could.index).any()


def test_rows_whose_horizon_spans_an_outage_are_dropped(
    training: TrainingSet, candles: dict[str, pd.DataFrame]
) -> None:
    btc = training.frame[training.frame["pair"] == "BTC/USDT"].set_index("date")
    outage_after, resumes = (
        pd.Timestamp("2020-12-21 13:00", tz="UTC"),
        pd.Timestamp("2020-12-21 18:00", tz="UTC"),
    )
    spanning = pd.date_range(outage_after - pd.Timedelta(hours=HORIZON - 1), outage_after, freq="h")
    assert not btc.index.isin(spanning).any()
    assert (btc["label_end"] - btc.index == pd.Timedelta(hours=HORIZON)).all()
    assert resumes in btc.index and outage_after - pd.Timedelta(hours=HORIZON) in btc.index
    for pair in PAIRS:
        stats = training.pairs[pair]
        span = candles[pair].loc[stats.first : training.window.end - pd.Timedelta(hours=1)]
        outages = len(find_gaps(span.index, "1h"))
        # HORIZON rows lose their label before the window end, and before each outage
        assert stats.dropped_unlabeled == HORIZON * (1 + outages)
    assert training.pairs["BTC/USDT"].dropped_unlabeled > HORIZON


def test_the_training_set_stacks_pairs_by_time_with_every_feature(training: TrainingSet) -> None:
    frame = training.frame
    assert list(frame.columns) == ["date", "pair", *FEATURE_NAMES, "forward_return", "label", "label_end"]
    assert frame["date"].is_monotonic_increasing
    assert set(frame["pair"]) == set(PAIRS)
    assert set(frame["label"].unique()) == {0, 1}
    for pair, stats in training.pairs.items():
        assert stats.rows == (frame["pair"] == pair).sum()
        assert stats.dropped_no_features == 740  # the warm-up at the start of the history
        assert stats.candles == stats.rows + stats.dropped_no_features + stats.dropped_unlabeled
        assert 0.3 < (stats.positive_rate or 0) < 0.7


# -- walk-forward training ---------------------------------------------------------------------------------


def test_walk_forward_folds_never_overlap_and_respect_the_embargo(
    training: TrainingSet, trained: TrainingResult
) -> None:
    frame = training.frame
    bars = pd.DatetimeIndex(frame["date"].unique())
    for spec in (SPEC, SPEC.model_copy(update={"window": "sliding", "train_size": 900})):
        folds = walk_forward_splits(frame["date"], frame["label_end"], spec)
        for fold in folds:
            train_dates, test_dates = frame["date"].iloc[fold.train], frame["date"].iloc[fold.test]
            assert len(fold.train) and len(fold.test)
            assert set(fold.train).isdisjoint(fold.test)
            # the embargo: at least EMBARGO bars between the last training bar and the first test bar
            assert ((bars > train_dates.max()) & (bars < test_dates.min())).sum() >= EMBARGO >= HORIZON
            # the purge: no training label reaches into the test fold
            assert (frame["label_end"].iloc[fold.train] < test_dates.min()).all()
        for earlier, later in itertools.pairwise(folds):
            assert earlier.test_end < later.test_start
            between = ((bars > earlier.test_end) & (bars < later.test_start)).sum()
            assert between >= EMBARGO
    assert [f.test_start for f in trained.folds] == [
        f.test_start for f in walk_forward_splits(frame["date"], frame["label_end"], SPEC)
    ]


def test_every_fold_and_the_pooled_out_of_sample_predictions_are_scored(trained: TrainingResult) -> None:
    assert len(trained.folds) == 3 and trained.all_metrics_finite
    for fold in trained.folds:
        assert 0.0 <= fold.metrics["auc"] <= 1.0 and 0.0 <= fold.metrics["accuracy"] <= 1.0
        assert fold.metrics["logloss"] > 0
    oos = trained.oos_predictions
    assert len(oos) == sum(f.n_test for f in trained.folds)
    assert trained.oos_metrics["auc"] == pytest.approx(roc_auc(oos["label"].to_numpy(), oos["prediction"]))
    assert {"auc", "accuracy", "logloss", "baseline_logloss", "auc_fold_mean"} <= set(trained.oos_metrics)
    assert list(trained.folds_frame()["fold"]) == [0, 1, 2]


def test_importances_cover_every_feature_and_share_the_gain(trained: TrainingResult) -> None:
    importances = trained.importances
    assert set(importances["feature"]) == set(FEATURE_NAMES)
    assert importances["gain_share"].sum() == pytest.approx(1.0)
    assert importances["gain"].is_monotonic_decreasing
    assert tuple(trained.booster.feature_name()) == FEATURE_NAMES


def test_two_trainings_on_the_same_data_give_the_same_model_and_metrics(
    training: TrainingSet, trained: TrainingResult
) -> None:
    again = train_walk_forward(training.frame.copy(), "classification", SPEC, PARAMS)
    assert again.oos_metrics == trained.oos_metrics
    assert [f.metrics for f in again.folds] == [f.metrics for f in trained.folds]
    assert again.booster.model_to_string() == trained.booster.model_to_string()
    pd.testing.assert_frame_equal(again.importances, trained.importances)
    other_seed = train_walk_forward(
        training.frame, "classification", SPEC, PARAMS.model_copy(update={"seed": 7})
    )
    assert other_seed.booster.model_to_string() != trained.booster.model_to_string()


def test_appending_future_candles_never_changes_past_features_or_predictions(
    candles: dict[str, pd.DataFrame], trained: TrainingResult
) -> None:
    btc = candles["BTC/USDT"]
    for cut in ("2021-01-15 09:00", "2021-02-28 23:00"):
        known = compute_features(btc.loc[:cut])
        full = compute_features(btc).loc[known.index]
        pd.testing.assert_frame_equal(known, full, check_exact=True)
        np.testing.assert_array_equal(trained.booster.predict(known), trained.booster.predict(full))


def test_a_regression_label_is_scored_by_information_coefficient_and_rmse(
    candles: dict[str, pd.DataFrame], features: dict[str, pd.DataFrame], training: TrainingSet
) -> None:
    spec = LabelSpec(horizon=HORIZON, kind="regression")
    regression = build_training_set(features, candles, spec, training.window)
    result = train_walk_forward(regression.frame, "regression", SPEC, PARAMS)
    assert result.all_metrics_finite
    assert {"ic", "rmse", "direction_accuracy", "baseline_rmse", "ic_fold_mean"} <= set(result.oos_metrics)
    assert -1 <= result.oos_metrics["ic"] <= 1 and result.oos_metrics["rmse"] > 0


def test_too_little_history_for_the_folds_fails_saying_what_to_do(training: TrainingSet) -> None:
    with pytest.raises(ValidationError, match="supply more history"):
        train_walk_forward(
            training.frame, "classification", SPEC.model_copy(update={"min_train": 10_000}), PARAMS
        )


# -- metrics and the reference distribution ----------------------------------------------------------------


def test_auc_and_log_loss_match_their_definitions() -> None:
    target = np.array([0, 0, 1, 1])
    assert roc_auc(target, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(target, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(target, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc(target, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))
    assert log_loss(target, np.full(4, 0.5)) == pytest.approx(np.log(2))


def test_the_reference_distribution_covers_every_feature_and_pair_and_round_trips_as_json(
    training: TrainingSet,
) -> None:
    reference = reference_distribution(training.frame, training.window)
    assert set(reference.pooled) == set(FEATURE_NAMES) and set(reference.by_pair) == set(PAIRS)
    assert reference.n_rows == len(training.frame)
    back = ReferenceDistribution.model_validate_json(reference.model_dump_json())
    assert back == reference
    # The training window scored against its own reference shows no drift.
    rsi = training.frame["rsi_14"].to_numpy()
    assert score_psi(back.pooled["rsi_14"], rsi).psi < 0.01
