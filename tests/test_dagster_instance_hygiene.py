"""The suite's guard against Dagster 1.13 restoring, late, the "current defs-state storage" of an instance
that is gone (tests/conftest.py): a Definitions load must never meet it."""

from __future__ import annotations

import gc
from pathlib import Path

from dagster import AssetSpec, DagsterInstance, Definitions
from dagster._core.storage.defs_state import base as defs_state
from dagster._core.storage.defs_state.base import DefsStateStorage


def test_definitions_load_when_the_current_storage_belongs_to_a_collected_instance(tmp_path: Path) -> None:
    instance = DagsterInstance.local_temp(str(tmp_path))
    storage = instance.defs_state_storage
    assert storage is not None
    defs_state._current_storage.set(storage)  # what a late-finalised `with instance:` leaves behind
    del instance
    gc.collect()
    assert DefsStateStorage.get() is None
    assert Definitions(assets=[AssetSpec("a")]).get_repository_def().has_job("__ASSET_JOB")


def test_a_live_instance_keeps_its_storage_current() -> None:
    with DagsterInstance.ephemeral() as instance:
        assert DefsStateStorage.get() is instance.defs_state_storage
