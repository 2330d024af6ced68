"""Hyperparameter optimization, the plain parts: search space, windows, objective, and the overfitting gate.

Nothing here runs a backtest or touches storage; the study itself runs in
`tradai_resources.freqtrade_hyperopt` (Optuna over Freqtrade backtests in child processes).

- **Search space** (`SearchSpace`, `ParameterSpec`): a frozen, JSON-ready set of plain Optuna
  distributions. Reading it from a strategy class needs Freqtrade, so that lives beside the resource that
  runs the study (`tradai_resources.hyperopt_space`).
- **Windows** (`hyperopt_windows`): in-sample and out-of-sample windows that never overlap each other or
  the holdout.
- **Objective** (`objective_value`): a number to maximise, from Freqtrade's own statistics (Sharpe,
  Sortino, profit or Calmar) with a penalty below a minimum trade count.
- **Daily returns** (`daily_returns`, `return_stats`): the realized daily returns of a trade list, whose
  per-day Sharpe ratio, skewness and kurtosis feed the Deflated Sharpe Ratio.
- **Gate** (`study_deflated_sharpe`, `oos_collapse_reasons`, `overfitting_gate`): the DSR of the best trial
  given every distinct trial, and the rule that says out-of-sample performance collapsed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradai_core.deflated_sharpe import DeflatedSharpeResult, deflated_sharpe_ratio, return_moments
from tradai_core.errors import ValidationError
from tradai_core.lazy import LazyModule
from tradai_core.prescreen import PrescreenSummary
from tradai_core.statistics import FREQTRADE_SENTINEL, GUARDED_STATISTICS

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

_distributions = LazyModule("optuna.distributions")  # imported on first use, not at code-location load

ParamValue = int | float | bool | str

PARAMETER_SPACES: Final[tuple[str, ...]] = ("buy", "sell")
"""Spaces of the strategy's own hyperoptable parameters (the ones `StrategyConfig` has fields for)."""
TUNABLE_SPACES: Final[tuple[str, ...]] = ("buy", "sell", "roi", "stoploss")
"""Every space a study may tune."""

MIN_TRADES_PENALTY: Final[float] = -1000.0
"""Objective of a trial with fewer trades than the minimum: this, minus the shortfall in trades.

Far below any real Sharpe/Sortino/Calmar/profit, so such trials never win, while the shortfall still
ranks them (closer to the minimum is better) for the sampler."""


UNDEFINED_OBJECTIVE: Final[float] = MIN_TRADES_PENALTY
"""Objective of a trial whose statistic is undefined (no variance, no losing trade, no drawdown): far below
any real value, like too few trades; the trial's record says why (`TrialRecord.undefined`)."""


class Objective(StrEnum):
    """What a study maximises; each is Freqtrade's own statistic of the in-sample backtest."""

    SHARPE = "sharpe"
    SORTINO = "sortino"
    PROFIT = "profit"
    CALMAR = "calmar"

    @property
    def stat_key(self) -> str:
        """The key of Freqtrade's strategy statistics holding this objective."""
        return {"sharpe": "sharpe", "sortino": "sortino", "profit": "profit_total", "calmar": "calmar"}[
            self.value
        ]


# -- search space


class ParameterSpec(BaseModel):
    """One tuned parameter: its name, space and Optuna distribution, in plain JSON-ready fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    space: str
    kind: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    decimals: int | None = Field(
        default=None, description="Sampled floats are rounded to this many decimals (Freqtrade's Decimal)."
    )
    choices: tuple[ParamValue, ...] | None = None
    default: ParamValue | None = Field(
        default=None, description="The strategy's own value (None for roi/stoploss, set elsewhere)."
    )

    @model_validator(mode="after")
    def _check(self) -> ParameterSpec:
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"categorical parameter {self.name} needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"numeric parameter {self.name} needs low <= high")
        return self

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution this parameter is sampled from."""
        if self.kind == "int":
            assert self.low is not None and self.high is not None
            return _distributions.IntDistribution(
                int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            assert self.low is not None and self.high is not None
            return _distributions.FloatDistribution(self.low, self.high, step=self.step, log=self.log)
        assert self.choices is not None
        return _distributions.CategoricalDistribution(list(self.choices))

    def suggest(self, trial: Any) -> ParamValue:
        """Sample a value through Optuna's public `trial.suggest_*` API (rounded like Freqtrade would)."""
        if self.kind == "int":
            assert self.low is not None and self.high is not None
            return int(
                trial.suggest_int(
                    self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
                )
            )
        if self.kind == "float":
            assert self.low is not None and self.high is not None
            value = float(trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log))
            return self.normalize(value)
        assert self.choices is not None
        return trial.suggest_categorical(self.name, list(self.choices))

    def normalize(self, value: ParamValue) -> ParamValue:
        """`value` as the strategy sees it: floats rounded to the parameter's decimals."""
        if self.kind == "float" and self.decimals is not None and isinstance(value, int | float):
            return round(float(value), self.decimals)
        if self.kind == "int" and isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return value


class SearchSpace(BaseModel):
    """Every parameter one study tunes, grouped by Freqtrade space (frozen, JSON-ready)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    timeframe: str
    spaces: tuple[str, ...]
    parameters: tuple[ParameterSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in sampling order."""
        return tuple(p.name for p in self.parameters)

    def in_space(self, space: str) -> tuple[ParameterSpec, ...]:
        """The parameters of one space."""
        return tuple(p for p in self.parameters if p.space == space)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Name → Optuna distribution."""
        return {p.name: p.distribution() for p in self.parameters}

    def fingerprint(self) -> str:
        """sha256 of the space's JSON: equal spaces, equal fingerprints."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


# -- windows


class HyperoptWindows(BaseModel):
    """In-sample `[in_sample_start, oos_start)` and out-of-sample `[oos_start, oos_end)` (days, UTC).

    Both lie before the holdout: the out-of-sample window ends where the holdout starts, and the
    in-sample window ends where the out-of-sample one starts, so neither overlaps the other or the
    holdout (which stays untouched for the final backtest report).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    in_sample_start: date
    oos_start: date
    oos_end: date

    @model_validator(mode="after")
    def _check(self) -> HyperoptWindows:
        if not self.in_sample_start < self.oos_start < self.oos_end:
            raise ValueError("windows must satisfy in_sample_start < oos_start < oos_end")
        return self

    @property
    def in_sample_timerange(self) -> str:
        """Freqtrade timerange of the in-sample window."""
        return f"{self.in_sample_start:%Y%m%d}-{self.oos_start:%Y%m%d}"

    @property
    def oos_timerange(self) -> str:
        """Freqtrade timerange of the out-of-sample window."""
        return f"{self.oos_start:%Y%m%d}-{self.oos_end:%Y%m%d}"


def hyperopt_windows(holdout_start: date, in_sample_days: int, oos_days: int) -> HyperoptWindows:
    """The `oos_days` before the holdout are out-of-sample; the `in_sample_days` before those, in-sample."""
    if in_sample_days < 1 or oos_days < 1:
        raise ValidationError(
            f"in-sample ({in_sample_days}) and out-of-sample ({oos_days}) windows must be ≥ 1 day",
            "give both windows a positive number of days",
        )
    oos_start = holdout_start - timedelta(days=oos_days)
    return HyperoptWindows(
        in_sample_start=oos_start - timedelta(days=in_sample_days), oos_start=oos_start, oos_end=holdout_start
    )


def default_study_name(strategy: str, in_sample_timerange: str, objective: Objective | str) -> str:
    """`<Strategy>-<in-sample timerange>-<objective>`: one study per strategy, window and objective."""
    return f"{strategy}-{in_sample_timerange}-{Objective(objective).value}"


def study_fingerprint(parts: Mapping[str, Any]) -> str:
    """sha256 of what makes trials comparable (search space, pairs, fixed parameters, costs...).

    A study resumed with a different fingerprint would mix trials that measured different things."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# -- objective and returns


def objective_value(
    stats: Mapping[str, Any],
    objective: Objective | str,
    min_trades: int,
    undefined: Collection[str] = (),
) -> float:
    """The value a trial scores: Freqtrade's `stats[objective]`, or a penalty below `min_trades` trades.

    `stats` is Freqtrade's strategy statistics (as `generate_strategy_stats` makes them, or any mapping
    with `total_trades` and the objective's key). A statistic the trades leave undefined — named in
    `undefined` (`tradai_core.statistics.undefined_reasons`), or Freqtrade's −100 sentinel, or not finite —
    is no measurement: it scores `UNDEFINED_OBJECTIVE`, below every real value, never the sentinel itself
    (a −100 Sortino would otherwise outrank a real −150 and lose to a real −50 for no reason). The same
    function scores a study's trials and a plain backtest, so the two can be compared exactly.
    """
    trades = int(stats["total_trades"])
    if trades < min_trades:
        return MIN_TRADES_PENALTY - float(min_trades - trades)
    key = Objective(objective).stat_key
    value = float(stats[key])
    if key in undefined or (key in GUARDED_STATISTICS and value == FREQTRADE_SENTINEL):
        return UNDEFINED_OBJECTIVE
    return value if math.isfinite(value) else UNDEFINED_OBJECTIVE


def _utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def daily_returns(
    close_dates: Iterable[datetime] | pd.Series,
    profits: Iterable[float] | pd.Series,
    start: datetime,
    end: datetime,
    starting_balance: float,
) -> np.ndarray:
    """Realized daily returns of a trade list over the UTC days from `start`'s day to `end`'s (a day
    starting exactly at `end` is not included).

    Each trade's profit counts on the day it closes; a day's return is its profit over the realized
    balance at the start of the day (starting balance + profits closed before). Days without a closing
    trade return 0, so the series has one value per calendar day of the window.
    """
    if starting_balance <= 0:
        raise ValidationError(f"starting balance must be positive, got {starting_balance}", "fix the run")
    first = _utc(start).floor("D")
    last = _utc(end).floor("D")
    if last == _utc(end) and last > first:  # a window ending at midnight does not trade that day
        last -= pd.Timedelta(days=1)
    days = pd.date_range(first, last, freq="D")
    closes = pd.to_datetime(pd.Series(list(close_dates), dtype=object), utc=True).dt.floor("D")
    # a trade closing outside the window (e.g. force-closed at its very end) counts on the nearest day
    closes = closes.clip(lower=first, upper=last)
    per_day = pd.Series(list(profits), index=closes.to_numpy(), dtype=float).groupby(level=0).sum()
    pnl = per_day.reindex(days, fill_value=0.0).to_numpy(dtype=float)
    balance_before = starting_balance + np.concatenate(([0.0], np.cumsum(pnl)[:-1]))
    return pnl / balance_before


class ReturnStats(BaseModel):
    """Per-day Sharpe ratio (not annualised), skewness, plain kurtosis and length of daily returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sharpe: float
    skewness: float
    kurtosis: float
    n_days: int
    defined: bool = Field(description="False when the returns are constant (e.g. no trade): Sharpe 0.")


def return_stats(returns: np.ndarray | Sequence[float]) -> ReturnStats:
    """The moments DSR needs; constant returns (no trade) give Sharpe 0, skewness 0, kurtosis 3."""
    values = np.asarray(returns, dtype=float)
    if values.size >= 3 and np.isfinite(values).all() and float(np.std(values, ddof=1)) > 0:
        moments = return_moments(values)
        return ReturnStats(
            sharpe=moments.sharpe,
            skewness=moments.skewness,
            kurtosis=moments.kurtosis,
            n_days=moments.n_obs,
            defined=True,
        )
    return ReturnStats(sharpe=0.0, skewness=0.0, kurtosis=3.0, n_days=int(values.size), defined=False)


# -- trials and the gate


class TrialRecord(BaseModel):
    """One finished trial of a study, as stored in its Optuna user attributes (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int
    value: float
    params: dict[str, ParamValue]
    trades: int
    sharpe: float = Field(description="Freqtrade's (annualised) Sharpe ratio of the in-sample backtest.")
    sortino: float
    calmar: float
    profit_total: float
    max_drawdown: float
    daily: ReturnStats
    buy_params: dict[str, ParamValue] = Field(default_factory=dict)
    sell_params: dict[str, ParamValue] = Field(default_factory=dict)
    roi: dict[str, float] | None = None
    stoploss: float | None = None
    duplicate_of: int | None = Field(
        default=None, description="Number of the earlier trial with the same parameters (not re-run)."
    )
    worker: int = 0
    seconds: float = 0.0
    undefined: dict[str, str] = Field(
        default_factory=dict,
        description="Statistics the trial's trades leave undefined, and why; such a statistic's stored "
        "number is Freqtrade's sentinel, not a measurement, and as the objective it scores "
        "UNDEFINED_OBJECTIVE.",
    )


def distinct_trials(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Trials that ran a backtest of their own (a repeated parameter set is one trial, not two)."""
    return [t for t in trials if t.duplicate_of is None]


def best_trial(trials: Sequence[TrialRecord]) -> TrialRecord:
    """The trial with the highest value (the earliest on ties)."""
    if not trials:
        raise ValidationError("the study has no finished trial", "run the study with n_trials ≥ 1")
    return max(trials, key=lambda t: (t.value, -t.number))


def study_deflated_sharpe(
    trials: Sequence[TrialRecord], best: TrialRecord, unconfirmed_sharpes: Sequence[float] = ()
) -> DeflatedSharpeResult:
    """DSR of the best trial's in-sample daily returns, deflated for every distinct trial of the study.

    N is the number of distinct parameter sets tried, V the variance of their per-day Sharpe ratios (the
    selection the DSR corrects for happened among them), and the best trial's own per-day Sharpe ratio,
    skewness, kurtosis and number of days are the track record (Bailey & López de Prado 2014). Parameter
    sets a pre-screen explored without Freqtrade backtesting them were tried too: `unconfirmed_sharpes`
    (their per-day Sharpe ratios, from the pre-screen) count in N and V. Raises ValidationError when the
    best trial has no defined Sharpe ratio (no trade, constant returns).
    """
    if not best.daily.defined:
        raise ValidationError(
            f"trial {best.number} has constant daily returns (no trade); its Sharpe ratio is undefined",
            "widen the in-sample window or lower min_trades so trials trade",
        )
    distinct = distinct_trials(trials) or [best]
    sharpes = np.array([t.daily.sharpe for t in distinct] + list(unconfirmed_sharpes), dtype=float)
    variance = float(np.var(sharpes, ddof=1)) if sharpes.size > 1 else 0.0
    return deflated_sharpe_ratio(
        best.daily.sharpe,
        best.daily.n_days,
        int(sharpes.size),
        variance,
        skewness=best.daily.skewness,
        kurtosis=best.daily.kurtosis,
    )


class OOSRule(BaseModel):
    """When out-of-sample performance counts as collapsed (Freqtrade's annualised Sharpe ratios)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_sharpe: float = Field(default=0.0, description="OOS Sharpe below this is a collapse.")
    min_fraction: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="OOS Sharpe below this fraction of the in-sample Sharpe (when that is positive) is a "
        "collapse; 0 turns this rule off.",
    )
    min_trades: int = Field(default=1, ge=0, description="Fewer OOS trades than this is a collapse.")


def oos_collapse_reasons(
    in_sample_sharpe: float,
    oos_sharpe: float | None,
    oos_trades: int,
    rule: OOSRule,
    oos_sharpe_undefined: str | None = None,
) -> list[str]:
    """Why out-of-sample performance collapsed (or cannot be shown to hold) under `rule`; empty when it
    held. An undefined out-of-sample Sharpe (None) is not enough evidence that it held, unless the rule
    asks for no out-of-sample evidence at all (`min_trades=0`); its Sharpe rules are then not applied."""
    reasons = []
    if oos_trades < rule.min_trades:
        reasons.append(f"{oos_trades} out-of-sample trades, fewer than {rule.min_trades}")
    if oos_sharpe is None:
        if rule.min_trades == 0:
            return reasons
        reasons.append(
            f"out-of-sample Sharpe is undefined ({oos_sharpe_undefined or 'no variance'}): not enough "
            "evidence that performance held"
        )
        return reasons
    if oos_sharpe < rule.min_sharpe:
        reasons.append(f"out-of-sample Sharpe {oos_sharpe:.2f} is below {rule.min_sharpe:.2f}")
    if rule.min_fraction > 0 and in_sample_sharpe > 0 and oos_sharpe < rule.min_fraction * in_sample_sharpe:
        reasons.append(
            f"out-of-sample Sharpe {oos_sharpe:.2f} is below {rule.min_fraction:.0%} of the in-sample "
            f"{in_sample_sharpe:.2f}"
        )
    return reasons


class GateDecision(BaseModel):
    """The overfitting gate's verdict on a study's best parameters, with its reasons (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    dsr: float | None
    dsr_threshold: float
    oos_collapsed: bool
    reasons: tuple[str, ...]

    def summary(self) -> str:
        """One line for the UI."""
        dsr = "n/a" if self.dsr is None else f"{self.dsr:.3f}"
        if self.passed:
            return f"passed: DSR {dsr} ≥ {self.dsr_threshold:.3f} and out-of-sample performance held"
        return "refused: " + "; ".join(self.reasons)


def overfitting_gate(
    dsr: DeflatedSharpeResult | None,
    dsr_threshold: float,
    in_sample_sharpe: float,
    oos_sharpe: float | None,
    oos_trades: int,
    rule: OOSRule,
    dsr_problem: str | None = None,
    oos_sharpe_undefined: str | None = None,
) -> GateDecision:
    """Pass only when DSR ≥ `dsr_threshold` and out-of-sample performance did not collapse."""
    reasons: list[str] = []
    if dsr is None:
        reasons.append(f"DSR could not be computed: {dsr_problem or 'unknown reason'}")
    elif dsr.dsr < dsr_threshold:
        reasons.append(
            f"DSR {dsr.dsr:.3f} is below {dsr_threshold:.3f}: after {dsr.n_trials} trials the best in-sample "
            f"Sharpe is what luck alone would likely find"
        )
    collapse = oos_collapse_reasons(in_sample_sharpe, oos_sharpe, oos_trades, rule, oos_sharpe_undefined)
    reasons.extend(collapse)
    return GateDecision(
        passed=not reasons,
        dsr=None if dsr is None else dsr.dsr,
        dsr_threshold=dsr_threshold,
        oos_collapsed=bool(collapse),
        reasons=tuple(reasons),
    )


# -- studies


class StudySpec(BaseModel):
    """How one study runs: trial budget, parallelism, seed, objective and what it tunes (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_trials: int = Field(default=50, ge=1, description="Trials to run now (a resumed study adds these).")
    workers: int = Field(default=2, ge=1, description="Study-worker processes (one per core).")
    seed: int = Field(default=42, ge=0, description="Seed of the TPE sampler.")
    objective: Objective = Objective.SHARPE
    min_trades: int = Field(default=10, ge=0, description="Trials with fewer trades score a penalty.")
    spaces: tuple[str, ...] | None = Field(
        default=None,
        description="Spaces to tune (buy, sell, roi, stoploss); None: what the strategy declares.",
    )
    startup_trials: int = Field(default=10, ge=1, description="Random trials before TPE models the space.")
    time_budget_seconds: float | None = Field(
        default=None, gt=0, description="Stop each worker after this much wall time (set-up included)."
    )
    study_name: str | None = Field(default=None, description="Default: <Strategy>-<timerange>-<objective>.")
    prescreen: bool = Field(
        default=False,
        description="Explore with the compiled pre-screen; Freqtrade then backtests a random sample (rank "
        "agreement) and the best n_trials (the finalists). One study-worker.",
    )
    prescreen_trials: int = Field(default=500, ge=1, description="Parameter sets the pre-screen explores.")
    agreement_sample: int = Field(
        default=10, ge=3, description="Explored sets Freqtrade backtests to measure the rank agreement."
    )


def worker_shares(n_trials: int, workers: int) -> list[int]:
    """How many trials each worker runs: as even as possible, never a worker with none."""
    count = max(1, min(workers, n_trials))
    return [n_trials // count + (1 if i < n_trials % count else 0) for i in range(count)]


def worker_seed(seed: int, worker_index: int, trials_before: int) -> int:
    """Sampler seed of one worker: `seed` itself for the first worker of a fresh study; shifted by the
    trials already in the study (a resumed study does not replay its first random trials) and by the
    worker's index (parallel workers do not sample the same points)."""
    return (seed + trials_before + 7919 * worker_index) % 2**32


class StudyReport(BaseModel):
    """A study after a run: every finished trial, the best one, its DSR, and how the run went (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    study_name: str
    storage: str = Field(description="Storage URL without credentials.")
    spec: StudySpec
    search_space: SearchSpace
    timerange: str
    pairs: tuple[str, ...]
    trials_before: int = Field(description="Finished trials before this run.")
    trials: tuple[TrialRecord, ...] = Field(description="Every finished trial, this run's and earlier.")
    best: TrialRecord
    dsr: DeflatedSharpeResult | None
    dsr_problem: str | None = None
    importances: dict[str, float] = Field(default_factory=dict)
    indicators_once: bool
    static_parameters: tuple[str, ...] = ()
    seconds: float = Field(description="Wall time of this run, worker start-up included.")
    prescreen: PrescreenSummary | None = Field(
        default=None, description="What the pre-screen did in this run (None: not asked for)."
    )
    prescreened_total: int = Field(
        default=0, description="Explored parameter sets Freqtrade never backtested, over the study's runs."
    )

    @property
    def trials_total(self) -> int:
        """Finished trials of the study."""
        return len(self.trials)

    @property
    def trials_run(self) -> int:
        """Trials finished by this run."""
        return self.trials_total - self.trials_before

    @property
    def distinct_trials(self) -> int:
        """Finished trials with a parameter set of their own, plus the sets only the pre-screen scored
        (N of the DSR)."""
        return len(distinct_trials(self.trials)) + self.prescreened_total

    @property
    def trials_per_minute(self) -> float:
        """This run's finished trials per minute of wall time."""
        return self.trials_run / self.seconds * 60 if self.seconds > 0 else 0.0
