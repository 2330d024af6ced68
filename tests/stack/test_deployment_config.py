"""The executor and IO manager a deployment picks from its environment (pure configuration, no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster_aws.s3 import S3PickleIOManager

from tradai.deployment import DeploymentError, execution_from_env, retraining_config_from_env

CELERY = {"TRADAI_EXECUTOR": "celery", "TRADAI_CELERY_BROKER": "redis://127.0.0.1:6379/0"}


def test_by_default_steps_run_in_local_processes_with_the_default_io_manager() -> None:
    execution = execution_from_env({})
    assert execution.executor.name == "tradai_auto_executor" and execution.resources == {}


def test_celery_sends_outputs_through_s3() -> None:
    execution = execution_from_env({**CELERY, "TRADAI_IO_BUCKET": "tradai-io"})
    assert execution.executor.name == "celery_executor"
    io_manager = execution.resources["io_manager"]
    assert isinstance(io_manager, S3PickleIOManager) and io_manager.s3_bucket == "tradai-io"


def test_celery_without_a_shared_io_bucket_is_refused_with_what_to_set() -> None:
    with pytest.raises(DeploymentError, match="TRADAI_IO_BUCKET"):
        execution_from_env(CELERY)


def test_celery_without_a_broker_is_refused_with_what_to_set() -> None:
    with pytest.raises(DeploymentError, match="TRADAI_CELERY_BROKER"):
        execution_from_env({"TRADAI_EXECUTOR": "celery", "TRADAI_IO_BUCKET": "tradai-io"})


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(DeploymentError, match="not one of multiprocess, celery"):
        execution_from_env({"TRADAI_EXECUTOR": "k8s"})


def test_the_retraining_config_comes_from_the_json_file_named_in_the_environment(tmp_path: Path) -> None:
    assert retraining_config_from_env({}) is None
    config = {"ops": {"model": {"config": {"num_boost_round": 60}}}}
    path = tmp_path / "retraining.json"
    path.write_text(json.dumps(config))
    assert retraining_config_from_env({"TRADAI_RETRAINING_CONFIG": str(path)}) == config


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"ops": 3}', None])
def test_an_unreadable_retraining_config_is_refused_with_the_variable_named(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "retraining.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DeploymentError, match="TRADAI_RETRAINING_CONFIG"):
        retraining_config_from_env({"TRADAI_RETRAINING_CONFIG": str(path)})
