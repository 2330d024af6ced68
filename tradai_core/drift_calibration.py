"""False-alarm rate of the drift verdict, measured where nothing has drifted by construction.

A model's reference distribution summarises its own training period. Windows that lie *inside* that
period come from the very data the reference was built on, so every alarm a verdict raises on them is a
false alarm. `in_period_false_alarms` scores such windows exactly as the drift asset does (per-pair
reference summaries from `summarize_reference_frame`, `score_features`, `drift_verdict`) and counts the
verdicts that read moderate or severe. `bench/drift_false_alarms.py` runs it on the demo candles;
`docs/drift.md` reports the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.drift import DEFAULT_WINDOW_DAYS, DriftVerdict, drift_verdict
from tradai_core.errors import ValidationError
from tradai_core.psi import DEFAULT_BINS, DriftSeverity, score_features, summarize_reference_frame


class WindowVerdict(BaseModel):
    """One scored window: the pair, where it starts and the verdict's severity and median PSI."""

    model_config = ConfigDict(frozen=True)

    pair: str
    start: datetime
    severity: DriftSeverity
    median_psi: float


class FalseAlarmReport(BaseModel):
    """Verdict counts over in-period windows and the resulting false-alarm rates."""

    model_config = ConfigDict(frozen=True)

    windows: tuple[WindowVerdict, ...]
    autocorrelation: bool
    counts: dict[str, int] = Field(description="windows per severity")

    @property
    def n(self) -> int:
        """Windows scored."""
        return len(self.windows)

    @property
    def alarm_rate(self) -> float:
        """Share of windows read moderate or severe (any alarm)."""
        return (self.counts["moderate"] + self.counts["severe"]) / self.n if self.n else 0.0

    @property
    def severe_rate(self) -> float:
        """Share of windows read severe (the retraining trigger)."""
        return self.counts["severe"] / self.n if self.n else 0.0


def score_window(
    reference: Mapping[str, pd.DataFrame],
    features: pd.DataFrame,
    pair: str,
    start: datetime,
    window_days: float,
    *,
    autocorrelation: bool = True,
    n_bins: int = DEFAULT_BINS,
) -> DriftVerdict:
    """Verdict (features only) of `pair`'s window `[start, start + window_days)` against its reference."""
    summaries = summarize_reference_frame(reference[pair], list(features.columns), n_bins)
    end = start + timedelta(days=window_days)
    window = features.loc[(features.index >= pd.Timestamp(start)) & (features.index < pd.Timestamp(end))]
    return drift_verdict(score_features(summaries, window, autocorrelation=autocorrelation), None)


def in_period_false_alarms(
    features: Mapping[str, pd.DataFrame],
    train_start: datetime,
    train_end: datetime,
    window_starts: Sequence[datetime],
    *,
    window_days: float = DEFAULT_WINDOW_DAYS,
    autocorrelation: bool = True,
    n_bins: int = DEFAULT_BINS,
) -> FalseAlarmReport:
    """Score every pair's windows starting at `window_starts` against the pair's reference over
    `[train_start, train_end)` (features indexed by UTC time, in time order) and count the verdicts."""
    lo, hi = pd.Timestamp(train_start), pd.Timestamp(train_end)
    outside = [s for s in window_starts if s < train_start or s + timedelta(days=window_days) > train_end]
    if outside:
        raise ValidationError(
            f"windows starting {[f'{s:%Y-%m-%d}' for s in outside]} do not lie inside the training period "
            f"[{train_start:%Y-%m-%d}, {train_end:%Y-%m-%d})",
            "pick window starts so that every window ends before the training end",
        )
    reference = {
        pair: frame.loc[(frame.index >= lo) & (frame.index < hi)] for pair, frame in features.items()
    }
    verdicts = []
    for pair in sorted(features):
        for start in window_starts:
            verdict = score_window(
                reference,
                features[pair],
                pair,
                start,
                window_days,
                autocorrelation=autocorrelation,
                n_bins=n_bins,
            )
            verdicts.append(
                WindowVerdict(
                    pair=pair, start=start, severity=verdict.severity, median_psi=verdict.median_psi
                )
            )
    counts = {severity.value: 0 for severity in DriftSeverity}
    for item in verdicts:
        counts[item.severity.value] += 1
    return FalseAlarmReport(windows=tuple(verdicts), autocorrelation=autocorrelation, counts=counts)
