"""Population Stability Index: binning, empty bins, bands, the stored summary and the noise floor."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pydantic
import pytest
from scipy import stats

from tradai_core.errors import ValidationError
from tradai_core.psi import (
    DriftSeverity,
    ReferenceSummary,
    compute_psi,
    noise_floor,
    psi_from_proportions,
    score_features,
    score_psi,
    severity_for,
    summarize_reference,
    summarize_reference_frame,
)


def naive_psi(reference: np.ndarray, current: np.ndarray, edges: tuple[float, ...]) -> float:
    """A deliberately plain second implementation: numpy.histogram on the same edges, a Python loop.

    Same rules as the module: open outer bins, bins closed on the left, and Jeffreys smoothing
    (count + 1/2) / (n + B/2) on both windows.
    """
    bins = [-np.inf, *edges, np.inf]
    ref_counts, _ = np.histogram(reference, bins=bins)
    cur_counts, _ = np.histogram(current, bins=bins)
    n_bins = len(bins) - 1
    total = 0.0
    for r, c in zip(ref_counts, cur_counts, strict=True):
        e = (r + 0.5) / (len(reference) + n_bins / 2)
        a = (c + 0.5) / (len(current) + n_bins / 2)
        total += (a - e) * math.log(a / e)
    return total


# --- the formula ---------------------------------------------------------------------------------------


def test_worked_example_four_bins_by_hand() -> None:
    # Reference spread evenly over 4 bins; the current window leans to the right.
    expected = [0.25, 0.25, 0.25, 0.25]
    actual = [0.10, 0.20, 0.30, 0.40]
    # PSI = Σ (a − e) · ln(a / e)
    #     = (0.10−0.25)·ln(0.10/0.25) + (0.20−0.25)·ln(0.20/0.25)
    #       + (0.30−0.25)·ln(0.30/0.25) + (0.40−0.25)·ln(0.40/0.25)
    #     = (−0.15)(−0.916291) + (−0.05)(−0.223144) + (0.05)(0.182322) + (0.15)(0.470004)
    #     = 0.137444 + 0.011157 + 0.009116 + 0.070501
    #     = 0.228218
    assert psi_from_proportions(expected, actual) == pytest.approx(0.228218, abs=1e-6)
    assert severity_for(0.228218) is DriftSeverity.MODERATE


def test_worked_example_with_smoothing_through_the_summary() -> None:
    # 100 reference values, 25 per bin over the edges 1, 2, 3; 100 current values with counts 10/20/30/40.
    summary = ReferenceSummary(
        feature="x", bin_edges=(1.0, 2.0, 3.0), proportions=(0.25, 0.25, 0.25, 0.25), n_ref=100
    )
    current = np.repeat([0.5, 1.5, 2.5, 3.5], [10, 20, 30, 40])
    result = score_psi(summary, current, min_rows=1)
    # Jeffreys smoothing: share = (count + 0.5) / (n + 4 · 0.5) = (count + 0.5) / 102
    e = 25.5 / 102  # = 0.25 exactly
    a = [10.5 / 102, 20.5 / 102, 30.5 / 102, 40.5 / 102]
    by_hand = sum((ai - e) * math.log(ai / e) for ai in a)
    assert result.psi == pytest.approx(by_hand, abs=1e-15)
    assert [b.cur_count for b in result.bins] == [10, 20, 30, 40]
    assert sum(b.contribution for b in result.bins) == pytest.approx(result.psi, abs=1e-15)
    assert result.bins[0].lower is None and result.bins[-1].upper is None


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete-with-ties"])
def test_matches_an_independent_naive_implementation(discrete: bool) -> None:
    rng = np.random.default_rng(42)
    reference = rng.normal(0.0, 1.0, 3000)
    current = rng.normal(0.3, 1.2, 1500)
    if discrete:
        reference, current = np.round(reference * 2) / 2, np.round(current * 2) / 2
    summary = summarize_reference(reference, "x")
    result = score_psi(summary, current)
    assert result.psi == pytest.approx(naive_psi(reference, current, summary.bin_edges), abs=1e-12)


# --- behaviour on data ---------------------------------------------------------------------------------


def test_identical_distributions_score_about_zero_and_below_the_noise_floor() -> None:
    rng = np.random.default_rng(1)
    sample = rng.normal(size=5000)
    assert compute_psi(sample, sample).psi == pytest.approx(0.0, abs=1e-15)

    independent = compute_psi(rng.normal(size=5000), rng.normal(size=5000))
    assert independent.severity is DriftSeverity.NONE
    assert 0 < independent.psi < independent.noise_floor.quantile
    assert independent.p_value > 0.05


def test_a_shifted_normal_is_severe_drift() -> None:
    rng = np.random.default_rng(2)
    result = compute_psi(rng.normal(0, 1, 5000), rng.normal(1.0, 1, 2000), "rsi")
    assert result.severity is DriftSeverity.SEVERE
    assert result.psi > 0.25
    assert result.p_value < 1e-6
    # The mass moved right: the top bin gained the most.
    assert result.bins[-1].cur_pct > 30 > result.bins[-1].ref_pct


@pytest.mark.parametrize(
    ("psi", "severity"),
    [
        (0.0, DriftSeverity.NONE),
        (0.0999999, DriftSeverity.NONE),
        (0.1, DriftSeverity.MODERATE),
        (0.2499999, DriftSeverity.MODERATE),
        (0.25, DriftSeverity.SEVERE),
        (3.0, DriftSeverity.SEVERE),
    ],
)
def test_bands_at_their_boundaries(psi: float, severity: DriftSeverity) -> None:
    assert severity_for(psi) is severity


def test_empty_bins_give_a_finite_psi() -> None:
    rng = np.random.default_rng(3)
    summary = summarize_reference(rng.uniform(0, 1, 1000), "x")
    # Every current value lies beyond the reference maximum: nine of ten bins are empty.
    result = score_psi(summary, rng.uniform(5, 6, 500))
    assert [b.cur_count for b in result.bins] == [0] * 9 + [500]
    assert all(math.isfinite(b.contribution) for b in result.bins)
    assert math.isfinite(result.psi) and result.severity is DriftSeverity.SEVERE
    # A reference share of zero (a hand-made summary) is smoothed too.
    sparse = ReferenceSummary(feature="x", bin_edges=(0.0, 1.0), proportions=(0.0, 1.0, 0.0), n_ref=200)
    assert math.isfinite(score_psi(sparse, rng.uniform(-1, 2, 300)).psi)


def test_out_of_range_current_values_fall_in_the_open_outer_bins() -> None:
    summary = summarize_reference(np.linspace(0, 1, 1001), "x", n_bins=4)
    result = score_psi(summary, [-100.0, -1.0, 0.5, 2.0, 1e9], min_rows=1)
    assert [b.cur_count for b in result.bins] == [2, 0, 1, 2]


def test_ties_and_discrete_features_get_deduplicated_edges_and_no_empty_reference_bin() -> None:
    rng = np.random.default_rng(4)
    mostly_zero = np.where(rng.uniform(size=2000) < 0.6, 0.0, rng.exponential(size=2000))
    summary = summarize_reference(mostly_zero, "volume")
    assert len(set(summary.bin_edges)) == len(summary.bin_edges) < 9
    assert min(summary.proportions) > 0
    assert summary.proportions[0] == pytest.approx(0.6, abs=0.03)  # all zeros share the first bin

    three_levels = summarize_reference(rng.integers(0, 3, 900), "regime")
    assert three_levels.bin_edges == (1.0, 2.0)  # one bin per level: (−∞, 1), [1, 2), [2, ∞)
    assert three_levels.n_bins == 3


def test_nan_and_infinite_current_values_are_left_out_and_counted() -> None:
    summary = summarize_reference(np.arange(1000.0), "x")
    values = np.concatenate([np.arange(0.0, 1000.0, 2), [np.nan, np.inf, -np.inf]])
    result = score_psi(summary, values)
    assert result.n_cur == 500 and result.n_cur_dropped == 3
    assert "3 NaN/infinite" in result.reason


def test_a_constant_reference_cannot_be_summarised() -> None:
    with pytest.raises(ValidationError, match="constant"):
        summarize_reference(np.ones(500), "flag")


# --- the stored summary --------------------------------------------------------------------------------


def test_reference_summary_round_trips_through_json_and_scores_the_same() -> None:
    rng = np.random.default_rng(5)
    summary = summarize_reference(rng.lognormal(size=4000), "atr")
    restored = ReferenceSummary.model_validate_json(summary.model_dump_json())
    assert restored == summary
    current = rng.lognormal(0.2, 1.0, 800)
    assert score_psi(restored, current).psi == score_psi(summary, current).psi


def test_reference_summary_is_frozen_and_checked() -> None:
    summary = summarize_reference(np.arange(100.0), "x")
    with pytest.raises(pydantic.ValidationError):
        summary.n_ref = 5  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="proportions"):
        ReferenceSummary(feature="x", bin_edges=(1.0,), proportions=(1.0,), n_ref=10)
    with pytest.raises(pydantic.ValidationError, match="increasing"):
        ReferenceSummary(feature="x", bin_edges=(2.0, 1.0), proportions=(0.3, 0.3, 0.4), n_ref=10)


# --- the sampling-noise floor --------------------------------------------------------------------------


def test_noise_floor_is_the_chi_square_approximation() -> None:
    floor = noise_floor(n_bins=10, n_ref=2000, n_cur=500)
    # E[PSI] ≈ (B − 1)(1/n_ref + 1/n_cur) = 9 · (0.0005 + 0.002) = 0.0225
    assert floor.mean == pytest.approx(0.0225)
    # q95 ≈ (1/n_ref + 1/n_cur) · χ²₉(0.95) = 0.0025 · 16.919 = 0.0423
    assert floor.quantile == pytest.approx(0.0025 * stats.chi2.ppf(0.95, 9))
    assert floor.quantile == pytest.approx(0.0423, abs=1e-4)


def test_noise_floor_matches_simulation_of_two_samples_from_one_distribution() -> None:
    # Both samples drawn from one distribution; the reference's quantile edges are re-estimated each time,
    # so the simulation includes the randomness of the bins too.
    rng = np.random.default_rng(6)
    n_ref, n_cur, runs = 2000, 1000, 1000
    psis = np.array(
        [compute_psi(rng.normal(size=n_ref), rng.normal(size=n_cur), min_rows=1).psi for _ in range(runs)]
    )
    floor = noise_floor(10, n_ref, n_cur)
    assert psis.mean() == pytest.approx(floor.mean, rel=0.05)
    assert np.quantile(psis, 0.95) == pytest.approx(floor.quantile, rel=0.10)
    assert 0.03 <= np.mean(psis > floor.quantile) <= 0.07


def test_every_result_reports_its_noise_floor() -> None:
    rng = np.random.default_rng(7)
    result = compute_psi(rng.normal(size=3000), rng.normal(size=1000))
    assert result.noise_floor == noise_floor(result.noise_floor.n_bins, 3000, 1000)
    assert result.n_ref == 3000 and result.n_cur == 1000


# --- too little data -----------------------------------------------------------------------------------


def test_a_window_below_min_rows_is_insufficient() -> None:
    rng = np.random.default_rng(8)
    result = compute_psi(rng.normal(size=10_000), rng.normal(3, 1, 50))
    assert result.severity is DriftSeverity.INSUFFICIENT
    assert result.psi > 0.25  # the score is still reported, just not banded
    assert "only 50 current values" in result.reason


def test_a_window_whose_noise_floor_reaches_the_moderate_band_is_insufficient() -> None:
    rng = np.random.default_rng(9)
    # 150 rows pass min_rows, but (1/10000 + 1/150) · χ²₉(0.95) ≈ 0.114 ≥ 0.1.
    result = compute_psi(rng.normal(size=10_000), rng.normal(size=150))
    assert result.noise_floor.quantile >= 0.1
    assert result.severity is DriftSeverity.INSUFFICIENT
    assert "sampling noise alone" in result.reason
    # With 400 rows the floor is below the band and the score is banded.
    assert compute_psi(rng.normal(size=10_000), rng.normal(size=400)).severity is DriftSeverity.NONE


# --- many features -------------------------------------------------------------------------------------


def test_score_features_ranks_by_psi_and_names_missing_features() -> None:
    rng = np.random.default_rng(10)
    reference = pd.DataFrame({"stable": rng.normal(size=3000), "moved": rng.normal(size=3000)})
    summaries = summarize_reference_frame(reference)
    current = pd.DataFrame({"stable": rng.normal(size=1000), "moved": rng.normal(1.5, 1, 1000)})

    results = score_features(summaries, current)
    assert [r.feature for r in results] == ["moved", "stable"]
    assert results[0].psi > results[1].psi
    assert results[0].severity is DriftSeverity.SEVERE and results[1].severity is DriftSeverity.NONE
    assert score_features(list(summaries.values()), current) == results

    with pytest.raises(ValidationError, match="moved"):
        score_features(summaries, current.drop(columns=["moved"]))
