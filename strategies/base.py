"""The base class every TradAI strategy extends (the metadata it declares lives in `strategies.metadata`).

A TradAI strategy is an ordinary Freqtrade strategy (so Freqtrade's own engine backtests it, unchanged)
that also says what it is: a frozen `StrategyMetadata` returned by the class method `get_metadata()`.
The metadata is what the platform shows, filters and gates on (category, status, version); the
validator in `strategies.validation` checks that it is valid and agrees with the class itself.
"""

from __future__ import annotations

from abc import abstractmethod

from freqtrade.strategy import IStrategy

from strategies.metadata import TAG, StrategyCategory, StrategyMetadata, StrategyStatus
from tradai_core.strategy_config import SEMVER, STRATEGY_NAME, check_semver, check_timeframe

__all__ = [
    "SEMVER",
    "STRATEGY_NAME",
    "TAG",
    "StrategyCategory",
    "StrategyMetadata",
    "StrategyStatus",
    "TradAIStrategy",
    "check_semver",
    "check_timeframe",
]


class TradAIStrategy(IStrategy):
    """A Freqtrade strategy that declares its `StrategyMetadata`.

    Subclasses implement `get_metadata()` (a class method, so the platform can read metadata without
    building a Freqtrade config) plus Freqtrade's usual `populate_indicators`, `populate_entry_trend` and
    `populate_exit_trend`. Everything else is plain Freqtrade: the class is loaded and run by Freqtrade's
    own resolver and backtesting engine.
    """

    INTERFACE_VERSION = 3
    can_short: bool = False
    process_only_new_candles: bool = True
    use_exit_signal: bool = True

    @classmethod
    @abstractmethod
    def get_metadata(cls) -> StrategyMetadata:
        """Return this strategy's metadata; `name` must equal the class name, `timeframe` its timeframe."""

    def prefetch(self) -> None:
        """Fetch what the backtest needs from the network; nothing by default.

        Offline backtests refuse every connection (`tradai_resources.workers.backtest_child.network_guard`),
        except in this hook: the worker calls it once the engine has built the strategy and before the
        backtest starts, with the guard down. A strategy that loads something remote (a model from an
        MLflow tracking server) does it here and keeps it; its `populate_*` methods then run offline.
        """

    def version(self) -> str | None:
        """Freqtrade's strategy version hook, answered from the metadata (shown in Freqtrade's reports)."""
        try:
            return self.get_metadata().version
        except Exception:  # a broken get_metadata is the validator's to report, not the engine's
            return None
