"""The exchange replay server, specified through a real ccxt client talking HTTP to it on loopback.

Each test states one behaviour of the server as seen by the platform's exchange client (ccxt 4.5): which
requests ccxt makes, what it gets back, and which exception class each injected fault turns into.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pandas as pd
import pytest

from tradai_core.errors import ConfigurationError
from tradai_core.urls import rebase_urls
from tradai_replay.__main__ import main as cli_main
from tradai_replay.faults import FAULT_KINDS, MAX_DELAY_S, VARIANTS, Fault, supported_faults
from tradai_replay.markets import (
    default_exchange_info_path,
    derived_step_size,
    derived_tick_size,
    exchange_info_for,
    load_exchange_info,
)
from tradai_replay.server import DROPPED, ReplayServer

DEMO_CANDLES = Path(__file__).resolve().parents[1] / "demo_data" / "binance_spot_1h"

BinanceFactory = Callable[..., ccxt.binance]
HOUR = 3_600_000
BTC = "BTC/USDT"
NEW_YEAR_2022 = 1_640_995_200_000  # 2022-01-01 00:00 UTC, inside the demo candles
OUTAGE_2020_12_21 = 1_608_508_800_000  # 2020-12-21 00:00 UTC; Binance was down 4 hours that day


def recorded(folder: Path, pair: str) -> list[list[float]]:
    """The recorded parquet rows as ccxt candles `[ms, open, high, low, close, volume]`."""
    frame = pd.read_parquet(folder / f"{pair.replace('/', '_')}-1h.parquet")
    stamps = frame["date"].astype("datetime64[ms, UTC]").astype("int64").tolist()
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy().tolist()
    return [[stamp, *row] for stamp, row in zip(stamps, values, strict=True)]


@pytest.fixture(scope="module")
def demo_btc() -> list[list[float]]:
    """The demo BTC/USDT candles as read straight from parquet, independently of the server."""
    return recorded(DEMO_CANDLES, BTC)


def raw_get(server: ReplayServer, path: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a plain GET, for what ccxt does not show."""
    try:
        with urllib.request.urlopen(server.base_url + path, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def control(server: ReplayServer, method: str, payload: Any = None) -> tuple[int, Any]:
    """Call the `/_replay/faults` control endpoint as a person with curl would."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(server.base_url + "/_replay/faults", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ---------------------------------------------------------------------------------------------------
# markets


def test_load_markets_describes_every_served_pair_in_one_request(
    shared_candles_dir: Path, make_binance_client: BinanceFactory
) -> None:
    with ReplayServer(shared_candles_dir) as server:
        markets = make_binance_client(server).load_markets()

    assert len(server.pairs) == 12
    assert sorted(markets) == server.pairs
    assert [(r.method, r.path, r.status) for r in server.requests] == [("GET", "/api/v3/exchangeInfo", 200)]
    assert all(m["spot"] and m["active"] and m["quote"] == "USDT" for m in markets.values())
    # pairs in the snapshot keep its recorded sizes
    assert markets["BTC/USDT"]["precision"] == {"amount": 1e-05, "price": 0.01, "base": 1e-08, "quote": 1e-08}
    assert markets["DOGE/USDT"]["precision"]["price"] == 1e-05
    # pairs absent from it (BNB, SOL, LINK, AVAX, DOT) get sizes derived from their last recorded price
    assert markets["BNB/USDT"]["precision"]["price"] == 0.01  # ~270 USDT
    assert markets["BNB/USDT"]["precision"]["amount"] == 0.001
    assert markets["LINK/USDT"]["precision"]["price"] == 0.001  # ~7 USDT
    assert markets["LINK/USDT"]["precision"]["amount"] == 0.1
    assert markets["BNB/USDT"]["limits"]["cost"]["min"] == markets["BTC/USDT"]["limits"]["cost"]["min"] == 5


def test_ccxt_default_market_types_load_spot_markets_and_empty_futures(replay_server: ReplayServer) -> None:
    exchange = ccxt.binance({"enableRateLimit": False})  # types spot, linear and inverse
    exchange.urls["api"] = rebase_urls(exchange.urls["api"], replay_server.base_url)

    markets = exchange.load_markets()

    assert sorted(markets) == replay_server.pairs
    assert sorted(r.path for r in replay_server.requests) == [
        "/api/v3/exchangeInfo",
        "/dapi/v1/exchangeInfo",
        "/fapi/v1/exchangeInfo",
    ]


def test_exchange_info_answers_symbol_symbols_and_permissions_filters(replay_client: ccxt.binance) -> None:
    one = replay_client.publicGetExchangeInfo({"symbol": "ETHUSDT"})
    two = replay_client.publicGetExchangeInfo({"symbols": '["BTCUSDT","XRPUSDT"]'})
    spot = replay_client.publicGetExchangeInfo({"permissions": "SPOT"})

    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    assert [s["symbol"] for s in two["symbols"]] == ["BTCUSDT", "XRPUSDT"]
    assert len(spot["symbols"]) == 6
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        replay_client.publicGetExchangeInfo({"symbol": "TRXUSDT"})  # in the snapshot, but not served


def test_exchange_info_for_models_missing_pairs_on_the_snapshot() -> None:
    snapshot = load_exchange_info(default_exchange_info_path())
    template = snapshot["symbols"][0]

    info = exchange_info_for(["SOL/USDT", "BTC/USDT", "AVAX/USDT"], snapshot, {"SOL/USDT": 33.0})

    assert [s["symbol"] for s in info["symbols"]] == ["SOLUSDT", "BTCUSDT", "AVAXUSDT"]
    assert info["rateLimits"] == snapshot["rateLimits"]
    sol = info["symbols"][0]
    assert (sol["baseAsset"], sol["quoteAsset"], sol["status"]) == ("SOL", "USDT", "TRADING")
    assert [f["filterType"] for f in sol["filters"]] == [f["filterType"] for f in template["filters"]]
    filters = {f["filterType"]: f for f in sol["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.01000000"
    # without a price, a missing pair copies the template's sizes
    assert info["symbols"][2]["filters"] == template["filters"]
    assert info["symbols"][1] == template


@pytest.mark.parametrize(
    ("symbol", "price"),
    [
        ("BTCUSDT", 19_100.0),
        ("ETHUSDT", 1_290.0),
        ("LTCUSDT", 51.0),
        ("ADAUSDT", 0.37),
        ("XRPUSDT", 0.49),
        ("DOGEUSDT", 0.059),
        ("TRXUSDT", 0.061),
    ],
)
def test_derived_tick_size_reproduces_the_snapshot_ticks(symbol: str, price: float) -> None:
    snapshot = load_exchange_info()
    entry = next(s for s in snapshot["symbols"] if s["symbol"] == symbol)
    tick = next(f["tickSize"] for f in entry["filters"] if f["filterType"] == "PRICE_FILTER")

    assert derived_tick_size(price) == pytest.approx(float(tick))
    assert 0.1 <= derived_step_size(price) * price <= 1.0 or derived_step_size(price) == 1.0


# ---------------------------------------------------------------------------------------------------
# candles


def test_a_page_of_candles_equals_the_recorded_rows_exactly(
    replay_client: ccxt.binance, demo_btc: list[list[float]]
) -> None:
    start = next(i for i, row in enumerate(demo_btc) if row[0] == NEW_YEAR_2022)

    candles = replay_client.fetch_ohlcv(BTC, "1h", since=NEW_YEAR_2022, limit=1000)

    assert candles == demo_btc[start : start + 1000]  # timestamps and floats, bit for bit


def test_floats_without_an_exact_8_decimal_form_still_arrive_bit_for_bit(
    tmp_path: Path, make_binance_client: BinanceFactory
) -> None:
    awkward = 0.1 + 0.2  # 0.30000000000000004: "%.8f" would round it
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime([NEW_YEAR_2022, NEW_YEAR_2022 + HOUR], unit="ms", utc=True),
            "open": [awkward, 1.0],
            "high": [1.5, 2.0],
            "low": [0.25, 0.5],
            "close": [1.0, 1e-9],
            "volume": [123456789.123456789, 0.0],
        }
    )
    frame.to_parquet(tmp_path / "FOO_USDT-1h.parquet")

    with ReplayServer(tmp_path) as server:
        candles = make_binance_client(server).fetch_ohlcv("FOO/USDT", "1h", since=0)

    assert candles == [
        [NEW_YEAR_2022, awkward, 1.5, 0.25, 1.0, 123456789.123456789],
        [NEW_YEAR_2022 + HOUR, 1.0, 2.0, 0.5, 1e-9, 0.0],
    ]


def test_klines_are_binance_arrays_with_prices_as_strings(replay_server: ReplayServer) -> None:
    status, headers, body = raw_get(
        replay_server, f"/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={NEW_YEAR_2022}&limit=1"
    )

    assert status == 200 and headers["Content-Type"].startswith("application/json")
    [kline] = json.loads(body)
    assert kline[0] == NEW_YEAR_2022 and kline[6] == NEW_YEAR_2022 + HOUR - 1  # open and close time
    assert kline[1:6] == [
        "46216.93000000",
        "46731.39000000",
        "46208.37000000",
        "46656.13000000",
        "1503.33095000",
    ]
    assert float(kline[7]) == pytest.approx(1503.33095 * 46656.13)  # quote volume = volume × close
    assert len(kline) == 12


def test_pages_follow_start_time_end_time_and_limit(
    replay_client: ccxt.binance, replay_server: ReplayServer, demo_btc: list[list[float]]
) -> None:
    start = next(i for i, row in enumerate(demo_btc) if row[0] == NEW_YEAR_2022)

    default_page = replay_client.fetch_ohlcv(BTC, "1h", since=NEW_YEAR_2022)
    mid_candle = replay_client.fetch_ohlcv(BTC, "1h", since=NEW_YEAR_2022 + 1, limit=2)
    bounded = replay_client.fetch_ohlcv(
        BTC, "1h", since=NEW_YEAR_2022, params={"until": NEW_YEAR_2022 + 5 * HOUR}
    )
    before_end = replay_client.publicGetKlines(
        {"symbol": "BTCUSDT", "interval": "1h", "endTime": NEW_YEAR_2022, "limit": 3}
    )
    latest = replay_client.fetch_ohlcv(BTC, "1h", limit=4)
    capped = replay_client.publicGetKlines(
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": 0, "limit": 5000}
    )

    assert default_page == demo_btc[start : start + 500]  # Binance's default limit is 500
    assert mid_candle == demo_btc[start + 1 : start + 3]  # first candle opening at or after startTime
    assert bounded == demo_btc[start : start + 6]  # endTime is inclusive (an open time)
    until_request = next(r for r in replay_server.requests if "endTime" in r.query)
    assert until_request.query["limit"] == "1000"  # ccxt asks for the maximum with since and until
    assert [int(k[0]) for k in before_end] == [row[0] for row in demo_btc[start - 2 : start + 1]]
    assert latest == demo_btc[-4:]  # no startTime: the most recent candles up to now
    assert len(capped) == 1000 and int(capped[0][0]) == demo_btc[0][0]  # a larger limit is capped
    with pytest.raises(ccxt.ExchangeError, match="-1023"):
        replay_client.publicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "startTime": 10, "endTime": 5})


def test_outages_are_served_as_gaps_never_filled(
    replay_client: ccxt.binance, demo_btc: list[list[float]]
) -> None:
    candles = replay_client.fetch_ohlcv(BTC, "1h", since=OUTAGE_2020_12_21, limit=24)

    stamps = [c[0] for c in candles]
    assert stamps == [row[0] for row in demo_btc if row[0] >= OUTAGE_2020_12_21][:24]
    assert max(b - a for a, b in itertools.pairwise(stamps)) > HOUR


def test_paging_from_the_first_candle_returns_the_whole_recording(
    replay_client: ccxt.binance, replay_server: ReplayServer, demo_btc: list[list[float]]
) -> None:
    candles: list[list[float]] = []
    since = 0
    while page := replay_client.fetch_ohlcv(BTC, "1h", since=since, limit=1000):
        candles += page
        since = page[-1][0] + 1

    assert candles == demo_btc
    pages = [r for r in replay_server.requests if r.path == "/api/v3/klines"]
    assert len(pages) == math.ceil(len(demo_btc) / 1000) + 1  # the last request gets an empty page


def test_unknown_interval_and_symbol_are_binance_errors(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    status, _, body = raw_get(replay_server, "/api/v3/klines?symbol=BTCUSDT&interval=4h")
    assert (status, json.loads(body)) == (400, {"code": -1120, "msg": "Invalid interval."})
    status, _, body = raw_get(replay_server, "/api/v3/klines?symbol=BNBUSDT&interval=1h")
    assert (status, json.loads(body)) == (400, {"code": -1121, "msg": "Invalid symbol."})

    with pytest.raises(ccxt.BadRequest, match="Invalid interval"):
        replay_client.fetch_ohlcv(BTC, "4h")  # only the recorded interval is served
    with pytest.raises(ccxt.BadSymbol):
        replay_client.publicGetKlines({"symbol": "BNBUSDT", "interval": "1h"})


# ---------------------------------------------------------------------------------------------------
# the clock


def test_by_default_the_clock_stands_at_the_close_of_the_last_candle(
    replay_client: ccxt.binance, demo_btc: list[list[float]]
) -> None:
    now = replay_client.fetch_time()
    latest = replay_client.publicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "limit": 1})

    assert now == demo_btc[-1][0] + HOUR
    assert int(latest[0][0]) == demo_btc[-1][0] and int(latest[0][6]) < now  # every candle is closed


def test_a_clock_inside_a_candle_serves_that_candle_still_open(
    demo_btc: list[list[float]], make_binance_client: BinanceFactory
) -> None:
    now = NEW_YEAR_2022 + 30 * 60_000  # 00:30, inside the 00:00 candle
    with ReplayServer(DEMO_CANDLES, now_ms=now) as server:
        client = make_binance_client(server)
        assert client.fetch_time() == now
        latest = client.fetch_ohlcv(BTC, "1h", limit=3)
        after_now = client.fetch_ohlcv(BTC, "1h", since=now, limit=3)
        kline = client.publicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "limit": 1})[0]
        server.now_ms = now + 2 * HOUR  # the clock can be moved on; later candles appear
        later = client.fetch_ohlcv(BTC, "1h", limit=3)

    assert [c[0] for c in latest] == [NEW_YEAR_2022 - 2 * HOUR, NEW_YEAR_2022 - HOUR, NEW_YEAR_2022]
    assert int(kline[6]) > now  # its close time is still ahead: the client must drop it
    assert after_now == []
    assert [c[0] for c in later] == [NEW_YEAR_2022, NEW_YEAR_2022 + HOUR, NEW_YEAR_2022 + 2 * HOUR]
    assert latest[-1] == next(row for row in demo_btc if row[0] == NEW_YEAR_2022)


# ---------------------------------------------------------------------------------------------------
# faults, as ccxt sees them


def test_429_is_ddos_protection_with_retry_after_and_expires_after_count(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_server.inject(Fault(kind="http_429", count=2, retry_after_s=1.5, path_prefix="/api/v3/klines"))
    replay_client.load_markets()  # another path: not affected, does not use the fault up

    for _ in range(2):
        # binance.handle_errors raises DDoSProtection (not RateLimitExceeded) for both 429 and 418
        with pytest.raises(ccxt.DDoSProtection, match='"code":-1003'):
            replay_client.fetch_ohlcv(BTC, "1h", limit=2)
        assert replay_client.last_response_headers["Retry-After"] == "1.5"
    candles = replay_client.fetch_ohlcv(BTC, "1h", limit=2)

    assert len(candles) == 2
    assert [r.status for r in replay_server.requests] == [200, 429, 429, 200]
    assert replay_server.pending_faults == []


def test_418_ip_ban_is_ddos_protection(replay_client: ccxt.binance, replay_server: ReplayServer) -> None:
    replay_server.inject(Fault(kind="http_418", retry_after_s=60))

    with pytest.raises(ccxt.DDoSProtection, match="banned until"):
        replay_client.fetch_time()
    assert replay_client.last_response_headers["Retry-After"] == "60"


@pytest.mark.parametrize(
    ("status", "variant", "error"),
    [
        (500, "html", ccxt.ExchangeNotAvailable),
        (502, "html", ccxt.ExchangeNotAvailable),
        (503, "html", ccxt.ExchangeNotAvailable),
        (504, "html", ccxt.RequestTimeout),
        # Binance's own -1001 body wins over the status: OperationFailed, which is NOT a NetworkError
        (503, "json", ccxt.OperationFailed),
    ],
)
def test_5xx_answers_become_ccxt_errors(
    replay_client: ccxt.binance, replay_server: ReplayServer, status: int, variant: str, error: type
) -> None:
    replay_client.load_markets()  # before the fault, which would hit any path
    replay_server.inject(Fault(kind="http_5xx", status=status, variant=variant))

    with pytest.raises(error) as raised:
        replay_client.fetch_ohlcv(BTC, "1h", limit=2)

    assert replay_server.requests[-1].status == status
    assert isinstance(raised.value, ccxt.NetworkError) == (variant == "html")


def test_timeout_longer_than_the_client_timeout_is_request_timeout(
    replay_server: ReplayServer, make_binance_client: BinanceFactory
) -> None:
    client = make_binance_client(replay_server, timeout=200)
    client.load_markets()  # before the fault, which would hit any path
    replay_server.inject(Fault(kind="timeout", delay_s=1.0))

    started = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        client.fetch_ohlcv(BTC, "1h", limit=2)

    assert time.monotonic() - started < 0.9
    assert replay_server.requests[-1].status == DROPPED
    assert len(client.fetch_ohlcv(BTC, "1h", limit=2)) == 2  # the fault has expired


def test_a_dropped_connection_before_the_client_timeout_is_a_network_error(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_client.load_markets()  # before the fault, which would hit any path
    replay_server.inject(Fault(kind="timeout", delay_s=0.05))

    with pytest.raises(ccxt.NetworkError) as raised:
        replay_client.fetch_ohlcv(BTC, "1h", limit=2)

    assert type(raised.value) is ccxt.NetworkError


def test_latency_delays_the_answer_but_not_its_content(
    replay_client: ccxt.binance, replay_server: ReplayServer, demo_btc: list[list[float]]
) -> None:
    replay_client.load_markets()  # before the fault, which would hit any path
    replay_server.inject(Fault(kind="latency", delay_s=0.2))

    started = time.monotonic()
    candles = replay_client.fetch_ohlcv(BTC, "1h", limit=3)

    assert time.monotonic() - started >= 0.2
    assert candles == demo_btc[-3:]


@pytest.mark.parametrize(
    ("variant", "spoiled"),
    [
        ("high_below_low", lambda c: c[2] < c[3]),
        ("non_numeric", lambda c: c[4] is None),  # ccxt's safe_number turns "not-a-number" into None
        ("null_price", lambda c: c[1] is None),
        ("short_row", lambda c: c[4] is None and c[5] is None),
    ],
)
def test_malformed_candles_pass_through_ccxt_unnoticed(
    replay_client: ccxt.binance,
    replay_server: ReplayServer,
    demo_btc: list[list[float]],
    variant: str,
    spoiled: Any,
) -> None:
    replay_server.inject(Fault(kind="malformed", variant=variant))

    candles = replay_client.fetch_ohlcv(BTC, "1h", limit=5)  # ccxt raises nothing: validation is ours

    assert spoiled(candles[2])
    assert candles[:2] + candles[3:] == demo_btc[-5:-3] + demo_btc[-2:]


@pytest.mark.parametrize(
    ("variant", "check"),
    [
        ("null_timestamp", lambda page, clean: page[2][0] is None),
        ("nan_price", lambda page, clean: page[2][4] == "NaN"),
        ("zero_price", lambda page, clean: [float(v) for v in page[2][1:5]] == [0.0] * 4),
        ("negative_price", lambda page, clean: float(page[2][3]) == -float(clean[2][3])),
        ("duplicate_row", lambda page, clean: page[:3] + page[4:] == clean and page[3] == clean[2]),
        ("out_of_order", lambda page, clean: page == [*clean[:2], clean[3], clean[2], clean[4]]),
        ("price_spike", lambda page, clean: float(page[2][4]) == pytest.approx(float(clean[2][4]) * 1000)),
    ],
)
def test_candle_content_faults_are_sent_as_a_real_feed_would_send_them(
    replay_server: ReplayServer, variant: str, check: Any
) -> None:
    path = f"/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={NEW_YEAR_2022}&limit=5"
    clean = json.loads(raw_get(replay_server, path)[2])
    replay_server.inject(Fault(kind="malformed", variant=variant))

    status, _, body = raw_get(replay_server, path)

    assert status == 200 and check(json.loads(body), clean)


def test_ccxt_silently_drops_a_candle_without_open_time(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_server.inject(Fault(kind="malformed", variant="null_timestamp"))
    candles = replay_client.fetch_ohlcv(BTC, "1h", since=NEW_YEAR_2022, limit=5)
    assert len(candles) == 4  # why ExchangeResource reads the raw JSON page as well


def test_a_stale_page_repeats_the_page_before_the_one_asked_for(replay_server: ReplayServer) -> None:
    path = "/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={}&limit=5"
    before = raw_get(replay_server, path.format(NEW_YEAR_2022 - 5 * HOUR))[2]
    replay_server.inject(Fault(kind="stale_page"))

    stale = raw_get(replay_server, path.format(NEW_YEAR_2022))[2]
    fresh = json.loads(raw_get(replay_server, path.format(NEW_YEAR_2022))[2])

    assert stale == before
    assert fresh[0][0] == NEW_YEAR_2022


def test_ccxt_hides_a_stale_page_as_an_empty_one(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_server.inject(Fault(kind="stale_page"))
    assert replay_client.fetch_ohlcv(BTC, "1h", since=NEW_YEAR_2022, limit=5) == []  # filtered by since


def test_every_fault_kind_and_variant_is_listed() -> None:
    faults = supported_faults()
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    assert {f.variant for f in faults if f.kind == "malformed"} == set(VARIANTS["malformed"])
    assert {"stale_page", "malformed"} <= set(FAULT_KINDS)
    assert len(faults) == len({(f.kind, f.variant) for f in faults})


def test_fault_kinds_are_listed_over_http_and_each_can_be_queued(replay_server: ReplayServer) -> None:
    status, _, body = raw_get(replay_server, "/_replay/fault-kinds")
    kinds = json.loads(body)
    assert status == 200 and len(kinds) == len(supported_faults())
    assert {"kind": "stale_page"} in kinds and {"kind": "malformed", "variant": "price_spike"} in kinds
    assert control(replay_server, "POST", kinds) == (200, {"queued": len(kinds)})


def test_a_delay_beyond_the_bound_is_refused_with_a_clear_400(replay_server: ReplayServer) -> None:
    status, answer = control(replay_server, "POST", {"kind": "latency", "delay_s": 3_600_000})
    assert status == 400
    assert f"at most {MAX_DELAY_S:g} s" in answer["detail"] and "not milliseconds" in answer["detail"]
    assert replay_server.pending_faults == []
    assert control(replay_server, "POST", {"kind": "latency", "delay_s": MAX_DELAY_S})[0] == 200


def test_malformed_fault_waits_for_a_kline_request(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_server.inject(Fault(kind="malformed"))

    replay_client.fetch_time()
    assert len(replay_server.pending_faults) == 1
    candles = replay_client.fetch_ohlcv(BTC, "1h", limit=3)
    assert candles[1][2] < candles[1][3]
    assert replay_server.pending_faults == []


def test_a_truncated_body_makes_ccxt_return_garbage_silently(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_client.load_markets()  # before the fault, which would hit any path
    replay_server.inject(Fault(kind="truncated", count=2))

    latest = replay_client.fetch_ohlcv(BTC, "1h", limit=5)
    text = replay_client.last_http_response
    since_2022 = replay_client.fetch_ohlcv(BTC, "1h", since=NEW_YEAR_2022, limit=5)

    # ccxt cannot parse the JSON, keeps the text, and parses each character of it as a candle: no exception,
    # candles whose timestamp is a digit of the text and whose prices are None...
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert len(latest) == 5
    assert all(0 <= c[0] <= 9 and c[1:] == [None] * 5 for c in latest)
    # ...which a `since` then filters away: an empty page that looks like "no more candles"
    assert since_2022 == []
    assert [r.status for r in replay_server.requests] == [200, 200, 200]


def test_a_body_cut_off_by_a_closed_connection_is_a_network_error(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_client.load_markets()  # before the fault, which would hit any path
    replay_server.inject(Fault(kind="truncated", variant="connection"))

    with pytest.raises(ccxt.NetworkError):
        replay_client.fetch_ohlcv(BTC, "1h", limit=5)
    assert len(replay_client.fetch_ohlcv(BTC, "1h", limit=5)) == 5


def test_faults_queue_in_order_and_match_by_path_prefix(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_server.inject(
        Fault(kind="http_5xx", status=500, path_prefix="/api/v3/klines"),
        Fault(kind="http_429", path_prefix="/api/v3/klines"),
        Fault(kind="http_5xx", status=503, path_prefix="/api/v3/exchangeInfo"),
    )

    with pytest.raises(ccxt.ExchangeNotAvailable):
        replay_client.load_markets()
    replay_client.load_markets()
    with pytest.raises(ccxt.ExchangeNotAvailable):
        replay_client.fetch_ohlcv(BTC, "1h", limit=1)
    with pytest.raises(ccxt.DDoSProtection):
        replay_client.fetch_ohlcv(BTC, "1h", limit=1)
    replay_client.fetch_ohlcv(BTC, "1h", limit=1)

    assert [r.status for r in replay_server.requests] == [503, 200, 500, 429, 200]


def test_clear_faults_drops_every_pending_fault(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    replay_server.inject(Fault(kind="http_429", count=5), Fault(kind="http_418"))

    assert replay_server.clear_faults() == 2
    assert replay_client.fetch_time() > 0


def test_faults_reject_settings_that_do_not_apply() -> None:
    with pytest.raises(ValueError, match="variant"):
        Fault(kind="http_429", variant="html")
    with pytest.raises(ValueError):
        Fault(kind="http_5xx", status=404)
    with pytest.raises(ValueError):
        Fault(kind="latency", count=0)
    assert Fault(kind="timeout").delay_s > 10  # by default longer than ccxt's 10 s timeout


def test_control_endpoint_queues_lists_and_clears_faults(
    replay_client: ccxt.binance, replay_server: ReplayServer
) -> None:
    queued = control(
        replay_server, "POST", [{"kind": "http_429", "count": 2}, {"kind": "latency", "delay_s": 0}]
    )
    listed = control(replay_server, "GET")
    with pytest.raises(ccxt.DDoSProtection):
        replay_client.fetch_time()
    cleared = control(replay_server, "DELETE")
    invalid = control(replay_server, "POST", {"kind": "earthquake"})

    assert queued == (200, {"queued": 2})
    assert listed[0] == 200 and [(f["kind"], f["remaining"]) for f in listed[1]] == [
        ("http_429", 2),
        ("latency", 1),
    ]
    assert cleared == (200, {"cleared": 2})
    assert invalid[0] == 400 and "kind" in invalid[1]["detail"]
    assert replay_client.fetch_time() > 0
    assert [r.path for r in replay_server.requests] == [
        "/api/v3/time",
        "/api/v3/time",
    ]  # control not recorded


# ---------------------------------------------------------------------------------------------------
# protocol details


def test_used_weight_headers_count_like_binance(replay_server: ReplayServer) -> None:
    _, first, _ = raw_get(replay_server, "/api/v3/ping")
    _, second, _ = raw_get(replay_server, "/api/v3/exchangeInfo")
    _, third, body = raw_get(replay_server, "/api/v3/klines?symbol=ETHUSDT&interval=1h&limit=1")

    used = [int(h["x-mbx-used-weight-1m"]) for h in (first, second, third)]
    assert json.loads(body)[0][0] > 0
    assert (used[1] - used[0], used[2] - used[1]) == (20, 2)  # exchangeInfo weighs 20, klines 2
    assert third["x-mbx-used-weight"] == third["x-mbx-used-weight-1m"]


def test_paths_it_does_not_serve_are_404_with_an_explanation(replay_server: ReplayServer) -> None:
    status, _, body = raw_get(replay_server, "/sapi/v1/capital/config/getall")

    assert status == 404 and b"does not serve /sapi/v1/capital/config/getall" in body


def test_the_async_ccxt_client_reads_the_same_candles(
    replay_server: ReplayServer, demo_btc: list[list[float]]
) -> None:
    async def fetch() -> list[list[float]]:
        exchange = ccxt_async.binance(
            {"enableRateLimit": False, "options": {"fetchMarkets": {"types": ["spot"]}}}
        )
        exchange.urls["api"] = rebase_urls(exchange.urls["api"], replay_server.base_url)
        try:
            pages = [
                await exchange.fetch_ohlcv(BTC, "1h", since=demo_btc[0][0] + i * 3 * HOUR, limit=3)
                for i in range(3)
            ]
        finally:
            await exchange.close()
        return [candle for page in pages for candle in page]

    assert asyncio.run(fetch()) == demo_btc[:9]


def test_stop_releases_the_port_and_a_server_can_restart() -> None:
    server = ReplayServer(DEMO_CANDLES).start()
    url = server.base_url
    server.stop()
    server.stop()  # idempotent

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/api/v3/ping", timeout=1)
    with server:
        assert raw_get(server, "/api/v3/ping")[:1] == (200,)


# ---------------------------------------------------------------------------------------------------
# command line


def test_it_refuses_to_listen_beyond_loopback_unless_told(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match="loopback"):
        ReplayServer(DEMO_CANDLES, host="0.0.0.0")
    with pytest.raises(SystemExit) as exited:
        cli_main(["--candles-dir", str(DEMO_CANDLES), "--host", "0.0.0.0"])

    assert exited.value.code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_cli_serves_in_the_foreground_until_terminated() -> None:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "tradai_replay", "--candles-dir", str(DEMO_CANDLES)),
            *("--port", "0", "--now", "2022-01-01T00:30:00Z"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        url = first_line.rsplit(" ", 1)[-1].strip()
        with urllib.request.urlopen(url + "/api/v3/time", timeout=5) as response:
            server_time = json.loads(response.read())["serverTime"]
    finally:
        process.terminate()
        exit_code = process.wait(timeout=10)

    assert first_line.startswith("Replay server listening on http://127.0.0.1:")
    assert server_time == NEW_YEAR_2022 + 30 * 60_000
    assert exit_code == 0
