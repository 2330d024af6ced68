"""The `champion_model` asset and the registry operations behind it: promote, keep, roll back, bootstrap.

Every change of a model's `champion` alias goes through one place, `apply_champion_change`, which

1. reads the model's audit history and refuses to act twice on the same event (`event_key`), on a decision
   about a champion that has since changed (`expected_champion`), or when there is nothing to change;
2. moves the alias in the MLflow registry and tags the versions involved (`tradai.archived`,
   `tradai.promoted_from`, `tradai.rolled_back`, `tradai.validation`...);
3. appends an `AuditEntry` to the history kept in MLflow: one run per entry in the experiment
   `tradai/model-audit` (tags say what, when, why; metrics hold the numbers; the entry itself is kept as
   JSON), plus a `tradai.audit.last` tag on the registered model;
4. notifies people.

The `champion_model` asset wraps it: each materialization is one audit entry with every number in its
metadata, so the asset's history in the Dagster UI *is* the audit log. A run that has nothing to do (the
same decision seen twice) materializes nothing and says why in its log.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import BaseModel, ConfigDict, Field

from tradai_assets.keys import CHAMPION_MODEL_KEY, COMPARISON_KEY, LIFECYCLE_GROUP
from tradai_core.errors import NotFoundError, ValidationError
from tradai_core.lazy import LazyModule
from tradai_core.model_lifecycle import (
    AuditAction,
    AuditEntry,
    Trigger,
    already_recorded,
    champion_lineage,
    previous_champion,
)
from tradai_core.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_ARCHIVED,
    TAG_ARCHIVED_AT,
    TAG_ARCHIVED_REASON,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_FROM,
    TAG_REJECTED,
    TAG_RESTORED_AT,
    TAG_ROLLED_BACK,
    TAG_VALIDATION,
    default_model_name,
)
from tradai_core.settings import TradAISettings
from tradai_resources.mlflow_tracking import MLflowResource
from tradai_resources.notifier import Notification, NotifierResource

HISTORY_ROWS = 50
REGISTRY_POOL = "model_registry"
"""Concurrency pool of `champion_model`: one change of a champion at a time (dagster.yaml's default limit
of 1), so two decisions never read the same champion and both act."""

_mlflow_exceptions = LazyModule("mlflow.exceptions")  # imported on first use


# -- registry writes -------------------------------------------------------------------------------


def _tag(mlflow: MLflowResource, name: str, version: int, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        mlflow.set_version_tag(name, version, key, value)


def promote_version(mlflow: MLflowResource, name: str, version: int, reason: str, at: datetime) -> int | None:
    """Point `champion` at `version`, archive the previous champion; returns the previous version."""
    info = mlflow.get_version(name, version)
    if TAG_REJECTED in info.tags:
        raise ValidationError(
            f"{name} v{version} was rejected at training ({info.tags[TAG_REJECTED]}); it cannot be champion",
            "train a sane model first",
        )
    previous = mlflow.set_alias(name, CHAMPION, version)
    stamp = at.isoformat()
    if previous is not None and previous != version:
        _tag(
            mlflow,
            name,
            previous,
            {
                TAG_ARCHIVED: "true",
                TAG_ARCHIVED_AT: stamp,
                TAG_ARCHIVED_REASON: f"replaced by v{version}: {reason}"[:4000],
            },
        )
    _tag(
        mlflow,
        name,
        version,
        {TAG_ARCHIVED: "false", TAG_PROMOTED_AT: stamp, TAG_PROMOTED_FROM: str(previous)},
    )
    return previous


def rollback_version(
    mlflow: MLflowResource, name: str, from_version: int, to_version: int, reason: str, at: datetime
) -> None:
    """Point `champion` back at `to_version`; tag `from_version` as rolled back and archived."""
    mlflow.get_version(name, to_version)
    mlflow.set_alias(name, CHAMPION, to_version)
    stamp = at.isoformat()
    _tag(
        mlflow,
        name,
        from_version,
        {
            TAG_ARCHIVED: "true",
            TAG_ARCHIVED_AT: stamp,
            TAG_ARCHIVED_REASON: f"rolled back to v{to_version}: {reason}"[:4000],
            TAG_ROLLED_BACK: f"{stamp}: {reason}"[:4000],
        },
    )
    _tag(mlflow, name, to_version, {TAG_ARCHIVED: "false", TAG_RESTORED_AT: stamp})


# -- one change of the champion --------------------------------------------------------------------


class ChampionChange(BaseModel):
    """What to do to the champion, and the evidence for it (the `champion_model` run config, typed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    action: AuditAction
    reason: str
    trigger: Trigger
    to_version: int | None = None
    expected_champion: int | None = None
    challenger_version: int | None = None
    event_key: str | None = None
    p_value: float | None = None
    decision: str | None = None
    metrics: dict[str, float] = {}


class ChangeOutcome(BaseModel):
    """What `apply_champion_change` did: the entry it recorded, or why it did nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry: AuditEntry | None
    skipped: str | None = None
    audit_run_id: str | None = None
    audit_experiment_id: str | None = None
    history: tuple[AuditEntry, ...] = ()


def _skip(reason: str, history: list[AuditEntry]) -> ChangeOutcome:
    return ChangeOutcome(entry=None, skipped=reason, history=tuple(history))


def apply_champion_change(
    mlflow: MLflowResource,
    notifier: NotifierResource | None,
    change: ChampionChange,
    dagster_run_id: str | None,
    now: datetime | None = None,
) -> ChangeOutcome:
    """Carry out one champion change idempotently, record it, notify (see the module docstring).

    Nothing happens — and the outcome says why — when the event was already acted on, when the champion is
    not the one the decision was about, or when the alias already points where it should.
    """
    at = now or datetime.now(tz=UTC)
    name = change.model
    history = mlflow.audit_history(name)
    done = already_recorded(history, change.event_key)
    if done is not None:
        return _skip(f"event {change.event_key} was already acted on: {done.summary}", history)
    current = mlflow.alias_version(name, CHAMPION)
    if change.expected_champion is not None and current != change.expected_champion:
        return _skip(
            f"the decision was about champion v{change.expected_champion}, but the champion is now "
            f"v{current}; nothing done",
            history,
        )

    challenger = change.challenger_version
    if change.action is AuditAction.PROMOTE:
        target = change.to_version or mlflow.alias_version(name, CHALLENGER)
        if target is None:
            raise NotFoundError(f"{name} has no challenger to promote", "run the retraining job first")
        if target == current:
            return _skip(f"v{target} is already champion of {name}; nothing done", history)
        promote_version(mlflow, name, target, change.reason, at)
        from_version, to_version, challenger = current, target, target
    elif change.action is AuditAction.KEEP:
        if current is None:
            raise NotFoundError(f"{name} has no champion to keep", "train a model first")
        challenger = challenger or mlflow.alias_version(name, CHALLENGER)
        if challenger is not None and challenger != current:
            mlflow.set_version_tag(
                name, challenger, TAG_VALIDATION, f"kept v{current}: {change.reason}"[:4000]
            )
        from_version, to_version = current, current
    elif change.action is AuditAction.ROLLBACK:
        if current is None:
            raise NotFoundError(f"{name} has no champion to roll back", "train a model first")
        target = change.to_version or previous_champion(history, current)
        if target is None:
            raise NotFoundError(
                f"{name} v{current} has no earlier champion in its audit history to return to",
                "give the version to return to as `to_version` in the rollback job's config",
            )
        if target == current:
            return _skip(f"v{target} is already champion of {name}; nothing done", history)
        rollback_version(mlflow, name, current, target, change.reason, at)
        from_version, to_version = current, target
    else:  # bootstrap: record the champion the model asset set because none existed
        if current is None:
            raise NotFoundError(f"{name} has no champion", "materialize the model asset first")
        if current in champion_lineage(history):
            return _skip(f"v{current} is already in the audit history of {name}; nothing done", history)
        from_version, to_version = None, current

    entry = AuditEntry(
        action=change.action,
        model=name,
        from_version=from_version,
        to_version=to_version,
        challenger_version=challenger,
        at=at,
        reason=change.reason,
        metrics=dict(change.metrics),
        p_value=change.p_value,
        decision=change.decision,
        event_key=change.event_key,
        dagster_run_id=dagster_run_id,
        trigger=change.trigger,
    )
    run_id, experiment_id = mlflow.record_audit_entry(entry)
    if notifier is not None:
        notifier.notify(_notification(entry, mlflow))
    return ChangeOutcome(
        entry=entry,
        audit_run_id=run_id,
        audit_experiment_id=experiment_id,
        history=(*history, entry),
    )


def _notification(entry: AuditEntry, mlflow: MLflowResource) -> Notification:
    severity: Literal["info", "warning", "critical"] = (
        "warning" if entry.action is AuditAction.ROLLBACK else "info"
    )
    frm, to, judged = entry.from_version, entry.to_version, entry.challenger_version
    titles = {
        AuditAction.PROMOTE: f"{entry.model}: v{to} promoted to champion (was v{frm})",
        AuditAction.KEEP: f"{entry.model}: champion v{to} kept over v{judged}",
        AuditAction.ROLLBACK: f"{entry.model}: champion rolled back v{frm} → v{to}",
        AuditAction.BOOTSTRAP: f"{entry.model}: v{to} is the first champion",
    }
    details: dict[str, Any] = {"reason": entry.reason, "trigger": entry.trigger.value}
    if entry.p_value is not None:
        details["p_value"] = round(entry.p_value, 6)
    details.update({key: round(value, 6) for key, value in entry.metrics.items()})
    url = mlflow.model_version_url(entry.model, entry.to_version) if entry.to_version else None
    if url:
        details["model_version"] = url
    return Notification(
        kind={
            AuditAction.PROMOTE: "promotion",
            AuditAction.KEEP: "promotion_kept",
            AuditAction.ROLLBACK: "rollback",
            AuditAction.BOOTSTRAP: "bootstrap",
        }[entry.action],
        severity=severity,
        title=titles[entry.action],
        details=details,
        dagster_run_id=entry.dagster_run_id,
    )


# -- metadata ----------------------------------------------------------------------------------------


def history_markdown(history: tuple[AuditEntry, ...] | list[AuditEntry], rows: int = HISTORY_ROWS) -> str:
    """The audit history as a markdown table, newest first."""
    if not history:
        return "No audit entries yet."
    lines = [
        "| when (UTC) | action | from | to | judged | p-value | trigger | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in sorted(history, key=lambda e: e.at, reverse=True)[:rows]:
        p_value = f"{entry.p_value:.4f}" if entry.p_value is not None else ""
        reason = entry.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {entry.at:%Y-%m-%d %H:%M:%S} | {entry.action.value} | {_v(entry.from_version)} | "
            f"{_v(entry.to_version)} | {_v(entry.challenger_version)} | {p_value} | {entry.trigger.value} | "
            f"{reason} |"
        )
    return "\n".join(lines)


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else ""


def entry_metadata(outcome: ChangeOutcome, mlflow: MLflowResource) -> dict[str, Any]:
    """Dagster metadata of one audit entry: every field, the numbers, the whole history."""
    entry = outcome.entry
    assert entry is not None
    metadata: dict[str, Any] = {
        "action": entry.action.value,
        "model_name": entry.model,
        "from_version": MetadataValue.int(entry.from_version)
        if entry.from_version is not None
        else MetadataValue.null(),
        "to_version": MetadataValue.int(entry.to_version)
        if entry.to_version is not None
        else MetadataValue.null(),
        "champion_version": MetadataValue.int(entry.to_version)
        if entry.to_version is not None
        else MetadataValue.null(),
        "challenger_version": MetadataValue.int(entry.challenger_version)
        if entry.challenger_version is not None
        else MetadataValue.null(),
        "reason": MetadataValue.text(entry.reason),
        "trigger": entry.trigger.value,
        "at": MetadataValue.timestamp(entry.at),
        "p_value": MetadataValue.float(entry.p_value) if entry.p_value is not None else MetadataValue.null(),
        "decision": entry.decision or "",
        "event_key": entry.event_key or "",
        "metrics": MetadataValue.json(entry.metrics),
        "audit_entry": MetadataValue.json(json.loads(entry.model_dump_json())),
        "audit_history": MetadataValue.md(history_markdown(outcome.history)),
        "champion_lineage": " → ".join(f"v{v}" for v in champion_lineage(outcome.history)),
    }
    if outcome.audit_run_id:
        metadata.update(
            {
                "audit_" + key: value
                for key, value in mlflow.run_metadata(
                    outcome.audit_run_id, outcome.audit_experiment_id
                ).items()
            }
        )
    url = mlflow.model_version_url(entry.model, entry.to_version) if entry.to_version else None
    if url:
        metadata["mlflow_model_version"] = MetadataValue.url(url)
    return metadata


# -- the asset ---------------------------------------------------------------------------------------


class ChampionChangeConfig(Config):
    """Run config of `champion_model`: what to do, and the evidence. The promotion and rollback sensors
    fill it in; a person launching the rollback job from the UI gives at least a reason."""

    action: Literal["promote", "keep", "rollback", "bootstrap"]
    """What to do. No default: materializing `champion_model` without saying what to do is refused (the
    promote and rollback jobs give their own defaults)."""
    reason: str = "manual change from the Dagster UI"
    trigger: Literal["sensor", "schedule", "manual"] = "manual"
    to_version: int | None = None
    """promote: the version to promote (default: the challenger); rollback: the version to return to
    (default: the previous champion in the audit history)."""
    expected_champion: int | None = None
    """Act only while the champion is this version (a decision about an older champion is stale)."""
    challenger_version: int | None = None
    event_key: str | None = None
    """The event the decision came from (e.g. model_comparison:1234); an event is acted on once."""
    p_value: float | None = None
    decision: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    model_name: str | None = None
    """Registered model; default `tradai-lgbm-<timeframe>`."""

    def to_change(self, default_model: str) -> ChampionChange:
        """The typed change this config asks for."""
        return ChampionChange(
            model=self.model_name or default_model,
            action=AuditAction(self.action),
            reason=self.reason,
            trigger=Trigger(self.trigger),
            to_version=self.to_version,
            expected_champion=self.expected_champion,
            challenger_version=self.challenger_version,
            event_key=self.event_key,
            p_value=self.p_value,
            decision=self.decision,
            metrics=dict(self.metrics),
        )


def build_champion_model_asset(settings: TradAISettings) -> AssetsDefinition:
    """The `champion_model` asset: one materialization per change of (or decision about) the champion."""
    default_model = default_model_name(settings.timeframe)

    @asset(
        key=CHAMPION_MODEL_KEY,
        group_name=LIFECYCLE_GROUP,
        deps=[COMPARISON_KEY],
        output_required=False,
        pool=REGISTRY_POOL,
        description="The model version behind the `champion` alias. Every materialization is one entry of "
        "the audit history (promote, keep, rollback, bootstrap: what, when, why, metrics, p-value, run, "
        "trigger), also kept in MLflow (experiment tradai/model-audit). Runs that have nothing to do (a "
        "decision seen twice, a stale decision) materialize nothing.",
        kinds={"mlflow"},
    )
    def champion_model(
        context: AssetExecutionContext,
        config: ChampionChangeConfig,
        mlflow: MLflowResource,
        notifier: NotifierResource,
    ) -> Iterator[MaterializeResult]:
        change = config.to_change(default_model)
        outcome = apply_champion_change(mlflow, notifier, change, context.run.run_id, settings.clock.now())
        if outcome.entry is None:
            context.log.info("nothing to do: %s", outcome.skipped)
            return
        context.log.info("audit: %s", outcome.entry.summary)
        yield MaterializeResult(metadata=entry_metadata(outcome, mlflow))

    return champion_model
