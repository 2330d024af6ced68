"""Child process that runs exactly one Freqtrade backtest:
`python -m tradai_resources.workers.backtest_child JOB`.

Why a child process: Freqtrade's config loader replaces the root logging handlers (Dagster's must stay
intact in the parent), and Freqtrade keeps process-global state (persistence, LoggingMixin, the strategy
module cache), so one process runs one backtest and exits.

What it runs is the stock `freqtrade backtesting` command, minus the command-line front door: the job's
argument list is parsed by Freqtrade's own `Arguments`, the config is built by Freqtrade's own
`setup_optimize_configuration`, and `Backtesting(config).start()` runs — the same three calls
`freqtrade.commands.start_backtesting` makes. Three things differ, none touching the results:

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
  network fails the run instead of silently hitting an exchange. The guard is down for one step only,
  between building the engine and starting it: each strategy's `prefetch()` hook (`TradAIStrategy`)
  fetches what it declares it needs (the ML strategy reads its exported model file there: no network).
- **Historic price precision is computed arithmetically** (`vectorized_tick_size`): Freqtrade estimates
  each month's tick size by printing every open/high/low/close as a string, a quarter of a 12-pair
  backtest's time; `tradai_core.tick_size` gives the identical Series and candle columns without the
  strings. Only the pinned version of Freqtrade's function is replaced (source hash checked at run time;
  any other runs as is), and `tests/test_tick_size.py` compares the two on real candles.

The job file (JSON) names the argument list, the snapshot, the strategy, and where to write the result.
The result (Freqtrade's own backtest stats, serialised with Freqtrade's own JSON writer) is written to a
temporary name and renamed, so a crash never leaves a half-written result. On failure a short
`error.json` says what failed, the traceback goes to stderr, and the exit code is non-zero.

**Forked from a zygote.** Importing Freqtrade takes seconds, often more than the backtest, so a backtest
child is usually `fork()`ed from a process that imported it once (`zygote_server`, `PRELOAD_MODULES`): the
forked child drops the zygote's descriptors and signal set-up, starts a new session, points
stdin/stdout/stderr at the job's files, takes the job's environment and working folder, and runs
`main([job])` exactly as `python -m tradai_resources.workers.backtest_child job.json` would, then exits
(`become_job`). So every backtest still has a process of its own — Freqtrade's process-global state and
logging set-up die with it, a crash or a kill touches nothing else — but it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn
from urllib.parse import urlsplit

from tradai_resources.workers.jobs import BacktestJob, ChartJob, run_job_file, run_job_path, write_atomic
from tradai_resources.workers.protocol import ForkRequest

if TYPE_CHECKING:
    import pandas as pd

    from tradai_core.backtest_charts import BacktestCharts
    from tradai_core.backtest_result import BacktestResult

logger = logging.getLogger(__name__)


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


FREQTRADE_TICK_SIZE_SOURCE_SHA256: Final[str] = (
    "07ce8171395ae00d5aff293a76a03e80ef1bdaf338298370748d8d685e8d49af"
)
"""SHA-256 of the source of the `get_tick_size_over_time` that `tradai_core.tick_size` reproduces."""


@contextmanager
def vectorized_tick_size(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, Freqtrade's backtester estimates historic price precision with
    `tradai_core.tick_size.tick_size_over_time`: the same Series and the same columns added to the candles,
    without printing every price as a string (~3 s of a 12 pairs × 2 years backtest, ~0.2 s this way).

    Only the exact function it reproduces is replaced: if Freqtrade's `get_tick_size_over_time` is gone or
    its source differs from the pinned one (an upgrade), Freqtrade's own runs and a warning says so. Yields
    whether the replacement is active; restores Freqtrade's function on exit.
    """
    if not enabled:
        yield False
        return
    import hashlib
    import inspect

    from freqtrade.optimize import backtesting

    from tradai_core.tick_size import tick_size_over_time

    original = getattr(backtesting, "get_tick_size_over_time", None)
    try:
        digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest() if original else ""
    except (OSError, TypeError):
        digest = ""
    if digest != FREQTRADE_TICK_SIZE_SOURCE_SHA256:
        logger.warning(
            "Freqtrade's get_tick_size_over_time is not the version tradai_core.tick_size reproduces; "
            "running Freqtrade's own (slower, same results)"
        )
        yield False
        return
    backtesting.get_tick_size_over_time = tick_size_over_time
    try:
        yield True
    finally:
        backtesting.get_tick_size_over_time = original


def run_backtest(job: BacktestJob) -> tuple[dict[str, Any], Any]:
    """Run the job's backtest with Freqtrade's own argument parser, config builder and engine.

    Returns Freqtrade's full results dict (`metadata`, `strategy`, `strategy_comparison`) and, when the job
    asks for indicators or charts, the indicator table the strategy computed during it (else None).
    """
    from freqtrade.commands import Arguments
    from freqtrade.commands.optimize_commands import setup_optimize_configuration
    from freqtrade.enums import RunMode
    from freqtrade.optimize.backtesting import Backtesting

    snapshot = json.loads(Path(job.exchange_info_path).read_text(encoding="utf-8"))
    args = Arguments(list(job.argv)).get_parsed_arg()
    guard = network_guard if job.block_network else no_guard
    with offline_markets(job.exchange, snapshot) as markets, vectorized_tick_size(job.vectorized_tick_size):
        with guard() as building:
            config = setup_optimize_configuration(args, RunMode.BACKTEST)
            backtesting = Backtesting(config)
        wanted = job.indicators_path is not None or job.charts is not None
        analyzed = _capture_indicators(backtesting) if wanted else None
        # The one step that may use the network, with the guard down: what each strategy declares it
        # needs (an ML strategy's model, from a tracking server), fetched before the backtest starts.
        for strategy in backtesting.strategylist:
            prefetch = getattr(strategy, "prefetch", None)
            if callable(prefetch):
                prefetch()
        with guard() as running:
            backtesting.start()
        refused = building.refused + running.refused + markets.refused
        if refused:
            raise RuntimeError(f"the backtest tried to reach the network: {refused}")
        if not markets.answered:
            raise RuntimeError(
                "Freqtrade did not load markets through ccxt's fetch; the offline hook is stale"
            )
    results = backtesting.results
    if job.strategy not in results.get("strategy", {}):
        raise RuntimeError(f"Freqtrade produced no result for strategy {job.strategy}")
    table = _indicator_table(analyzed) if analyzed is not None else None
    if job.indicators_path and table is not None:
        _write_indicators(Path(job.indicators_path), table)
    return results, table


CANDLE_COLUMNS: Final[frozenset[str]] = frozenset({"date", "open", "high", "low", "close", "volume"})
SIGNAL_COLUMNS: Final[frozenset[str]] = frozenset(
    {"enter_long", "exit_long", "enter_short", "exit_short", "enter_tag", "exit_tag"}
)


def _capture_indicators(backtesting: Any) -> dict[str, Any]:
    """Keep, per pair, the frame the strategy's `advise_all_indicators` returns during the backtest, with the
    columns it added (named when it returned: the engine adds columns of its own to these frames later).

    Wraps the public method on the strategy instance the engine will run (in this throw-away child only),
    so the indicators are those the backtest traded on, computed once."""
    captured: dict[str, Any] = {}
    for strategy in backtesting.strategylist:
        original = strategy.advise_all_indicators

        def advise_all_indicators(data: dict[str, Any], _original: Any = original) -> dict[str, Any]:
            given = {pair: set(frame.columns) for pair, frame in data.items()}
            analyzed = _original(data)
            for pair, frame in analyzed.items():
                added = [c for c in frame.columns if c not in given.get(pair, CANDLE_COLUMNS)]
                captured[pair] = (frame, added)
            return analyzed

        strategy.advise_all_indicators = advise_all_indicators
    return captured


def _indicator_table(analyzed: Mapping[str, Any]) -> Any:
    """The float columns the strategy added (signals excluded), all pairs in one frame with `pair` and
    `date`; None if they cannot be read (the charts are a view of the report: logged, never fatal)."""
    import pandas as pd

    try:
        frames = []
        for pair, (frame, columns) in analyzed.items():
            added = [
                column
                for column in columns
                if column not in CANDLE_COLUMNS
                and column not in SIGNAL_COLUMNS
                and pd.api.types.is_float_dtype(frame[column])
            ]
            frames.append(frame[["date", *added]].assign(pair=pair))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    except Exception:
        sys.stderr.write("indicators not read for the charts:\n")
        traceback.print_exc(file=sys.stderr)
        return None


def _write_indicators(path: Path, table: Any) -> None:
    """The indicator table as one Feather file (written whole or not at all; a failure is logged)."""
    try:
        partial = path.with_name(path.name + ".partial")
        table.to_feather(partial)
        os.replace(partial, path)
    except Exception:
        sys.stderr.write("indicators not written for the charts:\n")
        traceback.print_exc(file=sys.stderr)


def _draw_charts(job: ChartJob, stats_json: str, strategy: str, indicators: Any) -> None:
    """Draw the report's charts from the result exactly as the parent parses it (the same JSON), the
    candle files the backtest read and the strategy's indicators, and write them to `job.path` whole. A
    failure is logged and leaves no file: the parent then draws them itself."""
    try:
        import pandas as pd

        from tradai_core.backtest_charts import indicator_frames
        from tradai_core.backtest_result import parse_backtest_stats

        payload = json.loads(stats_json)
        result = parse_backtest_stats(payload["strategy"][strategy], strategy, payload["freqtrade_version"])
        candles = {
            pair: pd.read_feather(path).assign(date=lambda f: f["date"].dt.as_unit("ns")).set_index("date")
            for pair, path in job.candle_files.items()
        }
        frames = indicator_frames(indicators) if indicators is not None else {}
        charts = _draw_in_two(result, candles, frames, job)
        write_atomic(Path(job.path), lambda handle: handle.write(charts.model_dump_json()))
    except Exception:
        sys.stderr.write("charts not drawn in the worker (the report draws them):\n")
        traceback.print_exc(file=sys.stderr)


def _draw_in_two(
    result: BacktestResult,
    candles: dict[str, pd.DataFrame],
    frames: dict[str, pd.DataFrame],
    job: ChartJob,
) -> BacktestCharts:
    """The charts, drawn by this process and a helper forked from it that takes half the pair charts
    (`split_for_two`): the drawing is most of a report's worker time, and a launch often has a core to
    spare. Drawn here alone when this process runs other threads (a fork copies only this one) or cannot
    fork, and here too are the helper's pairs when it failed. The same charts either way."""
    import pandas as pd

    from tradai_core.backtest_charts import (
        BacktestCharts,
        draw_backtest_charts,
        draw_equity_chart,
        draw_pair_charts,
        split_for_two,
    )

    start = pd.Timestamp(job.trading_start)
    helped, kept = ({pair: candles[pair] for pair in part} for part in split_for_two(list(candles)))
    if not helped or threading.active_count() != 1 or not hasattr(os, "fork"):
        return draw_backtest_charts(result, candles, frames, start, job.equity_title)
    helper_file = Path(job.path + ".helper")
    helper_file.unlink(missing_ok=True)  # only what this helper writes counts
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    gc.freeze()  # neither process's collector then walks (and so copies) the heap they share
    pid = os.fork()
    if pid == 0:  # the helper: its pairs to a file, then out without running this process's exit handlers
        code = 1
        try:
            images, pages = draw_pair_charts(result, helped, frames, start)
            helper_file.write_text(json.dumps({"images": images, "pages": pages}), encoding="utf-8")
            code = 0
        except BaseException:
            traceback.print_exc(file=sys.stderr)
        finally:
            os._exit(code)
    try:
        images, pages = draw_pair_charts(result, kept, frames, start)
        equity = draw_equity_chart(result, job.equity_title)
    finally:
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0 and helper_file.is_file():
        drawn = json.loads(helper_file.read_text(encoding="utf-8"))
        helper_images, helper_pages = drawn["images"], drawn["pages"]
    else:
        sys.stderr.write("the chart helper failed; drawing its charts here\n")
        helper_images, helper_pages = draw_pair_charts(result, helped, frames, start)
    images, pages = {**helper_images, **images}, {**helper_pages, **pages}
    return BacktestCharts(
        images={pair: images[pair] for pair in candles},
        pages={pair: pages[pair] for pair in candles},
        equity=equity,
    )


@contextmanager
def no_guard() -> Iterator[OfflineLog]:
    """Stands in for `network_guard` when a job allows the network (tests against the replay server)."""
    yield OfflineLog()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the job file named by the single argument; return the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "python -m tradai_resources.workers.backtest_child JOB.json"
    return run_job_file(argv, BacktestJob, _results, usage)


def _results(job: BacktestJob) -> Callable[[IO[str]], Any]:
    """Run the backtest (and draw its charts, if asked); the writer of its result file (Freqtrade's own
    stats, by Freqtrade's JSON writer)."""
    results, indicators = run_backtest(job)
    from freqtrade import __version__ as freqtrade_version
    from freqtrade.misc import dump_json_to_file

    payload = {
        "freqtrade_version": freqtrade_version,
        "metadata": results["metadata"],
        "strategy": results["strategy"],
        "strategy_comparison": results["strategy_comparison"],
    }
    buffer = io.StringIO()
    dump_json_to_file(buffer, payload)
    stats_json = buffer.getvalue()
    if job.charts is not None:
        _draw_charts(job.charts, stats_json, job.strategy, indicators)
    return lambda handle: handle.write(stats_json)


# --- forked from the zygote ---------------------------------------------------------------------------------

PRELOAD_MODULES: Final[tuple[str, ...]] = (
    "numpy",
    "pandas",
    "pyarrow.feather",
    "scipy.stats",
    "talib.abstract",
    "technical.qtpylib",
    "ccxt",
    "ccxt.async_support",
    "ccxt.pro",
    "rapidjson",
    "freqtrade.commands",
    "freqtrade.commands.optimize_commands",
    "freqtrade.configuration",
    "freqtrade.data.dataprovider",
    "freqtrade.data.history",
    "freqtrade.data.history.datahandlers.featherdatahandler",
    "freqtrade.data.metrics",
    "freqtrade.misc",
    "freqtrade.optimize.backtesting",
    "freqtrade.optimize.optimize_reports",
    "freqtrade.persistence",
    "freqtrade.resolvers",
    "freqtrade.strategy",
    "strategies.base",
    "strategies.validation",
    "tradai_resources.workers.strategy_check_child",
)
"""Modules a backtest or a strategy check imports, imported once by the zygote at start (import only: no
Freqtrade code is run, nothing is compiled). A study-worker's own modules come on demand
(`jobs.KIND_PRELOADS`)."""

IDLE_PRELOADS: Final[tuple[str, ...]] = (
    "matplotlib.pyplot",
    "matplotlib.dates",
    "matplotlib.collections",
    "tradai_core.backtest_charts",
)
"""What the report's charts, drawn in the backtest's child, import: the zygote imports them once it has
forked its first job, while that job runs, rather than at start (which every launch's first backtest or
check waits for) or in each child (≈ 0.4 s of CPU per report)."""

EXIT_CHILD_SETUP_FAILED: Final[int] = 70


def _reseed_numpy() -> None:
    """A forked child inherits numpy's global random state; reseed it from the OS as a fresh process does.
    (Python's own `random` is reseeded after fork by the interpreter.)"""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def become_job(request: ForkRequest, inherited: list[Callable[[], None]]) -> NoReturn:
    """In the forked child: drop the zygote's descriptors and signal set-up, take the job's session,
    files, folder and environment, run the job like `python -m MODULE job.json` (the module its `kind`
    names: `jobs.JOB_MODULES`), and exit with its code."""
    code = EXIT_CHILD_SETUP_FAILED
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the zygote's stop request is not the child's
        for close in inherited:
            with contextlib.suppress(OSError, ValueError):
                close()
        os.setsid()
        stdin = os.open(os.devnull, os.O_RDONLY)
        stdout = os.open(request.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stderr = os.open(request.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        tempfile.tempdir = None  # recomputed from the job's environment
        _reseed_numpy()
        code = run_job_path(request.job_path)  # with the entry the job's kind names
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
