"""The hyperopt pre-screen: score parameter sets in milliseconds with a compiled exit simulation, let only
Freqtrade's scores decide, and know when the fast score cannot be trusted.

A study with the pre-screen explores many parameter sets with `simulate_trades` (compiled in
`tradai_core.prescreen_kernel`, fed by the strategy's own indicators and entry/exit signals), backtests
the best `top_k` of them with real Freqtrade, and keeps only Freqtrade's scores (best value, tuned
parameters, overfitting gate). Two guards:

* **agreement**: each study backtests a random sample of the explored parameter sets with Freqtrade too and
  measures the Spearman rank correlation between the two scores (`agreement`); below `min_spearman` the
  pre-screen switches itself off for the strategy and the study goes on with plain Freqtrade trials;
* **modelling**: a strategy overriding a callback the simulation does not model (`custom_exit`,
  `custom_stoploss`, position adjustment, …; `unmodellable_reasons`) is never pre-screened.

The Deflated Sharpe Ratio counts every parameter set the pre-screen explored, not only the confirmed ones:
the selection it corrects for happened among all of them (`tradai_core.hyperopt.study_deflated_sharpe`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradai_core.errors import ValidationError
from tradai_core.statistics import FREQTRADE_SENTINEL

MIN_SPEARMAN: Final[float] = 0.9
"""Rank agreement with Freqtrade below which the pre-screen switches itself off for a strategy."""

SETS_PER_SEARCH: Final[int] = 250
"""Parameter sets per independent TPE search of the exploration (`searches_for`). Where TPE settles depends
much on its seed, so a budget buys more as several seeded searches than as one long one; but on some
landscapes (RsiMeanReversion's) a search keeps improving for a few hundred sets, so searches are not
shorter than this."""

SAMPLERS_PER_SEARCH: Final[int] = 2
"""Seeded TPE samplers taking turns within one search of the exploration (`sampler_seeds`), each proposing
while the previous proposal is still pending, as a study's two workers do on its storage. One sampler
proposing one set at a time collapses onto the first good region it meets (BollingerBreakout, seed 7: 587
of 1000 explored sets had a stoploss within 0.05 of −0.30, 5 had one above −0.05, where the best sets are);
a pending proposal counts as a bad result for the next one (constant liar), which keeps a search spread."""

UNMODELLED_CALLBACKS: Final[dict[str, str]] = {
    "custom_exit": "custom_exit decides exits per trade",
    "custom_stoploss": "custom_stoploss moves the stop per trade",
    "custom_roi": "custom_roi changes the ROI table per trade",
    "custom_entry_price": "custom_entry_price sets its own entry prices",
    "custom_exit_price": "custom_exit_price sets its own exit prices",
    "custom_stake_amount": "custom_stake_amount sizes each trade",
    "adjust_trade_position": "adjust_trade_position changes positions while they are open",
    "adjust_entry_price": "adjust_entry_price re-prices open entry orders",
    "adjust_exit_price": "adjust_exit_price re-prices open exit orders",
    "confirm_trade_entry": "confirm_trade_entry may refuse entries",
    "confirm_trade_exit": "confirm_trade_exit may refuse exits",
    "check_entry_timeout": "check_entry_timeout cancels entry orders",
    "check_exit_timeout": "check_exit_timeout cancels exit orders",
    "order_filled": "order_filled reacts to fills",
    "leverage": "leverage sets a leverage",
    "bot_loop_start": "bot_loop_start runs code every candle",
}
"""Strategy callbacks the simulation does not model, and why each one rules it out."""


class Agreement(BaseModel):
    """How well the pre-screen ranked a sample of parameter sets as Freqtrade did, and the verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample: int = Field(description="Parameter sets scored by both.")
    spearman: float | None = Field(description="None when undefined (fewer than 3 sets, or a constant side).")
    threshold: float = MIN_SPEARMAN
    enabled: bool
    note: str


class PrescreenPlan(BaseModel):
    """How a study uses the pre-screen: how many parameter sets it explores, how many finalists and
    sampled sets Freqtrade backtests, and the agreement it demands (frozen; part of a worker's job)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    explore_trials: int = Field(ge=1, description="Parameter sets the pre-screen scores.")
    top_k: int = Field(ge=1, description="Best pre-screened sets Freqtrade backtests (the finalists).")
    agreement_sample: int = Field(ge=3, description="Random explored sets Freqtrade backtests for Spearman.")
    min_spearman: float = Field(default=MIN_SPEARMAN, ge=-1, le=1)
    seed: int = 0
    searches: int = Field(
        default=1, ge=1, description="Independent seeded TPE searches sharing explore_trials (searches_for)."
    )
    workers: int = Field(
        default=1, ge=1, description="Study-workers sharing the exploration and the Freqtrade confirmations."
    )
    exchange_dir: str | None = Field(
        default=None,
        description="Folder through which the workers tell each other what they explored and confirmed "
        "(required with more than one worker).",
    )

    @model_validator(mode="after")
    def _exchange_for_several(self) -> PrescreenPlan:
        if self.workers > 1 and not self.exchange_dir:
            raise ValueError(f"{self.workers} pre-screen workers need an exchange_dir to share their work")
        return self


def searches_for(explore_trials: int, workers: int = 1) -> int:
    """How many independent TPE searches explore `explore_trials` sets: one per `SETS_PER_SEARCH` sets, at
    least one per worker (and never more than there are sets)."""
    return max(1, min(explore_trials, max(workers, round(explore_trials / SETS_PER_SEARCH))))


def search_sizes(explore_trials: int, searches: int) -> list[int]:
    """Sets per search: `explore_trials` split as evenly as possible."""
    count = max(1, min(searches, explore_trials))
    base, extra = divmod(explore_trials, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def search_seed(seed: int, search: int) -> int:
    """Sampler seed of search `search`: `seed` itself for the first, as a study-worker's sampler."""
    return (seed + 7919 * search) % 2**32


def sampler_seeds(seed: int, search: int, samplers: int = SAMPLERS_PER_SEARCH) -> list[int]:
    """Seeds of the samplers taking turns in search `search`: the first is `search_seed` (so the first
    search's first sampler is the study's seed), the others far from every other search's seeds."""
    first = search_seed(seed, search)
    return [(first + 7_919_000 * k) % 2**32 for k in range(samplers)]


class PrescreenSummary(BaseModel):
    """What the pre-screen did in one study run (a worker's summary; metadata and MLflow show it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    used: bool = Field(description="False: the strategy fell back to plain Freqtrade trials (see note).")
    note: str
    explored: int = 0
    distinct: int = Field(default=0, description="Distinct parameter sets among the explored ones.")
    agreement: Agreement | None = None
    finalists: int = 0
    explore_seconds: float = 0.0
    signal_computations: int = 0
    unconfirmed_daily_sharpes: tuple[float, ...] = Field(
        default=(),
        description="Per-day Sharpe ratio of every explored set Freqtrade did not backtest (the DSR counts "
        "them as trials).",
    )

    @property
    def explored_per_minute(self) -> float:
        """Parameter sets scored per minute of exploration."""
        return self.explored / self.explore_seconds * 60 if self.explore_seconds > 0 else 0.0


class SimulationSettings(BaseModel):
    """What the simulation needs besides candles and signals: the strategy's exits, money and costs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    minimal_roi: dict[int, float] = Field(description="ROI table: minutes since entry → minimal profit.")
    stoploss: float
    trailing_stop: bool = False
    trailing_stop_positive: float | None = None
    trailing_stop_positive_offset: float = 0.0
    trailing_only_offset_is_reached: bool = False
    use_exit_signal: bool = True
    exit_profit_only: bool = False
    exit_profit_offset: float = 0.0
    ignore_roi_if_entry_signal: bool = False
    max_open_trades: int = 3
    stake_amount: float | None = Field(default=None, description="None: 'unlimited' (equal split).")
    starting_balance: float = Field(default=1000.0, gt=0)
    tradable_balance_ratio: float = Field(default=0.99, gt=0, le=1)
    fee: float = Field(default=0.001, ge=0)
    timeframe_minutes: int = Field(gt=0)


class MarketArrays(BaseModel):
    """Candles and shifted signals of every pair on one candle grid (the simulation's input)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    pairs: tuple[str, ...]
    dates: pd.DatetimeIndex
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    enter: np.ndarray
    exit: np.ndarray
    valid: np.ndarray
    last_row: np.ndarray
    tick: np.ndarray
    step: np.ndarray


def market_arrays(
    frames: Mapping[str, pd.DataFrame],
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    tick: Mapping[str, pd.Series | float | None] | None = None,
    step: Mapping[str, float | None] | None = None,
) -> MarketArrays:
    """The simulation's input from per-pair frames with `date`, OHLC and `enter_long`/`exit_long` columns
    (what `populate_entry_trend`/`populate_exit_trend` returned), as Freqtrade's backtest sees them: the
    candles from `start` to `end` (inclusive), signals shifted by one candle within each pair, the first
    candle dropped; the grid runs from one candle after `start` to `end`. `tick` is each pair's price tick,
    fixed or over time (Freqtrade's `price_pair_prec`, read as of each candle), `step` its amount step
    (missing or 0: no rounding)."""
    pairs = tuple(frames)
    if not pairs:
        raise ValidationError("no pairs to simulate", "give the pre-screen at least one pair")
    trimmed: dict[str, pd.DataFrame] = {}
    for pair, frame in frames.items():
        dates = pd.to_datetime(frame["date"], utc=True)
        part = frame.loc[(dates >= start) & (dates <= end)]
        shifted = pd.DataFrame(
            {
                "date": pd.to_datetime(part["date"], utc=True),
                "open": part["open"].to_numpy(float),
                "high": part["high"].to_numpy(float),
                "low": part["low"].to_numpy(float),
                "close": part["close"].to_numpy(float),
                "enter": _signal(part, "enter_long").shift(1, fill_value=0.0).to_numpy() == 1,
                "exit": _signal(part, "exit_long").shift(1, fill_value=0.0).to_numpy() == 1,
            }
        ).iloc[1:]
        trimmed[pair] = shifted
    grid = pd.DatetimeIndex(sorted(set().union(*(set(f["date"]) for f in trimmed.values()))))
    shape = (len(pairs), len(grid))
    arrays = {name: np.zeros(shape, float) for name in ("open", "high", "low", "close")}
    flags = {name: np.zeros(shape, bool) for name in ("enter", "exit", "valid")}
    last_row = np.zeros(len(pairs), np.int64)
    for i, pair in enumerate(pairs):
        frame = trimmed[pair]
        where = grid.get_indexer(pd.DatetimeIndex(frame["date"]))
        for name in arrays:
            arrays[name][i, where] = frame[name].to_numpy()
        flags["enter"][i, where] = frame["enter"].to_numpy()
        flags["exit"][i, where] = frame["exit"].to_numpy()
        flags["valid"][i, where] = True
        last_row[i] = where.max() if where.size else 0
    return MarketArrays(
        pairs=pairs,
        dates=grid,
        **arrays,
        **flags,
        last_row=last_row,
        tick=np.vstack([_ticks((tick or {}).get(p), grid) for p in pairs]),
        step=np.array([float((step or {}).get(p) or 0.0) for p in pairs]),
    )


def _ticks(tick: pd.Series | float | None, grid: pd.DatetimeIndex) -> np.ndarray:
    if isinstance(tick, pd.Series):
        values = tick.sort_index().asof(grid).to_numpy(dtype=float)
        return np.nan_to_num(values, nan=0.0)
    return np.full(len(grid), float(tick or 0.0))


def _signal(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(0.0, index=frame.index)
    return frame[column].fillna(0.0).astype(float)


def with_signals(market: MarketArrays, signals: Mapping[str, pd.DataFrame]) -> MarketArrays:
    """`market` with the entry/exit signals of `signals` (same pairs, same frames) instead of its own."""
    other = market_arrays(signals, market.dates[0] - (market.dates[1] - market.dates[0]), market.dates[-1])
    return market.model_copy(update={"enter": other.enter, "exit": other.exit})


def simulate_trades(market: MarketArrays, settings: SimulationSettings) -> pd.DataFrame:
    """The trades Freqtrade's backtest would make (see `tradai_core.prescreen_kernel`), one row each:
    pair, open_date, close_date, open_rate, close_rate, amount, profit_abs, profit_ratio, exit_reason;
    sorted by close date as Freqtrade's results are."""
    from tradai_core.prescreen_kernel import EXIT_REASONS, simulate  # Numba: imported on first use

    roi = sorted(settings.minimal_roi.items())
    pair, opened, closed, open_rate, close_rate, amount, profit, reason = simulate(
        market.open,
        market.high,
        market.low,
        market.close,
        market.enter,
        market.exit,
        market.valid,
        market.last_row,
        np.array([m for m, _ in roi], np.int64),
        np.array([v for _, v in roi], np.float64),
        float(settings.stoploss),
        bool(settings.trailing_stop),
        math.nan if settings.trailing_stop_positive is None else float(settings.trailing_stop_positive),
        float(settings.trailing_stop_positive_offset),
        bool(settings.trailing_only_offset_is_reached),
        bool(settings.use_exit_signal),
        bool(settings.exit_profit_only),
        float(settings.exit_profit_offset),
        bool(settings.ignore_roi_if_entry_signal),
        int(settings.max_open_trades),
        math.nan if settings.stake_amount is None else float(settings.stake_amount),
        float(settings.starting_balance),
        float(settings.tradable_balance_ratio),
        float(settings.fee),
        market.tick,
        market.step,
        int(settings.timeframe_minutes),
    )
    open_value = amount * open_rate * (1 + settings.fee)
    trades = pd.DataFrame(
        {
            "pair": np.array(market.pairs, dtype=object)[pair] if len(pair) else np.array([], dtype=object),
            "open_date": market.dates[opened],
            "close_date": market.dates[closed],
            "open_rate": open_rate,
            "close_rate": close_rate,
            "amount": amount,
            "profit_abs": profit,
            "profit_ratio": np.divide(profit, open_value, out=np.zeros_like(profit), where=open_value != 0),
            "exit_reason": [EXIT_REASONS[int(r)] for r in reason],
        }
    )
    return trades.sort_values("close_date", kind="stable").reset_index(drop=True)


# -- scores, with Freqtrade's formulas (freqtrade.data.metrics)


def _annualized(mean: float, denominator: float) -> float:
    if denominator != 0 and not math.isnan(denominator):
        return float(mean / denominator * math.sqrt(365))
    return FREQTRADE_SENTINEL


def trade_statistics(
    profits_abs: np.ndarray, start: pd.Timestamp, end: pd.Timestamp, starting_balance: float
) -> dict[str, float]:
    """Freqtrade's Sharpe, Sortino, Calmar and total profit of a trade list (`profits_abs` in closing
    order) over [start, end], with its sentinel −100 where a denominator is zero, and 0 without trades."""
    count = int(profits_abs.size)
    stats = {"total_trades": count, "profit_total": float(profits_abs.sum() / starting_balance)}
    if count == 0 or start == end:
        return {**stats, "sharpe": 0.0, "sortino": 0.0, "calmar": 0.0}
    returns = profits_abs / starting_balance
    days = max(1, (end - start).days)
    mean = float(returns.sum()) / days
    losses = returns[returns < 0]
    down = float(np.std(losses)) if losses.size else math.nan
    balance = starting_balance + np.concatenate(([0.0], np.cumsum(profits_abs)))
    peak = np.maximum.accumulate(balance)
    drawdown = peak - balance
    worst = int(np.argmax(drawdown))
    relative = float(drawdown[worst] / peak[worst]) if drawdown[worst] > 0 else 0.0
    calmar = _annualized(stats["profit_total"] / days * 100, relative) if relative > 0 else 0.0
    return {
        **stats,
        "sharpe": _annualized(mean, float(np.std(returns))),
        "sortino": _annualized(mean, down),
        "calmar": calmar,
    }


def fast_daily_returns(
    close_dates: np.ndarray, profits_abs: np.ndarray, start: pd.Timestamp, end: pd.Timestamp, balance: float
) -> np.ndarray:
    """`tradai_core.hyperopt.daily_returns` in NumPy (same days, same clipping, same balance rule), for
    the thousands of parameter sets a pre-screen scores; `close_dates` as datetime64[ns] (UTC)."""
    day = np.int64(86_400_000_000_000)
    first = pd.Timestamp(start).tz_convert("UTC").floor("D") if pd.Timestamp(start).tzinfo else None
    first = first if first is not None else pd.Timestamp(start).floor("D")
    end_utc = pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo else pd.Timestamp(end)
    last = end_utc.floor("D")
    if last == end_utc and last > first:
        last -= pd.Timedelta(days=1)
    n_days = int((last - first).days) + 1
    first_ns = np.int64(first.value)
    index = (close_dates.astype("datetime64[ns]").astype(np.int64) - first_ns) // day
    index = np.clip(index, 0, n_days - 1)
    pnl = np.bincount(index, weights=profits_abs, minlength=n_days)[:n_days]
    before = balance + np.concatenate(([0.0], np.cumsum(pnl)[:-1]))
    return pnl / before


# -- agreement with Freqtrade, and what the simulation cannot model


def spearman(first: Sequence[float], second: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    a = pd.Series(list(first), dtype=float)
    b = pd.Series(list(second), dtype=float)
    if a.size != b.size:
        raise ValidationError(f"{a.size} scores against {b.size}", "pair every pre-screen score with one")
    if a.size < 3 or a.nunique() < 2 or b.nunique() < 2:
        return math.nan
    return float(a.rank().corr(b.rank()))


def agreement(
    prescreen_scores: Sequence[float], freqtrade_scores: Sequence[float], threshold: float = MIN_SPEARMAN
) -> Agreement:
    """The verdict on a sample: the pre-screen stays on only when Spearman ≥ `threshold`."""
    rho = spearman(prescreen_scores, freqtrade_scores)
    n = len(prescreen_scores)
    if math.isnan(rho):
        return Agreement(
            sample=n,
            spearman=None,
            threshold=threshold,
            enabled=False,
            note=f"pre-screen off: rank agreement undefined on {n} sampled parameter sets "
            "(too few, or one side scored them all alike)",
        )
    on = rho >= threshold
    return Agreement(
        sample=n,
        spearman=rho,
        threshold=threshold,
        enabled=on,
        note=(
            f"pre-screen on: Spearman {rho:.3f} ≥ {threshold:g} against Freqtrade on {n} sampled sets"
            if on
            else f"pre-screen switched off for this strategy: Spearman {rho:.3f} < {threshold:g} against "
            f"Freqtrade on {n} sampled sets; plain Freqtrade trials instead"
        ),
    )


def unmodellable_reasons(overridden: Iterable[str], *, position_adjustment: bool = False) -> list[str]:
    """Why the simulation cannot model a strategy that overrides the callbacks `overridden` (empty: it
    can). `position_adjustment` is the strategy's `position_adjustment_enable`."""
    reasons = [UNMODELLED_CALLBACKS[name] for name in sorted(set(overridden)) if name in UNMODELLED_CALLBACKS]
    if position_adjustment:
        reasons.append("position_adjustment_enable changes positions while they are open")
    return reasons


def sample_indices(count: int, size: int, seed: int) -> list[int]:
    """`size` distinct indices out of `count`, drawn with `seed` (all of them when `size` ≥ `count`)."""
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(count, size=min(size, count), replace=False))
