"""Partitions shared by the market-data graph: one daily partition per UTC day of history."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition

from tradai_core.settings import TradAISettings


def daily_partitions(settings: TradAISettings) -> DailyPartitionsDefinition:
    """Days from `history_start` to `history_end` (exclusive), or up to and including today when open;
    with a pinned clock (`TRADAI_NOW`), never past the clock's day."""
    if not settings.clock.is_real_time:
        return DailyPartitionsDefinition(
            start_date=settings.history_start.isoformat(), end_date=settings.resolved_history_end.isoformat()
        )
    if settings.history_end is not None:
        return DailyPartitionsDefinition(
            start_date=settings.history_start.isoformat(), end_date=settings.history_end.isoformat()
        )
    return DailyPartitionsDefinition(start_date=settings.history_start.isoformat(), end_offset=1)
