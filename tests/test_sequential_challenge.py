"""A/B challenges re-tested at each step: alpha spending keeps the error rate over repeated looks."""

from datetime import UTC, datetime

import numpy as np
import pytest

from tradai_core.errors import ValidationError
from tradai_core.sequential_challenge import (
    Challenge,
    challenge_look,
    look_summary,
    look_threshold,
    obrien_fleming_spent,
)

PPY = 24 * 365
AT = datetime(2022, 5, 9, tzinfo=UTC)


def test_spending_adds_up_to_alpha_and_spends_little_early() -> None:
    thresholds = [look_threshold(k, 4, 0.05) for k in range(1, 5)]
    assert sum(thresholds) == pytest.approx(0.05)
    assert thresholds[0] < 0.001 < thresholds[-1]  # the first look needs overwhelming evidence
    assert thresholds == sorted(thresholds)
    assert obrien_fleming_spent(0.0, 0.05) == 0.0 and obrien_fleming_spent(1.0, 0.05) == pytest.approx(0.05)
    with pytest.raises(ValidationError, match="not among"):
        look_threshold(5, 4, 0.05)


def _run(champion: np.ndarray, challenger: np.ndarray, looks: int, n_iterations: int = 400) -> Challenge:
    challenge = Challenge(champion=1, challenger=2, started_at=AT, max_looks=looks)
    step = champion.size // looks
    for k in range(1, looks + 1):
        challenge = challenge_look(
            challenge,
            champion[: k * step],
            challenger[: k * step],
            AT,
            periods_per_year=PPY,
            n_iterations=n_iterations,
        )
        if not challenge.open:
            break
    return challenge


def test_a_clearly_better_challenger_is_promoted_once_evidence_accumulates() -> None:
    rng = np.random.default_rng(7)
    market = rng.normal(0, 0.003, 4 * 168)
    champion = market + rng.normal(0, 0.001, market.size)
    challenger = market + rng.normal(0.0006, 0.001, market.size)
    challenge = _run(champion, challenger, looks=4)
    assert challenge.outcome == "promote"
    assert challenge.looks[-1].p_value < challenge.looks[-1].threshold
    assert "→ promote" in look_summary(challenge)
    with pytest.raises(ValidationError, match="ended"):
        challenge_look(challenge, champion, challenger, AT, periods_per_year=PPY)


def test_identical_models_expire_after_the_last_look() -> None:
    returns = np.random.default_rng(3).normal(0, 0.002, 4 * 168)
    challenge = _run(returns, returns.copy(), looks=4)
    assert challenge.outcome == "expired" and len(challenge.looks) == 4
    assert [look.outcome for look in challenge.looks[:-1]] == ["continue"] * 3


def test_repeated_looks_hold_the_false_alarm_rate() -> None:
    """Under no difference, at most alpha of the challenges end in a decision — testing every look at
    alpha instead would decide far more often."""
    rng = np.random.default_rng(11)
    decided = naive = 0
    trials = 120
    for _ in range(trials):
        market = rng.normal(0, 0.003, 4 * 100)
        champion = market + rng.normal(0, 0.002, market.size)
        challenger = market + rng.normal(0, 0.002, market.size)
        challenge = _run(champion, challenger, looks=4, n_iterations=200)
        decided += challenge.outcome in ("promote", "keep")
        naive += any(look.p_value < 0.05 for look in challenge.looks)
    assert decided / trials <= 0.05 + 0.03  # measured: 1 of 120
    assert naive / trials > 0.05 + 0.03  # measured: 16 of 120 would have decided at some look
