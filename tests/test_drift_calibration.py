"""The drift verdict's false-alarm rate where nothing drifted, and its noise floor under autocorrelation."""

import numpy as np
import pytest

from bench.drift_false_alarms import (
    TRAIN_END,
    TRAIN_START,
    WINDOW_STARTS,
    load_demo_features,
    shifted_alarm_rate,
)
from tradai_core.drift import drift_verdict
from tradai_core.drift_calibration import in_period_false_alarms
from tradai_core.psi import DriftSeverity, effective_sample_size, score_psi, summarize_reference


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.standard_normal()
    shocks = rng.standard_normal(n) * np.sqrt(1 - phi * phi)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + shocks[t]
    return x


def test_effective_sample_size_of_an_ar1_series_is_near_n_times_one_minus_phi_over_one_plus_phi() -> None:
    rng = np.random.default_rng(3)
    n, phi = 20_000, 0.9
    n_eff = effective_sample_size(_ar1(rng, n, phi))
    assert n_eff == pytest.approx(n * (1 - phi) / (1 + phi), rel=0.25)
    assert effective_sample_size(rng.standard_normal(n)) == pytest.approx(n, rel=0.1)
    assert effective_sample_size(np.ones(50)) == 50.0


def test_an_autocorrelated_window_of_the_reference_distribution_is_rarely_banded() -> None:
    # Stationary AR(1) with φ = 0.9: the window is drawn from the reference's own process, but its 336
    # rows are worth ~18 independent ones, so an iid noise floor reads chance wandering as drift.
    rng = np.random.default_rng(11)
    summary = summarize_reference(_ar1(rng, 20_000, 0.9), "slow")
    flagged_iid = flagged = 0
    for _ in range(100):
        window = _ar1(rng, 336, 0.9)
        flagged_iid += score_psi(summary, window, autocorrelation=False).severity is not DriftSeverity.NONE
        result = score_psi(summary, window)
        flagged += result.severity is not DriftSeverity.NONE
        assert result.n_cur_eff is not None and result.n_cur_eff < 60
        assert result.effective_noise_floor is not None and result.effective_gate is not None
        assert result.effective_noise_floor.quantile > result.noise_floor.quantile
    assert flagged_iid >= 30  # the iid floor bands about half of them
    assert flagged <= 10


def test_the_verdict_over_many_slow_features_of_one_process_stays_none() -> None:
    # 15 independent AR(1) features with φ = 0.98 (n_eff ≈ 3 of 336 rows): one feature alone is banded
    # now and then, the verdict (at least half the features) almost never.
    rng = np.random.default_rng(13)
    summaries = [summarize_reference(_ar1(rng, 20_000, 0.98), f"f{i}") for i in range(15)]
    alarms_iid = alarms = 0
    for _ in range(40):
        windows = [_ar1(rng, 336, 0.98) for _ in summaries]
        iid = [score_psi(s, w, autocorrelation=False) for s, w in zip(summaries, windows, strict=True)]
        gated = [score_psi(s, w) for s, w in zip(summaries, windows, strict=True)]
        alarms_iid += drift_verdict(iid, None).severity is not DriftSeverity.NONE
        alarms += drift_verdict(gated, None).severity is not DriftSeverity.NONE
    assert alarms_iid >= 30
    assert alarms <= 2


def test_a_shifted_autocorrelated_window_is_still_flagged() -> None:
    rng = np.random.default_rng(12)
    summary = summarize_reference(_ar1(rng, 20_000, 0.98), "slow")
    result = score_psi(summary, _ar1(rng, 336, 0.98) + 3.0)
    assert result.severity is DriftSeverity.SEVERE


@pytest.mark.slow
def test_in_period_windows_of_the_demo_data_rarely_alarm_while_a_one_sd_shift_is_flagged() -> None:
    features = load_demo_features()
    report = in_period_false_alarms(features, TRAIN_START, TRAIN_END, WINDOW_STARTS)
    assert report.n == 54
    assert report.alarm_rate <= 0.05, report.counts
    before = in_period_false_alarms(features, TRAIN_START, TRAIN_END, WINDOW_STARTS, autocorrelation=False)
    assert before.alarm_rate > 0.5  # what the iid floor did: the measurement can tell the two apart
    assert shifted_alarm_rate(features, 1.0) >= 0.9
