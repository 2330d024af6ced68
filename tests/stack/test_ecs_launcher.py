"""The AWS profile's run launcher (deploy/ecs/dagster.yaml, EcsRunLauncher) starts a launched run as an ECS
task on the stack's moto, from the task definition of deploy/ecs/task-definition.json: the task's command
is `dagster api execute_run …`, and no credential travels in the task's overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import psycopg2
import pytest
import yaml
from dagster import DagsterInstance

from tests.stack.stack_control import ROOT, Stack

pytestmark = pytest.mark.stack

ECS = ROOT / "deploy" / "ecs"


def render(template: Path, env: dict[str, str]) -> str:
    """The template rendered by deploy/ecs/render.py, as an operator would."""
    return subprocess.run(
        [sys.executable, str(ECS / "render.py"), str(template)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def aws_network() -> dict[str, str]:
    """A VPC (DNS hostnames on), a subnet, a security group and a cluster on moto."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(
        GroupName=f"tradai-{uuid.uuid4().hex[:6]}", Description="runs", VpcId=vpc
    )
    cluster = boto3.client("ecs").create_cluster(clusterName=f"tradai-{uuid.uuid4().hex[:6]}")["cluster"][
        "clusterArn"
    ]
    return {
        "TRADAI_ECS_SUBNET": subnet,
        "TRADAI_ECS_SECURITY_GROUP": group["GroupId"],
        "TRADAI_ECS_CLUSTER": cluster,
    }


def test_a_launched_run_becomes_an_ecs_task_running_dagster_api_execute_run(
    stack: Stack, tmp_path: Path
) -> None:
    env = {
        **stack.env,
        **aws_network(),
        "TRADAI_IMAGE": "tradai:test",
        "TRADAI_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/tradai-execution",
        "TRADAI_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/tradai-run",
        "TRADAI_PG_PASSWORD_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:tradai-pg",
        "TRADAI_DAGSTER_DB": "dagster_ecs",  # its own run storage: the stack's daemon never sees these runs
    }
    task_definition = json.loads(render(ECS / "task-definition.json", env))
    ecs = boto3.client("ecs")
    arn = ecs.register_task_definition(**task_definition)["taskDefinition"]["taskDefinitionArn"]
    env["TRADAI_ECS_TASK_DEFINITION"] = arn

    config = yaml.safe_load(render(ECS / "dagster.yaml", env))
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    # Launch straight away (the queue is the daemon's, tested elsewhere), with the file's launcher.
    config["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    del config["concurrency"]["runs"]
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    connection = psycopg2.connect(
        host="127.0.0.1", port=env["TRADAI_PG_PORT"], user="postgres", dbname="postgres"
    )
    connection.autocommit = True  # CREATE DATABASE runs outside a transaction
    with connection.cursor() as cursor:
        cursor.execute("DROP DATABASE IF EXISTS dagster_ecs")
        cursor.execute("CREATE DATABASE dagster_ecs")
    connection.close()

    env["DAGSTER_HOME"] = str(home)
    launched = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "dagster"),
            "job",
            "launch",
            "-w",
            str(Path(stack.env["DAGSTER_HOME"]) / "workspace.yaml"),
            "-j",
            "market_data_job",
            "--tags",
            json.dumps({"dagster/partition": "2021-03-01"}),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]

    [task_arn] = ecs.list_tasks(cluster=env["TRADAI_ECS_CLUSTER"])["taskArns"]
    [task] = ecs.describe_tasks(cluster=env["TRADAI_ECS_CLUSTER"], tasks=[task_arn])["tasks"]
    assert task["taskDefinitionArn"] == arn
    [override] = task["overrides"]["containerOverrides"]
    assert override["name"] == "run"
    assert override["command"][:3] == ["dagster", "api", "execute_run"]
    args = json.loads(override["command"][3])
    assert args["__class__"] == "ExecuteRunArgs" and '"market_data_job"' in override["command"][3]
    run_id = args.get("run_id") or args["pipeline_run_id"]

    previous = os.environ.get("DAGSTER_HOME"), os.environ.get("TRADAI_DAGSTER_DB")
    os.environ.update(DAGSTER_HOME=str(home), TRADAI_DAGSTER_DB="dagster_ecs")
    try:
        instance = DagsterInstance.get()
        [run] = instance.get_runs()
        assert run.tags["ecs/task_arn"] == task_arn and run.run_id == run_id
    finally:
        os.environ.update(DAGSTER_HOME=previous[0] or "", TRADAI_DAGSTER_DB=previous[1] or "")
    # The task's settings come from the task definition; the Postgres password only from Secrets Manager.
    [container] = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]["containerDefinitions"]
    environment = {item["name"]: item["value"] for item in container["environment"]}
    assert environment["TRADAI_ARCTICDB_URI"] == stack.env["TRADAI_ARCTICDB_URI"]
    assert [s["name"] for s in container["secrets"]] == ["PGPASSWORD"]
    shown = json.dumps([container, override])
    assert "AWS_SECRET_ACCESS_KEY" not in shown and "PGPASSWORD=" not in shown
