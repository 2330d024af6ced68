"""Purged walk-forward splits: train on the past, test on the next stretch, never let a label leak.

Sizes count *bars*: the distinct sample timestamps (a training set stacking several pairs has one bar per
timestamp, never split between train and test). Folds are laid out backwards from the last bar, so the
newest data is always tested:

    [train ............][embargo][test 0][embargo][test 1] ... [embargo][test n-1]   (expanding)
                 [train][embargo][test k]                                            (sliding)

Fold k trains on every bar before its embargo (expanding) or the last `train_size` of them (sliding).
The embargo after each test fold keeps the next test fold's labels and features apart from it, and is
never trained on by the fold that follows; it must be at least the label horizon. On top of that, the
purge drops every training row whose label window (up to its `label_end`) reaches into the test fold,
which also covers labels longer than the embargo assumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradai_core.errors import ValidationError


class WalkForwardSpec(BaseModel):
    """How the samples are cut into folds; its `description` goes into lineage metadata."""

    model_config = ConfigDict(frozen=True)

    n_folds: int = Field(default=5, ge=1)
    min_train: int = Field(default=2000, ge=1, description="Fewest bars the first fold trains on.")
    test_size: int | None = Field(
        default=None, ge=1, description="Bars per test fold; None fits the folds into the data given."
    )
    embargo: int = Field(
        default=24, ge=0, description="Bars skipped between a training span and its test fold."
    )
    label_horizon: int = Field(ge=1, description="Candles a label looks ahead (LabelSpec.horizon).")
    window: Literal["expanding", "sliding"] = "expanding"
    train_size: int | None = Field(default=None, ge=1, description="Bars trained on with a sliding window.")

    @model_validator(mode="after")
    def _check(self) -> WalkForwardSpec:
        if self.embargo < self.label_horizon:
            raise ValueError(
                f"embargo ({self.embargo} bars) is shorter than the label horizon ({self.label_horizon}): "
                "labels of one test fold would reach into the next; set embargo >= label_horizon"
            )
        if self.window == "sliding":
            if self.train_size is None:
                raise ValueError("a sliding window needs train_size (bars per training window)")
            if self.train_size < self.min_train:
                raise ValueError(f"train_size ({self.train_size}) is below min_train ({self.min_train})")
        elif self.train_size is not None:
            raise ValueError("train_size only applies to window='sliding'; drop it or switch the window")
        return self

    @property
    def description(self) -> str:
        """One line saying exactly how the folds are cut."""
        window = "expanding" if self.window == "expanding" else f"sliding {self.train_size}-bar"
        test = f"{self.test_size}-bar" if self.test_size else "equal"
        return (
            f"{self.n_folds} purged walk-forward folds, {window} training window of at least "
            f"{self.min_train} bars, {test} test folds, {self.embargo}-bar embargo "
            f"(label horizon {self.label_horizon})"
        )


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: row positions (into the arrays given) to train and to test on, how many
    training rows the purge removed, and the first and last bar (inclusive) of each span."""

    number: int
    train: np.ndarray
    test: np.ndarray
    n_purged: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp


def _as_ns(values: pd.DatetimeIndex | pd.Series | np.ndarray, what: str) -> np.ndarray:
    index = pd.DatetimeIndex(values)
    if index.hasnans:
        raise ValidationError(f"{what} contain missing timestamps", "drop rows without a timestamp")
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.as_unit("ns").asi8


def walk_forward_splits(
    times: pd.DatetimeIndex | pd.Series | np.ndarray,
    label_ends: pd.DatetimeIndex | pd.Series | np.ndarray,
    spec: WalkForwardSpec,
) -> list[Fold]:
    """Cut samples into purged walk-forward folds.

    `times[i]` is the candle time of sample i (non-decreasing; repeated for several pairs) and
    `label_ends[i]` the open time of the last candle its label uses (`make_labels(...)["label_end"]`).
    Returns `spec.n_folds` folds, oldest first; the same inputs always give the same folds. Raises
    ValidationError when the data holds too few bars for the folds asked for.
    """
    t = _as_ns(times, "sample times")
    ends = _as_ns(label_ends, "label ends")
    if len(t) != len(ends):
        raise ValidationError(
            f"{len(t)} sample times but {len(ends)} label ends", "pass one label end per sample"
        )
    if len(t) and (np.diff(t) < 0).any():
        raise ValidationError("sample times are not sorted", "sort the samples by time (then by pair)")
    if (ends < t).any():
        raise ValidationError("a label ends before its sample's time", "label_end must be >= the sample time")
    bars, bar_of_row = np.unique(t, return_inverse=True)
    n_bars = len(bars)
    k = spec.n_folds
    test_size = spec.test_size
    if test_size is None:
        test_size = (n_bars - spec.min_train - k * spec.embargo) // k
    first_train_end = n_bars - k * (test_size + spec.embargo)
    if test_size < 1 or first_train_end < spec.min_train:
        raise ValidationError(
            f"{n_bars} bars cannot hold {k} test folds of {spec.test_size or 'at least 1'} bars with a "
            f"{spec.embargo}-bar embargo after at least {spec.min_train} training bars",
            "supply more history, or lower n_folds, test_size or min_train",
        )
    tz = pd.DatetimeIndex(times).tz
    folds: list[Fold] = []
    for number in range(k):
        test_start = first_train_end + spec.embargo + number * (test_size + spec.embargo)
        test_end = test_start + test_size
        train_end = test_start - spec.embargo
        train_start = 0 if spec.window == "expanding" else max(0, train_end - (spec.train_size or 0))
        in_train = (bar_of_row >= train_start) & (bar_of_row < train_end)
        leaks = in_train & (ends >= bars[test_start])
        train = np.flatnonzero(in_train & ~leaks)
        test = np.flatnonzero((bar_of_row >= test_start) & (bar_of_row < test_end))
        train.setflags(write=False)
        test.setflags(write=False)
        folds.append(
            Fold(
                number=number,
                train=train,
                test=test,
                n_purged=int(leaks.sum()),
                train_start=_timestamp(bars[train_start], tz),
                train_end=_timestamp(bars[train_end - 1], tz),
                test_start=_timestamp(bars[test_start], tz),
                test_end=_timestamp(bars[test_end - 1], tz),
            )
        )
    return folds


def _timestamp(ns: np.int64, tz: object) -> pd.Timestamp:
    stamp = pd.Timestamp(int(ns), unit="ns")
    return stamp.tz_localize("UTC").tz_convert(tz) if tz is not None else stamp
