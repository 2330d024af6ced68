"""The demo's view of the model loop: score drift of every pair, show what the drift sensor decides, run
what it requests (retraining, then promotion), and summarise where the loop stands."""

import json
from collections.abc import Callable
from typing import Any

from dagster import DagsterInstance, Definitions, SensorEvaluationContext, build_sensor_context
from dagster._core.storage.tags import RUN_KEY_TAG
from pydantic import BaseModel, ConfigDict

from jobs.model_loop import DRIFT_JOB, PROMOTE_JOB, RETRAINING_JOB
from sensors.model_loop import DRIFT_SENSOR, PROMOTION_SENSOR, drift_decisions, materializations_after
from tradai_assets.keys import COMPARISON_KEY, DRIFT_KEY, MODEL_KEY
from tradai_assets.simulation_engine import SimulationResult
from tradai_core.model_lifecycle import DriftPolicy
from tradai_core.policy_simulation import table_text
from tradai_core.registry import CHALLENGER, CHAMPION, default_model_name
from tradai_core.sequential_challenge import look_summary
from tradai_core.settings import TradAISettings, pair_slug
from tradai_resources.mlflow_tracking import MLflowResource


class PairDriftLine(BaseModel):
    """One pair's drift score in the demo summary."""

    model_config = ConfigDict(frozen=True)

    pair: str
    severity: str
    median_psi: float
    prediction_psi: float | None
    top_features: str
    run_id: str


class DriftLoopSummary(BaseModel):
    """What the demo's drift step did and where the loop stands."""

    model_config = ConfigDict(frozen=True)

    model: str
    champion: int | None
    challenger: int | None
    drift: tuple[PairDriftLine, ...]
    drift_sensor: tuple[str, ...]
    loop_runs: tuple[str, ...]
    audit: tuple[str, ...]

    def text(self) -> str:
        """A printable summary."""
        lines = [f"model {self.model}: champion v{self.champion}, challenger v{self.challenger}"]
        for line in self.drift:
            prediction = f"{line.prediction_psi:.3f}" if line.prediction_psi is not None else "-"
            lines.append(
                f"  {line.pair:<10} {line.severity:<12} median feature PSI {line.median_psi:.3f}, "
                f"prediction PSI {prediction}; most drifted: {line.top_features}"
            )
        lines += [f"  drift sensor: {text}" for text in self.drift_sensor] or [
            "  drift sensor: nothing to do"
        ]
        lines += [f"  loop: {text}" for text in self.loop_runs]
        lines += [f"  audit: {text}" for text in self.audit] or ["  audit: no entries yet"]
        return "\n".join(lines)


SensorContextFactory = Callable[..., SensorEvaluationContext]
"""Builds the context of a sensor tick the demo runs itself (keyword arguments of `build_sensor_context`)."""


def _latest_storage_id(instance: DagsterInstance, key: Any) -> int:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else 0


def _act_on_promotions(
    definitions: Definitions,
    instance: DagsterInstance,
    resources: dict[str, Any],
    cursor: dict[str, int],
    loggers: dict[str, Any] | None = None,
    sensor_context: SensorContextFactory = build_sensor_context,
) -> list[str]:
    """Evaluate the promotion sensor from `cursor` and execute what it requests (with its run keys)."""
    promotion = definitions.resolve_sensor_def(PROMOTION_SENSOR)
    with sensor_context(
        instance=instance,
        cursor=json.dumps(cursor),
        resources=resources,
        definitions=definitions,
        sensor_name=PROMOTION_SENSOR,
    ) as context:
        requests = promotion.evaluate_tick(context).run_requests
    promote_job = definitions.resolve_job_def(PROMOTE_JOB)
    done = []
    for request in requests:
        run = promote_job.execute_in_process(
            instance=instance,
            run_config={**(request.run_config or {}), "loggers": loggers or {}},
            tags={**request.tags, RUN_KEY_TAG: request.run_key or ""},
            raise_on_error=False,
        )
        done.append(f"{request.run_key}: run {run.run_id} {'succeeded' if run.success else 'failed'}")
    return done


def demo_drift_loop(
    settings: TradAISettings,
    instance: DagsterInstance,
    *,
    definitions: Definitions | None = None,
    run_requested: bool = False,
    loggers: dict[str, Any] | None = None,
    sensor_context: SensorContextFactory = build_sensor_context,
) -> DriftLoopSummary:
    """After the first model: score drift of every pair, show what the drift sensor decides, and (with
    `run_requested`) run what it requests — retraining, then what the promotion sensor requests.

    Runs execute in process on `instance` with the run keys the sensors gave them, so a daemon started
    later on the same instance does not launch them again. The summary says where the loop stands.
    `loggers` is the runs' logger config and `sensor_context` builds the sensors' tick contexts (the demo
    passes a quiet console logger and `tradai.demo_output.quiet_sensor_context`).
    """
    if definitions is None:
        from tradai.definitions import build_definitions  # lazily: importing it builds the code location

        definitions = build_definitions(settings)
    resources = dict(definitions.resources or {})
    mlflow: MLflowResource = resources["mlflow"].process_config_and_initialize()  # resolves its EnvVars
    model = default_model_name(settings.timeframe)
    loop_runs: list[str] = []
    if run_requested:  # record the bootstrap of the first champion, as the promotion sensor would
        comparisons_seen = _latest_storage_id(instance, COMPARISON_KEY)
        loop_runs += _act_on_promotions(
            definitions,
            instance,
            resources,
            {"comparison": comparisons_seen, "model": 0},
            loggers,
            sensor_context,
        )
    drift_job = definitions.resolve_job_def(DRIFT_JOB)
    drift_cursor = _latest_storage_id(instance, DRIFT_KEY)
    lines = []
    for pair in settings.pairs:
        result = drift_job.execute_in_process(
            instance=instance,
            partition_key=pair_slug(pair),
            run_config={"loggers": loggers or {}},
            raise_on_error=False,
            tags={"tradai/trigger": "demo"},
        )
        scored = result.asset_materializations_for_node("drift_score")
        if not result.success or not scored:
            lines.append(
                PairDriftLine(
                    pair=pair,
                    severity="failed",
                    median_psi=0.0,
                    prediction_psi=None,
                    top_features=f"see run {result.run_id}",
                    run_id=result.run_id,
                )
            )
            continue
        meta = {key: value.value for key, value in scored[0].metadata.items()}
        lines.append(
            PairDriftLine(
                pair=pair,
                severity=str(meta["severity"]),
                median_psi=float(meta["median_psi"]),
                prediction_psi=float(meta["prediction_psi"])
                if meta.get("prediction_psi") is not None
                else None,
                top_features=str(meta.get("top_features", "")),
                run_id=result.run_id,
            )
        )
    comparison_cursor = _latest_storage_id(instance, COMPARISON_KEY)
    model_cursor = _latest_storage_id(instance, MODEL_KEY)
    new_scores = materializations_after(instance, DRIFT_KEY, drift_cursor)
    decided = drift_decisions(instance, new_scores, mlflow, RETRAINING_JOB, DriftPolicy())
    sensor = definitions.resolve_sensor_def(DRIFT_SENSOR)
    with sensor_context(
        instance=instance,
        cursor=str(drift_cursor),
        resources=resources,
        definitions=definitions,
        sensor_name=DRIFT_SENSOR,
    ) as context:
        tick = sensor.evaluate_tick(context)
    sensor_lines = [f"{event.pair}: {decision.action} — {decision.reason}" for event, decision in decided]
    sensor_lines += [f"requested {request.run_key}" for request in tick.run_requests]
    if run_requested and tick.run_requests:
        retraining = definitions.resolve_job_def(RETRAINING_JOB)
        request = tick.run_requests[0]
        result = retraining.execute_in_process(
            instance=instance,
            run_config={"loggers": loggers or {}},
            tags={**request.tags, RUN_KEY_TAG: request.run_key or ""},
            raise_on_error=False,
        )
        comparisons = result.asset_materializations_for_node("model_comparison")
        if comparisons:
            meta = {key: value.value for key, value in comparisons[0].metadata.items()}
            loop_runs.append(
                f"retraining run {result.run_id}: challenger v{meta['challenger_version']} vs champion "
                f"v{meta['champion_version']} → {meta['decision']} (p={float(meta['p_value']):.4f})"
            )
        else:
            loop_runs.append(f"retraining run {result.run_id} failed: see the UI")
        loop_runs += _act_on_promotions(
            definitions,
            instance,
            resources,
            {"comparison": comparison_cursor, "model": model_cursor},
            loggers,
            sensor_context,
        )
    return DriftLoopSummary(
        model=model,
        champion=mlflow.alias_version(model, CHAMPION),
        challenger=mlflow.alias_version(model, CHALLENGER),
        drift=tuple(lines),
        drift_sensor=tuple(sensor_lines),
        loop_runs=tuple(loop_runs),
        audit=tuple(entry.summary for entry in mlflow.audit_history(model)),
    )


def simulation_text(result: SimulationResult) -> str:
    """A walk-forward simulation as text: the models trained, every comparison (which two models, what it
    decided, its p-value), each policy's changes of champion, and the policy table."""
    plan = result.plan
    lines = [
        f"walk-forward {plan.start} → {plan.end}, every {plan.step_days} days, {', '.join(result.pairs)}; "
        f"challengers validated on the {plan.validation_days} days before the clock, trained on the "
        f"{plan.train_days} days before that"
    ]
    for model in result.models:
        auc = f"{model.oos_auc:.3f}" if model.oos_auc is not None else "n/a"
        rejected = f", rejected: {model.rejected}" if model.rejected else ""
        lines.append(
            f"  clock {model.trained_at:%Y-%m-%d}: trained v{model.version} on "
            f"{model.train_start:%Y-%m-%d} → {model.train_end:%Y-%m-%d} ({model.rows} rows, out-of-sample "
            f"AUC {auc}){rejected}"
        )
    for c in result.comparisons:
        lines.append(
            f"  clock {c.at:%Y-%m-%d}: challenger v{c.challenger} vs champion v{c.champion} on "
            f"{c.window[0]:%Y-%m-%d} → {c.window[1]:%Y-%m-%d}: {c.decision} (p={c.p_value:.4f}, "
            f"ΔSharpe {c.sharpe_diff:+.2f})"
        )
    for name, timeline in result.timelines.items():
        changes = [e for e in timeline if e.action in ("bootstrap", "promote", "rollback")]
        story = ", ".join(f"{e.at:%Y-%m-%d} {e.action} v{e.champion}" for e in changes)
        lines.append(f"  {name:<8} champion timeline: {story}")
    for name, challenges in result.challenges.items():
        for challenge in challenges:
            lines.append(f"  {name:<8} {look_summary(challenge)}")
    lines.append(table_text(result.rows))
    best = result.best
    lines.append(f"best policy: {best.policy}" + (f" — {best.note}" if best.note else ""))
    lines.append(
        f"{len(result.models)} models trained, {result.backtests_run} Freqtrade backtests "
        f"({result.backtests_reused} reused across policies), {result.wall_seconds:.0f}s; "
        f"{len(result.reads)} store reads, none at or after its step's clock"
    )
    return "\n".join(lines)
