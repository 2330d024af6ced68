"""Probabilistic and Deflated Sharpe Ratios (Bailey & López de Prado 2012, 2014).

A backtest's Sharpe ratio is an estimate, and the best of many backtests is a biased one. The
Probabilistic Sharpe Ratio (PSR) is the probability that the true Sharpe ratio exceeds a benchmark SR*,
given the track-record length and the skewness and kurtosis of the returns:

    PSR(SR*) = Φ( (SR − SR*) · √(T − 1) / √(1 − γ3·SR + (γ4 − 1)/4 · SR²) )

The Deflated Sharpe Ratio (DSR) is PSR against the Sharpe ratio the best of N independent trials would
reach by luck alone, when the trials' Sharpe ratios have variance V:

    SR0 = √V · ( (1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)) ),   γ = Euler–Mascheroni
    DSR = PSR(SR0)

Every Sharpe ratio here is per observation (NOT annualised), γ3 is the skewness and γ4 the plain
(non-excess, Normal = 3) kurtosis of the returns, T the number of returns, and V the variance of the
per-observation Sharpe ratios of the trials. To use annualised figures, divide the Sharpe ratio by
√(periods per year) and V by the periods per year.

References: D. H. Bailey, M. López de Prado, "The Sharpe Ratio Efficient Frontier", Journal of Risk
15(2), 2012; "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and
Non-Normality", Journal of Portfolio Management 40(5), 2014.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.errors import ValidationError
from tradai_core.lazy import LazyModule

stats = LazyModule("scipy.stats")  # imported on first use, not when the code location loads

EULER_GAMMA = float(np.euler_gamma)

ArrayLike = Sequence[float] | np.ndarray | pd.Series


class ReturnMoments(BaseModel):
    """Per-observation Sharpe ratio, skewness, plain kurtosis and length of a return series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sharpe: float = Field(description="mean / standard deviation (ddof=1), per observation")
    skewness: float
    kurtosis: float = Field(description="plain kurtosis; 3 for Normal returns")
    n_obs: int


class DeflatedSharpeResult(BaseModel):
    """DSR with everything it was computed from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sharpe: float = Field(description="observed Sharpe ratio, per observation")
    n_obs: int
    skewness: float
    kurtosis: float
    n_trials: int
    trials_sharpe_variance: float = Field(description="variance of the trials' per-observation Sharpe ratios")
    expected_max_sharpe: float = Field(description="SR0, the best Sharpe ratio luck alone would give")
    psr: float = Field(description="PSR against a zero benchmark, no deflation")
    z_score: float = Field(description="the standard-normal statistic whose CDF is the DSR")
    dsr: float = Field(description="PSR against SR0: probability the true Sharpe ratio exceeds SR0")


def return_moments(returns: ArrayLike) -> ReturnMoments:
    """Sharpe ratio (ddof=1), skewness and plain kurtosis of a return series, all per observation.

    Skewness and kurtosis are the population (biased) moments, as in the papers; for them
    γ4 ≥ 1 + γ3² holds exactly, which keeps the PSR denominator positive.
    """
    r = np.asarray(returns, dtype=float).ravel()
    if r.size < 3 or not np.isfinite(r).all():
        raise ValidationError(
            f"need ≥ 3 finite returns for Sharpe moments, got {r.size} values",
            "pass the per-bar returns of the backtest without NaN",
        )
    std = float(np.std(r, ddof=1))
    if std == 0.0:
        raise ValidationError("returns are constant; their Sharpe ratio is undefined", "check the backtest")
    return ReturnMoments(
        sharpe=float(np.mean(r) / std),
        skewness=float(stats.skew(r)),
        kurtosis=float(stats.kurtosis(r, fisher=False)),
        n_obs=int(r.size),
    )


def _psr_z(sharpe: float, benchmark: float, n_obs: int, skewness: float, kurtosis: float) -> float:
    if n_obs < 2:
        raise ValidationError(f"PSR needs at least 2 observations, got {n_obs}", "use a longer track record")
    variance_term = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if variance_term <= 0:
        raise ValidationError(
            f"skewness {skewness} and kurtosis {kurtosis} give a non-positive Sharpe variance at SR={sharpe}",
            "pass the plain (non-excess) kurtosis of the same returns; it is at least 1 + skewness²",
        )
    return (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(variance_term)


def probabilistic_sharpe_ratio(
    sharpe: float,
    n_obs: int,
    *,
    benchmark: float = 0.0,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """PSR: probability that the true per-observation Sharpe ratio exceeds `benchmark`.

    Longer track records, higher Sharpe ratios and positive skew raise it; fat tails lower it.
    """
    return float(stats.norm.cdf(_psr_z(sharpe, benchmark, n_obs, skewness, kurtosis)))


def expected_max_sharpe(n_trials: int, trials_sharpe_variance: float, mean_sharpe: float = 0.0) -> float:
    """SR0: the expected best Sharpe ratio of `n_trials` independent trials with no skill.

    Uses the extreme-value approximation of Bailey & López de Prado (2014); with a single trial there is
    no selection and SR0 is `mean_sharpe` itself.
    """
    if n_trials < 1:
        raise ValidationError(f"n_trials must be ≥ 1, got {n_trials}", "count every configuration backtested")
    if trials_sharpe_variance < 0:
        raise ValidationError(
            f"trials' Sharpe variance must be ≥ 0, got {trials_sharpe_variance}",
            "pass the variance of the trials' per-observation Sharpe ratios",
        )
    if n_trials == 1:
        return float(mean_sharpe)
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * stats.norm.ppf(
        1 - 1 / (n_trials * math.e)
    )
    return float(mean_sharpe + math.sqrt(trials_sharpe_variance) * z)


def deflated_sharpe_ratio(
    sharpe: float,
    n_obs: int,
    n_trials: int,
    trials_sharpe_variance: float,
    *,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> DeflatedSharpeResult:
    """DSR: probability that the selected strategy's true Sharpe ratio beats the best luck could give.

    Inputs are per observation (see the module docstring). A DSR below 0.95 means the backtest does not
    show skill at 95% confidence once the `n_trials` configurations tried are accounted for.
    """
    sr0 = expected_max_sharpe(n_trials, trials_sharpe_variance)
    z = _psr_z(sharpe, sr0, n_obs, skewness, kurtosis)
    return DeflatedSharpeResult(
        sharpe=float(sharpe),
        n_obs=int(n_obs),
        skewness=float(skewness),
        kurtosis=float(kurtosis),
        n_trials=int(n_trials),
        trials_sharpe_variance=float(trials_sharpe_variance),
        expected_max_sharpe=sr0,
        psr=probabilistic_sharpe_ratio(sharpe, n_obs, skewness=skewness, kurtosis=kurtosis),
        z_score=float(z),
        dsr=float(stats.norm.cdf(z)),
    )


def deflated_sharpe_from_returns(
    returns: ArrayLike, n_trials: int, trials_sharpe_variance: float
) -> DeflatedSharpeResult:
    """DSR of a return series (its moments are measured here) after `n_trials` trials."""
    m = return_moments(returns)
    return deflated_sharpe_ratio(
        m.sharpe, m.n_obs, n_trials, trials_sharpe_variance, skewness=m.skewness, kurtosis=m.kurtosis
    )


def min_track_record_length(
    sharpe: float,
    *,
    benchmark: float = 0.0,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
    confidence: float = 0.95,
) -> float:
    """Observations needed for PSR(benchmark) to reach `confidence` (Bailey & López de Prado 2012).

    MinTRL = 1 + (1 − γ3·SR + (γ4 − 1)/4 · SR²) · (Φ⁻¹(confidence) / (SR − SR*))², the T at which PSR
    equals `confidence`. Infinite when the Sharpe ratio does not exceed the benchmark.
    """
    if not 0 < confidence < 1:
        raise ValidationError(f"confidence must be in (0, 1), got {confidence}", "use e.g. 0.95")
    if sharpe <= benchmark:
        return math.inf
    variance_term = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if variance_term <= 0:
        raise ValidationError(
            f"skewness {skewness} and kurtosis {kurtosis} give a non-positive Sharpe variance",
            "pass the plain (non-excess) kurtosis of the same returns",
        )
    return 1.0 + variance_term * (stats.norm.ppf(confidence) / (sharpe - benchmark)) ** 2
