"""One error hierarchy for the whole platform.

Every error says what was wrong and what to do about it, so a failed run in the Dagster UI can be acted
on without reading a stack trace.
"""

from __future__ import annotations


class TradAIError(Exception):
    """Base of every error TradAI raises on purpose."""

    def __init__(self, what: str, action: str | None = None) -> None:
        self.what = what
        self.action = action
        super().__init__(what if action is None else f"{what} — {action}")


class ValidationError(TradAIError):
    """Input that breaks a rule of the domain (a candle, a strategy, a config)."""


class CandleValidationError(ValidationError):
    """A candle breaks a rule; names the pair, the candle's timestamp and the rule."""

    def __init__(self, pair: str, timestamp: str, rule: str, action: str | None = None) -> None:
        self.pair = pair
        self.timestamp = timestamp
        self.rule = rule
        super().__init__(
            f"{pair} candle at {timestamp} breaks rule '{rule}'",
            action
            or "the exchange sent inconsistent data; nothing was written. Re-run the partition later, "
            "and report it to the exchange if it persists.",
        )


class NotFoundError(TradAIError):
    """Something asked for does not exist (a symbol, a model alias, a strategy)."""


class ConfigurationError(TradAIError):
    """Settings or a config file are missing or invalid."""


class InvalidURLError(ConfigurationError):
    """A configured URL or URI is malformed. Its message shows the URL redacted (a webhook URL's token, a
    URI's credentials never appear), and it is raised `from None` so no chained error quotes it either."""


class ExchangeError(TradAIError):
    """The exchange could not be reached or answered with an error."""


class ExchangeUnavailableError(ExchangeError):
    """A retriable exchange fault (timeout, 429/418, 5xx, truncated payload) outlasted every retry."""


class ExchangeDataError(ExchangeError):
    """The exchange answered with data that cannot be used (malformed payload)."""


class StorageError(TradAIError):
    """The candle store refused a read or a write."""


class DataLossRefusedError(StorageError):
    """A write would have removed stored data (e.g. an exchange answering with fewer candles than before)."""


class StrategyValidationError(ValidationError):
    """A strategy does not import, is not a TradAIStrategy, or breaks a rule of its metadata or config."""


class BacktestError(TradAIError):
    """The backtest engine failed (crashed, timed out, or produced no result) for a valid strategy."""
