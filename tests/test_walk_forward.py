"""Purged walk-forward splits on labels from real recorded candles."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest

from tradai_core.errors import ValidationError
from tradai_core.labels import LabelSpec, make_labels
from tradai_core.walk_forward import Fold, WalkForwardSpec, walk_forward_splits

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_CANDLES = PROJECT_ROOT / "demo_data" / "binance_spot_1h"
HORIZON = 4


def load(pair: str) -> pd.DataFrame:
    return pd.read_parquet(DEMO_CANDLES / f"{pair}-1h.parquet").set_index("date")


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    """BTC labels: the outages in the demo candles leave holes in the sample timestamps."""
    return make_labels(load("BTC_USDT"), LabelSpec(horizon=HORIZON))


@pytest.fixture(scope="module")
def spec() -> WalkForwardSpec:
    return WalkForwardSpec(n_folds=5, min_train=3000, embargo=24, label_horizon=HORIZON)


@pytest.fixture(scope="module")
def folds(labels: pd.DataFrame, spec: WalkForwardSpec) -> list[Fold]:
    return walk_forward_splits(labels.index, labels["label_end"], spec)


def bars_between(times: pd.DatetimeIndex, earlier: pd.Timestamp, later: pd.Timestamp) -> int:
    """Sample bars strictly between two bars."""
    return int(((times > earlier) & (times < later)).sum())


def test_folds_are_chronological_disjoint_and_end_at_the_newest_bar(
    labels: pd.DataFrame, folds: list[Fold]
) -> None:
    times = labels.index
    assert [fold.number for fold in folds] == [0, 1, 2, 3, 4]
    for fold in folds:
        assert len(np.intersect1d(fold.train, fold.test)) == 0
        assert np.all(np.diff(fold.test) == 1) and np.all(np.diff(fold.train) > 0)
        assert times[fold.test[0]] == fold.test_start and times[fold.test[-1]] == fold.test_end
    for before, after in itertools.pairwise(folds):
        assert before.test[-1] < after.test[0]
    assert folds[-1].test[-1] == len(times) - 1
    assert len({len(fold.test) for fold in folds}) == 1


def test_training_ends_an_embargo_before_each_test_fold(labels: pd.DataFrame, folds: list[Fold]) -> None:
    times = labels.index
    for fold in folds:
        last_train, first_test = times[fold.train].max(), times[fold.test[0]]
        assert last_train == fold.train_end < first_test
        assert bars_between(times, last_train, first_test) == 24


def test_an_embargo_follows_every_test_fold(labels: pd.DataFrame, folds: list[Fold]) -> None:
    times = labels.index
    for before, after in itertools.pairwise(folds):
        assert bars_between(times, before.test_end, after.test_start) == 24
        # ...and the next fold trains on the previous test fold, but not on its embargo.
        assert times[after.train].max() == before.test_end


def test_no_training_label_reaches_into_its_test_fold(labels: pd.DataFrame, folds: list[Fold]) -> None:
    label_end = pd.DatetimeIndex(labels["label_end"])
    for fold in folds:
        assert label_end[fold.train].max() < fold.test_start


def test_the_purge_drops_training_rows_whose_long_labels_overlap_the_test_fold(labels: pd.DataFrame) -> None:
    """Labels reaching 48 h ahead overshoot a 24-bar embargo: the purge, not the embargo, keeps them out."""
    times = labels.index
    long_ends = times + pd.Timedelta("48h")
    spec = WalkForwardSpec(n_folds=3, min_train=3000, test_size=1000, embargo=24, label_horizon=HORIZON)
    purged = walk_forward_splits(times, long_ends, spec)
    plain = walk_forward_splits(times, labels["label_end"], spec)
    for fold, reference in zip(purged, plain, strict=True):
        assert fold.n_purged > 0 and reference.n_purged == 0
        assert long_ends[fold.train].max() < fold.test_start
        assert len(fold.train) == len(reference.train) - fold.n_purged
        dropped = np.setdiff1d(reference.train, fold.train)
        assert (long_ends[dropped] >= fold.test_start).all()
        np.testing.assert_array_equal(fold.test, reference.test)


def test_expanding_windows_grow_from_at_least_min_train(labels: pd.DataFrame, folds: list[Fold]) -> None:
    assert len(folds[0].train) >= 3000
    assert all(fold.train[0] == 0 for fold in folds)
    sizes = [len(fold.train) for fold in folds]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_sliding_windows_train_on_a_fixed_number_of_bars(labels: pd.DataFrame) -> None:
    spec = WalkForwardSpec(
        n_folds=4,
        min_train=2000,
        test_size=720,
        embargo=24,
        label_horizon=HORIZON,
        window="sliding",
        train_size=2500,
    )
    folds = walk_forward_splits(labels.index, labels["label_end"], spec)
    assert [len(fold.train) for fold in folds] == [2500] * 4
    assert all(len(fold.test) == 720 for fold in folds)
    starts = [fold.train_start for fold in folds]
    assert starts == sorted(starts) and len(set(starts)) == 4


def test_the_same_inputs_always_give_the_same_folds(labels: pd.DataFrame, spec: WalkForwardSpec) -> None:
    first = walk_forward_splits(labels.index, labels["label_end"], spec)
    again = walk_forward_splits(labels.index, labels["label_end"], spec)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)
        spans = ("train_start", "train_end", "test_start", "test_end", "n_purged")
        assert [getattr(a, span) for span in spans] == [getattr(b, span) for span in spans]
    assert not first[0].train.flags.writeable


def test_a_timestamp_shared_by_several_pairs_is_never_split(spec: WalkForwardSpec) -> None:
    frames = [
        make_labels(load(pair), LabelSpec(horizon=HORIZON)).assign(pair=pair)
        for pair in ("BTC_USDT", "ETH_USDT")
    ]
    panel = pd.concat(frames).rename_axis("date").reset_index().sort_values(["date", "pair"], kind="stable")
    folds = walk_forward_splits(panel["date"], panel["label_end"], spec)
    dates, label_end = pd.DatetimeIndex(panel["date"]), pd.DatetimeIndex(panel["label_end"])
    for fold in folds:
        assert not dates[fold.test].isin(dates[fold.train]).any()
        assert set(panel["pair"].to_numpy()[fold.test]) == {"BTC_USDT", "ETH_USDT"}
        assert label_end[fold.train].max() < fold.test_start


def test_the_spec_enforces_an_embargo_of_at_least_the_label_horizon() -> None:
    with pytest.raises(pydantic.ValidationError, match="embargo"):
        WalkForwardSpec(n_folds=3, min_train=100, embargo=2, label_horizon=4)
    with pytest.raises(pydantic.ValidationError, match="train_size"):
        WalkForwardSpec(n_folds=3, min_train=100, embargo=4, label_horizon=4, window="sliding")
    with pytest.raises(pydantic.ValidationError, match="train_size"):
        WalkForwardSpec(n_folds=3, min_train=100, embargo=4, label_horizon=4, train_size=500)
    spec = WalkForwardSpec(n_folds=3, min_train=100, embargo=4, label_horizon=4)
    assert "3 purged walk-forward folds" in spec.description and "4-bar embargo" in spec.description
    with pytest.raises(pydantic.ValidationError):
        spec.n_folds = 4  # type: ignore[misc]


def test_too_little_history_for_the_folds_asked_for_is_a_validation_error(labels: pd.DataFrame) -> None:
    spec = WalkForwardSpec(n_folds=10, min_train=15000, test_size=500, embargo=24, label_horizon=HORIZON)
    with pytest.raises(ValidationError, match="supply more history"):
        walk_forward_splits(labels.index, labels["label_end"], spec)


def test_unsorted_or_mismatched_inputs_are_rejected(labels: pd.DataFrame, spec: WalkForwardSpec) -> None:
    with pytest.raises(ValidationError, match="not sorted"):
        walk_forward_splits(labels.index[::-1], labels["label_end"][::-1], spec)
    with pytest.raises(ValidationError, match="label ends"):
        walk_forward_splits(labels.index, labels["label_end"][:-1], spec)
