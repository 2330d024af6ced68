"""How runs execute in a deployment: the executor and the IO manager, chosen from the environment.

Default (nothing set): Dagster's default executor (multiprocess, or in-process when run config says so)
and its file-system IO manager, on one machine.
`TRADAI_EXECUTOR=celery` sends every step to Celery workers on the Redis broker `TRADAI_CELERY_BROKER`;
steps then run on other machines, so every output that crosses processes goes through S3
(`S3PickleIOManager` on `TRADAI_IO_BUCKET`; endpoint and credentials from the standard AWS variables,
e.g. `AWS_ENDPOINT_URL` for an S3-compatible server). Nothing here reads or shows a credential.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import ExecutorDefinition, multi_or_in_process_executor
from pydantic import BaseModel, ConfigDict

EXECUTORS = ("multiprocess", "celery")


class DeploymentError(ValueError):
    """The deployment variables are inconsistent; the message says which and what to set."""


class Execution(BaseModel):
    """The executor and the extra resources (an IO manager) of the code location."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    executor: ExecutorDefinition
    resources: dict[str, Any]


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
        # Dagster's default: multiprocess, or `execution: {config: {in_process: {}}}` in run config
        return Execution(executor=multi_or_in_process_executor, resources=resources)
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
