"""Fixtures for tests that talk to the exchange replay server through a real ccxt client.

The root conftest loads them (`pytest_plugins`); a module
that does so should take `make_binance_client` as a fixture rather than import it (importing this module
first stops pytest from rewriting its asserts and makes it warn).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest

from tradai_core.urls import rebase_urls
from tradai_replay.server import ReplayServer

DEMO_CANDLES = Path(__file__).resolve().parents[1] / "demo_data" / "binance_spot_1h"


def binance_client(server: ReplayServer, **config: Any) -> ccxt.binance:
    """A keyless ccxt Binance client (spot markets only) whose REST URLs point at `server`.

    Client-side throttling is off so tests run at loopback speed; pass e.g. `timeout=200` (ms) to test
    timeouts. Extra `config` entries are merged into ccxt's constructor config.
    """
    options = {"fetchMarkets": {"types": ["spot"]}, **config.pop("options", {})}
    exchange = ccxt.binance({"enableRateLimit": False, **config, "options": options})
    exchange.urls["api"] = rebase_urls(exchange.urls["api"], server.base_url)
    return exchange


@pytest.fixture
def make_binance_client() -> Callable[..., ccxt.binance]:
    """`binance_client` as a fixture: `make_binance_client(server, timeout=200)`, for test modules that
    load these fixtures with `pytest_plugins` and so must not import this module themselves."""
    return binance_client


@pytest.fixture
def replay_server() -> Iterator[ReplayServer]:
    """A started replay server over the project's demo candles (6 pairs); stopped after the test."""
    with ReplayServer(DEMO_CANDLES) as server:
        yield server


@pytest.fixture
def replay_client(replay_server: ReplayServer) -> ccxt.binance:
    """A ccxt Binance client pointed at `replay_server` (markets not loaded yet)."""
    return binance_client(replay_server)
