"""Walk-forward simulation of the model loop, the pure part: the clock's steps, when each retraining
policy retrains, the champion timeline, and the policy table. No Dagster, no I/O.

The engine (`tradai_assets.model_loop_simulation`) moves the clock through `SimulationPlan.steps`, does the
real work at each step (ingest, features, drift, training, Freqtrade backtests) and hands the results to
the functions here. The rules that keep it honest:

- **Step k** has the clock at `t_k`. Its challenger trains on `[t_k − validation − train, t_k − validation)`,
  is validated against the champion on `[t_k − validation, t_k)` (neither trained on it), and the champion
  chosen at `t_k` trades `[t_k, t_{k+1})`. That trading is backtested only at step k+1, once the clock is at
  `t_{k+1}`: nothing is read after the clock.
- **Policies** differ only in *when* they retrain: `never` (the bootstrap model forever), `weekly` (every
  step of at least 7 days), `monthly` (the first step of each calendar month), `drift` (when the drift
  sensor's rule, `decide_drift_action`, says retrain; its cooldown applies). They share the challengers (one
  per step) and every backtest (memoized by model version and window), so four policies cost little more
  than one.
- **The table** scores each policy's stitched out-of-sample returns (the champion in force at each moment),
  tests its Sharpe difference against `never` with the paired block bootstrap of `tradai_core.comparison`,
  and deflates the best policy's edge for the number of policies tried (`tradai_core.deflated_sharpe`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradai_core.comparison import annualized_sharpe, bootstrap_sharpe_difference
from tradai_core.deflated_sharpe import deflated_sharpe_from_returns, return_moments
from tradai_core.errors import ValidationError

PolicyName = Literal["never", "weekly", "monthly", "drift"]
POLICIES: tuple[PolicyName, ...] = ("never", "weekly", "monthly", "drift")
WEEK = timedelta(days=7)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class SimulationPlan(BaseModel):
    """The period, the step, and the windows every step uses (all days, UTC midnights)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: date = Field(
        description="The first clock value: the bootstrap model is trained and promoted here."
    )
    end: date = Field(description="The last clock value: the last step's trading is evaluated up to here.")
    step_days: int = Field(default=7, ge=1, description="Days the clock advances per step.")
    validation_days: int = Field(
        default=7, ge=1, description="Out-of-sample days before the clock on which challengers are judged."
    )
    train_days: int = Field(default=180, ge=14, description="Days of the sliding training window.")

    @model_validator(mode="after")
    def _check(self) -> SimulationPlan:
        if self.end <= self.start:
            raise ValueError(f"the simulation ends ({self.end}) on or before it starts ({self.start})")
        if (self.end - self.start).days < self.step_days:
            raise ValueError(
                f"the period {self.start} → {self.end} is shorter than one step of {self.step_days} days"
            )
        return self

    @property
    def steps(self) -> list[datetime]:
        """The clock values `t_0 … t_N` (the last at or before `end`)."""
        moments, at = [], _midnight(self.start)
        while at <= _midnight(self.end):
            moments.append(at)
            at += timedelta(days=self.step_days)
        return moments

    def training_window(self, at: datetime) -> tuple[datetime, datetime]:
        """`[start, end)` of the challenger trained at clock `at`: it ends where validation begins."""
        end = at - timedelta(days=self.validation_days)
        return end - timedelta(days=self.train_days), end

    def validation_window(self, at: datetime) -> tuple[datetime, datetime]:
        """`[start, end)` on which the challenger trained at `at` is compared with the champion."""
        return at - timedelta(days=self.validation_days), at

    @property
    def history_start(self) -> datetime:
        """The first candle the simulation needs: the bootstrap's training window."""
        return self.training_window(_midnight(self.start))[0]


def wants_retrain(
    policy: PolicyName,
    at: datetime,
    last_retrain_at: datetime | None,
    drift_retrain: bool = False,
) -> tuple[bool, str]:
    """Whether `policy` retrains at clock `at`, and why (in words)."""
    if policy == "never":
        return False, "policy never: the bootstrap model stays"
    if policy == "weekly":
        if last_retrain_at is None or at - last_retrain_at >= WEEK:
            return True, "policy weekly: a week since the last retraining"
        return False, "policy weekly: retrained less than a week ago"
    if policy == "monthly":
        if last_retrain_at is None or (at.year, at.month) != (last_retrain_at.year, last_retrain_at.month):
            return True, f"policy monthly: first step of {at:%Y-%m}"
        return False, f"policy monthly: already retrained in {at:%Y-%m}"
    if policy == "drift":
        if drift_retrain:
            return True, "policy drift: the drift rule asks for a retraining"
        return False, "policy drift: no retraining asked by the drift rule"
    raise ValidationError(f"unknown policy {policy!r}", f"use one of {', '.join(POLICIES)}")


class TimelineEntry(BaseModel):
    """One decision of one policy at one clock value: which version is in force from then on, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    at: datetime
    action: Literal["bootstrap", "promote", "keep", "rollback", "alert", "hold"]
    champion: int = Field(description="the version in force from `at` until the next step")
    challenger: int | None = None
    p_value: float | None = None
    sharpe_diff: float | None = None
    reason: str
    retrained: bool = False
    training_window: tuple[datetime, datetime] | None = None
    validation_window: tuple[datetime, datetime] | None = None


def in_force(timeline: Sequence[TimelineEntry], plan: SimulationPlan) -> list[tuple[datetime, datetime, int]]:
    """`(start, end, version)` trading spans of one policy: version chosen at `t_k` trades `[t_k, t_k+1)`."""
    steps = plan.steps
    chosen = {entry.at: entry.champion for entry in timeline}
    return [(a, b, chosen[a]) for a, b in itertools.pairwise(steps) if a in chosen]


def stitch_returns(pieces: Sequence[pd.Series]) -> pd.Series:
    """Per-bar returns of consecutive trading spans as one series (sorted, no repeated bars)."""
    if not pieces:
        return pd.Series(dtype=float)
    joined = pd.concat(pieces).sort_index()
    if joined.index.has_duplicates:
        raise ValidationError("trading spans overlap: a bar is traded by two champions", "check the timeline")
    return joined


def max_drawdown(returns: pd.Series) -> float:
    """Largest peak-to-trough fall of the compounded equity, as a fraction (0.1 = 10 %)."""
    if returns.empty:
        return 0.0
    equity = np.cumprod(1.0 + returns.to_numpy(dtype=float))
    peaks = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return float(np.max(1.0 - equity / peaks))


class PolicyRow(BaseModel):
    """One policy's line of the table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    total_return: float = Field(description="compounded out-of-sample return, fraction")
    sharpe: float | None = Field(description="annualised Sharpe of the stitched bar returns; None: undefined")
    max_drawdown: float
    trades: int
    retrains: int
    promotions: int
    rollbacks: int
    compute_seconds: float = Field(description="training, validation backtests and drift scores it needed")
    sharpe_diff_vs_never: float | None = None
    p_value_vs_never: float | None = Field(
        default=None, description="paired block-bootstrap p-value of the Sharpe difference against `never`"
    )
    bars: int


class BestPolicy(BaseModel):
    """The policy with the highest Sharpe ratio, and its edge over `never` deflated for the selection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    n_trials: int = Field(description="policies compared (the selection being deflated for)")
    edge_sharpe: float | None = Field(description="per-bar Sharpe of (best − never) returns")
    deflated: float | None = Field(
        description="DSR of the edge: P(true edge > what luck gives the best of n)"
    )
    note: str


def policy_rows(
    returns: Mapping[str, pd.Series],
    trades: Mapping[str, int],
    timelines: Mapping[str, Sequence[TimelineEntry]],
    compute_seconds: Mapping[str, float],
    periods_per_year: float,
    *,
    baseline: str = "never",
    n_iterations: int = 2000,
    seed: int = 0,
) -> list[PolicyRow]:
    """The table: one row per policy, with the bootstrap test of its Sharpe difference against `baseline`."""
    base = returns.get(baseline)
    rows = []
    for policy, series in returns.items():
        values = series.to_numpy(dtype=float)
        sharpe = (
            annualized_sharpe(values, periods_per_year) if values.size > 2 and np.std(values) > 0 else None
        )
        diff = p_value = None
        if base is not None and policy != baseline and len(base) > 2:
            if not base.index.equals(series.index):
                raise ValidationError(
                    f"policy {policy} was evaluated on other bars than {baseline}",
                    "evaluate every policy on the same trading spans",
                )
            boot = bootstrap_sharpe_difference(
                base.to_numpy(dtype=float),
                values,
                periods_per_year=periods_per_year,
                n_iterations=n_iterations,
                seed=seed,
            )
            diff, p_value = boot.sharpe_diff, boot.p_value
        entries = timelines.get(policy, ())
        rows.append(
            PolicyRow(
                policy=policy,
                total_return=float(np.prod(1.0 + values) - 1.0) if values.size else 0.0,
                sharpe=sharpe,
                max_drawdown=max_drawdown(series),
                trades=int(trades.get(policy, 0)),
                retrains=sum(1 for e in entries if e.retrained),
                promotions=sum(1 for e in entries if e.action == "promote"),
                rollbacks=sum(1 for e in entries if e.action == "rollback"),
                compute_seconds=float(compute_seconds.get(policy, 0.0)),
                sharpe_diff_vs_never=diff,
                p_value_vs_never=p_value,
                bars=int(values.size),
            )
        )
    return rows


def best_policy(
    rows: Sequence[PolicyRow], returns: Mapping[str, pd.Series], baseline: str = "never"
) -> BestPolicy:
    """The highest-Sharpe policy; its edge over `baseline` as a DSR, deflated for `len(rows)` trials.

    The trials' Sharpe variance is that of every policy's per-bar edge over the baseline (the baseline's
    own edge is 0), so the deflation grows with how differently the policies performed.
    """
    ranked = [row for row in rows if row.sharpe is not None]
    if not ranked:
        return BestPolicy(
            policy="none", n_trials=len(rows), edge_sharpe=None, deflated=None, note="no policy has a Sharpe"
        )
    best = max(ranked, key=lambda row: row.sharpe or -math.inf)
    if best.policy == baseline or baseline not in returns:
        return BestPolicy(
            policy=best.policy,
            n_trials=len(rows),
            edge_sharpe=0.0 if best.policy == baseline else None,
            deflated=None,
            note=f"{best.policy} is best: no retraining policy beat never" if best.policy == baseline else "",
        )
    base = returns[baseline].to_numpy(dtype=float)
    edges: dict[str, np.ndarray] = {
        row.policy: returns[row.policy].to_numpy(dtype=float) - base for row in rows if row.policy in returns
    }
    sharpes = []
    for edge in edges.values():
        std = float(np.std(edge, ddof=1)) if edge.size > 1 else 0.0
        sharpes.append(float(np.mean(edge) / std) if std > 0 else 0.0)
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    edge = edges[best.policy]
    try:
        moments = return_moments(edge)
        result = deflated_sharpe_from_returns(edge, len(rows), variance)
    except ValidationError as exc:
        return BestPolicy(
            policy=best.policy, n_trials=len(rows), edge_sharpe=None, deflated=None, note=f"edge: {exc}"
        )
    return BestPolicy(
        policy=best.policy,
        n_trials=len(rows),
        edge_sharpe=moments.sharpe,
        deflated=result.dsr,
        note=f"DSR {result.dsr:.3f} of {best.policy}'s edge over {baseline} after {len(rows)} policies "
        f"(SR0 {result.expected_max_sharpe:.4f} per bar)",
    )


def table_text(rows: Sequence[PolicyRow]) -> str:
    """The policy table as fixed-width text (the demo and the CLI print it)."""
    head = (
        f"{'policy':<8} {'return':>8} {'Sharpe':>7} {'max DD':>7} {'trades':>6} {'retrains':>8} "
        f"{'promoted':>8} {'compute':>8} {'ΔSharpe':>8} {'p vs never':>10}"
    )
    lines = [head]
    for row in rows:
        sharpe = f"{row.sharpe:7.2f}" if row.sharpe is not None else f"{'n/a':>7}"
        diff = f"{row.sharpe_diff_vs_never:+8.2f}" if row.sharpe_diff_vs_never is not None else f"{'–':>8}"
        p_value = f"{row.p_value_vs_never:10.4f}" if row.p_value_vs_never is not None else f"{'–':>10}"
        lines.append(
            f"{row.policy:<8} {row.total_return:8.2%} {sharpe} {row.max_drawdown:7.2%} {row.trades:>6} "
            f"{row.retrains:>8} {row.promotions:>8} {row.compute_seconds:7.1f}s {diff} {p_value}"
        )
    return "\n".join(lines)


def table_markdown(rows: Sequence[PolicyRow]) -> str:
    """The policy table as markdown (asset metadata, MLflow)."""
    lines = [
        "| policy | return | Sharpe | max drawdown | trades | retrains | promotions | rollbacks | compute | "
        "ΔSharpe vs never | p vs never |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sharpe = f"{row.sharpe:.2f}" if row.sharpe is not None else "n/a"
        diff = f"{row.sharpe_diff_vs_never:+.2f}" if row.sharpe_diff_vs_never is not None else "–"
        p_value = f"{row.p_value_vs_never:.4f}" if row.p_value_vs_never is not None else "–"
        lines.append(
            f"| {row.policy} | {row.total_return:.2%} | {sharpe} | {row.max_drawdown:.2%} | {row.trades} | "
            f"{row.retrains} | {row.promotions} | {row.rollbacks} | {row.compute_seconds:.1f} s | {diff} | "
            f"{p_value} |"
        )
    return "\n".join(lines)


def timeline_markdown(timeline: Sequence[TimelineEntry]) -> str:
    """One policy's champion timeline as markdown: when, what, which version, why."""
    lines = ["| at | action | in force | challenger | p | reason |", "|---|---|---|---|---|---|"]
    for e in timeline:
        p_value = f"{e.p_value:.4f}" if e.p_value is not None else "–"
        challenger = f"v{e.challenger}" if e.challenger is not None else "–"
        reason = e.reason.replace("|", "/")[:300]
        lines.append(
            f"| {e.at:%Y-%m-%d} | {e.action} | v{e.champion} | {challenger} | {p_value} | {reason} |"
        )
    return "\n".join(lines)
