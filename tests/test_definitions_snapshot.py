"""The code location's structure, snapshotted: a change to an asset key, a check, a partitioning, a job, a
schedule, a sensor or a resource key shows up in review as a diff of `tests/snapshots/definitions.json`.

When a change is intended, regenerate the file and commit it with the change:

    UPDATE_SNAPSHOTS=1 uv run pytest tests/test_definitions_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionsDefinition,
)

from tradai.definitions import build_definitions
from tradai_core.settings import TradAISettings

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
REGENERATE = "UPDATE_SNAPSHOTS=1 uv run pytest tests/test_definitions_snapshot.py"
SETTINGS = {"TRADAI_HISTORY_START": "2020-10-12", "TRADAI_HISTORY_END": "2022-10-12"}
"""Fixed settings (the defaults, with a closed history), so the snapshot never depends on today."""


def partitions(definition: PartitionsDefinition | None) -> Any:
    """A partitioning as plain data: its kind and what fixes its keys."""
    if definition is None:
        return None
    if isinstance(definition, TimeWindowPartitionsDefinition):
        return {
            "kind": type(definition).__name__,
            "cron": definition.cron_schedule,
            "start": definition.start.isoformat(),
            "end": definition.end.isoformat() if definition.end else None,
            "end_offset": definition.end_offset,
            "timezone": definition.timezone,
        }
    if isinstance(definition, StaticPartitionsDefinition):
        return {"kind": "static", "keys": definition.get_partition_keys()}
    if isinstance(definition, MultiPartitionsDefinition):
        return {
            "kind": "multi",
            "dimensions": {d.name: partitions(d.partitions_def) for d in definition.partitions_defs},
        }
    return {"kind": type(definition).__name__, "text": str(definition)}


def describe(defs: Definitions) -> dict[str, Any]:
    """Every structural fact of `defs` a reviewer should see change: sorted, JSON-ready."""
    with DagsterInstance.ephemeral():  # a live defs-state storage while loading (see tests/conftest.py)
        repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": partitions(node.partitions_def),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
        }
    checks = sorted(
        f"{check.asset_key.to_user_string()}:{check.name}"
        + (" (blocking)" if graph.get(check).blocking else "")
        for check in graph.asset_check_keys
    )
    jobs = {
        job.name: {
            "assets": sorted(key.to_user_string() for key in job.asset_layer.executable_asset_keys),
            "partitions": partitions(job.partitions_def),
        }
        for job in sorted(repo.get_all_jobs(), key=lambda job: job.name)
        if not job.name.startswith("__")
    }
    schedules = {
        schedule.name: {
            "cron": schedule.cron_schedule,
            "job": schedule.job_name,
            "timezone": schedule.execution_timezone,
            "default_status": schedule.default_status.value,
        }
        for schedule in sorted(repo.schedule_defs, key=lambda schedule: schedule.name)
    }
    sensors = {
        sensor.name: {
            "type": sensor.sensor_type.value,
            "jobs": sorted(target.job_name for target in sensor.targets) if sensor.has_jobs else [],
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
        }
        for sensor in sorted(repo.sensor_defs, key=lambda sensor: sensor.name)
    }
    return {
        "assets": assets,
        "asset_checks": checks,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": sorted(defs.resources or {}),
    }


@pytest.fixture
def fixed_settings(monkeypatch: pytest.MonkeyPatch) -> TradAISettings:
    """The defaults over a closed history, whatever TRADAI_* the environment holds (the executor too)."""
    for name in list(os.environ):
        if name.startswith("TRADAI_"):
            monkeypatch.delenv(name)
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    return TradAISettings()


def test_the_definitions_match_the_reviewed_snapshot(fixed_settings: TradAISettings) -> None:
    current = json.dumps(describe(build_definitions(fixed_settings)), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    assert SNAPSHOT.is_file(), f"no snapshot at {SNAPSHOT}; write it with: {REGENERATE}"
    reviewed = SNAPSHOT.read_text(encoding="utf-8")
    assert current == reviewed, (
        f"the definitions differ from the reviewed snapshot tests/snapshots/{SNAPSHOT.name}. If the change "
        f"is intended, regenerate it and commit it with the change: {REGENERATE}"
    )
