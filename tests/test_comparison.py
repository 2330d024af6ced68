"""Champion vs challenger: the paired block bootstrap of the Sharpe difference and the decision rules."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from tradai_core.comparison import (
    ComparisonConfig,
    Decision,
    annualized_sharpe,
    bootstrap_sharpe_difference,
    compare_champion_challenger,
    default_block_length,
    periods_per_year_for,
    returns_on_grid,
)
from tradai_core.errors import ValidationError

HOURS_PER_YEAR = 365 * 24


def hourly(values: np.ndarray) -> pd.Series:
    index = pd.date_range("2022-01-01", periods=len(values), freq="1h", tz="UTC")
    return pd.Series(values, index=index)


def backtest_pair(
    seed: int, n_bars: int = 4000, challenger_drift: float = 0.0, n_trades: int = 120
) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """Two strategies on the same bars: shared market noise, own noise, and a drift for the challenger."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0, 0.01, n_bars)
    champion = market + rng.normal(0, 0.003, n_bars)
    challenger = market + rng.normal(0, 0.003, n_bars) + challenger_drift
    trades_champion = rng.normal(0.001, 0.02, n_trades)
    trades_challenger = rng.normal(0.001 + challenger_drift * 30, 0.02, n_trades)
    return hourly(champion), hourly(challenger), trades_champion, trades_challenger


def test_identical_strategies_are_inconclusive_with_p_one() -> None:
    bars, _, trades, _ = backtest_pair(seed=1)
    result = compare_champion_challenger(bars, bars.copy(), trades, trades.copy(), timeframe="1h")
    assert result.decision is Decision.INCONCLUSIVE
    assert result.p_value == pytest.approx(1.0)
    assert result.sharpe_diff == 0.0
    assert result.ci_low == result.ci_high == 0.0
    assert "no significant difference" in result.reason
    assert "returns are identical on all" in result.reason and "detects |ΔSharpe|" not in result.reason


def test_a_clearly_better_challenger_is_promoted() -> None:
    champion, challenger, t_a, t_b = backtest_pair(seed=2, challenger_drift=0.0005)
    result = compare_champion_challenger(champion, challenger, t_a, t_b, timeframe="1h")
    assert result.decision is Decision.PROMOTE
    assert result.p_value < 0.05
    assert result.sharpe_diff > 0 and result.ci_low > 0
    assert result.challenger.sharpe > result.champion.sharpe
    assert result.challenger.total_profit > result.champion.total_profit
    assert "significantly better" in result.reason


def test_a_clearly_worse_challenger_keeps_the_champion() -> None:
    champion, challenger, t_a, t_b = backtest_pair(seed=3, challenger_drift=-0.0005)
    result = compare_champion_challenger(champion, challenger, t_a, t_b, timeframe="1h")
    assert result.decision is Decision.KEEP
    assert result.p_value < 0.05
    assert result.ci_high < 0
    assert "significantly worse" in result.reason


def test_too_few_trades_is_inconclusive_and_says_who_fell_short() -> None:
    champion, challenger, t_a, t_b = backtest_pair(seed=4, challenger_drift=0.0005)
    result = compare_champion_challenger(
        champion, challenger, t_a, t_b[:12], timeframe="1h", config=ComparisonConfig(min_trades=30)
    )
    assert result.decision is Decision.INCONCLUSIVE
    assert result.p_value < 0.05  # the evidence is there, the trade count is not
    assert "challenger has 12 trades" in result.reason
    assert "champion" not in result.reason.split(";")[0]
    assert "minimum of 30" in result.reason


def test_the_bootstrap_is_deterministic_for_a_seed() -> None:
    champion, challenger, t_a, t_b = backtest_pair(seed=5, challenger_drift=0.0001)
    config = ComparisonConfig(seed=11, n_iterations=500)
    first = compare_champion_challenger(champion, challenger, t_a, t_b, timeframe="1h", config=config)
    again = compare_champion_challenger(champion, challenger, t_a, t_b, timeframe="1h", config=config)
    assert first == again
    other = compare_champion_challenger(
        champion, challenger, t_a, t_b, timeframe="1h", config=config.model_copy(update={"seed": 12})
    )
    assert other.p_value != first.p_value and other.sharpe_diff == first.sharpe_diff


def test_bootstrap_p_values_are_calibrated_under_the_null() -> None:
    # 120 seeded worlds where both strategies have the same Sharpe ratio; their differences are
    # autocorrelated (AR(1), φ = 0.3), which the blocks must absorb. At alpha = 5% about 6 of 120 should
    # reject by chance; a loose band keeps the test stable while catching a broken test (e.g. 0% or 30%).
    p_values = []
    for seed in range(120):
        rng = np.random.default_rng(1000 + seed)
        shocks = rng.normal(0, 0.01, (2, 600))
        own = np.empty_like(shocks)
        own[:, 0] = shocks[:, 0]
        for t in range(1, 600):
            own[:, t] = 0.3 * own[:, t - 1] + shocks[:, t]
        market = rng.normal(0, 0.01, 600)
        boot = bootstrap_sharpe_difference(
            market + own[0] + 0.0005, market + own[1] + 0.0005, n_iterations=400, seed=seed
        )
        p_values.append(boot.p_value)
    p = np.array(p_values)
    assert 0.01 <= np.mean(p < 0.05) <= 0.12
    assert 0.4 <= np.mean(p < 0.5) <= 0.6


def test_block_sums_equal_resampling_the_bars_themselves() -> None:
    # Independent check of the block-sum shortcut: draw the same block starts, gather the bars block by
    # block, and compute the Sharpe difference of each resample directly.
    rng = np.random.default_rng(12)
    a, b = rng.normal(0.0002, 0.01, 1003), rng.normal(0.0004, 0.01, 1003)
    n, length, iterations, seed = a.size, 7, 300, 99
    fast = bootstrap_sharpe_difference(a, b, n_iterations=iterations, block_length=length, seed=seed)

    starts = np.random.default_rng(seed).integers(0, n, size=(iterations, math.ceil(n / length)))
    index = ((starts[:, :, None] + np.arange(length)) % n).reshape(iterations, -1)[:, :n]
    diffs = np.array([annualized_sharpe(b[i], 1.0) - annualized_sharpe(a[i], 1.0) for i in index])
    observed = annualized_sharpe(b, 1.0) - annualized_sharpe(a, 1.0)
    deviation = np.abs(diffs - observed)
    naive_p = (1 + np.sum(deviation >= abs(observed))) / (iterations + 1)
    assert fast.sharpe_diff == pytest.approx(observed, abs=1e-12)
    assert fast.p_value == pytest.approx(naive_p, abs=1e-12)
    assert fast.ci_high - fast.sharpe_diff == pytest.approx(np.quantile(deviation, 0.95), abs=1e-9)


def test_trade_level_tests_are_reported_but_do_not_decide() -> None:
    bars, _, _, _ = backtest_pair(seed=13)
    rng = np.random.default_rng(13)
    losing, winning = rng.normal(-0.01, 0.01, 80), rng.normal(0.01, 0.01, 80)
    result = compare_champion_challenger(bars, bars.copy(), losing, winning, timeframe="1h")
    assert result.welch_p_value is not None and result.welch_p_value < 1e-6
    assert result.mann_whitney_p_value is not None and result.mann_whitney_p_value < 1e-6
    assert result.decision is Decision.INCONCLUSIVE  # the bars, which decide, are identical
    assert result.challenger.win_rate is not None and result.challenger.win_rate > 0.8


def test_metrics_of_each_side() -> None:
    bars = hourly(np.array([0.01, -0.02, 0.03, 0.0]))
    trades = np.array([0.05, -0.01, 0.02, -0.03])
    result = compare_champion_challenger(
        bars, bars.copy(), trades, trades, timeframe="1h", config=ComparisonConfig(min_trades=0)
    )
    m = result.champion
    assert m.total_profit == pytest.approx(1.01 * 0.98 * 1.03 * 1.0 - 1)
    assert m.win_rate == 0.5 and m.trade_count == 4
    assert m.mean_trade_return == pytest.approx(0.0075)
    assert m.sharpe == pytest.approx(0.005 / np.std([0.01, -0.02, 0.03, 0.0], ddof=1) * math.sqrt(8760))


def test_annualisation_comes_from_the_timeframe_or_the_index() -> None:
    assert periods_per_year_for("1h") == HOURS_PER_YEAR
    assert periods_per_year_for("5m") == HOURS_PER_YEAR * 12
    champion, challenger, t_a, t_b = backtest_pair(seed=14, n_bars=300)
    inferred = compare_champion_challenger(champion, challenger, t_a, t_b)
    assert inferred.periods_per_year == pytest.approx(HOURS_PER_YEAR)
    with pytest.raises(ValidationError, match="bar frequency"):
        compare_champion_challenger(champion.to_numpy(), challenger.to_numpy(), t_a, t_b)


def test_series_on_different_bars_are_rejected() -> None:
    champion, challenger, t_a, t_b = backtest_pair(seed=15, n_bars=300)
    with pytest.raises(ValidationError, match="same timestamps"):
        compare_champion_challenger(champion.iloc[1:], challenger.iloc[:-1], t_a, t_b, timeframe="1h")
    with pytest.raises(ValidationError, match="NaN"):
        compare_champion_challenger(champion * np.nan, challenger, t_a, t_b, timeframe="1h")


def test_bar_returns_cover_every_bar_of_the_window_the_first_included() -> None:
    grid = pd.date_range("2022-05-02", periods=4, freq="1h", tz="UTC")
    # a trade closed within the first bar (+10 %), another after the second bar (-10 %), none after
    closes = pd.Series([110.0, 99.0], index=[grid[0], grid[1] + pd.Timedelta(minutes=30)])
    returns = returns_on_grid(closes, grid, starting_balance=100.0)
    assert returns.index.equals(grid)
    assert returns.tolist() == pytest.approx([0.1, 0.0, -0.1, 0.0])
    assert float((1 + returns).prod()) == pytest.approx(0.99)  # compounds to the realized equity


def test_bar_returns_of_a_window_without_trades_are_zero() -> None:
    grid = pd.date_range("2022-05-02", periods=3, freq="1h", tz="UTC")
    assert returns_on_grid(pd.Series(dtype=float), grid, 1000.0).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValidationError, match="non-positive"):
        returns_on_grid(pd.Series([-5.0], index=grid[:1]), grid, 1000.0)


def test_default_block_length_is_the_cube_root() -> None:
    assert default_block_length(17_000) == 26
    assert default_block_length(1) == 1


def test_bootstrap_is_fast_enough_for_two_years_of_hourly_bars() -> None:
    rng = np.random.default_rng(16)
    a, b = rng.normal(0, 0.01, (2, 17_000))
    started = time.perf_counter()
    result = bootstrap_sharpe_difference(a, b, periods_per_year=HOURS_PER_YEAR, n_iterations=2000)
    assert time.perf_counter() - started < 2.0
    assert result.n_iterations == 2000 and result.block_length == 26
