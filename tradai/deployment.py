"""How runs execute in a deployment: the executor and the IO manager, chosen from the environment.

Default (nothing set): `auto_executor` — a run whose every step is tagged safe to run in process
(`tradai_assets.run_shape`, e.g. a backtest: plan → report) runs in the run's own process, any other on
Dagster's multiprocess executor; run config can still choose `multiprocess` or `in_process` explicitly
(Dagster's `multi_or_in_process_executor` options) — and Dagster's file-system IO manager, on one machine.
`TRADAI_EXECUTOR=celery` sends every step to Celery workers on the Redis broker `TRADAI_CELERY_BROKER`;
steps then run on other machines, so every output that crosses processes goes through S3
(`S3PickleIOManager` on `TRADAI_IO_BUCKET`; endpoint and credentials from the standard AWS variables,
e.g. `AWS_ENDPOINT_URL` for an S3-compatible server). Nothing here reads or shows a credential.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ExecutorDefinition, Field, Selector, executor
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
    multiple_process_executor_requirements,
)
from dagster._core.executor.base import Executor
from pydantic import BaseModel, ConfigDict

from tradai_assets.run_shape import IN_PROCESS_TAG

if TYPE_CHECKING:
    from dagster import InitExecutorContext
    from dagster._core.events import DagsterEvent
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan
    from dagster._core.execution.retries import RetryMode
    from dagster._core.execution.step_dependency_config import StepDependencyConfig

EXECUTORS = ("multiprocess", "celery")


class DeploymentError(ValueError):
    """The deployment variables are inconsistent; the message says which and what to set."""


class Execution(BaseModel):
    """The executor and the extra resources (an IO manager) of the code location."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    executor: ExecutorDefinition
    resources: dict[str, Any]


def runs_in_process(plan: ExecutionPlan) -> bool:
    """Whether every step of `plan` is tagged safe to run in the run's own process."""
    steps = plan.get_steps_to_execute_in_topo_order()
    return bool(steps) and all((step.tags or {}).get(IN_PROCESS_TAG) == "true" for step in steps)


class AutoExecutor(Executor):
    """In the run's process when every step allows it (`runs_in_process`), else multiprocess."""

    def __init__(self, multiprocess: Executor, in_process: Executor) -> None:
        self._multiprocess = multiprocess
        self._in_process = in_process

    @property
    def retries(self) -> RetryMode:
        return self._multiprocess.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self._multiprocess.step_dependency_config

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        chosen = self._in_process if runs_in_process(execution_plan) else self._multiprocess
        yield from chosen.execute(plan_context, execution_plan)


@executor(
    name="tradai_auto_executor",
    config_schema=Field(
        Selector(
            {"auto": MULTI_PROC_CONFIG, "multiprocess": MULTI_PROC_CONFIG, "in_process": IN_PROC_CONFIG}
        ),
        default_value={"auto": {}},
    ),
    requirements=lambda config: [] if "in_process" in config else multiple_process_executor_requirements(),
)
def auto_executor(init_context: InitExecutorContext) -> Executor:
    """Dagster's `multi_or_in_process_executor`, plus the default `auto`: in process when every step of
    the run is tagged `tradai/in_process` (a backtest), else multiprocess with the `auto` options."""
    config = init_context.executor_config
    if "multiprocess" in config:
        return _core_multiprocess_executor_creation(config["multiprocess"])
    if "in_process" in config:
        return _core_in_process_executor_creation(config["in_process"])
    options = config["auto"]
    in_process = {
        "retries": options["retries"],
        "step_dependency_config": options.get("step_dependency_config"),
    }
    return AutoExecutor(
        _core_multiprocess_executor_creation(options), _core_in_process_executor_creation(in_process)
    )


def _io_manager(env: Mapping[str, str]) -> dict[str, Any]:
    bucket = env.get("TRADAI_IO_BUCKET")
    if not bucket:
        return {}
    from dagster_aws.s3 import S3PickleIOManager, S3Resource

    s3 = S3Resource(region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"))
    prefix = env.get("TRADAI_IO_PREFIX", "dagster-io")
    return {"io_manager": S3PickleIOManager(s3_resource=s3, s3_bucket=bucket, s3_prefix=prefix)}


def execution_from_env(env: Mapping[str, str] | None = None) -> Execution:
    """The executor named by `TRADAI_EXECUTOR` (multiprocess or celery) and the IO manager it needs."""
    env = os.environ if env is None else env
    name = env.get("TRADAI_EXECUTOR", "multiprocess").strip() or "multiprocess"
    if name not in EXECUTORS:
        raise DeploymentError(f"TRADAI_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)}")
    resources = _io_manager(env)
    if name == "multiprocess":
        # in process for runs tagged so (backtests), else multiprocess; run config may choose either
        return Execution(executor=auto_executor, resources=resources)
    if not env.get("TRADAI_CELERY_BROKER"):
        raise DeploymentError(
            "TRADAI_EXECUTOR=celery needs TRADAI_CELERY_BROKER (e.g. redis://127.0.0.1:6379/0)"
        )
    if not resources:
        raise DeploymentError(
            "TRADAI_EXECUTOR=celery runs steps on other machines: set TRADAI_IO_BUCKET so outputs go "
            "through S3 (S3PickleIOManager) instead of a local folder the other machine cannot read"
        )
    from dagster_celery import celery_executor

    backend = "TRADAI_CELERY_BACKEND" if env.get("TRADAI_CELERY_BACKEND") else "TRADAI_CELERY_BROKER"
    executor = celery_executor.configured(
        {"broker": {"env": "TRADAI_CELERY_BROKER"}, "backend": {"env": backend}},
        name="celery_executor",
    )
    return Execution(executor=executor, resources=resources)


def retraining_config_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The retraining job's run config from the JSON file named by `TRADAI_RETRAINING_CONFIG` (None when
    unset: the job's defaults). What the drift sensor and the schedule launch, e.g. a smaller model."""
    env = os.environ if env is None else env
    path = env.get("TRADAI_RETRAINING_CONFIG", "").strip()
    if not path:
        return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeploymentError(
            f"TRADAI_RETRAINING_CONFIG={path!r} is not a readable JSON file ({exc}): fix or unset it"
        ) from exc
    if not isinstance(config, dict) or not isinstance(config.get("ops", {}), dict):
        raise DeploymentError(
            f'TRADAI_RETRAINING_CONFIG={path!r} must hold a run config object, e.g. {{"ops": {{...}}}}'
        )
    return config
