"""What a strategy declares about itself: frozen metadata, its categories and statuses. Its name, version
and timeframe are the strategy config's validated types (`tradai_core.strategy_config`), so both check
them the same way.

Kept apart from `strategies.base` (which imports Freqtrade) so the platform can list, describe and gate
strategies — partitions, configs, the UI — without importing the trading engine.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradai_core.strategy_config import SemVer, StrategyName, Timeframe

TAG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class StrategyCategory(StrEnum):
    """What kind of edge a strategy trades on."""

    TREND_FOLLOWING = "trend_following"
    MEAN_REVERSION = "mean_reversion"
    MOMENTUM = "momentum"
    BREAKOUT = "breakout"
    MACHINE_LEARNING = "machine_learning"


class StrategyStatus(StrEnum):
    """Where a strategy is in its life: only `active` ones are meant for production decisions."""

    ACTIVE = "active"
    TESTING = "testing"
    DEPRECATED = "deprecated"


class StrategyMetadata(BaseModel):
    """What a strategy is, declared by the strategy itself (frozen: metadata never changes at run time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrategyName = Field(description="The strategy's class name, e.g. RsiMeanReversion.")
    version: SemVer = Field(description="Semantic version of the strategy's logic, e.g. 1.0.0.")
    description: str = Field(min_length=1, description="One or two sentences a quant can act on.")
    timeframe: Timeframe = Field(description="Candle timeframe the strategy trades on, e.g. 1h.")
    category: StrategyCategory
    status: StrategyStatus = StrategyStatus.TESTING
    tags: tuple[str, ...] = Field(default=(), description="Lower-case labels, e.g. ('rsi', 'talib').")

    @field_validator("description")
    @classmethod
    def _check_description(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("description must not be blank")
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not TAG.match(tag):
                raise ValueError(f"tag {tag!r} must be lower-case letters, digits, '-' or '_'")
        if len(set(value)) != len(value):
            raise ValueError("tags must not repeat")
        return value
