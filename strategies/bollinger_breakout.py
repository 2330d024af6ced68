"""Bollinger breakout: buy a close above the upper Bollinger band on above-average volume.

A close outside the upper band after a quiet stretch often starts a run; the volume filter drops breakouts
nobody trades. It exits when price falls back to the middle band (the 20-candle mean).
"""

from __future__ import annotations

from typing import ClassVar

import talib.abstract as ta
from freqtrade.strategy import DecimalParameter, IntParameter
from pandas import DataFrame

from strategies.base import StrategyCategory, StrategyMetadata, StrategyStatus, TradAIStrategy


class BollingerBreakout(TradAIStrategy):
    """Long on a close above BB(20, `buy_bb_std`) with volume above `buy_volume_factor` × its mean."""

    timeframe = "1h"
    startup_candle_count = 50
    stoploss = -0.06
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.10, "720": 0.04, "2880": 0.0}

    buy_bb_std = DecimalParameter(1.5, 3.0, default=2.0, decimals=1, space="buy")
    buy_volume_factor = DecimalParameter(1.0, 3.0, default=1.5, decimals=1, space="buy")
    sell_bb_period = IntParameter(10, 40, default=20, space="sell", optimize=False)

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        """Metadata of this strategy."""
        return StrategyMetadata(
            name="BollingerBreakout",
            version="1.0.0",
            description="Buys closes above the upper Bollinger band (20, 2σ) on above-average volume; "
            "exits on a fall back to the middle band, on ROI or on a 6% stop.",
            timeframe="1h",
            category=StrategyCategory.BREAKOUT,
            status=StrategyStatus.TESTING,
            tags=("bollinger", "volume", "talib"),
        )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Bollinger bands and the mean volume, from TA-Lib."""
        bands = ta.BBANDS(
            dataframe,
            timeperiod=self.sell_bb_period.value,
            nbdevup=self.buy_bb_std.value,
            nbdevdn=self.buy_bb_std.value,
            matype=0,
        )
        dataframe["bb_upper"] = bands["upperband"]
        dataframe["bb_middle"] = bands["middleband"]
        dataframe["bb_lower"] = bands["lowerband"]
        dataframe["volume_mean"] = ta.SMA(dataframe, timeperiod=20, price="volume")
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Enter long on a close above the upper band with volume above its 20-candle mean × factor."""
        dataframe.loc[
            (dataframe["close"] > dataframe["bb_upper"])
            & (dataframe["volume"] > dataframe["volume_mean"] * self.buy_volume_factor.value)
            & (dataframe["volume"] > 0),
            ["enter_long", "enter_tag"],
        ] = (1, "bb_breakout")
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Exit when the close falls back below the middle band."""
        dataframe.loc[
            (dataframe["close"] < dataframe["bb_middle"]) & (dataframe["volume"] > 0),
            ["exit_long", "exit_tag"],
        ] = (1, "bb_mean_return")
        return dataframe
