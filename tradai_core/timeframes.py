"""Timeframe strings (`5m`, `1h`, `1d`) and their lengths."""

from __future__ import annotations

import re
from datetime import timedelta

from tradai_core.errors import ValidationError

_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIMEFRAME = re.compile(r"^(\d+)([mhdw])$")


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle of `timeframe` in seconds; rejects anything that is not `<n><m|h|d|w>`."""
    match = _TIMEFRAME.match(timeframe)
    if match is None or int(match.group(1)) == 0:
        raise ValidationError(
            f"timeframe {timeframe!r} is not valid", "use a number and a unit, like 5m, 1h, 4h or 1d"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle of `timeframe` in milliseconds (the unit exchanges use)."""
    return timeframe_seconds(timeframe) * 1000


def timeframe_delta(timeframe: str) -> timedelta:
    """Length of one candle of `timeframe` as a timedelta."""
    return timedelta(seconds=timeframe_seconds(timeframe))
