"""A/B challenges that gather evidence as the clock advances, tested sequentially with alpha spending.

An inconclusive comparison does not have to end the matter: champion and challenger both keep trading the
new candles out of sample, their paired bar returns accumulate, and the Sharpe difference is re-tested at
each look — at most `max_looks` times. Testing the same hypothesis at every look at level alpha would
reject a true null far more often than alpha, so each look gets only a slice of it:

- **Alpha spending** (Lan & DeMets 1983) with the O'Brien–Fleming-type function
  `α(t) = 2 − 2Φ(z_{1−α/2} / √t)` of the information fraction `t = look / max_looks`: almost nothing is
  spent early (the first looks need overwhelming evidence), and `α(1) = α`.
- Look k rejects when its p-value is below the **increment** `α(t_k) − α(t_{k−1})`. By the union bound the
  chance of any false rejection over all looks is at most `Σ increments = α`, whatever the correlation
  between looks (conservative, and valid for the bootstrap p-values used here).

The p-value is the paired block bootstrap of `tradai_core.comparison` on everything accumulated so far.
Plain Python, no I/O.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.comparison import bootstrap_sharpe_difference
from tradai_core.errors import ValidationError
from tradai_core.lazy import LazyModule

stats = LazyModule("scipy.stats")


def obrien_fleming_spent(fraction: float, alpha: float) -> float:
    """Alpha spent up to information fraction `fraction` (0 → 0, 1 → alpha), two-sided."""
    if not 0 <= fraction <= 1:
        raise ValidationError(f"information fraction {fraction} is outside [0, 1]", "use look / max_looks")
    if fraction == 0:
        return 0.0
    z = stats.norm.ppf(1 - alpha / 2)
    return float(2 - 2 * stats.norm.cdf(z / math.sqrt(fraction)))


def look_threshold(look: int, max_looks: int, alpha: float) -> float:
    """The p-value below which look `look` (1-based) of `max_looks` rejects."""
    if not 1 <= look <= max_looks:
        raise ValidationError(f"look {look} is not among 1 … {max_looks}", "count looks from 1")
    return obrien_fleming_spent(look / max_looks, alpha) - obrien_fleming_spent((look - 1) / max_looks, alpha)


class Look(BaseModel):
    """One re-test of a challenge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int
    at: datetime
    n_bars: int
    sharpe_diff: float
    p_value: float
    threshold: float = Field(description="the alpha this look may spend")
    outcome: Literal["promote", "keep", "continue", "expired"]


class Challenge(BaseModel):
    """An A/B challenge: who against whom, since when, the looks so far and how it ended (if it has)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    champion: int
    challenger: int
    started_at: datetime
    max_looks: int = Field(ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    looks: tuple[Look, ...] = ()

    @property
    def outcome(self) -> Literal["promote", "keep", "continue", "expired"]:
        """The last look's outcome (`continue` before any look)."""
        return self.looks[-1].outcome if self.looks else "continue"

    @property
    def open(self) -> bool:
        """Still gathering evidence."""
        return self.outcome == "continue"


def challenge_look(
    challenge: Challenge,
    champion_returns: np.ndarray,
    challenger_returns: np.ndarray,
    at: datetime,
    *,
    periods_per_year: float,
    n_iterations: int = 1000,
    seed: int = 0,
) -> Challenge:
    """Re-test `challenge` on every paired bar return accumulated so far; returns it with one more look.

    Promote when the challenger is better with p below this look's share of alpha, keep when it is worse
    at that level, expire (the champion stays) after `max_looks` looks without either, else continue.
    """
    if not challenge.open:
        raise ValidationError(
            f"the challenge of v{challenge.challenger} against v{challenge.champion} ended "
            f"({challenge.outcome})",
            "start a new challenge",
        )
    number = len(challenge.looks) + 1
    boot = bootstrap_sharpe_difference(
        np.asarray(champion_returns, dtype=float),
        np.asarray(challenger_returns, dtype=float),
        periods_per_year=periods_per_year,
        n_iterations=n_iterations,
        alpha=challenge.alpha,
        seed=seed,
    )
    threshold = look_threshold(number, challenge.max_looks, challenge.alpha)
    outcome: Literal["promote", "keep", "continue", "expired"]
    if boot.p_value < threshold:
        outcome = "promote" if boot.sharpe_diff > 0 else "keep"
    elif number == challenge.max_looks:
        outcome = "expired"
    else:
        outcome = "continue"
    look = Look(
        number=number,
        at=at,
        n_bars=int(np.asarray(champion_returns).size),
        sharpe_diff=boot.sharpe_diff,
        p_value=boot.p_value,
        threshold=threshold,
        outcome=outcome,
    )
    return challenge.model_copy(update={"looks": (*challenge.looks, look)})


def look_summary(challenge: Challenge) -> str:
    """The last look in words."""
    if not challenge.looks:
        return f"challenge v{challenge.challenger} vs v{challenge.champion}: no look yet"
    look = challenge.looks[-1]
    return (
        f"A/B challenge v{challenge.challenger} vs v{challenge.champion}, look {look.number}/"
        f"{challenge.max_looks} on {look.n_bars} bars: ΔSharpe {look.sharpe_diff:+.2f}, p={look.p_value:.4f} "
        f"vs the look's alpha {look.threshold:.4f} → {look.outcome}"
    )
