"""ExchangeResource over real ccxt and HTTP against the loopback replay server, with every fault injected.

Retriable faults (timeouts, 429/418 with Retry-After, 5xx, truncated bodies) are retried and recovered;
a malformed candle fails at once with a message naming pair, timestamp and rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import load_recorded
from tradai_core.errors import (
    CandleValidationError,
    ExchangeDataError,
    ExchangeError,
    ExchangeUnavailableError,
)
from tradai_replay.faults import Fault
from tradai_replay.server import ReplayServer
from tradai_resources.ccxt_exchange import ExchangeResource

KLINES = "/api/v3/klines"
DAY0, DAY1 = pd.Timestamp("2021-05-01", tz="UTC"), pd.Timestamp("2021-05-02", tz="UTC")


@pytest.fixture(scope="module")
def server(shared_candles_dir: Path) -> Iterator[ReplayServer]:
    with ReplayServer(shared_candles_dir) as replay:
        yield replay


@pytest.fixture(autouse=True)
def no_faults_left(server: ReplayServer) -> Iterator[None]:
    server.clear_faults()
    yield
    server.clear_faults()


def exchange(server: ReplayServer, **overrides: object) -> ExchangeResource:
    settings = {"base_url": server.base_url, "backoff_base_s": 0.01, "timeout_ms": 1_000, **overrides}
    return ExchangeResource(**settings)  # type: ignore[arg-type]


def kline_requests(server: ReplayServer) -> int:
    return sum(1 for r in server.requests if r.path == KLINES)


@pytest.mark.parametrize("pair", ["BTC/USDT", "SOL/USDT"])  # SOL is not in the exchangeInfo snapshot
def test_a_long_range_arrives_candle_for_candle(
    server: ReplayServer, shared_candles_dir: Path, pair: str
) -> None:
    start, end = pd.Timestamp("2020-09-01", tz="UTC"), pd.Timestamp("2021-03-01", tz="UTC")
    fetched = exchange(server).fetch_candles(pair, "1h", start, end)
    source = load_recorded(shared_candles_dir, pair)
    expected = source[(source.index >= start) & (source.index < end)]
    pd.testing.assert_frame_equal(fetched.candles, expected, check_freq=False)
    assert fetched.requests == -(-len(expected) // 1000)  # pages of the 1000-candle cap, no extra request
    assert fetched.retries == 0


def test_an_outage_is_returned_as_a_gap_never_filled(server: ReplayServer, shared_candles_dir: Path) -> None:
    start, end = pd.Timestamp("2018-02-07", tz="UTC"), pd.Timestamp("2018-02-11", tz="UTC")
    fetched = exchange(server).fetch_candles("BTC/USDT", "1h", start, end)
    assert len(fetched.candles) == 4 * 24 - 33


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="http_429", count=2, retry_after_s=0.3, path_prefix=KLINES),
        Fault(kind="http_418", count=1, retry_after_s=0.3, path_prefix=KLINES),
        Fault(kind="http_5xx", count=2, status=503, path_prefix=KLINES),
        Fault(kind="http_5xx", count=1, status=500, variant="json", path_prefix=KLINES),
        Fault(kind="timeout", count=1, delay_s=1.5, path_prefix=KLINES),
        Fault(kind="truncated", count=2, path_prefix=KLINES),
        Fault(kind="truncated", count=1, variant="connection", path_prefix=KLINES),
        Fault(kind="http_5xx", count=1, status=502, path_prefix="/api/v3/exchangeInfo"),
        Fault(kind="truncated", count=1, path_prefix="/api/v3/exchangeInfo"),  # not "no market ETH/USDT"
    ],
    ids=lambda f: f"{f.kind}-{f.variant or f.status}-{f.path_prefix}",
)
def test_retriable_faults_recover_with_the_same_candles(server: ReplayServer, fault: Fault) -> None:
    clean = exchange(server).fetch_candles("ETH/USDT", "1h", DAY0, DAY1).candles
    server.inject(fault)
    recovered = exchange(server).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    pd.testing.assert_frame_equal(recovered.candles, clean)
    assert recovered.retries == fault.count


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="http_429", count=2, retry_after_s=0.3, path_prefix=KLINES),
        Fault(kind="http_418", count=1, retry_after_s=0.3, path_prefix=KLINES),
    ],
    ids=lambda f: f.kind,
)
def test_a_rate_limit_waits_its_retry_after_not_just_the_backoff(server: ReplayServer, fault: Fault) -> None:
    server.inject(fault)
    started = time.perf_counter()
    recovered = exchange(server).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)  # backoff 0.01 s, 0.02 s
    assert recovered.retries == fault.count
    assert time.perf_counter() - started >= fault.count * fault.retry_after_s


def test_latency_below_the_timeout_needs_no_retry(server: ReplayServer) -> None:
    server.inject(Fault(kind="latency", count=1, delay_s=0.3, path_prefix=KLINES))
    fetched = exchange(server).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    assert fetched.retries == 0 and len(fetched.candles) == 24


def test_a_fault_that_outlasts_the_retries_fails_clearly(server: ReplayServer) -> None:
    server.inject(Fault(kind="http_5xx", count=10, status=503, path_prefix=KLINES))
    before = kline_requests(server)
    with pytest.raises(ExchangeUnavailableError) as caught:
        exchange(server, max_retries=3).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    assert kline_requests(server) - before == 4  # the first try and three retries
    message = str(caught.value)
    assert "after 3 retries" in message and "nothing was written" in message


def test_a_market_list_that_stays_unreadable_fails_naming_the_fault_not_the_pair(
    server: ReplayServer,
) -> None:
    server.inject(Fault(kind="truncated", count=10, path_prefix="/api/v3/exchangeInfo"))
    with pytest.raises(ExchangeUnavailableError) as caught:
        exchange(server, max_retries=2).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    message = str(caught.value)
    assert "kept failing to load markets after 2 retries" in message and "unreadable market list" in message
    assert "no market" not in message


@pytest.mark.parametrize(
    ("variant", "rule"),
    [
        ("high_below_low", "high >= max(open, close)"),
        ("non_numeric", "prices and volume are finite numbers"),
        ("null_price", "prices and volume are finite numbers"),
        ("short_row", "prices and volume are finite numbers"),
    ],
)
def test_a_malformed_candle_fails_at_once_naming_pair_time_and_rule(
    server: ReplayServer, variant: str, rule: str
) -> None:
    server.inject(Fault(kind="malformed", count=1, variant=variant))
    before = kline_requests(server)
    with pytest.raises(CandleValidationError) as caught:
        exchange(server).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    assert kline_requests(server) - before == 1  # bad data is not retried
    error = caught.value
    assert (error.pair, error.timestamp, error.rule) == ("ETH/USDT", "2021-05-01T12:00:00+00:00", rule)
    assert "nothing was written" in str(error)


def test_the_still_open_candle_is_left_out(shared_candles_dir: Path) -> None:
    now = pd.Timestamp("2021-05-01 10:30", tz="UTC")
    with ReplayServer(shared_candles_dir, now_ms=int(now.value // 1_000_000)) as replay:
        fetched = exchange(replay).fetch_candles("BTC/USDT", "1h", DAY0, DAY1)
    assert fetched.dropped_open_candle
    assert fetched.candles.index[-1] == pd.Timestamp("2021-05-01 09:00", tz="UTC")


def test_an_unknown_pair_says_what_to_do(server: ReplayServer) -> None:
    with pytest.raises(ExchangeError, match="TRADAI_PAIRS"):
        exchange(server).fetch_candles("NOPE/USDT", "1h", DAY0, DAY1)


def test_keys_used_in_a_signed_request_never_reach_a_log_an_error_or_a_repr(
    server: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    key, secret = "pk-test-abcdef0123456789", "sk-test-1234567890abcdef"
    resource = exchange(server, api_key=key, api_secret=secret, max_retries=0)
    # A signed call (the replay server serves no account: 404), through the resource's error handling.
    with caplog.at_level(logging.DEBUG), pytest.raises(ExchangeError) as caught:
        resource._with_retries(lambda: resource.client().fetch_balance(), "read the account")
    [signed] = [r for r in server.requests if r.path == "/api/v3/account"]
    assert "signature" in signed.query  # the secret signed it and ccxt sent the key: they were used
    assert "X-MBX-APIKEY" in caplog.text  # ccxt logged the request headers that carry the key
    errors = [caught.value, *iter_causes(caught.value)]
    texts = [caplog.text, repr(resource), str(resource), *(str(e) for e in errors)]
    assert not [text for text in texts if key in text or secret in text]


def iter_causes(error: BaseException) -> list[BaseException]:
    causes = []
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
        causes.append(error)
    return causes


@pytest.mark.parametrize(
    ("variant", "rule", "at"),
    [
        ("null_timestamp", "every candle has an open time", "row 12 of the page from 2021-05-01T00:00"),
        ("nan_price", "prices and volume are finite numbers", "2021-05-01T12:00"),
        ("zero_price", "prices are positive", "2021-05-01T12:00"),
        ("negative_price", "prices are positive", "2021-05-01T12:00"),
        ("duplicate_row", "no duplicate candles", "2021-05-01T12:00"),
        ("out_of_order", "timestamps strictly increasing", "2021-05-01T12:00"),
    ],
)
def test_bad_candle_content_fails_at_once_naming_pair_time_and_rule(
    server: ReplayServer, variant: str, rule: str, at: str
) -> None:
    server.inject(Fault(kind="malformed", count=1, variant=variant))
    before = kline_requests(server)
    with pytest.raises(CandleValidationError) as caught:
        exchange(server).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    assert kline_requests(server) - before == 1  # bad data is not retried
    error = caught.value
    assert error.pair == "ETH/USDT" and error.rule.startswith(rule)
    assert error.timestamp.startswith(at)
    assert "nothing was written" in str(error)


def test_a_stale_page_is_asked_again_and_the_range_completes(server: ReplayServer) -> None:
    clean = exchange(server).fetch_candles("ETH/USDT", "1h", DAY0, DAY1).candles
    server.inject(Fault(kind="stale_page", count=2))
    fetched = exchange(server, page_limit=10).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    pd.testing.assert_frame_equal(fetched.candles, clean)
    assert fetched.retries == 2 and fetched.requests == 3 + 2


def test_a_page_that_stays_stale_fails_naming_the_shortfall(server: ReplayServer) -> None:
    # The day's first page (10 candles) arrives (a no-op fault takes it); every later one is stale.
    server.inject(Fault(kind="latency", count=1, delay_s=0.0, path_prefix=KLINES))
    server.inject(Fault(kind="stale_page", count=99))
    with pytest.raises(ExchangeDataError) as caught:
        exchange(server, page_limit=10, max_retries=2).fetch_candles("ETH/USDT", "1h", DAY0, DAY1)
    message = str(caught.value)
    assert "ETH/USDT" in message and "got 10 candles up to 2021-05-01T09:00" in message
    assert "14 candles from 2021-05-01T10:00:00+00:00 to 2021-05-02T00:00:00+00:00 never arrived" in message
    assert "nothing was written" in message


def test_weekly_candles_on_binance_s_monday_grid_arrive(tmp_path: Path, shared_candles_dir: Path) -> None:
    hourly = load_recorded(shared_candles_dir, "BTC/USDT").loc["2021-01-04":"2021-06-27"]
    weekly = hourly.resample("W-MON", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    assert (weekly.index.dayofweek == 0).all()  # Binance's weeks open on Monday
    weekly.reset_index().to_parquet(tmp_path / "BTC_USDT-1w.parquet")
    with ReplayServer(tmp_path) as replay:
        fetched = exchange(replay).fetch_candles(
            "BTC/USDT", "1w", pd.Timestamp("2021-01-04", tz="UTC"), pd.Timestamp("2021-06-28", tz="UTC")
        )
    pd.testing.assert_frame_equal(fetched.candles, weekly, check_freq=False)
