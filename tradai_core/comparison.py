"""Champion vs challenger: should the challenger model replace the champion?

Both models are backtested on the SAME out-of-sample window. The decision rests on one test: a paired
circular block bootstrap of the difference in annualised Sharpe ratio between the two per-bar return
series (same bars, resampled together). Trade-level tests (Welch's t, Mann-Whitney U on per-trade
returns) are reported beside it as secondary evidence only. `docs/comparison.md` says why.

Rules, from the reference platform:

- both sides need at least `min_trades` trades, otherwise the result is `inconclusive` and says who fell
  short;
- both sides need a defined Sharpe ratio (bar returns that vary), otherwise the result is `inconclusive`
  (not enough evidence) and says which side's is undefined and why;
- `promote` when the challenger's Sharpe is higher and the bootstrap p-value is below `alpha`;
- `keep` when the challenger's Sharpe is significantly lower;
- `inconclusive` otherwise (the champion stays, but nothing was learnt).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.errors import ValidationError
from tradai_core.lazy import LazyModule
from tradai_core.timeframes import timeframe_seconds

stats = LazyModule("scipy.stats")  # imported on first use, not when the code location loads

logger = logging.getLogger(__name__)

SECONDS_PER_YEAR = 365 * 86400
"""Crypto markets trade every day, so a year is 365 days of bars."""
_BOOTSTRAP_CHUNK = 512

ArrayLike = Sequence[float] | np.ndarray | pd.Series


class Decision(StrEnum):
    """Outcome of a champion/challenger comparison."""

    PROMOTE = "promote"
    KEEP = "keep"
    INCONCLUSIVE = "inconclusive"


class ComparisonConfig(BaseModel):
    """Knobs of the comparison; the defaults are the platform's policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=0.05, gt=0, lt=1, description="two-sided significance level")
    min_trades: int = Field(default=30, ge=0, description="trades each side needs for a decision")
    n_iterations: int = Field(default=2000, ge=100, description="bootstrap resamples")
    block_length: int | None = Field(
        default=None, ge=1, description="bars per bootstrap block; None → ceil(n^(1/3))"
    )
    seed: int = Field(default=0, description="seed of the bootstrap's random generator")


class StrategyMetrics(BaseModel):
    """One side's headline numbers over the comparison window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_profit: float = Field(description="compounded return over the window, fraction (0.12 = +12%)")
    win_rate: float | None = Field(description="share of trades with a positive return; None without trades")
    sharpe: float | None = Field(
        description="annualised Sharpe ratio of the per-bar returns; None: undefined"
    )
    sharpe_undefined: str | None = Field(default=None, description="why the Sharpe ratio is undefined")
    trade_count: int
    mean_trade_return: float | None


class ComparisonResult(BaseModel):
    """Every number behind a promotion decision, and the decision in words."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Decision
    reason: str
    champion: StrategyMetrics
    challenger: StrategyMetrics
    sharpe_diff: float = Field(description="challenger Sharpe − champion Sharpe, annualised")
    p_value: float = Field(description="two-sided bootstrap p-value of the Sharpe difference")
    ci_low: float
    ci_high: float
    confidence: float = Field(description="coverage of [ci_low, ci_high], 1 − alpha")
    alpha: float
    min_trades: int
    n_bars: int
    periods_per_year: float
    block_length: int
    n_iterations: int
    seed: int
    welch_t: float | None = Field(description="Welch's t of per-trade returns (challenger − champion)")
    welch_p_value: float | None
    mann_whitney_u: float | None
    mann_whitney_p_value: float | None
    sharpe_diff_se: float | None = Field(
        default=None, description="bootstrap standard error of the Sharpe difference, annualised"
    )
    minimum_detectable_difference: float | None = Field(
        default=None,
        description="smallest |Sharpe difference| the window detects at `alpha` with probability `power`",
    )
    power: float | None = Field(default=None, description="power the minimum detectable difference is for")


class SharpeDiffBootstrap(BaseModel):
    """Result of the paired block bootstrap of a Sharpe-ratio difference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sharpe_diff: float
    p_value: float
    ci_low: float
    ci_high: float
    confidence: float
    block_length: int
    n_iterations: int
    standard_error: float | None = Field(
        default=None, description="standard deviation of the bootstrap Sharpe differences"
    )


DEFAULT_POWER = 0.8
"""Power at which the comparison reports its minimum detectable Sharpe difference."""


def minimum_detectable_difference(
    standard_error: float, alpha: float = 0.05, power: float = DEFAULT_POWER
) -> float:
    """Smallest true |Sharpe difference| a two-sided test at `alpha` detects with probability `power`,
    when the estimate is roughly Normal with this standard error: (z_{1−α/2} + z_{power}) · SE.

    2.80 · SE at alpha 0.05 and 80% power.
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValidationError(
            f"alpha and power must lie in (0, 1), got {alpha} and {power}", "use 0.05 and 0.8"
        )
    if not (standard_error >= 0 and math.isfinite(standard_error)):
        raise ValidationError(
            f"standard error {standard_error} is not a finite non-negative number",
            "pass the standard deviation of the bootstrap Sharpe differences",
        )
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * standard_error)


def sharpe_diff_variance_per_bar(sharpe_a: float, sharpe_b: float, correlation: float) -> float:
    """n · Var(SR_b − SR_a) for per-bar Sharpe ratios of two jointly Normal IID series with this
    correlation (Jobson & Korkie 1981, corrected by Memmel 2003):
    2 − 2ρ + ½ (SR_a² + SR_b² − 2 SR_a SR_b ρ²)."""
    if not -1 <= correlation <= 1:
        raise ValidationError(
            f"correlation {correlation} is outside [−1, 1]", "pass the two series' correlation"
        )
    return 2 - 2 * correlation + 0.5 * (sharpe_a**2 + sharpe_b**2 - 2 * sharpe_a * sharpe_b * correlation**2)


def bars_to_detect(
    target_diff: float,
    *,
    periods_per_year: float,
    sharpe_a: float = 0.0,
    sharpe_b: float = 0.0,
    correlation: float = 0.0,
    inflation: float = 1.0,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
) -> int:
    """Bars a comparison window needs to detect an annualised Sharpe difference `target_diff`.

    The per-bar statistics: annualised Sharpe ratios of both sides, the correlation of their bar returns,
    and `inflation` = 1 + 2 Σ ρ_k of the difference's autocorrelation (1 for independent bars; the
    variance of a Sharpe ratio grows by about that factor under serial dependence). Solves
    (z_{1−α/2} + z_{power})² · ppy · inflation · v / n = target², v from `sharpe_diff_variance_per_bar`.
    """
    if target_diff == 0 or not math.isfinite(target_diff):
        raise ValidationError(f"target difference {target_diff} must be finite and non-zero", "e.g. 1.0")
    if periods_per_year <= 0 or inflation < 1:
        raise ValidationError(
            f"periods_per_year ({periods_per_year}) must be positive and inflation ({inflation}) ≥ 1",
            "use e.g. 8760 for 1h bars, and 1 + 2·Σρ_k (1 for independent bars) as inflation",
        )
    root = math.sqrt(periods_per_year)
    per_bar = sharpe_diff_variance_per_bar(sharpe_a / root, sharpe_b / root, correlation)
    z = minimum_detectable_difference(1.0, alpha, power)
    return math.ceil(z * z * periods_per_year * inflation * per_bar / (target_diff * target_diff))


def returns_on_grid(equity: pd.Series, grid: pd.DatetimeIndex, starting_balance: float) -> pd.Series:
    """Per-bar simple returns of realized equity carried forward on `grid`: one return for every bar.

    The value at a bar is the equity after every trade closed at or before it; the first bar is measured
    from `starting_balance`: dropping it would lose a trade closed in a window's first bar, and one bar at
    every seam where windows are stitched together.
    """
    if starting_balance <= 0:
        raise ValidationError(f"starting balance {starting_balance} is not positive", "pass the account's")
    equity = equity.astype(float).groupby(level=0).last().sort_index()
    values = np.full(len(grid), float(starting_balance))
    if not equity.empty:
        positions = equity.index.searchsorted(grid, side="right") - 1
        known = positions >= 0
        values[known] = equity.to_numpy()[positions[known]]
    if (values <= 0).any():
        raise ValidationError("equity curve has non-positive values", "pass account equity, not profit")
    previous = np.concatenate([[float(starting_balance)], values[:-1]])
    return pd.Series(values / previous - 1.0, index=grid, name="return")


def periods_per_year_for(timeframe: str) -> float:
    """Bars per year for a candle timeframe such as `1h` (crypto: 365 days a year)."""
    return SECONDS_PER_YEAR / timeframe_seconds(timeframe)


def default_block_length(n_bars: int) -> int:
    """ceil(n^(1/3)): the usual rate for block bootstraps of smooth statistics (Hall, Horowitz, Jing 1995)."""
    return max(1, math.ceil(n_bars ** (1 / 3)))


def annualized_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Mean over standard deviation (ddof=1) of per-bar returns, times √(bars per year); 0 when flat."""
    if returns.size < 2:
        return 0.0
    std = float(np.std(returns, ddof=1))
    if std == 0.0:
        return 0.0
    return float(np.mean(returns) / std * math.sqrt(periods_per_year))


def sharpe_undefined_reason(returns: np.ndarray) -> str | None:
    """Why the Sharpe ratio of these per-bar returns is undefined (no variance); None when defined."""
    if returns.size < 2:
        return f"{returns.size} bar return(s): no variance"
    if float(np.std(returns, ddof=1)) == 0.0:
        return "the bar returns never vary (no position moved the equity)"
    return None


def _circular_block_sums(x: np.ndarray, length: int) -> np.ndarray:
    """Sum of x over the circular block of `length` bars that starts at each bar."""
    n = x.size
    extended = np.concatenate([x, x[: length - 1]]) if length > 1 else x
    cumulative = np.concatenate([[0.0], np.cumsum(extended)])
    return cumulative[length : length + n] - cumulative[:n]


def bootstrap_sharpe_difference(
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    periods_per_year: float = 1.0,
    n_iterations: int = 2000,
    block_length: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> SharpeDiffBootstrap:
    """Paired circular block bootstrap of Sharpe(challenger) − Sharpe(champion) on aligned bar returns.

    Each resample draws the same blocks of bars for both series, so their common market exposure and the
    autocorrelation within blocks are kept. The p-value tests "no difference" against the bootstrap
    distribution of the centred statistic, |Δ* − Δ̂| ≥ |Δ̂|, with the usual +1 correction; the interval is
    the matching symmetric one, Δ̂ ± the (1 − alpha) quantile of |Δ* − Δ̂|, so 0 lies outside it exactly
    when p < alpha (up to the +1).
    """
    a = np.asarray(champion, dtype=float)
    b = np.asarray(challenger, dtype=float)
    n = a.size
    if b.size != n or n < 3:
        raise ValidationError(
            f"need two aligned return series of ≥ 3 bars, got {a.size} and {b.size}",
            "backtest both models on the same out-of-sample bars",
        )
    length = min(block_length or default_block_length(n), n)
    n_blocks = math.ceil(n / length)
    tail = n - (n_blocks - 1) * length  # bars taken from the last block

    # A resample is n_blocks circular blocks; its sums are sums of precomputed block sums.
    full = np.stack([_circular_block_sums(s, length) for s in (a, a * a, b, b * b)])
    last = np.stack([_circular_block_sums(s, tail) for s in (a, a * a, b, b * b)])
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_iterations)
    scale = math.sqrt(periods_per_year)
    for start in range(0, n_iterations, _BOOTSTRAP_CHUNK):
        m = min(_BOOTSTRAP_CHUNK, n_iterations - start)
        starts = rng.integers(0, n, size=(m, n_blocks))
        sums = full[:, starts[:, :-1]].sum(axis=2) + last[:, starts[:, -1]]
        sharpes = []
        for s, ss in ((sums[0], sums[1]), (sums[2], sums[3])):
            mean = s / n
            var = np.maximum(ss - s * mean, 0.0) / (n - 1)
            std = np.sqrt(var)
            with np.errstate(divide="ignore", invalid="ignore"):
                sharpes.append(np.where(std > 0, mean / std, 0.0) * scale)
        diffs[start : start + m] = sharpes[1] - sharpes[0]

    observed = annualized_sharpe(b, periods_per_year) - annualized_sharpe(a, periods_per_year)
    deviation = np.abs(diffs - observed)
    # Tolerance so that exact ties (identical series: every deviation and the observed value are 0) count.
    tol = 1e-12 * max(1.0, abs(observed))
    p_value = float((1 + np.count_nonzero(deviation >= abs(observed) - tol)) / (n_iterations + 1))
    half_width = float(np.quantile(deviation, 1 - alpha))
    return SharpeDiffBootstrap(
        sharpe_diff=float(observed),
        p_value=min(p_value, 1.0),
        ci_low=float(observed - half_width),
        ci_high=float(observed + half_width),
        confidence=1 - alpha,
        block_length=length,
        n_iterations=n_iterations,
        standard_error=float(np.std(diffs, ddof=1)),
    )


def _aligned(champion: ArrayLike, challenger: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    if (
        isinstance(champion, pd.Series)
        and isinstance(challenger, pd.Series)
        and not champion.index.equals(challenger.index)
    ):
        only_one = champion.index.symmetric_difference(challenger.index)
        raise ValidationError(
            f"champion and challenger bar returns are not on the same timestamps "
            f"({len(only_one)} timestamps appear in only one of them)",
            "backtest both on the same out-of-sample window and reindex to the same bars "
            "(a bar without a position has return 0)",
        )
    a = np.asarray(champion, dtype=float).ravel()
    b = np.asarray(challenger, dtype=float).ravel()
    if a.size != b.size:
        raise ValidationError(
            f"champion has {a.size} bars and challenger {b.size}",
            "backtest both on the same out-of-sample window",
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValidationError(
            "bar returns contain NaN or infinite values", "fill bars without a position with 0"
        )
    return a, b


def _infer_periods_per_year(returns: ArrayLike) -> float | None:
    if isinstance(returns, pd.Series) and isinstance(returns.index, pd.DatetimeIndex) and len(returns) > 1:
        step = pd.Series(returns.index).diff().median()
        if pd.notna(step) and step.total_seconds() > 0:
            return SECONDS_PER_YEAR / step.total_seconds()
    return None


def _metrics(bar_returns: np.ndarray, trades: np.ndarray, periods_per_year: float) -> StrategyMetrics:
    undefined = sharpe_undefined_reason(bar_returns)
    return StrategyMetrics(
        total_profit=float(np.prod(1.0 + bar_returns) - 1.0),
        win_rate=float(np.mean(trades > 0)) if trades.size else None,
        sharpe=None if undefined else annualized_sharpe(bar_returns, periods_per_year),
        sharpe_undefined=undefined,
        trade_count=int(trades.size),
        mean_trade_return=float(np.mean(trades)) if trades.size else None,
    )


def _trade_tests(
    champion: np.ndarray, challenger: np.ndarray
) -> tuple[float | None, float | None, float | None, float | None]:
    if champion.size < 2 or challenger.size < 2:
        return None, None, None, None
    if np.ptp(champion) == 0 and np.ptp(challenger) == 0:
        welch_t, welch_p = (0.0, 1.0) if champion[0] == challenger[0] else (None, None)
    else:
        welch = stats.ttest_ind(challenger, champion, equal_var=False)
        welch_t, welch_p = float(welch.statistic), float(welch.pvalue)
    mwu = stats.mannwhitneyu(challenger, champion, alternative="two-sided")
    return welch_t, welch_p, float(mwu.statistic), float(mwu.pvalue)


def _show(sharpe: float | None) -> str:
    return "n/a" if sharpe is None else f"{sharpe:.3f}"


def compare_champion_challenger(
    champion_returns: ArrayLike,
    challenger_returns: ArrayLike,
    champion_trades: ArrayLike,
    challenger_trades: ArrayLike,
    *,
    timeframe: str | None = None,
    periods_per_year: float | None = None,
    config: ComparisonConfig | None = None,
) -> ComparisonResult:
    """Decide promote / keep / inconclusive from two backtests of the same out-of-sample window.

    `*_returns` are per-bar returns on the same bars (pandas Series on the same timestamps, or arrays of
    equal length); `*_trades` are per-trade returns. The annualisation comes from `timeframe` (e.g. `1h`),
    else `periods_per_year`, else the spacing of a DatetimeIndex.
    """
    cfg = config or ComparisonConfig()
    a, b = _aligned(champion_returns, challenger_returns)
    if timeframe is not None:
        ppy = periods_per_year_for(timeframe)
    elif periods_per_year is not None:
        ppy = float(periods_per_year)
    else:
        inferred = _infer_periods_per_year(champion_returns)
        if inferred is None:
            raise ValidationError(
                "cannot tell the bar frequency to annualise the Sharpe ratio",
                "pass timeframe (e.g. '1h'), periods_per_year, or Series with a DatetimeIndex",
            )
        ppy = inferred
    if ppy <= 0:
        raise ValidationError(f"periods_per_year must be positive, got {ppy}", "use e.g. 8760 for 1h bars")
    trades_a = np.asarray(champion_trades, dtype=float).ravel()
    trades_b = np.asarray(challenger_trades, dtype=float).ravel()
    if not (np.isfinite(trades_a).all() and np.isfinite(trades_b).all()):
        raise ValidationError("trade returns contain NaN or infinite values", "pass closed trades only")

    boot = bootstrap_sharpe_difference(
        a,
        b,
        periods_per_year=ppy,
        n_iterations=cfg.n_iterations,
        block_length=cfg.block_length,
        alpha=cfg.alpha,
        seed=cfg.seed,
    )
    champ = _metrics(a, trades_a, ppy)
    chall = _metrics(b, trades_b, ppy)
    welch_t, welch_p, mwu_u, mwu_p = _trade_tests(trades_a, trades_b)

    evidence = (
        f"Sharpe {_show(chall.sharpe)} vs {_show(champ.sharpe)} (Δ {boot.sharpe_diff:+.3f}, "
        f"{boot.confidence:.0%} CI [{boot.ci_low:+.3f}, {boot.ci_high:+.3f}], bootstrap p={boot.p_value:.4f})"
    )
    short = [
        f"{side} has {count} trades"
        for side, count in (("champion", champ.trade_count), ("challenger", chall.trade_count))
        if count < cfg.min_trades
    ]
    undefined = [
        f"{side} Sharpe is undefined ({metrics.sharpe_undefined})"
        for side, metrics in (("champion", champ), ("challenger", chall))
        if metrics.sharpe_undefined
    ]
    if short:
        decision = Decision.INCONCLUSIVE
        reason = f"too few trades: {' and '.join(short)}, below the minimum of {cfg.min_trades}; {evidence}"
    elif undefined:
        decision = Decision.INCONCLUSIVE
        reason = f"not enough evidence: {' and '.join(undefined)}; {evidence}"
    elif boot.p_value < cfg.alpha and boot.sharpe_diff > 0:
        decision = Decision.PROMOTE
        reason = f"challenger is significantly better at alpha={cfg.alpha}: {evidence}"
    elif boot.p_value < cfg.alpha and boot.sharpe_diff < 0:
        decision = Decision.KEEP
        reason = f"challenger is significantly worse at alpha={cfg.alpha}: {evidence}"
    else:
        decision = Decision.INCONCLUSIVE
        reason = f"no significant difference at alpha={cfg.alpha}: {evidence}"
    mde = minimum_detectable_difference(boot.standard_error or 0.0, cfg.alpha, DEFAULT_POWER)
    if decision is Decision.INCONCLUSIVE and np.array_equal(a, b):
        reason += f"; the two models' returns are identical on all {a.size} bars: nothing to tell apart"
    elif decision is Decision.INCONCLUSIVE:
        reason += (
            f"; this window ({a.size} bars) detects |ΔSharpe| ≥ {mde:.3f} with {DEFAULT_POWER:.0%} power at "
            f"alpha={cfg.alpha}, observed {boot.sharpe_diff:+.3f}"
        )
    logger.info("champion/challenger: %s — %s", decision.value, reason)

    return ComparisonResult(
        decision=decision,
        reason=reason,
        champion=champ,
        challenger=chall,
        sharpe_diff=boot.sharpe_diff,
        p_value=boot.p_value,
        ci_low=boot.ci_low,
        ci_high=boot.ci_high,
        confidence=boot.confidence,
        alpha=cfg.alpha,
        min_trades=cfg.min_trades,
        n_bars=int(a.size),
        periods_per_year=ppy,
        block_length=boot.block_length,
        n_iterations=boot.n_iterations,
        seed=cfg.seed,
        welch_t=welch_t,
        welch_p_value=welch_p,
        mann_whitney_u=mwu_u,
        mann_whitney_p_value=mwu_p,
        sharpe_diff_se=boot.standard_error,
        minimum_detectable_difference=mde,
        power=DEFAULT_POWER,
    )
