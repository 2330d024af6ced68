"""The walk-forward simulation's pure rules: the clock's steps and windows, when each policy retrains, and
the policy table (p-values against never, the deflated best policy)."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tradai_core.errors import ValidationError
from tradai_core.policy_simulation import (
    POLICIES,
    SimulationPlan,
    TimelineEntry,
    best_policy,
    in_force,
    max_drawdown,
    policy_rows,
    stitch_returns,
    table_text,
    wants_retrain,
)

PPY = 24 * 365


def _at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def test_steps_and_windows_never_reach_past_the_clock() -> None:
    plan = SimulationPlan(start=date(2022, 5, 2), end=date(2022, 5, 30), validation_days=7, train_days=120)
    steps = plan.steps
    assert steps[0] == _at("2022-05-02") and steps[-1] == _at("2022-05-30") and len(steps) == 5
    for at in steps:
        train_lo, train_hi = plan.training_window(at)
        val_lo, val_hi = plan.validation_window(at)
        assert (
            train_hi == val_lo < val_hi == at
        )  # trained before the validation window, judged before the clock
        assert train_hi - train_lo == timedelta(days=120)
    assert plan.history_start == _at("2022-05-02") - timedelta(days=127)


def test_a_plan_shorter_than_a_step_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than one step"):
        SimulationPlan(start=date(2022, 5, 2), end=date(2022, 5, 5))
    with pytest.raises(ValueError, match="on or before it starts"):
        SimulationPlan(start=date(2022, 5, 2), end=date(2022, 5, 2))


def test_policies_retrain_on_their_own_schedule() -> None:
    last = _at("2022-05-02")
    assert wants_retrain("never", _at("2022-08-01"), last)[0] is False
    assert wants_retrain("weekly", _at("2022-05-09"), last)[0] is True
    assert wants_retrain("weekly", _at("2022-05-08"), last)[0] is False
    assert wants_retrain("monthly", _at("2022-05-30"), last)[0] is False
    assert wants_retrain("monthly", _at("2022-06-06"), last)[0] is True
    assert wants_retrain("drift", _at("2022-05-09"), last, drift_retrain=False)[0] is False
    assert wants_retrain("drift", _at("2022-05-09"), last, drift_retrain=True)[0] is True
    with pytest.raises(ValidationError, match="unknown policy"):
        wants_retrain("daily", _at("2022-05-09"), last)  # type: ignore[arg-type]


def test_in_force_spans_follow_the_timeline() -> None:
    plan = SimulationPlan(start=date(2022, 5, 2), end=date(2022, 5, 23))
    timeline = [
        TimelineEntry(policy="weekly", at=_at("2022-05-02"), action="bootstrap", champion=1, reason="first"),
        TimelineEntry(policy="weekly", at=_at("2022-05-09"), action="promote", champion=2, reason="better"),
        TimelineEntry(policy="weekly", at=_at("2022-05-16"), action="keep", champion=2, reason="same"),
    ]
    spans = in_force(timeline, plan)
    assert [(a.day, b.day, v) for a, b, v in spans] == [(2, 9, 1), (9, 16, 2), (16, 23, 2)]


def _returns(seed: int, n: int = 600, drift: float = 0.0) -> pd.Series:
    index = pd.date_range("2022-05-02", periods=n, freq="1h", tz="UTC")
    rng = np.random.default_rng(seed)
    return pd.Series(rng.normal(drift, 0.002, n), index=index)


def test_policy_table_tests_each_policy_against_never_and_deflates_the_best() -> None:
    never = _returns(1)
    returns = {
        "never": never,
        "weekly": never + _returns(2, drift=0.0004) * 0.5,
        "monthly": never.copy(),
        "drift": never + _returns(3) * 0.1,
    }
    timelines = {
        "never": [],
        "weekly": [
            TimelineEntry(
                policy="weekly",
                at=_at("2022-05-09"),
                action="promote",
                champion=2,
                reason="r",
                retrained=True,
            )
        ],
    }
    rows = policy_rows(returns, {"weekly": 12}, timelines, {"weekly": 3.5}, PPY, n_iterations=500)
    by = {row.policy: row for row in rows}
    assert [row.policy for row in rows] == list(POLICIES)
    assert by["never"].p_value_vs_never is None
    assert by["monthly"].p_value_vs_never == 1.0  # the same returns: nothing to tell apart
    assert by["weekly"].p_value_vs_never is not None and by["weekly"].p_value_vs_never < 0.05
    assert by["weekly"].retrains == 1 and by["weekly"].promotions == 1 and by["weekly"].trades == 12
    assert by["weekly"].total_return == pytest.approx(float(np.prod(1 + returns["weekly"]) - 1))
    best = best_policy(rows, returns)
    assert best.policy == "weekly" and best.n_trials == 4
    assert best.deflated is not None and 0.0 < best.deflated <= 1.0
    assert "weekly" in table_text(rows) and len(table_text(rows).splitlines()) == 5


def test_best_policy_never_has_no_edge_to_deflate() -> None:
    never = _returns(1, drift=0.0003)
    returns = {"never": never, "weekly": _returns(5)}
    rows = policy_rows(returns, {}, {}, {}, PPY, n_iterations=200)
    best = best_policy(rows, returns)
    assert best.policy == "never" and best.deflated is None and "no retraining policy beat never" in best.note


def test_max_drawdown_and_stitching() -> None:
    index = pd.date_range("2022-05-02", periods=4, freq="1h", tz="UTC")
    returns = pd.Series([0.1, -0.5, 0.2, 0.0], index=index)
    assert max_drawdown(returns) == pytest.approx(0.5)
    stitched = stitch_returns([returns.iloc[2:], returns.iloc[:2]])
    assert stitched.index.is_monotonic_increasing and len(stitched) == 4
    with pytest.raises(ValidationError, match="overlap"):
        stitch_returns([returns, returns.iloc[1:]])
