"""`ExchangeResource`: market data from any ccxt exchange, with retries and validated candles.

Public data needs no keys. Keys, when given, come from the environment (`EnvVar`) and never reach a log.
A base-URL override points the very same client code at the loopback replay server, which is how the
tests and the offline demo exercise the path that talks to Binance.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import pandas as pd
from dagster import ConfigurableResource
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from tradai_core.candles import candles_from_rows, utc_timestamp, validate_candles
from tradai_core.errors import ConfigurationError, ExchangeDataError, ExchangeError, ExchangeUnavailableError
from tradai_core.lazy import LazyModule
from tradai_core.pagination import fetch_range
from tradai_core.timeframes import candle_grid, timeframe_ms
from tradai_core.urls import rebase_urls

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Per-request candle caps of exchanges we know; others fall back to a conservative default.
PAGE_CAPS: dict[str, int] = {"binance": 1000, "binanceus": 1000, "bybit": 1000, "okx": 300, "kraken": 720}
DEFAULT_PAGE_CAP = 500
ccxt = LazyModule("ccxt")  # imported on first use, not when the code location loads (seconds)


def _rate_limited() -> tuple[type[Exception], ...]:
    return (ccxt.DDoSProtection, ccxt.RateLimitExceeded)


def _retriable() -> tuple[type[Exception], ...]:
    return (ccxt.OperationFailed,)  # ccxt's "may succeed on retry": network, 5xx, bad responses


@functools.cache
def unreadable_payload() -> type[Exception]:
    """The error class `UnreadablePayload` (a `ccxt.BadResponse`, so built once ccxt is imported)."""

    class UnreadablePayload(ccxt.BadResponse):
        """The body was not the JSON list it should be (e.g. truncated in transit): retried like a network
        fault, because ccxt would otherwise read it as an empty page and the window would look empty."""

    return UnreadablePayload


class FetchedCandles(BaseModel):
    """Validated candles of one pair over one window, with what it cost to get them."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    pair: str
    candles: pd.DataFrame
    requests: int
    retries: int
    dropped_open_candle: bool


class ExchangeResource(ConfigurableResource):
    """A ccxt exchange, configured once, shared by every market-data asset of a run."""

    exchange_id: str = Field(default="binance", description="Any ccxt exchange id.")
    trading_mode: str = Field(default="spot", description="spot or futures (ccxt defaultType).")
    base_url: str | None = Field(default=None, description="REST base URL override, e.g. the replay server.")
    api_key: str | None = Field(default=None, description="From the environment, e.g. EnvVar('…_KEY').")
    api_secret: str | None = Field(default=None, description="From the environment; never logged.")
    timeout_ms: int = Field(default=10_000, description="Per-request timeout.")
    max_retries: int = Field(default=5, description="Retries per request on retriable faults.")
    backoff_base_s: float = Field(default=1.0, description="First backoff; doubles on each retry.")
    backoff_max_s: float = Field(default=60.0, description="Cap on one backoff or Retry-After wait.")
    page_limit: int | None = Field(
        default=None, description="Candles per request; default: the exchange cap."
    )

    _client: Any = PrivateAttr(default=None)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

    def __repr__(self) -> str:  # keys must never reach a log, even through a repr
        return f"ExchangeResource(exchange_id={self.exchange_id!r}, base_url={self.base_url!r})"

    __str__ = __repr__

    def client(self) -> ccxt.Exchange:
        """The ccxt client, created on first use and reused (ccxt keeps its rate limiter on it)."""
        if self._client is None:
            if not hasattr(ccxt, self.exchange_id):
                raise ConfigurationError(
                    f"ccxt has no exchange {self.exchange_id!r}",
                    "set TRADAI_EXCHANGE_ID to one of ccxt.exchanges, e.g. binance",
                )
            config: dict[str, Any] = {
                "enableRateLimit": True,
                "enableLastJsonResponse": True,
                "timeout": self.timeout_ms,
                "options": {
                    "defaultType": self.trading_mode,
                    "fetchMarkets": {"types": [self.trading_mode]},
                    # Signed wallet and margin calls ccxt makes on load_markets when keys are set; market
                    # data needs neither.
                    "fetchCurrencies": False,
                    "fetchMargins": False,
                },
            }
            if self.api_key:
                config["apiKey"] = self.api_key
                config["secret"] = self.api_secret or ""
            client = getattr(ccxt, self.exchange_id)(config)
            _redact_secrets_in_ccxt_logs([s for s in (self.api_key, self.api_secret) if s])
            if self.base_url:
                client.urls["api"] = rebase_urls(client.urls["api"], self.base_url)
            self._client = client
        return self._client

    @property
    def effective_page_limit(self) -> int:
        """Candles asked for per request."""
        return self.page_limit or PAGE_CAPS.get(self.exchange_id, DEFAULT_PAGE_CAP)

    def fetch_candles(self, pair: str, timeframe: str, start: datetime, end: datetime) -> FetchedCandles:
        """Every closed candle of `pair` with open time in `[start, end)`, validated.

        Raises `CandleValidationError` for a candle that breaks a rule (pair, timestamp and rule named),
        `ExchangeUnavailableError` when a retriable fault outlasts the retries, `ExchangeDataError` when a
        page stays stale (candles from before the ones asked for) through `max_retries` re-requests,
        `ExchangeError` otherwise; nothing is returned half-done.
        """
        tf_ms = timeframe_ms(timeframe)
        grid = candle_grid(timeframe, self.exchange_id)
        client = self.client()
        retries = 0

        def call(fn: Callable[[], T], what: str) -> T:
            nonlocal retries
            value, used = self._with_retries(fn, what)
            retries += used
            return value

        def load_markets() -> dict[str, Any]:
            markets = client.load_markets()
            if not markets:  # ccxt reads an unreadable (e.g. truncated) market list as no markets at all
                raise unreadable_payload()(f"{self.exchange_id} answered an empty or unreadable market list")
            return markets

        call(load_markets, "load markets")
        if pair not in client.markets:
            raise ExchangeError(
                f"{self.exchange_id} has no market {pair}",
                "remove it from TRADAI_PAIRS or check the symbol (BASE/QUOTE, e.g. BTC/USDT)",
            )
        end_ms = int(utc_timestamp(end).value // 1_000_000)

        def request(since_ms: int, limit: int) -> list[list[float]]:
            until = {"until": end_ms - 1}
            rows = client.fetch_ohlcv(pair, timeframe, since=since_ms, limit=limit, params=until)
            raw = client.last_json_response
            if not isinstance(raw, list):
                raise unreadable_payload()(f"{self.exchange_id} candle page for {pair} is not a JSON list")
            if len(rows) == len(raw) and all(
                isinstance(sent, list) and sent[:1] == row[:1] for sent, row in zip(raw, rows, strict=True)
            ):
                return rows  # ccxt kept every row, in the order sent (the usual case: no second parse)
            # The page as sent, row by row: ccxt's own answer is sorted and filtered by `since`, which
            # would hide out-of-order rows, rows without an open time and a stale page (seen as empty).
            market = client.market(pair)
            return [client.parse_ohlcv(row, market) for row in raw]

        def page(since_ms: int, limit: int) -> Sequence[Sequence[float]]:
            rows = call(
                lambda: request(since_ms, limit),
                f"fetch {pair} {timeframe} candles from {pd.Timestamp(since_ms, unit='ms', tz='UTC')}",
            )
            if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) < 6 for r in rows):
                raise ExchangeDataError(
                    f"{self.exchange_id} sent an unreadable candle page for {pair}",
                    "nothing was written; re-run the partition, and report it if it persists",
                )
            return rows

        paged = fetch_range(
            page,
            start_ms=int(utc_timestamp(start).value // 1_000_000),
            end_ms=end_ms,
            timeframe_ms=tf_ms,
            page_limit=self.effective_page_limit,
            now_ms=self._exchange_now_ms(call),
            pair=pair,
            grid=grid,
            stale_retries=self.max_retries,
            wait=lambda attempt: self._sleep(self._backoff(attempt)),
        )
        candles = candles_from_rows(paged.rows)
        validate_candles(pair, candles, grid)
        return FetchedCandles(
            pair=pair,
            candles=candles,
            requests=paged.pages,
            retries=retries + paged.stale_retries,
            dropped_open_candle=paged.dropped_open_candle,
        )

    def _exchange_now_ms(self, call: Callable[[Callable[[], int], str], int]) -> int:
        """The exchange's clock, which decides which candle is still open; the local clock when the
        exchange does not tell its time."""
        client = self.client()
        if client.has.get("fetchTime"):
            return int(call(client.fetch_time, "fetch the exchange time"))
        return int(client.milliseconds())

    def _with_retries(self, fn: Callable[[], T], what: str) -> tuple[T, int]:
        """`fn()` retried with exponential backoff on timeouts, network errors, 5xx and 429/418
        (waiting at least the server's Retry-After); returns the value and the number of retries."""
        for attempt in range(self.max_retries + 1):
            try:
                return fn(), attempt
            except _rate_limited() as error:
                fault, wait = error, max(self._backoff(attempt), self._retry_after())
            except ccxt.AuthenticationError as error:
                raise ExchangeError(
                    f"{self.exchange_id} refused the API credentials while trying to {what}",
                    "check the key and secret in the environment (they are not needed for public data)",
                ) from error
            except _retriable() as error:
                fault, wait = error, self._backoff(attempt)
            except ccxt.BaseError as error:
                raise ExchangeError(
                    f"{self.exchange_id} failed to {what}: {type(error).__name__}: {_short(error)}",
                    "check the pair and the exchange's status; nothing was written",
                ) from error
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                # ccxt could not parse the body (e.g. truncated JSON): treat like a transport fault.
                fault, wait = error, self._backoff(attempt)
            if attempt == self.max_retries:
                break
            logger.warning(
                "%s: %s while trying to %s; retry %d/%d in %.1fs",
                self.exchange_id,
                type(fault).__name__,
                what,
                attempt + 1,
                self.max_retries,
                wait,
            )
            self._sleep(wait)
        raise ExchangeUnavailableError(
            f"{self.exchange_id} kept failing to {what} after {self.max_retries} retries "
            f"(last: {type(fault).__name__}: {_short(fault)})",
            "nothing was written; the exchange may be down or rate-limiting: re-run later, or lower the "
            "pool limit for this exchange in dagster.yaml",
        ) from fault

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_base_s * (2**attempt), self.backoff_max_s)

    def _retry_after(self) -> float:
        headers = getattr(self._client, "last_response_headers", None) or {}
        value = headers.get("Retry-After") or headers.get("retry-after")
        try:
            return min(float(value), self.backoff_max_s) if value is not None else 0.0
        except ValueError:
            return 0.0


class _RedactSecrets(logging.Filter):
    """Replaces credential values in ccxt's log records (ccxt logs request headers at DEBUG)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


_REDACTOR = _RedactSecrets()


def _redact_secrets_in_ccxt_logs(secrets: list[str]) -> None:
    _REDACTOR.secrets.update(secrets)
    for name in ("ccxt.base.exchange", "urllib3.connectionpool"):
        log = logging.getLogger(name)
        if _REDACTOR not in log.filters:
            log.addFilter(_REDACTOR)


def _short(error: BaseException, limit: int = 200) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "…"
