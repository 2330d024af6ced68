"""A pair's drift verdict from its per-feature PSI scores and the PSI of the model's predictions.

`tradai_core.psi` scores one feature at a time. A drift monitor needs one verdict per pair and model, and
the obvious one — the worst feature — is useless on market data: features built on long trailing windows
(168-bar volatility, the 200-bar SMA ratio) move slowly, so any two-week window covers a narrow slice of
their range and scores PSI ≥ 0.25 even inside the training period itself. On the bundled candles, 14-day
windows *inside* a model's training window already have 7–9 of 29 features "severe", while their median
feature PSI stays at 0.09–0.18; windows months later have medians of 0.2–0.7.

So the verdict (see `docs/model_loop.md`):

- **feature drift** is the **median band** over the features that could be banded: half the model's
  inputs have moved at least that far. A feature's band already discounts autocorrelation (psi.py: a PSI
  within the feature's autocorrelated sampling noise is `none`); without that gate this is the band of
  the median PSI. The ranked per-feature table is still reported, worst first.
  When fewer than half the features could be banded (the window is too small: psi.py's noise-floor rule)
  the feature verdict is `insufficient`;
- **prediction drift** is the band of the PSI of the model's predicted probabilities on the window against
  its predictions on its own training rows of the pair: how far the model's *output* has moved;
- the pair's **severity** is the worse of the two, ignoring `insufficient`; `insufficient` when both are.

The bands are the platform's: < 0.1 none, 0.1–0.25 moderate, ≥ 0.25 severe.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from tradai_core.errors import ValidationError
from tradai_core.psi import (
    DEFAULT_NOISE_QUANTILE,
    MODERATE_PSI,
    DriftSeverity,
    PSIResult,
    noise_floor,
    severity_for,
)
from tradai_core.timeframes import timeframe_delta

DEFAULT_WINDOW_DAYS = 14
"""Default drift window. Seven days of 1h candles (168 rows) is below the ~170 rows psi.py needs for the
95% sampling-noise quantile to stay under the 0.1 band with 10 bins, so every feature would score
`insufficient`; 14 days (336 rows) puts that quantile at 0.05."""

_RANK = {DriftSeverity.NONE: 0, DriftSeverity.MODERATE: 1, DriftSeverity.SEVERE: 2}


class DriftVerdict(BaseModel):
    """One pair's drift against one model: the per-feature scores, the prediction score, the verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[PSIResult, ...] = Field(description="per-feature results, highest PSI first")
    prediction: PSIResult | None
    median_psi: float = Field(description="median PSI over the banded features (all, if none are)")
    max_psi: float
    feature_severity: DriftSeverity
    severity: DriftSeverity
    reason: str

    @property
    def severity_counts(self) -> dict[str, int]:
        """How many features fall in each band."""
        counts = {severity.value: 0 for severity in DriftSeverity}
        for result in self.features:
            counts[result.severity.value] += 1
        return counts


def worst(severities: Sequence[DriftSeverity]) -> DriftSeverity:
    """The worst banded severity; `insufficient` when none is banded."""
    banded = [s for s in severities if s is not DriftSeverity.INSUFFICIENT]
    return max(banded, key=_RANK.__getitem__) if banded else DriftSeverity.INSUFFICIENT


def median_severity(severities: Sequence[DriftSeverity]) -> DriftSeverity:
    """The band at least half of the banded `severities` reach (their median in band order).

    Without the autocorrelation gate this is the band of the median PSI; with it, a feature whose PSI
    crosses a band but stays within its autocorrelated sampling noise counts as `none`.
    """
    ranked = sorted((s for s in severities if s is not DriftSeverity.INSUFFICIENT), key=_RANK.__getitem__)
    if not ranked:
        return DriftSeverity.INSUFFICIENT
    return ranked[len(ranked) // 2] if len(ranked) % 2 else ranked[len(ranked) // 2 - 1]


def drift_verdict(features: Sequence[PSIResult], prediction: PSIResult | None) -> DriftVerdict:
    """Combine per-feature results and the prediction result into the pair's verdict (module docstring)."""
    ranked = tuple(sorted(features, key=lambda r: r.psi, reverse=True))
    banded = [r for r in ranked if r.severity is not DriftSeverity.INSUFFICIENT]
    max_psi = ranked[0].psi if ranked else 0.0
    if ranked and 2 * len(banded) >= len(ranked):
        median = statistics.median(r.psi for r in banded)
        feature_severity = median_severity([r.severity for r in banded])
        within_noise = sum(
            1
            for r in banded
            if r.severity is DriftSeverity.NONE and severity_for(r.psi) is not DriftSeverity.NONE
        )
        feature_text = (
            f"median feature PSI {median:.3f} over {len(banded)} features; half of them are at least "
            f"{feature_severity.value}"
        )
        if within_noise:
            feature_text += f" ({within_noise} above a band but within autocorrelated sampling noise)"
    else:
        median = statistics.median(r.psi for r in ranked) if ranked else 0.0
        feature_severity = DriftSeverity.INSUFFICIENT
        feature_text = (
            f"only {len(banded)} of {len(ranked)} features could be banded (window too small); "
            f"median feature PSI {median:.3f} is not banded"
        )
    parts = [feature_text]
    if prediction is not None:
        parts.append(f"prediction PSI {prediction.psi:.3f} is {prediction.severity.value}")
    severity = worst([feature_severity, *([prediction.severity] if prediction is not None else [])])
    if ranked:
        parts.append(f"worst feature {ranked[0].feature} at {ranked[0].psi:.3f}")
    return DriftVerdict(
        features=ranked,
        prediction=prediction,
        median_psi=float(median),
        max_psi=float(max_psi),
        feature_severity=feature_severity,
        severity=severity,
        reason=f"{severity.value}: " + "; ".join(parts),
    )


def rows_for_meaningful_psi(n_bins: int = 10, level: float = DEFAULT_NOISE_QUANTILE) -> int:
    """Fewest current rows for which psi.py bands a score (its noise quantile below the 0.1 band),
    against a large reference."""
    rows = n_bins
    while noise_floor(n_bins, 10**9, rows, level).quantile >= MODERATE_PSI:
        rows += 1
    return rows


def window_rows(window_days: float, timeframe: str) -> int:
    """Candles in a window of `window_days` at `timeframe` (without outages)."""
    return int(timedelta(days=window_days) / timeframe_delta(timeframe))


class DriftWindow(BaseModel):
    """The current window a drift score compares with the model's training data, and why it is that."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    note: str = Field(description="empty, or how the window was shortened")


def drift_window(end: datetime, window_days: float, trained_until: datetime) -> DriftWindow:
    """`[end - window_days, end)`, never reaching back into the model's training data (`trained_until`,
    where its holdout starts).

    A window inside the training period compares the model's data with itself: by construction nothing
    has drifted, and what it measures is sampling noise (docs/drift.md). So a window that ends at or
    before `trained_until` is refused, and one that starts before it is cut to start there (it may then be
    too short to band: `insufficient`, which raises no alarm).
    """
    start = end - timedelta(days=window_days)
    if end <= trained_until:
        raise ValidationError(
            f"the drift window [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) lies inside the model's "
            f"training period (trained until {trained_until:%Y-%m-%d %H:%M}): scoring a model against its "
            "own training data measures nothing",
            f"score a window that ends after {trained_until:%Y-%m-%d} (run config `end`), or wait for "
            "candles after the training period",
        )
    if start < trained_until:
        return DriftWindow(
            start=trained_until,
            end=end,
            note="window cut to start at the end of the model's training data "
            f"({trained_until:%Y-%m-%d %H:%M}) instead of {start:%Y-%m-%d %H:%M}",
        )
    return DriftWindow(start=start, end=end, note="")
