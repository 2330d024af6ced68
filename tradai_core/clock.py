"""One clock for the platform: "now" is configuration, real time by default.

Everything that asks "what time is it" to decide which data exists — the end of the history, the holdout
start, the end of the drift window, the end of a training window — asks `TradAISettings.clock`, never the
wall clock. Set `TRADAI_NOW` (an ISO timestamp, UTC when no offset is given) and the platform behaves as
if it were that moment: a walk-forward simulation steps it, a test pins it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict, Field


class Clock(BaseModel):
    """`fixed` when set (a simulated or pinned "now"), else real time."""

    model_config = ConfigDict(frozen=True)

    fixed: datetime | None = Field(default=None, description="The pinned moment (UTC); None: real time.")

    def now(self) -> datetime:
        """The current moment, timezone-aware UTC."""
        return as_utc(self.fixed) if self.fixed is not None else datetime.now(tz=UTC)

    def today(self) -> date:
        """The UTC day of `now()`."""
        return self.now().date()

    @property
    def is_real_time(self) -> bool:
        """True when no moment is pinned."""
        return self.fixed is None


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive moment is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
