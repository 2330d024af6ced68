"""Reading new materializations for sensors: storage-id cursors over `instance.fetch_materializations`."""

from datetime import UTC, datetime
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, EventLogRecord
from pydantic import BaseModel, ConfigDict

PAGE = 100


class Materialized(BaseModel):
    """One materialization a sensor reads: where it sits in the event log, when, which run, its metadata."""

    model_config = ConfigDict(frozen=True)

    storage_id: int
    at: datetime
    run_id: str
    partition: str | None
    metadata: dict[str, Any]


def materializations_after(
    instance: DagsterInstance, key: AssetKey, after_storage_id: int, limit: int = PAGE
) -> list[Materialized]:
    """Materializations of `key` with a storage id above `after_storage_id`, oldest first, at most `limit`.

    A sensor keeps the last storage id it handled as its cursor and reads from there: every event is seen
    once, in order, and a storm of events is worked through `limit` at a time.
    """
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, after_storage_id=after_storage_id), limit=limit, ascending=True
    ).records
    return [_materialized(record) for record in records if record.asset_materialization is not None]


def _materialized(record: EventLogRecord) -> Materialized:
    materialization = record.asset_materialization
    assert materialization is not None
    return Materialized(
        storage_id=record.storage_id,
        at=datetime.fromtimestamp(record.timestamp, tz=UTC),
        run_id=record.run_id,
        partition=materialization.partition,
        metadata={key: value.value for key, value in materialization.metadata.items()},
    )
