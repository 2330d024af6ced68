"""EMA/ADX trend following: ride a trend once a fast EMA crosses a slow one and ADX says the trend is real.

A cross of EMA(fast) over EMA(slow) alone whipsaws in ranges; requiring ADX above a threshold keeps the
strategy to trending markets. It exits when the fast EMA crosses back below the slow one.
"""

from __future__ import annotations

from typing import ClassVar

import talib.abstract as ta
from freqtrade.strategy import IntParameter
from pandas import DataFrame
from technical.qtpylib import crossed_above, crossed_below

from strategies.base import StrategyCategory, StrategyMetadata, StrategyStatus, TradAIStrategy


class EmaAdxTrend(TradAIStrategy):
    """Long on EMA(fast) crossing above EMA(slow) with ADX(14) above `buy_adx`; exit on the reverse cross."""

    timeframe = "1h"
    startup_candle_count = 200
    stoploss = -0.08
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.25}
    trailing_stop = True
    trailing_stop_positive = 0.03
    trailing_stop_positive_offset = 0.06
    trailing_only_offset_is_reached = True

    buy_ema_fast = IntParameter(5, 30, default=12, space="buy", optimize=False)
    buy_ema_slow = IntParameter(30, 120, default=50, space="buy", optimize=False)
    buy_adx = IntParameter(15, 40, default=25, space="buy")

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        """Metadata of this strategy."""
        return StrategyMetadata(
            name="EmaAdxTrend",
            version="1.0.0",
            description="Follows trends: enters when EMA(fast) crosses above EMA(slow) with ADX(14) "
            "confirming trend strength; exits on the reverse cross or a trailing stop.",
            timeframe="1h",
            category=StrategyCategory.TREND_FOLLOWING,
            status=StrategyStatus.ACTIVE,
            tags=("ema", "adx", "talib"),
        )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """EMA(fast), EMA(slow) and ADX(14) from TA-Lib."""
        dataframe["ema_fast"] = ta.EMA(dataframe, timeperiod=self.buy_ema_fast.value)
        dataframe["ema_slow"] = ta.EMA(dataframe, timeperiod=self.buy_ema_slow.value)
        dataframe["adx"] = ta.ADX(dataframe, timeperiod=14)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Enter long when EMA(fast) crosses above EMA(slow) while ADX is above `buy_adx`."""
        dataframe.loc[
            crossed_above(dataframe["ema_fast"], dataframe["ema_slow"])
            & (dataframe["adx"] > self.buy_adx.value)
            & (dataframe["volume"] > 0),
            ["enter_long", "enter_tag"],
        ] = (1, "ema_cross_up")
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Exit when EMA(fast) crosses back below EMA(slow)."""
        dataframe.loc[
            crossed_below(dataframe["ema_fast"], dataframe["ema_slow"]) & (dataframe["volume"] > 0),
            ["exit_long", "exit_tag"],
        ] = (1, "ema_cross_down")
        return dataframe
