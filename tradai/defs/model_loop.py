"""The model loop: drift scores, retraining, validation backtests, comparison, promotion and rollback.

    drift_every_6_hours ─► drift_score/<pair> ─► drift_sensor ─► retraining_job
    retraining_weekly ───────────────────────────────────────────► (training_set → model →
                                                                    validation_backtest/* → model_comparison)
    model_comparison ─► promotion_sensor ─► promote_champion_job ─► champion_model (audit entry)
    champion_performance_daily ─► champion_performance ─► rollback_sensor ─► rollback_champion_job
    a person ─► rollback_champion_job (UI, with a reason) ─► champion_model (audit entry)
    model_loop_simulation (on demand): all of the above stepped through history, per retraining policy

Following drift end to end (docs/model_loop.md lists the same files):

1. `tradai/defs/model_loop.py` — this map;
2. `tradai_assets/drift.py` — the score (`drift_score/<pair>`), on `tradai_core/drift.py` (the verdict);
3. `sensors/model_loop.py` — every sensor of the loop: drift → retrain, comparison → promote,
   performance → roll back;
4. `jobs/model_loop.py` — every job and schedule of the loop: drift, retraining, the champion's jobs;
5. `tradai_assets/models.py` — training set and the new challenger;
6. `tradai_assets/validation.py` — both validation backtests, the comparison, the champion's performance;
7. `tradai_assets/backtest_runner.py` — the one backtest path they take;
8. `tradai_core/comparison.py` — the statistical test behind the decision;
9. `tradai_assets/model_lifecycle.py` — `champion_model`: the alias moves, the audit entry;
10. `tradai_core/model_lifecycle.py` — the rules the sensors and `champion_model` apply;
11. `tradai_resources/mlflow_tracking.py` — the registry (aliases, audit history).
"""

from typing import Any

from dagster import Definitions

from jobs.model_loop import (
    build_drift_job,
    build_drift_schedule,
    build_performance_job,
    build_performance_schedule,
    build_promote_job,
    build_retraining_job,
    build_retraining_schedule,
    build_rollback_job,
)
from sensors.model_loop import build_drift_sensor, build_promotion_sensor, build_rollback_sensor
from tradai_assets.drift import build_drift_asset
from tradai_assets.model_lifecycle import build_champion_model_asset
from tradai_assets.model_loop_simulation import build_simulation_asset
from tradai_assets.validation import build_validation_assets
from tradai_core.model_lifecycle import DriftPolicy, RollbackLimits
from tradai_core.settings import TradAISettings


def build_model_loop_definitions(
    settings: TradAISettings,
    *,
    retraining_config: dict[str, Any] | None = None,
    drift_policy: DriftPolicy | None = None,
    rollback_limits: RollbackLimits | None = None,
) -> Definitions:
    """Every asset, job, schedule and sensor of the model loop, to merge into the code location.

    The retraining job selects `training_set` and `model` (`tradai.defs.models`), which must be in the same
    merged Definitions. Resources used: `mlflow`, `candle_store`, `freqtrade`, `notifier`.
    """
    drift_job = build_drift_job(settings)
    retraining_job = build_retraining_job(settings, retraining_config)
    promote_job = build_promote_job()
    rollback_job = build_rollback_job()
    performance_job = build_performance_job()
    return Definitions(
        assets=[
            build_drift_asset(settings),
            *build_validation_assets(settings, rollback_limits),
            build_champion_model_asset(settings),
            build_simulation_asset(settings),
        ],
        jobs=[drift_job, retraining_job, promote_job, rollback_job, performance_job],
        schedules=[
            build_drift_schedule(settings, drift_job),
            build_retraining_schedule(retraining_job),
            build_performance_schedule(settings, performance_job),
        ],
        sensors=[
            build_drift_sensor(retraining_job, drift_policy),
            build_promotion_sensor(promote_job),
            build_rollback_sensor(rollback_job, rollback_limits),
        ],
    )
