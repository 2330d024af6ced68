"""The comparison's power: the minimum detectable Sharpe difference it reports is detected ~80% of the
time, and the window length from `bars_to_detect` gives ~80% power (seeded simulations)."""

import math

import numpy as np
import pytest

from tradai_core.comparison import (
    ComparisonConfig,
    Decision,
    bars_to_detect,
    bootstrap_sharpe_difference,
    compare_champion_challenger,
    minimum_detectable_difference,
)

PPY = 8760.0


def _pair(rng: np.random.Generator, n: int, annual_diff: float) -> tuple[np.ndarray, np.ndarray]:
    """Champion and challenger on shared market noise (correlation 0.5), unit-variance bars; the
    challenger's true annualised Sharpe is higher by `annual_diff`."""
    market = rng.standard_normal(n)
    champion = (market + rng.standard_normal(n)) / math.sqrt(2)
    challenger = (market + rng.standard_normal(n)) / math.sqrt(2) + annual_diff / math.sqrt(PPY)
    return champion, challenger


def _detection_rate(n: int, annual_diff: float, runs: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for run in range(runs):
        a, b = _pair(rng, n, annual_diff)
        boot = bootstrap_sharpe_difference(
            a, b, periods_per_year=PPY, n_iterations=400, block_length=1, seed=run
        )
        hits += boot.p_value < 0.05 and boot.sharpe_diff > 0
    return hits / runs


def test_minimum_detectable_difference_is_2_8_standard_errors_at_alpha_5_and_power_80() -> None:
    assert minimum_detectable_difference(1.0) == pytest.approx(1.96 + 0.8416, abs=1e-3)


@pytest.mark.slow
def test_a_true_difference_at_the_reported_mde_is_detected_about_80_percent_of_the_time() -> None:
    n = 2000
    rng = np.random.default_rng(0)
    a, b = _pair(rng, n, 0.0)
    result = compare_champion_challenger(
        a, b, np.ones(40), np.ones(40), periods_per_year=PPY, config=ComparisonConfig(n_iterations=2000)
    )
    mde = result.minimum_detectable_difference
    assert mde is not None and result.power == 0.8
    # Analytic check: SE of an annualised Sharpe difference at ρ = 0.5, n bars: √(ppy · (2 − 2ρ) / n).
    assert mde == pytest.approx(2.80 * math.sqrt(PPY * 1.0 / n), rel=0.15)
    rate = _detection_rate(n, mde, runs=300, seed=1)
    assert 0.70 <= rate <= 0.90
    assert _detection_rate(n, mde / 3, runs=300, seed=2) < 0.3


def test_an_inconclusive_comparison_says_what_the_window_could_detect() -> None:
    rng = np.random.default_rng(5)
    a, b = _pair(rng, 500, 0.0)
    result = compare_champion_challenger(a, b, np.ones(40), np.ones(40), periods_per_year=PPY)
    assert result.decision is Decision.INCONCLUSIVE
    assert result.minimum_detectable_difference is not None
    assert f"detects |ΔSharpe| ≥ {result.minimum_detectable_difference:.3f}" in result.reason
    assert f"observed {result.sharpe_diff:+.3f}" in result.reason


@pytest.mark.slow
def test_bars_to_detect_gives_a_window_with_about_80_percent_power() -> None:
    target = 5.0  # annualised Sharpe difference
    n = bars_to_detect(target, periods_per_year=PPY, correlation=0.5)
    assert abs(n - (1.959964 + 0.841621) ** 2 * PPY * 1.0 / target**2) <= 1  # 2,751 bars
    assert 0.70 <= _detection_rate(n, target, runs=300, seed=3) <= 0.90
    # Autocorrelation inflates the variance and the window it needs by the same factor.
    assert bars_to_detect(target, periods_per_year=PPY, correlation=0.5, inflation=2.0) == pytest.approx(
        2 * n, abs=1
    )
