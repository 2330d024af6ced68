"""Child process that runs exactly one Freqtrade backtest: `python -m tradai_resources.freqtrade_worker JOB`.

Why a child process: Freqtrade's config loader replaces the root logging handlers (Dagster's must stay
intact in the parent), and Freqtrade keeps process-global state (persistence, LoggingMixin, the strategy
module cache), so one process runs one backtest and exits.

What it runs is the stock `freqtrade backtesting` command, minus the command-line front door: the job's
argument list is parsed by Freqtrade's own `Arguments`, the config is built by Freqtrade's own
`setup_optimize_configuration`, and `Backtesting(config).start()` runs — the same three calls
`freqtrade.commands.start_backtesting` makes. Two things differ, neither touching the results:

- **Markets come from a snapshot, with no network at all.** Freqtrade loads markets at start-up through
  its async ccxt client (`load_markets` → `fetch_markets` → HTTP `fetch`). For the duration of the run,
  `fetch` — ccxt's HTTP layer — is replaced on the ccxt exchange class by one that answers the
  exchangeInfo requests from the recorded snapshot and refuses everything else. Every line above the
  socket is the live code path (Freqtrade's `reload_markets`, ccxt's `fetch_markets` and
  `parse_market`), so market precision, limits and fees are exactly what the stock CLI gets from the
  replay server or the exchange. `tests/test_freqtrade_backtester.py::test_contract_*` pins this and
  fails loudly if a Freqtrade or ccxt upgrade loads markets another way; the worker itself also fails a
  run in which the snapshot answered nothing.
- **Every outbound socket is refused** (`network_guard`), so a change that makes Freqtrade reach for the
  network fails the run instead of silently hitting an exchange.

The job file (JSON) names the argument list, the snapshot, the strategy, and where to write the result.
The result (Freqtrade's own backtest stats, serialised with Freqtrade's own JSON writer) is written to a
temporary name and renamed, so a crash never leaves a half-written result. On failure a short
`error.json` says what failed, the traceback goes to stderr, and the exit code is non-zero.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ENGINE_FAILED = 1
EXIT_BAD_JOB = 2


class WorkerJob(BaseModel):
    """What the parent asks the worker to do (written as JSON next to the workspace)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: tuple[str, ...]
    strategy: str
    exchange: str
    exchange_info_path: str
    result_path: str
    error_path: str
    block_network: bool = True


class NetworkBlockedError(ConnectionRefusedError):
    """Raised by the network guard for any outbound internet connection or name lookup."""


@dataclass
class OfflineLog:
    """What an offline hook answered and refused while it was active."""

    answered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@contextmanager
def network_guard() -> Iterator[OfflineLog]:
    """Refuse every IPv4/IPv6 connection and DNS lookup made inside the block; yields the refusal log.

    Unix sockets stay allowed. Refusals are also recorded, because some callers (ccxt, Freqtrade's retry
    loops) catch connection errors and carry on: the worker fails the run if anything was refused.
    """
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo
    log = OfflineLog()

    def refuse(what: str) -> NetworkBlockedError:
        log.refused.append(what)
        logger.error("network access refused in an offline backtest: %s", what)
        return NetworkBlockedError(f"network access is disabled in offline backtests ({what})")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise refuse(f"connect {address!r}")
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise refuse(f"connect {address!r}")
        return original_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise refuse(f"lookup {host!r}")

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    try:
        yield log
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = original_getaddrinfo


SNAPSHOT_EXCHANGES: tuple[str, ...] = ("binance",)
"""Exchanges whose markets can be answered from a recorded snapshot."""


def recorded_responses(exchange_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The REST answers ccxt needs to load `exchange_id`'s markets, keyed by URL path.

    Only Binance spot is recorded: its `GET /api/v3/exchangeInfo` body, plus empty futures market lists
    for the linear and inverse endpoints ccxt also asks by default (spot backtests need none; the loopback
    replay server answers the same way).
    """
    if exchange_id not in SNAPSHOT_EXCHANGES:
        raise ValueError(f"no recorded market snapshot format for exchange {exchange_id!r}; only binance")
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("symbols"), list):
        raise ValueError("the binance market snapshot must be a GET /api/v3/exchangeInfo body with 'symbols'")
    no_markets = {"timezone": "UTC", "serverTime": snapshot.get("serverTime", 0), "symbols": []}
    return {
        "/api/v3/exchangeInfo": snapshot,
        "/fapi/v1/exchangeInfo": no_markets,
        "/dapi/v1/exchangeInfo": no_markets,
    }


@contextmanager
def offline_markets(exchange_id: str, snapshot: dict[str, Any]) -> Iterator[OfflineLog]:
    """Answer ccxt's market requests for `exchange_id` from `snapshot` inside the block, with no network.

    Replaces `fetch` — ccxt's HTTP layer, under every REST call — on ccxt's async exchange class, which
    Freqtrade's async client is built from (ccxt.pro classes inherit it). Everything above the socket runs
    unchanged: Freqtrade's `reload_markets`, ccxt's `load_markets`, `fetch_markets` and `parse_market`.
    Any other request fails loudly (and is logged, in case a caller swallows the error). Patching the
    class reaches the clients Freqtrade builds without touching Freqtrade's private attributes. Yields
    the log of answered and refused requests; restores `fetch` on exit.
    """
    import ccxt
    import ccxt.async_support as ccxt_async

    cls = getattr(ccxt_async, exchange_id, None)
    if cls is None:
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    answers = recorded_responses(exchange_id, snapshot)
    log = OfflineLog()
    had_own = "fetch" in cls.__dict__
    original = cls.__dict__.get("fetch")

    async def fetch(self: Any, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        path = urlsplit(url).path
        if method == "GET" and path in answers:
            log.answered.append(path)
            logger.info("offline snapshot answers %s %s", method, path)
            return copy.deepcopy(answers[path])
        log.refused.append(f"{method} {url}")
        raise ccxt.ExchangeNotAvailable(f"offline backtest: no recorded answer for {method} {url}")

    cls.fetch = fetch
    try:
        yield log
    finally:
        if had_own:
            cls.fetch = original
        else:
            del cls.fetch


def run_backtest(job: WorkerJob) -> dict[str, Any]:
    """Run the job's backtest with Freqtrade's own argument parser, config builder and engine.

    Returns Freqtrade's full results dict (`metadata`, `strategy`, `strategy_comparison`).
    """
    from freqtrade.commands import Arguments
    from freqtrade.commands.optimize_commands import setup_optimize_configuration
    from freqtrade.enums import RunMode
    from freqtrade.optimize.backtesting import Backtesting

    snapshot = json.loads(Path(job.exchange_info_path).read_text(encoding="utf-8"))
    args = Arguments(list(job.argv)).get_parsed_arg()
    guard = network_guard() if job.block_network else _no_guard()
    with guard as network, offline_markets(job.exchange, snapshot) as markets:
        config = setup_optimize_configuration(args, RunMode.BACKTEST)
        backtesting = Backtesting(config)
        backtesting.start()
        refused = network.refused + markets.refused
        if refused:
            raise RuntimeError(f"the backtest tried to reach the network: {refused}")
        if not markets.answered:
            raise RuntimeError(
                "Freqtrade did not load markets through ccxt's fetch; the offline hook is stale"
            )
    results = backtesting.results
    if job.strategy not in results.get("strategy", {}):
        raise RuntimeError(f"Freqtrade produced no result for strategy {job.strategy}")
    return results


@contextmanager
def _no_guard() -> Iterator[OfflineLog]:
    yield OfflineLog()


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        write(handle)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the job file named by the single argument; return the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python -m tradai_resources.freqtrade_worker JOB.json\n")
        return EXIT_BAD_JOB
    try:
        job = WorkerJob.model_validate_json(Path(argv[0]).read_text(encoding="utf-8"))
    except Exception as exc:
        sys.stderr.write(f"invalid job file {argv[0]}: {exc}\n")
        return EXIT_BAD_JOB
    try:
        results = run_backtest(job)
        from freqtrade import __version__ as freqtrade_version
        from freqtrade.misc import dump_json_to_file

        payload = {
            "freqtrade_version": freqtrade_version,
            "metadata": results["metadata"],
            "strategy": results["strategy"],
            "strategy_comparison": results["strategy_comparison"],
        }
        _write_atomic(Path(job.result_path), lambda handle: dump_json_to_file(handle, payload))
    except BaseException as exc:
        error = {"type": type(exc).__name__, "message": str(exc)}
        _write_atomic(Path(job.error_path), lambda handle: json.dump(error, handle))
        traceback.print_exc(file=sys.stderr)
        return EXIT_ENGINE_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
