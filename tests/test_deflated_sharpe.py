"""Probabilistic and Deflated Sharpe Ratios against the published worked examples, plus their properties.

Published figures used here:

* Bailey & López de Prado, "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest
  Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 2014, section "A numerical
  example": an annualised Sharpe ratio of 2.5 found after N = 100 independent trials whose annualised
  Sharpe ratios have variance V = 1/2; T = 1250 daily returns (250 a year), skewness −3, kurtosis 10.
  The paper gives SR0 ≈ 0.1132 (per day) and DSR ≈ 0.9004; with N = 46 trials DSR would be 0.9505, and
  with Normal returns (skewness 0, kurtosis 3) the strategy survives up to N = 88 (DSR ≈ 0.9505).
* Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2), 2012: an
  annualised Sharpe ratio of 2 tested against a benchmark of 1 at 95% confidence, IID Normal returns,
  needs a track record of 2.73 / 2.83 / 3.24 years of daily (252 a year) / weekly (52) / monthly (12)
  returns.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tradai_core.deflated_sharpe import (
    EULER_GAMMA,
    deflated_sharpe_from_returns,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    return_moments,
)
from tradai_core.errors import ValidationError

# The 2014 numerical example, converted to per-day figures.
DAYS = 250
PAPER_SR = 2.5 / math.sqrt(DAYS)  # 0.1581 per day
PAPER_V = 0.5 / DAYS  # variance of the trials' per-day Sharpe ratios
PAPER_T = 1250
PAPER_SKEW, PAPER_KURT = -3.0, 10.0


def test_expected_max_sharpe_of_the_2014_example_is_0_1132() -> None:
    # SR0 = √(1/500) · ((1 − γ)·Φ⁻¹(1 − 1/100) + γ·Φ⁻¹(1 − 1/(100e)))
    #     = 0.044721 · (0.422784 · 2.326348 + 0.577216 · 2.680210) = 0.044721 · 2.530603 ≈ 0.1132
    assert abs(EULER_GAMMA - 0.5772156649) < 1e-10
    assert expected_max_sharpe(100, PAPER_V) == pytest.approx(0.1132, abs=5e-5)


def test_deflated_sharpe_of_the_2014_example_is_0_9004() -> None:
    result = deflated_sharpe_ratio(PAPER_SR, PAPER_T, 100, PAPER_V, skewness=PAPER_SKEW, kurtosis=PAPER_KURT)
    assert result.dsr == pytest.approx(0.9004, abs=5e-5)
    assert result.dsr < 0.95  # "not a legitimate discovery at 95% confidence"
    assert result.expected_max_sharpe == pytest.approx(0.1132, abs=5e-5)
    assert result.psr > result.dsr


def test_the_2014_example_passes_with_46_trials_and_with_normal_returns_up_to_88() -> None:
    def dsr(n_trials: int, skew: float, kurt: float) -> float:
        return deflated_sharpe_ratio(PAPER_SR, PAPER_T, n_trials, PAPER_V, skewness=skew, kurtosis=kurt).dsr

    assert dsr(46, PAPER_SKEW, PAPER_KURT) == pytest.approx(0.9505, abs=5e-5)
    assert dsr(47, PAPER_SKEW, PAPER_KURT) < 0.95  # 46 is the most trials that still pass
    assert dsr(88, 0.0, 3.0) == pytest.approx(0.9505, abs=5e-5)
    assert dsr(89, 0.0, 3.0) < 0.95


@pytest.mark.parametrize(("per_year", "years"), [(252, 2.73), (52, 2.83), (12, 3.24)])
def test_minimum_track_record_lengths_of_the_2012_paper(per_year: int, years: float) -> None:
    sharpe, benchmark = 2.0 / math.sqrt(per_year), 1.0 / math.sqrt(per_year)
    observations = min_track_record_length(sharpe, benchmark=benchmark, confidence=0.95)
    assert observations / per_year == pytest.approx(years, abs=0.005)
    # MinTRL is exactly where PSR reaches the confidence level.
    assert probabilistic_sharpe_ratio(sharpe, observations, benchmark=benchmark) == pytest.approx(0.95)


# --- properties ----------------------------------------------------------------------------------------


def test_psr_is_one_half_when_the_sharpe_ratio_equals_the_benchmark() -> None:
    for skew, kurt in [(0.0, 3.0), (-3.0, 10.0), (1.0, 6.0)]:
        assert probabilistic_sharpe_ratio(0.1, 500, benchmark=0.1, skewness=skew, kurtosis=kurt) == 0.5


def test_psr_by_hand_for_normal_returns() -> None:
    # Φ(0.2 · √49 / √(1 + 0.5 · 0.2²)) = Φ(1.4 / 1.00995) = Φ(1.38621) ≈ 0.91716
    assert probabilistic_sharpe_ratio(0.2, 50) == pytest.approx(0.91716, abs=1e-5)


def test_dsr_falls_as_more_trials_are_run() -> None:
    trials = [2, 5, 10, 46, 100, 1000, 10_000]
    values = [
        deflated_sharpe_ratio(PAPER_SR, PAPER_T, n, PAPER_V, skewness=PAPER_SKEW, kurtosis=PAPER_KURT).dsr
        for n in trials
    ]
    assert all(later < earlier for earlier, later in itertools.pairwise(values))


def test_a_single_trial_is_not_deflated() -> None:
    result = deflated_sharpe_ratio(0.05, 1000, 1, PAPER_V)
    assert result.expected_max_sharpe == 0.0
    assert result.dsr == pytest.approx(result.psr)


def test_negative_skew_and_fat_tails_lower_the_psr() -> None:
    normal = probabilistic_sharpe_ratio(0.1, 300)
    assert probabilistic_sharpe_ratio(0.1, 300, skewness=-1.0) < normal
    assert probabilistic_sharpe_ratio(0.1, 300, kurtosis=9.0) < normal
    assert probabilistic_sharpe_ratio(0.1, 300, skewness=1.0) > normal


def test_expected_max_sharpe_agrees_with_simulated_maxima() -> None:
    # The best of 100 no-skill trials whose Sharpe ratios have standard deviation 0.05. The formula is an
    # extreme-value approximation (it overstates the exact mean by about 1% at N = 100).
    rng = np.random.default_rng(0)
    simulated = (0.05 * rng.standard_normal((20_000, 100))).max(axis=1).mean()
    assert expected_max_sharpe(100, 0.05**2) == pytest.approx(simulated, rel=0.02)


def test_moments_and_dsr_from_a_return_series() -> None:
    rng = np.random.default_rng(1)
    returns = rng.normal(0.001, 0.01, 5000)
    moments = return_moments(returns)
    assert moments.sharpe == pytest.approx(np.mean(returns) / np.std(returns, ddof=1))
    assert moments.kurtosis == pytest.approx(3.0, abs=0.2)  # plain kurtosis: 3 for Normal returns
    assert moments.skewness == pytest.approx(0.0, abs=0.1)
    from_series = deflated_sharpe_from_returns(returns, 20, 0.001)
    from_moments = deflated_sharpe_ratio(
        moments.sharpe, moments.n_obs, 20, 0.001, skewness=moments.skewness, kurtosis=moments.kurtosis
    )
    assert from_series == from_moments


def test_bad_inputs_say_what_to_do() -> None:
    with pytest.raises(ValidationError, match="n_trials"):
        expected_max_sharpe(0, 0.01)
    with pytest.raises(ValidationError, match="variance"):
        expected_max_sharpe(10, -0.01)
    with pytest.raises(ValidationError, match="non-excess"):
        probabilistic_sharpe_ratio(1.0, 100, skewness=3.0, kurtosis=1.0)
    with pytest.raises(ValidationError, match="constant"):
        return_moments([0.01, 0.01, 0.01])
    assert min_track_record_length(0.1, benchmark=0.2) == math.inf
