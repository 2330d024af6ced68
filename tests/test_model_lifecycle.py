"""Promotion, keep, rollback and the audit history: the rules as plain functions, then the real thing —
the `champion_model` asset and the promotion and rollback sensors on a real Dagster instance (SQLite),
against a real MLflow registry (SQLite) holding real LightGBM model versions."""

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DagsterInvalidConfigError,
    Definitions,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from jobs.model_loop import PERFORMANCE_SCHEDULE, PROMOTE_JOB, ROLLBACK_JOB
from sensors.model_loop import PROMOTION_SENSOR, ROLLBACK_SENSOR
from tests.model_loop_fixtures import NAME, Lab, empty_mlflow_db, make_lab
from tradai.defs.model_loop import build_model_loop_definitions
from tradai_assets.keys import CHAMPION_MODEL_KEY, COMPARISON_KEY, MODEL_KEY, PERFORMANCE_KEY
from tradai_core.model_lifecycle import (
    AuditAction,
    AuditEntry,
    ChampionPerformance,
    ComparisonOutcome,
    DriftPolicy,
    RollbackLimits,
    Trigger,
    assess_performance,
    champion_lineage,
    decide_promotion,
    decide_rollback,
    previous_champion,
)
from tradai_core.registry import CHALLENGER, CHAMPION
from tradai_core.settings import TradAISettings
from tradai_resources.mlflow_tracking import MLflowResource

T0 = datetime(2022, 10, 1, 12, tzinfo=UTC)
HOLDOUT = {
    "tradai.holdout_start": "2021-01-12T00:00:00+00:00",
    "tradai.holdout_end": "2021-02-01T00:00:00+00:00",
}


def entry(action: AuditAction, frm: int | None, to: int | None, hours: int, **extra: Any) -> AuditEntry:
    return AuditEntry(
        action=action,
        model=NAME,
        from_version=frm,
        to_version=to,
        at=T0 + timedelta(hours=hours),
        reason="test",
        trigger=Trigger.SENSOR,
        **extra,
    )


def outcome(decision: str, champion: int, challenger: int, storage_id: int = 7) -> ComparisonOutcome:
    return ComparisonOutcome(
        model=NAME,
        decision=decision,  # type: ignore[arg-type]
        reason=f"{decision} because the test says so",
        champion_version=champion,
        challenger_version=challenger,
        p_value=0.01,
        storage_id=storage_id,
        at=T0,
    )


def performance(
    version: int, *, trades: int = 40, drawdown: float = 0.05, sharpe: float = 1.0
) -> ChampionPerformance:
    return ChampionPerformance(
        model=NAME,
        version=version,
        window_start=T0 - timedelta(days=30),
        window_end=T0,
        trade_count=trades,
        total_profit=0.01,
        max_drawdown=drawdown,
        sharpe=sharpe,
        storage_id=11,
        at=T0,
    )


# -- the rules -----------------------------------------------------------------------------------------


def test_the_champion_lineage_is_a_stack_that_promotions_push_and_rollbacks_pop() -> None:
    history = [
        entry(AuditAction.BOOTSTRAP, None, 1, 0),
        entry(AuditAction.PROMOTE, 1, 2, 1),
        entry(AuditAction.KEEP, 2, 2, 2, challenger_version=3),
        entry(AuditAction.PROMOTE, 2, 4, 3),
    ]
    assert champion_lineage(history) == [1, 2, 4]
    assert previous_champion(history, 4) == 2
    rolled_back = [*history, entry(AuditAction.ROLLBACK, 4, 2, 4)]
    assert champion_lineage(rolled_back) == [1, 2]
    assert previous_champion(rolled_back, 2) == 1
    assert previous_champion([entry(AuditAction.BOOTSTRAP, None, 1, 0)], 1) is None
    # The alias moved outside the loop (v5 set by hand): the history's top is the champion before it.
    assert previous_champion(history, 5) == 4


def test_a_comparison_is_acted_on_once_and_only_while_it_is_about_the_current_champion() -> None:
    assert decide_promotion(outcome("promote", 1, 2), 1, []).action == "promote"
    assert decide_promotion(outcome("keep", 1, 2), 1, []).action == "keep"
    inconclusive = decide_promotion(outcome("inconclusive", 1, 2), 1, [])
    assert inconclusive.action == "keep" and inconclusive.reason.startswith("inconclusive: ")
    stale = decide_promotion(outcome("promote", 1, 2), 3, [])
    assert stale.action == "none" and "champion is now v3" in stale.reason
    recorded = [entry(AuditAction.PROMOTE, 1, 2, 0, event_key="model_comparison:7")]
    assert decide_promotion(outcome("promote", 1, 2), 1, recorded).action == "none"
    assert decide_promotion(outcome("promote", 1, 2), 2, []).action == "none"  # v2 became champion meanwhile
    same = decide_promotion(outcome("inconclusive", 2, 2), 2, [])
    assert same.action == "none" and same.reason == "challenger and champion are the same version (v2)"


def test_performance_is_judged_only_with_enough_trades_and_breaches_on_drawdown_or_sharpe() -> None:
    limits = RollbackLimits(max_drawdown=0.2, min_sharpe=-1.0, min_trades=10)
    assert not assess_performance(performance(2, trades=9, drawdown=0.9), limits).judged
    assert not assess_performance(performance(2), limits).breached
    deep = assess_performance(performance(2, drawdown=0.31), limits)
    assert deep.breached and deep.breaches == ("drawdown 31.0% > limit 20.0%",)
    both = assess_performance(performance(2, drawdown=0.31, sharpe=-2.5), limits)
    assert both.breaches == ("drawdown 31.0% > limit 20.0%", "Sharpe -2.50 < floor -1.00")


def test_a_breach_rolls_back_unless_the_champion_came_from_a_rollback_or_has_no_predecessor() -> None:
    limits = RollbackLimits()
    history = [entry(AuditAction.BOOTSTRAP, None, 1, 0), entry(AuditAction.PROMOTE, 1, 2, 1)]
    breach = performance(2, sharpe=-3.0)
    decision = decide_rollback(breach, 2, history, limits)
    assert (decision.action, decision.to_version) == ("rollback", 1)
    assert decide_rollback(performance(2), 2, history, limits).action == "none"
    assert decide_rollback(breach, 3, history, limits).action == "none"  # v2 is no longer champion
    restored = [*history, entry(AuditAction.ROLLBACK, 2, 1, 2)]
    no_cascade = decide_rollback(performance(1, sharpe=-3.0), 1, restored, limits)
    assert no_cascade.action == "alert" and "do not cascade" in no_cascade.reason
    alone = decide_rollback(performance(1, sharpe=-3.0), 1, history[:1], limits)
    assert alone.action == "alert" and "no earlier champion" in alone.reason


def test_rollback_limits_and_the_drift_cooldown_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADAI_ROLLBACK_MAX_DRAWDOWN", "0.1")
    monkeypatch.setenv("TRADAI_ROLLBACK_MIN_SHARPE", "0.5")
    monkeypatch.setenv("TRADAI_DRIFT_COOLDOWN_HOURS", "6")
    assert (RollbackLimits().max_drawdown, RollbackLimits().min_sharpe, RollbackLimits().min_trades) == (
        0.1,
        0.5,
        10,
    )
    assert DriftPolicy().cooldown == timedelta(hours=6)


# -- the real registry and Dagster -----------------------------------------------------------------------


def register_version(mlflow: MLflowResource, seed: int) -> int:
    """A real (tiny) LightGBM model logged and registered as a new version of NAME."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(200, 3))
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": seed},
        lgb.Dataset(features, label=(features[:, 0] > 0).astype(int)),
        num_boost_round=3,
    )
    with mlflow.start_run(NAME, f"fixture-{seed}", dagster_run_id=None) as run:
        run.log_model(booster, "model", flavor="lightgbm")
    return mlflow.register_model(
        run.run_id, "model", NAME, tags={**HOLDOUT, "tradai.pairs": "BTC/USDT,ETH/USDT"}
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return empty_mlflow_db(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture
def lab(tmp_path: Path, demo_candles_dir: Path, template: Path) -> Iterator[Lab]:
    """Three registered versions: v1 champion, v2 challenger, v3 spare; an empty audit history."""
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        lab = make_lab(tmp_path, demo_candles_dir, template, instance, date(2020, 10, 20))
        for seed in (1, 2, 3):
            register_version(lab.mlflow, seed)
        lab.mlflow.set_alias(NAME, CHAMPION, 1)
        lab.mlflow.set_alias(NAME, CHALLENGER, 2)
        yield lab


def change(lab: Lab, job: str = PROMOTE_JOB, **config: Any) -> list[dict[str, Any]]:
    """Run the job with `champion_model` config; the materializations' metadata (none when it did nothing)."""
    result = lab.run(job, run_config={"ops": {"champion_model": {"config": config}}})
    assert result.success
    return [
        {key: value.value for key, value in m.metadata.items()}
        for m in result.asset_materializations_for_node("champion_model")
    ]


def materialize_event(lab: Lab, key: AssetKey, **metadata: Any) -> int:
    """Report a materialization of `key` with `metadata`, as the asset would; its storage id."""
    lab.instance.report_runless_asset_event(AssetMaterialization(asset_key=key, metadata=metadata))
    return lab.instance.fetch_materializations(key, limit=1).records[0].storage_id


def tick(lab: Lab, sensor: str, cursor: str | None = None) -> SensorResult:
    context = build_sensor_context(
        instance=lab.instance, cursor=cursor, resources=lab.resources, definitions=lab.defs
    )
    return lab.defs.resolve_sensor_def(sensor).evaluate_tick(context)


PROMOTE = {
    "action": "promote",
    "reason": "challenger is significantly better",
    "trigger": "sensor",
    "to_version": 2,
    "expected_champion": 1,
    "event_key": "model_comparison:42",
    "p_value": 0.012,
    "decision": "promote",
    "metrics": {"sharpe_diff": 1.7, "challenger_sharpe": 2.1},
}


def test_a_promotion_moves_champion_archives_the_old_one_and_is_audited_in_mlflow_and_dagster(
    lab: Lab,
) -> None:
    [metadata] = change(lab, **PROMOTE)
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 2
    old, new = lab.mlflow.get_version(NAME, 1), lab.mlflow.get_version(NAME, 2)
    assert old.tags["tradai.archived"] == "true"
    assert old.tags["tradai.archived_reason"] == "replaced by v2: challenger is significantly better"
    assert (new.tags["tradai.archived"], new.tags["tradai.promoted_from"]) == ("false", "1")

    [audited] = lab.mlflow.audit_history(NAME)
    assert (audited.action, audited.from_version, audited.to_version) == (AuditAction.PROMOTE, 1, 2)
    assert (audited.p_value, audited.metrics["sharpe_diff"], audited.trigger) == (0.012, 1.7, Trigger.SENSOR)
    assert audited.event_key == "model_comparison:42" and audited.dagster_run_id

    assert (metadata["action"], metadata["from_version"], metadata["to_version"]) == ("promote", 1, 2)
    assert (metadata["p_value"], metadata["reason"]) == (0.012, "challenger is significantly better")
    assert metadata["metrics"] == {"sharpe_diff": 1.7, "challenger_sharpe": 2.1}
    assert "| promote | v1 | v2 | v2 | 0.0120 | sensor |" in metadata["audit_history"]
    run = lab.mlflow.get_run(metadata["audit_mlflow_run_id"])
    assert run.data.metrics["p_value"] == 0.012 and run.data.tags["tradai.audit.action"] == "promote"
    registered = lab.mlflow.client().get_registered_model(NAME)
    assert registered.tags["tradai.audit.last"].endswith(
        "promote v1 → v2 (sensor, p=0.0120): challenger is significantly better"
    )


def test_the_same_promotion_decision_seen_twice_does_nothing(lab: Lab) -> None:
    assert len(change(lab, **PROMOTE)) == 1
    lab.mlflow.set_alias(NAME, CHALLENGER, 3)  # even with a new challenger, the old decision stays done
    assert change(lab, **PROMOTE) == []
    assert change(lab, **{**PROMOTE, "expected_champion": None}) == []
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 2
    assert len(lab.mlflow.audit_history(NAME)) == 1
    assert len(lab.instance.fetch_materializations(CHAMPION_MODEL_KEY, limit=10).records) == 1


def test_a_decision_about_a_champion_that_has_since_changed_does_nothing(lab: Lab) -> None:
    lab.mlflow.set_alias(NAME, CHAMPION, 3)
    assert change(lab, **PROMOTE) == []
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 3 and lab.mlflow.audit_history(NAME) == []


def test_a_keep_leaves_the_champion_and_records_why_on_the_judged_version(lab: Lab) -> None:
    [metadata] = change(
        lab,
        action="keep",
        reason="no significant difference",
        trigger="sensor",
        expected_champion=1,
        challenger_version=2,
        event_key="model_comparison:43",
        p_value=0.41,
        decision="inconclusive",
    )
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 1
    assert lab.mlflow.get_version(NAME, 2).tags["tradai.validation"] == "kept v1: no significant difference"
    assert (metadata["action"], metadata["to_version"], metadata["challenger_version"]) == ("keep", 1, 2)
    [kept] = lab.mlflow.audit_history(NAME)
    assert kept.summary.endswith("keep v1 kept over v2 (sensor, p=0.4100): no significant difference")


def test_a_manual_rollback_from_the_ui_restores_the_previous_version(lab: Lab) -> None:
    change(lab, action="bootstrap", reason="first champion", trigger="sensor", event_key="model:1")
    change(lab, **PROMOTE)
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 2
    # What the launchpad sends: the job's default config with the reason written in.
    [metadata] = change(lab, ROLLBACK_JOB, action="rollback", reason="v2 misbehaves live", trigger="manual")
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 1
    rolled_back = lab.mlflow.get_version(NAME, 2).tags
    assert rolled_back["tradai.archived"] == "true" and rolled_back["tradai.rolled_back"].endswith(
        "v2 misbehaves live"
    )
    assert lab.mlflow.get_version(NAME, 1).tags["tradai.archived"] == "false"
    assert (metadata["action"], metadata["from_version"], metadata["to_version"], metadata["trigger"]) == (
        "rollback",
        2,
        1,
        "manual",
    )
    assert metadata["champion_lineage"] == "v1"
    actions = [(e.action.value, e.from_version, e.to_version) for e in lab.mlflow.audit_history(NAME)]
    assert actions == [("bootstrap", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]
    assert not lab.run(ROLLBACK_JOB).success  # v1 has no earlier champion: nothing to return to
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 1


def test_a_rollback_with_no_earlier_champion_fails_saying_what_to_do(lab: Lab) -> None:
    result = lab.run(ROLLBACK_JOB)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "has no earlier champion in its audit history" in failure.step_failure_data.error.to_string()
    assert "to_version" in failure.step_failure_data.error.to_string()


def comparison(lab: Lab, decision: str, champion: int, challenger: int, p_value: float) -> int:
    return materialize_event(
        lab,
        COMPARISON_KEY,
        model_name=NAME,
        decision=decision,
        reason=f"{decision}: test",
        champion_version=champion,
        challenger_version=challenger,
        p_value=p_value,
        sharpe_diff=0.8,
        champion_sharpe=0.4,
        challenger_sharpe=1.2,
    )


def test_the_promotion_sensor_turns_each_decision_into_one_run_and_records_the_bootstrap(lab: Lab) -> None:
    bootstrap = materialize_event(
        lab, MODEL_KEY, model_name=NAME, model_version=1, bootstrapped_champion=True
    )
    materialize_event(lab, MODEL_KEY, model_name=NAME, model_version=2, bootstrapped_champion=False)
    promote = comparison(lab, "promote", 1, 2, 0.01)
    first = tick(lab, PROMOTION_SENSOR)
    assert [r.run_key for r in first.run_requests] == [
        f"bootstrap:model:{bootstrap}",
        f"promote:model_comparison:{promote}",
    ]
    promote_config = first.run_requests[1].run_config["ops"]["champion_model"]["config"]
    assert promote_config["to_version"] == 2 and promote_config["expected_champion"] == 1
    assert promote_config["metrics"] == {"sharpe_diff": 0.8, "champion_sharpe": 0.4, "challenger_sharpe": 1.2}
    assert tick(lab, PROMOTION_SENSOR, first.cursor).skip_message == "no new comparisons or models"

    for request in first.run_requests:
        assert lab.launch(PROMOTE_JOB, request).success
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 2
    assert [e.action for e in lab.mlflow.audit_history(NAME)] == [
        AuditAction.BOOTSTRAP,
        AuditAction.PROMOTE,
    ]
    # The same comparisons read again (cursor lost): nothing is requested twice.
    assert tick(lab, PROMOTION_SENSOR).run_requests == []
    assert (
        lab.launch(PROMOTE_JOB, first.run_requests[0]).asset_materializations_for_node("champion_model") == []
    )

    lab.mlflow.set_alias(NAME, CHALLENGER, 3)
    keep = comparison(lab, "inconclusive", 2, 3, 0.4)
    stale = comparison(lab, "promote", 1, 3, 0.01)
    later = tick(lab, PROMOTION_SENSOR, first.cursor)
    assert [r.run_key for r in later.run_requests] == [f"keep:model_comparison:{keep}"]
    assert json.loads(later.cursor or "{}")["comparison"] == stale


def perf(lab: Lab, version: int, **numbers: float) -> int:
    values = {"trade_count": 40, "total_profit": 0.01, "max_drawdown": 0.05, "sharpe": 1.0, **numbers}
    return materialize_event(
        lab,
        PERFORMANCE_KEY,
        model_name=NAME,
        model_version=version,
        window_start=(T0 - timedelta(days=30)).timestamp(),
        window_end=T0.timestamp(),
        **values,
    )


def test_the_rollback_sensor_rolls_back_on_a_breach_and_alerts_when_it_cannot(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    change(lab, action="bootstrap", reason="first champion", trigger="sensor", event_key="model:1")
    change(lab, **PROMOTE)
    fine = perf(lab, 2)
    assert tick(lab, ROLLBACK_SENSOR).run_requests == []
    breach = perf(lab, 2, max_drawdown=0.35)
    result = tick(lab, ROLLBACK_SENSOR, str(fine))
    [request] = result.run_requests
    assert request.run_key == f"rollback:champion_performance:{breach}" and result.cursor == str(breach)
    config = request.run_config["ops"]["champion_model"]["config"]
    assert (config["to_version"], config["expected_champion"], config["trigger"]) == (1, 2, "sensor")
    assert config["reason"] == "tradai-lgbm-1h v2 breaches its limits: drawdown 35.0% > limit 20.0%"
    assert config["metrics"]["max_drawdown"] == 0.35 and config["metrics"]["limit_max_drawdown"] == 0.2

    assert lab.launch(ROLLBACK_JOB, request).success
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 1
    [*_, rollback] = lab.mlflow.audit_history(NAME)
    assert (rollback.action, rollback.trigger, rollback.event_key) == (
        AuditAction.ROLLBACK,
        Trigger.SENSOR,
        f"champion_performance:{breach}",
    )
    # v1 now breaches too: it was restored by a rollback, so a person decides.
    restored_breach = perf(lab, 1, sharpe=-4.0)
    with caplog.at_level(logging.ERROR, logger="tradai.notify"):
        alert = tick(lab, ROLLBACK_SENSOR, str(breach))
    assert alert.run_requests == [] and alert.cursor == str(restored_breach)
    assert "v1 breaches its limits; no automatic rollback" in caplog.text and "do not cascade" in caplog.text


def test_the_loop_merges_into_the_code_location_with_the_documented_default_statuses(tmp_path: Path) -> None:
    from tradai.definitions import build_definitions

    settings = TradAISettings(home=tmp_path)
    defs = build_definitions(settings)
    # a live instance of its own: Dagster reads the "current defs-state storage" while loading, and an
    # earlier test's collected instance can be left there (see tests/conftest.py)
    with DagsterInstance.ephemeral():
        Definitions.validate_loadable(defs)
    loop = build_model_loop_definitions(settings)
    statuses = {d.name: d.default_status.value for d in [*loop.schedules, *loop.sensors]}
    assert statuses == {
        "drift_every_6_hours": "RUNNING",
        "retraining_weekly": "STOPPED",
        "champion_performance_daily": "RUNNING",
        "drift_sensor": "RUNNING",
        "promotion_sensor": "RUNNING",
        "rollback_sensor": "RUNNING",
    }
    retraining = defs.resolve_job_def("retraining_job")
    assert {key.to_user_string() for key in retraining.asset_layer.executable_asset_keys} == {
        "training_set",
        "model",
        "validation_backtest/challenger",
        "validation_backtest/champion",
        "model_comparison",
    }


def test_the_performance_schedule_runs_once_per_champion_and_newest_candle(lab: Lab, tmp_path: Path) -> None:
    schedule = lab.defs.resolve_schedule_def(PERFORMANCE_SCHEDULE)
    repository = lab.defs.get_repository_def()
    context = build_schedule_context(
        instance=lab.instance, resources=lab.resources, repository_def=repository
    )
    [request] = schedule.evaluate_tick(context).run_requests or []
    assert request.run_key == "performance:v1:20201020T0000"  # candles end 2020-10-19 23:00
    lab.mlflow.delete_alias(NAME, CHAMPION)
    skipped = schedule.evaluate_tick(context)
    assert skipped.skip_message is not None and skipped.skip_message.startswith(
        "nothing to judge: no model version"
    )


def test_materializing_the_champion_without_saying_what_to_do_is_refused(lab: Lab) -> None:
    job = lab.defs.resolve_implicit_global_asset_job_def()
    with pytest.raises(DagsterInvalidConfigError, match=r"Missing required config entry \"ops\""):
        job.execute_in_process(instance=lab.instance, asset_selection=[CHAMPION_MODEL_KEY])
    with pytest.raises(DagsterInvalidConfigError, match=r"Missing required config entry \"action\""):
        job.execute_in_process(
            instance=lab.instance,
            asset_selection=[CHAMPION_MODEL_KEY],
            run_config={"ops": {"champion_model": {"config": {"reason": "clicked Materialize"}}}},
        )
    assert lab.mlflow.alias_version(NAME, CHAMPION) == 1
