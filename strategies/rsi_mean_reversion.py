"""RSI mean reversion: buy when the Relative Strength Index says a pair is oversold, sell when overbought.

Trades the tendency of liquid crypto pairs to snap back after a short, sharp sell-off. An EMA filter keeps
it out of pairs in free fall (price far below its long-term trend).
"""

from __future__ import annotations

from typing import ClassVar

import talib.abstract as ta
from freqtrade.strategy import DecimalParameter, IntParameter
from pandas import DataFrame

from strategies.base import StrategyCategory, StrategyMetadata, StrategyStatus, TradAIStrategy


class RsiMeanReversion(TradAIStrategy):
    """Long when RSI(14) is below `buy_rsi` and price is not far below its EMA(200); exit above `sell_rsi`."""

    timeframe = "1h"
    startup_candle_count = 200
    stoploss = -0.10
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.06, "360": 0.03, "1440": 0.0}

    buy_rsi = IntParameter(10, 40, default=30, space="buy")
    buy_trend_floor = DecimalParameter(0.80, 1.00, default=0.90, decimals=2, space="buy")
    sell_rsi = IntParameter(55, 90, default=70, space="sell")

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        """Metadata of this strategy."""
        return StrategyMetadata(
            name="RsiMeanReversion",
            version="1.0.0",
            description="Buys oversold RSI(14) dips in pairs that are not far below their EMA(200); "
            "exits when RSI turns overbought, on ROI or on a 10% stop.",
            timeframe="1h",
            category=StrategyCategory.MEAN_REVERSION,
            status=StrategyStatus.ACTIVE,
            tags=("rsi", "ema", "talib"),
        )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """RSI(14) and EMA(200) from TA-Lib."""
        dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)
        dataframe["ema_trend"] = ta.EMA(dataframe, timeperiod=200)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Enter long on an oversold RSI while price is above `buy_trend_floor` × EMA(200)."""
        dataframe.loc[
            (dataframe["rsi"] < self.buy_rsi.value)
            & (dataframe["close"] > dataframe["ema_trend"] * self.buy_trend_floor.value)
            & (dataframe["volume"] > 0),
            ["enter_long", "enter_tag"],
        ] = (1, "rsi_oversold")
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Exit when RSI turns overbought."""
        dataframe.loc[
            (dataframe["rsi"] > self.sell_rsi.value) & (dataframe["volume"] > 0),
            ["exit_long", "exit_tag"],
        ] = (1, "rsi_overbought")
        return dataframe
