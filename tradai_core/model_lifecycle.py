"""The model loop's rules as plain Python: what the audit history records, when drift retrains, when a
comparison promotes, when poor live performance rolls the champion back. No Dagster, no I/O.

The sensors in `sensors/` read events from Dagster and state from MLflow, call the `decide_*` functions
here, and turn the decisions into runs; the `champion_model` asset carries them out. Keeping the rules here
keeps them testable without a Dagster instance and keeps every sensor's reasoning in one place.

- **Audit history.** Every change of the `champion` alias (and every decision to keep it) is one frozen
  `AuditEntry`: what happened, to which versions, when, why, the numbers behind it, the p-value, which
  Dagster run did it, and whether a sensor, a schedule or a person started it. `event_key` names the event
  the decision came from (e.g. `model_comparison:1234`, the materialization's storage id), which makes
  acting on a decision idempotent: an event already in the history is never acted on again.
- **Champion lineage.** The champions, oldest first, are a stack: a bootstrap or a promotion pushes the
  new champion, a rollback pops the current one. A rollback returns to the version below the top.
- **Drift → retrain.** Severe drift of the current champion retrains unless a retraining run of the model
  was requested less than `cooldown_hours` before the drift event (or after it); moderate drift notifies
  only. One retraining run serves every pair, so a storm of drift events causes one retrain.
- **Rollback.** The champion's rolling performance is judged only with at least `min_trades` trades; it
  breaches when its drawdown exceeds `max_drawdown` or its Sharpe ratio falls below `min_sharpe`. A breach
  rolls back to the previous champion, unless the champion is itself the result of a rollback (rollbacks
  never cascade on their own: a person decides) or there is no earlier champion; then it alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)


class AuditAction(StrEnum):
    """What happened to the `champion` alias."""

    PROMOTE = "promote"
    """The challenger became champion after a significantly better validation backtest."""
    KEEP = "keep"
    """A comparison did not justify a promotion (challenger worse, or no significant difference)."""
    ROLLBACK = "rollback"
    """The champion returned to an earlier version (an alarm, or a person)."""
    BOOTSTRAP = "bootstrap"
    """The first sane model became champion because none existed."""


class Trigger(StrEnum):
    """Who started the run that acted."""

    SENSOR = "sensor"
    SCHEDULE = "schedule"
    MANUAL = "manual"


class AuditEntry(BaseModel):
    """One entry of a model's audit history: what happened to the champion, when, why, on what evidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: AuditAction
    model: str = Field(min_length=1, description="registered model name")
    from_version: int | None = Field(description="champion before; None when there was none")
    to_version: int | None = Field(description="champion after (equal to from_version for keep)")
    challenger_version: int | None = Field(default=None, description="the version that was judged, if any")
    at: datetime
    reason: str
    metrics: dict[str, float] = Field(default_factory=dict, description="the numbers behind the decision")
    p_value: float | None = None
    decision: str | None = Field(default=None, description="the comparison's decision, when one was made")
    event_key: str | None = Field(default=None, description="the event acted on, e.g. model_comparison:123")
    dagster_run_id: str | None = None
    trigger: Trigger

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("audit timestamps must be timezone-aware")
        return value.astimezone(UTC)

    @property
    def summary(self) -> str:
        """One line: `2022-10-11 12:00 promote v2 → v3 (sensor): …`."""
        versions = {
            AuditAction.PROMOTE: f"v{self.from_version} → v{self.to_version}",
            AuditAction.ROLLBACK: f"v{self.from_version} → v{self.to_version}",
            AuditAction.BOOTSTRAP: f"v{self.to_version}",
            AuditAction.KEEP: f"v{self.to_version} kept over v{self.challenger_version}",
        }[self.action]
        p_value = f", p={self.p_value:.4f}" if self.p_value is not None else ""
        who = f"{self.trigger.value}{p_value}"
        return f"{self.at:%Y-%m-%d %H:%M} {self.action.value} {versions} ({who}): {self.reason}"


def champion_lineage(entries: Sequence[AuditEntry]) -> list[int]:
    """The champions still standing, oldest first: bootstraps and promotions push, rollbacks pop.

    A rollback to a version that is not the one below the top (a person chose another) replaces the top
    with it instead of popping, so the stack always ends with the current champion.
    """
    stack: list[int] = []
    for entry in sorted(entries, key=lambda e: e.at):
        if entry.action in (AuditAction.BOOTSTRAP, AuditAction.PROMOTE) and entry.to_version is not None:
            if not stack or stack[-1] != entry.to_version:
                stack.append(entry.to_version)
        elif entry.action is AuditAction.ROLLBACK and entry.to_version is not None:
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry.to_version:
                stack.append(entry.to_version)
    return stack


def previous_champion(entries: Sequence[AuditEntry], current: int) -> int | None:
    """The version a rollback of `current` returns to, or None when there is no earlier champion.

    When the alias was moved outside the loop (the history's top is not `current`), `current` is taken as
    the newest champion and the history's top as the one before it.
    """
    stack = champion_lineage(entries)
    if not stack or stack[-1] != current:
        stack.append(current)
    earlier = [version for version in stack[:-1] if version != current]
    return earlier[-1] if earlier else None


def became_champion_by_rollback(entries: Sequence[AuditEntry], current: int) -> bool:
    """Whether the latest change that made `current` champion was a rollback."""
    for entry in sorted(entries, key=lambda e: e.at, reverse=True):
        if entry.action is AuditAction.KEEP:
            continue
        return entry.to_version == current and entry.action is AuditAction.ROLLBACK
    return False


def already_recorded(entries: Sequence[AuditEntry], event_key: str | None) -> AuditEntry | None:
    """The entry that already acted on `event_key`, if any (what makes acting on events idempotent)."""
    if event_key is None:
        return None
    return next((entry for entry in entries if entry.event_key == event_key), None)


# -- drift → retraining ----------------------------------------------------------------------------


class DriftPolicy(BaseSettings):
    """How the drift sensor acts; `TRADAI_DRIFT_COOLDOWN_HOURS` sets the cooldown."""

    model_config = SettingsConfigDict(env_prefix="TRADAI_DRIFT_", frozen=True, extra="ignore")

    cooldown_hours: float = Field(
        default=24.0,
        ge=0,
        description="No new drift-triggered retraining of a model within this many hours of the last "
        "retraining run of that model (whatever started it).",
    )

    @property
    def cooldown(self) -> timedelta:
        """The cooldown as a timedelta."""
        return timedelta(hours=self.cooldown_hours)


class DriftEvent(BaseModel):
    """A drift score the sensor saw: one materialization of `drift_score` for one pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    model_version: int
    pair: str
    severity: Literal["none", "moderate", "severe", "insufficient"]
    psi: float = Field(description="the pair's aggregate PSI (median feature PSI)")
    prediction_psi: float | None = None
    top_features: tuple[str, ...] = ()
    at: datetime
    storage_id: int
    dagster_run_id: str | None = None

    @property
    def event_key(self) -> str:
        """`drift_score:<storage id>`: unique to this drift event."""
        return f"drift_score:{self.storage_id}"


class DriftDecision(BaseModel):
    """What the drift sensor does about one event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["retrain", "notify", "ignore"]
    notify: Literal["warning", "critical"] | None = Field(description="notification severity, if any")
    reason: str


def decide_drift_action(
    event: DriftEvent,
    champion_version: int | None,
    last_retrain_at: datetime | None,
    policy: DriftPolicy | None = None,
) -> DriftDecision:
    """Severe → retrain (unless cooling down) and alert; moderate → warn; anything else → nothing.

    A score of a version that is no longer champion is ignored (the drift it measured no longer matters).
    The cooldown counts from the last retraining run of the model: a run requested after the event was
    scored already trains on the drifted data, and one requested less than `cooldown` before it is recent
    enough, so the event notifies without retraining again.
    """
    policy = policy or DriftPolicy()
    where = f"{event.pair} on {event.model} v{event.model_version}"
    if champion_version != event.model_version:
        return DriftDecision(
            action="ignore",
            notify=None,
            reason=f"{where}: v{event.model_version} is no longer champion (now v{champion_version})",
        )
    if event.severity in ("none", "insufficient"):
        return DriftDecision(action="ignore", notify=None, reason=f"{where}: drift {event.severity}")
    if event.severity == "moderate":
        return DriftDecision(
            action="notify",
            notify="warning",
            reason=f"{where}: moderate drift (PSI {event.psi:.3f}), warn only",
        )
    if last_retrain_at is not None and event.at - last_retrain_at < policy.cooldown:
        since = (event.at - last_retrain_at).total_seconds() / 3600
        when = (
            f"{since:.1f} h before this event"
            if since >= 0
            else "after this event was scored (that run answers it)"
        )
        return DriftDecision(
            action="notify",
            notify="critical",
            reason=f"{where}: severe drift (PSI {event.psi:.3f}), but a retraining run was requested {when}; "
            f"cooldown {policy.cooldown_hours:g} h",
        )
    return DriftDecision(
        action="retrain", notify="critical", reason=f"{where}: severe drift (PSI {event.psi:.3f}), retraining"
    )


# -- comparison → promotion -------------------------------------------------------------------------


class ComparisonOutcome(BaseModel):
    """What a `model_comparison` materialization decided, as the promotion sensor reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    decision: Literal["promote", "keep", "inconclusive"]
    reason: str
    champion_version: int
    challenger_version: int
    p_value: float
    metrics: dict[str, float] = Field(default_factory=dict)
    storage_id: int
    at: datetime
    dagster_run_id: str | None = None

    @property
    def event_key(self) -> str:
        """`model_comparison:<storage id>`: unique to this decision."""
        return f"model_comparison:{self.storage_id}"


class PromotionDecision(BaseModel):
    """What the promotion sensor does about one comparison."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["promote", "keep", "none"]
    reason: str


def decide_promotion(
    outcome: ComparisonOutcome, champion_version: int | None, entries: Sequence[AuditEntry]
) -> PromotionDecision:
    """Promote on `promote`, record a keep on `keep`/`inconclusive`; nothing for a decision already acted
    on, one about a champion that has since changed, or one comparing a version with itself."""
    done = already_recorded(entries, outcome.event_key)
    if done is not None:
        return PromotionDecision(action="none", reason=f"already recorded: {done.summary}")
    if outcome.challenger_version == outcome.champion_version:
        return PromotionDecision(
            action="none",
            reason=f"challenger and champion are the same version (v{outcome.champion_version})",
        )
    if champion_version != outcome.champion_version:
        return PromotionDecision(
            action="none",
            reason=f"stale: the comparison judged champion v{outcome.champion_version}, the champion is now "
            f"v{champion_version}",
        )
    if outcome.decision == "promote":
        return PromotionDecision(action="promote", reason=outcome.reason)
    return PromotionDecision(action="keep", reason=f"{outcome.decision}: {outcome.reason}")


# -- rolling performance → rollback ----------------------------------------------------------------


class RollbackLimits(BaseSettings):
    """When the champion's rolling performance calls for a rollback; `TRADAI_ROLLBACK_*` overrides."""

    model_config = SettingsConfigDict(env_prefix="TRADAI_ROLLBACK_", frozen=True, extra="ignore")

    max_drawdown: float = Field(
        default=0.20, gt=0, le=1, description="Largest account drawdown (fraction) tolerated in the window."
    )
    min_sharpe: float = Field(default=-1.0, description="Lowest annualised Sharpe ratio tolerated.")
    min_trades: int = Field(default=10, ge=1, description="Fewer trades than this: no judgement at all.")


class ChampionPerformance(BaseModel):
    """The champion's rolling performance, as a `champion_performance` materialization reports it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    version: int
    window_start: datetime
    window_end: datetime
    trade_count: int
    total_profit: float = Field(description="fraction of the starting balance")
    max_drawdown: float = Field(description="largest account drawdown, fraction")
    sharpe: float | None = Field(
        description="annualised Sharpe ratio of the per-bar returns; None: undefined"
    )
    sharpe_undefined: str | None = Field(default=None, description="why the Sharpe ratio is undefined")
    storage_id: int
    at: datetime

    @property
    def event_key(self) -> str:
        """`champion_performance:<storage id>`."""
        return f"champion_performance:{self.storage_id}"

    def metrics(self) -> dict[str, float]:
        """The numbers, for an audit entry."""
        return {
            "trade_count": float(self.trade_count),
            "total_profit": self.total_profit,
            "max_drawdown": self.max_drawdown,
            **({} if self.sharpe is None else {"sharpe": self.sharpe}),
        }


class PerformanceAssessment(BaseModel):
    """Whether a performance window could be judged, and which limits it breaches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    judged: bool
    breaches: tuple[str, ...]
    reason: str

    @property
    def breached(self) -> bool:
        """Judged and at least one limit breached."""
        return self.judged and bool(self.breaches)


def assess_performance(performance: ChampionPerformance, limits: RollbackLimits) -> PerformanceAssessment:
    """Judge a window against the limits; too few trades means no judgement (no alarm either)."""
    if performance.trade_count < limits.min_trades:
        return PerformanceAssessment(
            judged=False,
            breaches=(),
            reason=f"{performance.trade_count} trades, fewer than the {limits.min_trades} needed to judge",
        )
    breaches = []
    if performance.max_drawdown > limits.max_drawdown:
        breaches.append(f"drawdown {performance.max_drawdown:.1%} > limit {limits.max_drawdown:.1%}")
    if performance.sharpe is None:
        if not breaches:  # an undefined Sharpe is no evidence either way: no judgement, no alarm
            return PerformanceAssessment(
                judged=False,
                breaches=(),
                reason=f"Sharpe undefined ({performance.sharpe_undefined or 'no variance'}): not enough "
                "evidence to judge",
            )
    elif performance.sharpe < limits.min_sharpe:
        breaches.append(f"Sharpe {performance.sharpe:.2f} < floor {limits.min_sharpe:.2f}")
    reason = "; ".join(breaches) if breaches else "within limits"
    return PerformanceAssessment(judged=True, breaches=tuple(breaches), reason=reason)


class RollbackDecision(BaseModel):
    """What the rollback sensor does about one performance window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["rollback", "alert", "none"]
    to_version: int | None = None
    reason: str


def decide_rollback(
    performance: ChampionPerformance,
    champion_version: int | None,
    entries: Sequence[AuditEntry],
    limits: RollbackLimits,
) -> RollbackDecision:
    """Roll back on a breach by the current champion; alert instead when it cannot or must not."""
    where = f"{performance.model} v{performance.version}"
    done = already_recorded(entries, performance.event_key)
    if done is not None:
        return RollbackDecision(action="none", reason=f"already recorded: {done.summary}")
    if champion_version != performance.version:
        return RollbackDecision(
            action="none", reason=f"{where} is no longer champion (now v{champion_version})"
        )
    assessment = assess_performance(performance, limits)
    if not assessment.breached:
        return RollbackDecision(action="none", reason=f"{where}: {assessment.reason}")
    if became_champion_by_rollback(entries, performance.version):
        return RollbackDecision(
            action="alert",
            reason=f"{where} breaches its limits ({assessment.reason}) but is itself the result of a "
            "rollback; rollbacks do not cascade on their own — decide by hand (rollback job)",
        )
    target = previous_champion(entries, performance.version)
    if target is None:
        return RollbackDecision(
            action="alert",
            reason=f"{where} breaches its limits ({assessment.reason}) but there is no earlier champion "
            "to return to",
        )
    return RollbackDecision(
        action="rollback", to_version=target, reason=f"{where} breaches its limits: {assessment.reason}"
    )


def float_metrics(values: Mapping[str, object]) -> dict[str, float]:
    """The finite numeric entries of a mapping as floats (booleans and text left out)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        number = float(value)
        if number == number and abs(number) != float("inf"):
            out[str(key)] = number
    return out
