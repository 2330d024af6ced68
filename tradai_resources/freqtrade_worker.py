"""Child process that runs exactly one Freqtrade backtest: `python -m tradai_resources.freqtrade_worker JOB`.

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
  network fails the run instead of silently hitting an exchange.
- **Historic price precision is computed arithmetically** (`vectorized_tick_size`): Freqtrade estimates
  each month's tick size by printing every open/high/low/close as a string, a quarter of a 12-pair
  backtest's time; `tradai_core.tick_size` gives the identical Series and candle columns without the
  strings. Only the pinned version of Freqtrade's function is replaced (source hash checked at run time;
  any other runs as is), and `tests/test_tick_size.py` compares the two on real candles.

The job file (JSON) names the argument list, the snapshot, the strategy, and where to write the result.
The result (Freqtrade's own backtest stats, serialised with Freqtrade's own JSON writer) is written to a
temporary name and renamed, so a crash never leaves a half-written result. On failure a short
`error.json` says what failed, the traceback goes to stderr, and the exit code is non-zero.

**Pre-forked workers (the zygote).** Importing Freqtrade, ccxt, SciPy and pandas takes seconds; the backtest
itself often less. `python -m tradai_resources.freqtrade_worker --zygote FD` imports all of it once
(`PRELOAD_MODULES`: imports only — no Freqtrade code runs, no logging is configured, no thread is started),
then waits on the control socket `FD` for jobs. The preloaded objects are frozen out of the garbage collector
(`gc.freeze`), so children neither scan them nor copy their pages on write — without it a forked backtest of
12 pairs × 2 years spent ~2 s more CPU than a fresh process. For each job it `fork()`s: the child starts a new
session, points stdin/stdout/stderr at the job's files, takes the job's environment and working folder, and
runs `main([job])` exactly as `python -m tradai_resources.freqtrade_worker job.json` would, then exits. So
every backtest still has a process of its own — Freqtrade's process-global state and logging set-up die with
it, a crash or a kill touches nothing else — but it starts in milliseconds. The zygote reports each child's
pid and exit code back on the job's own socket, kills a child when asked (time limit) or when its requester
goes away, and exits — killing any child still running — when its parent closes the control socket or dies.
The parent side is `tradai_resources.freqtrade_zygote`. `--shared SOCKET IDLE_S` runs the same loop for
every process of the user instead, on a Unix socket (`serve_shared`).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import gc
import importlib
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

from tradai_resources.worker_env import child_environment
from tradai_resources.worker_folder import (
    PrivateFolder,
    adopt_private_folder,
    open_own_file,
    open_private_folder,
    peer_credentials,
)

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
    vectorized_tick_size: bool = True
    indicators_path: str | None = None
    """Where to write, as Feather, the indicator columns the strategy's `populate_indicators` added during
    this very backtest (for the report's charts: the Dagster process never runs the strategy again)."""


class ForkRequest(BaseModel):
    """What the parent asks the zygote for: run one job file in a fresh child, with these files and env.

    `env` keeps only the allowlisted variables (`worker_env.child_environment`), whatever it is given: a
    request travels to another process, and a secret (API key, webhook, credentials) never does.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_path: str
    cwd: str
    stdout_path: str
    stderr_path: str
    env: dict[str, str]

    @field_validator("env")
    @classmethod
    def _allowlisted(cls, env: dict[str, str]) -> dict[str, str]:
        return child_environment(env)


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
    guard = network_guard() if job.block_network else no_guard()
    with (
        guard as network,
        offline_markets(job.exchange, snapshot) as markets,
        vectorized_tick_size(job.vectorized_tick_size),
    ):
        config = setup_optimize_configuration(args, RunMode.BACKTEST)
        backtesting = Backtesting(config)
        analyzed = _capture_indicators(backtesting) if job.indicators_path else None
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
    if job.indicators_path and analyzed is not None:
        _write_indicators(Path(job.indicators_path), analyzed)
    return results


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


def _write_indicators(path: Path, analyzed: Mapping[str, Any]) -> None:
    """The float columns the strategy added (signals excluded), all pairs in one Feather file with `pair`
    and `date`. The charts are a view of the report: a failure here is logged, never fails the backtest."""
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
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        partial = path.with_name(path.name + ".partial")
        table.to_feather(partial)
        os.replace(partial, path)
    except Exception:
        sys.stderr.write("indicators not written for the charts:\n")
        traceback.print_exc(file=sys.stderr)


@contextmanager
def no_guard() -> Iterator[OfflineLog]:
    """Stands in for `network_guard` when a job allows the network (tests against the replay server)."""
    yield OfflineLog()


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        write(handle)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the job file named by the single argument; return the process exit code.

    `--zygote FD [FOLDER]` instead serves jobs from the control socket `FD` as a pre-forked worker (`serve`),
    then removes FOLDER (the zygote's private folder, holding its log).
    `--shared SOCKET IDLE_S [LOG [DIR_FD]]` serves every process of this user on the Unix socket SOCKET
    until idle (`serve_shared`); LOG is the name of its start-up log in SOCKET's folder, DIR_FD that folder
    held open by whoever started it (else the folder is opened and checked here).
    """
    argv = sys.argv[1:] if argv is None else argv
    if 3 <= len(argv) <= 5 and argv[0] == "--shared":
        socket_path = Path(argv[1])
        try:
            if len(argv) == 5:
                folder = adopt_private_folder(socket_path.parent, int(argv[4]))
            else:
                folder = open_private_folder(socket_path.parent, create=True)
        except (OSError, RuntimeError) as exc:
            sys.stderr.write(f"shared zygote: {exc}\n")
            return EXIT_BAD_JOB
        log = argv[3] if len(argv) >= 4 else None
        return serve_shared(folder, socket_path.name, float(argv[2]), log)
    if len(argv) in (2, 3) and argv[0] == "--zygote":
        code = serve(socket.socket(fileno=int(argv[1])))
        if len(argv) == 3:  # our private folder (its log): gone with us, even if the parent died first
            shutil.rmtree(argv[2], ignore_errors=True)
        return code
    if len(argv) != 1:
        sys.stderr.write(
            "usage: python -m tradai_resources.freqtrade_worker JOB.json | --zygote FD [FOLDER] "
            "| --shared SOCKET IDLE_S [LOG [DIR_FD]]\n"
        )
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


# --- the zygote: a pre-forked worker ------------------------------------------------------------------------

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
)
"""Modules a backtest imports, imported once by the zygote (import only: no Freqtrade code is run)."""

EXIT_CHILD_SETUP_FAILED: Final[int] = 70
_KILL_COMMAND: Final[bytes] = b"kill"


def preload(modules: tuple[str, ...] = PRELOAD_MODULES) -> tuple[list[str], dict[str, str]]:
    """Import `modules`; return (imported, {module: error}). A failure is reported, not fatal: the child
    imports the module again when the backtest needs it and fails there, with the backtest's own error."""
    imported: list[str] = []
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
            imported.append(name)
        except Exception as exc:  # a missing optional module must not stop the zygote
            failed[name] = f"{type(exc).__name__}: {exc}"
    return imported, failed


def _kill_group(pid: int) -> None:
    """SIGKILL the child's process group (it leads its own session), or the child alone if it has not
    called setsid yet."""
    with contextlib.suppress(ProcessLookupError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)


def _read_line(conn: socket.socket, limit: int = 1 << 20) -> bytes:
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > limit:
            raise ValueError("request too long")
    return buffer


def _send_json(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the requester may be gone; the child is reaped regardless
        conn.sendall(json.dumps(message).encode() + b"\n")


def _reseed_numpy() -> None:
    """A forked child inherits numpy's global random state; reseed it from the OS as a fresh process does.
    (Python's own `random` is reseeded after fork by the interpreter.)"""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _become_job(request: ForkRequest, inherited: list[Callable[[], None]]) -> NoReturn:
    """In the forked child: drop the zygote's descriptors and signal set-up, take the job's session,
    files, folder and environment, run the job like `python -m ... job.json`, and exit with its code."""
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
        sys.argv = [str(Path(__file__)), request.job_path]
        _reseed_numpy()
        code = main([request.job_path])
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


def _preload_and_freeze() -> tuple[list[str], dict[str, str]]:
    """Import `PRELOAD_MODULES` with the collector off, then freeze them out of it (see the module doc)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # whoever started us owns our lifetime, not the terminal
    gc.disable()  # no collections while importing: everything imported stays alive anyway
    imported, failed = preload()
    gc.collect()
    gc.freeze()  # children never scan (nor copy-on-write) the preloaded heap: ~2 s CPU less per backtest
    gc.enable()
    return imported, failed


def loaded_sources() -> dict[str, tuple[int, int]]:
    """(mtime ns, size) of the file of every module imported so far: what a forked child runs as is."""
    sources: dict[str, tuple[int, int]] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path not in sources:
            with contextlib.suppress(OSError):
                status = os.stat(path)
                sources[path] = (status.st_mtime_ns, status.st_size)
    return sources


def changed_source(recorded: Mapping[str, tuple[int, int]]) -> str | None:
    """The first recorded module file that changed or vanished since `loaded_sources()`, else None."""
    for path, stamp in recorded.items():
        try:
            status = os.stat(path)
        except OSError:
            return path
        if (status.st_mtime_ns, status.st_size) != stamp:
            return path
    return None


class _Forker:
    """The zygote's loop: fork one child per job socket, report its pid and exit on that socket, kill it
    on request or when the requester goes away. Job sources (the control socket, a listening socket) are
    registered by the caller and handed back by `poll`."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the selector through wake_w
        self.stop_requested = False

        def request_stop(signum: int, frame: object) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.children: dict[int, socket.socket] = {}
        self.closers: list[Callable[[], None]] = []
        """What a forked child must close besides the forker's own descriptors (sources, the lock)."""

    def add_source(self, source: socket.socket) -> None:
        """Watch `source`: `poll` returns it when it is readable."""
        self._selector.register(source, selectors.EVENT_READ, None)

    def remove_source(self, source: socket.socket) -> None:
        """Stop watching `source`."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(source)

    def _inherited(self) -> list[Callable[[], None]]:
        return [
            self._selector.close,
            *self.closers,
            *(conn.close for conn in self.children.values()),
            lambda: os.close(self._wake_r),
            lambda: os.close(self._wake_w),
        ]

    def fork_job(self, conn: socket.socket) -> None:
        """Read one `ForkRequest` from `conn` and run it in a forked child (answering `{"pid": N}`)."""
        conn.settimeout(10.0)
        try:
            request = ForkRequest.model_validate_json(_read_line(conn))
        except Exception as exc:  # the message names the problem, never the values (the env holds secrets)
            _send_json(conn, {"error": f"bad request ({type(exc).__name__})"})
            conn.close()
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            _become_job(request, [*self._inherited(), conn.close])
        self.children[pid] = conn
        _send_json(conn, {"pid": pid})
        self._selector.register(conn, selectors.EVENT_READ, pid)

    def kill_all(self) -> None:
        """Kill every running child (each is reaped and reported as usual)."""
        for pid in list(self.children):
            _kill_group(pid)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                _send_json(
                    conn,
                    {
                        "returncode": os.waitstatus_to_exitcode(status),
                        "cpu_seconds": usage.ru_utime + usage.ru_stime,
                        "max_rss_mb": usage.ru_maxrss / 1024,
                    },
                )
                self.remove_source(conn)
                conn.close()

    def poll(self, timeout: float | None) -> list[socket.socket]:
        """Wait up to `timeout` s; handle job sockets (kill requests, requesters gone) and exited
        children; return the readable sources."""
        ready: list[socket.socket] = []
        for key, _ in self._selector.select(timeout=timeout):
            if key.fileobj == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
            elif key.data is None:
                assert isinstance(key.fileobj, socket.socket)
                ready.append(key.fileobj)
            else:
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                if not data or _KILL_COMMAND in data:
                    _kill_group(key.data)
                    if not data:
                        self.remove_source(conn)  # still reaped; nobody left to tell
        self._reap()
        return ready


def serve(control: socket.socket) -> int:
    """Run as a process's private zygote on `control` (a Unix socket to the parent) until the parent goes.

    Protocol — control socket, parent → zygote: one byte with a job socket attached (SCM_RIGHTS); zygote →
    parent, once: a `{"ready": ...}` line after the preload. Job socket: the parent writes one `ForkRequest`
    line; the zygote answers `{"pid": N}` once the child is forked and `{"returncode": rc, "cpu_seconds": s,
    "max_rss_mb": m}` when it has exited (negative rc: killed by that signal). `kill` from the parent, or the
    parent closing its end, kills the child's process group. EOF on the control socket kills every child and
    exits.
    """
    imported, failed = _preload_and_freeze()
    forker = _Forker()
    forker.add_source(control)
    forker.closers.append(control.close)
    _send_json(
        control,
        {
            "ready": True,
            "pid": os.getpid(),
            "preloaded": len(imported),
            "failed": failed,
            "threads": threading.active_count(),
        },
    )
    if threading.active_count() != 1:  # fork() copies only this thread: say so loudly
        sys.stderr.write(f"zygote: {threading.active_count()} threads after preload; fork may be unsafe\n")
    serving = True
    while serving or forker.children:
        for _ in forker.poll(None if serving else 0.2):
            try:
                message, fds, _, _ = socket.recv_fds(control, 1, 4)
            except OSError:
                message, fds = b"", []
            if not message:  # the parent closed the control socket or died
                serving = False
                forker.remove_source(control)
                forker.kill_all()
            for fd in fds:
                forker.fork_job(socket.socket(fileno=fd))
    return EXIT_OK


# --- the shared zygote: one per user and interpreter, for every process on the machine ----------------------

STALE_ANSWER: Final[str] = "stale"
"""`error` a shared zygote answers when a module it preloaded changed on disk (it then stops serving)."""


def _win_election(folder: PrivateFolder, lock_name: str, socket_name: str) -> int | None:
    """Become the one zygote serving `socket_name` in `folder`: return the descriptor of the held lock, or
    None once another zygote answers there. A zygote that is still starting holds the lock without answering
    yet: wait until it answers (then leave it the job) or dies (then take over)."""
    fd = open_own_file(folder, lock_name, os.O_RDWR | os.O_CREAT)
    socket_path = folder.address(socket_name)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(socket_path)
                os.close(fd)
                return None
            except OSError:
                time.sleep(0.05)
            finally:
                probe.close()
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd


def serve_shared(
    folder: PrivateFolder, socket_name: str, idle_timeout: float, log_name: str | None = None
) -> int:
    """Run as the shared zygote answering on the socket `socket_name` in `folder` until idle for
    `idle_timeout` s. Every file operation goes through the folder's descriptor (`worker_folder`).

    Any process of the same user connects to the socket and speaks the job-socket protocol of `serve`
    (one `ForkRequest` line; `{"pid"}`, then `{"returncode", ...}`; `kill`). Of several zygotes started for
    the same path, one serves (`<path>.lock`, holding its pid) and the others exit (0) once it answers.
    The socket appears only once Freqtrade is imported, so a successful connect means ready. Before each job
    the zygote checks that no module it imported changed on disk; if one did, it answers
    `{"error": "stale", ...}` and stops serving, so the next caller starts a zygote on the new code. It
    also stops when idle, on SIGTERM, or when another zygote took over the path; it stops by removing the
    socket (no new jobs), serving what was already queued, and exiting once its running backtests end.
    `log_name`, this process's start-up log, becomes `<socket>.log` if it wins.
    """
    at = folder.fd
    try:
        lock = _win_election(folder, f"{socket_name}.lock", socket_name)
    except OSError as exc:
        sys.stderr.write(f"shared zygote: cannot take the lock in {folder.path}: {exc}\n")
        return EXIT_BAD_JOB
    if lock is None:
        if log_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(log_name, dir_fd=at)
        return EXIT_OK
    if log_name is not None:
        with contextlib.suppress(OSError):
            os.replace(log_name, f"{socket_name}.log", src_dir_fd=at, dst_dir_fd=at)
    imported, failed = _preload_and_freeze()
    sources = loaded_sources()
    if failed:
        sys.stderr.write(f"shared zygote: could not preload {failed}\n")
    forker = _Forker()

    def release_lock() -> None:  # also run in each forked child: it must not keep the election lock
        nonlocal lock
        if lock >= 0:
            os.close(lock)
            lock = -1

    forker.closers.append(release_lock)
    forker.closers.append(lambda: os.close(at))  # a backtest has no business in the worker's folder
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{socket_name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging, dir_fd=at)
    listener.bind(folder.address(staging))
    os.chmod(staging, 0o600, dir_fd=at)
    listener.listen(64)
    listener.setblocking(False)
    os.replace(staging, socket_name, src_dir_fd=at, dst_dir_fd=at)  # ready: connects succeed from now on
    served_inode = os.stat(socket_name, dir_fd=at, follow_symlinks=False).st_ino
    forker.add_source(listener)
    forker.closers.append(listener.close)
    sys.stderr.write(
        f"shared zygote {os.getpid()} serving {folder.path / socket_name} "
        f"({len(imported)} modules preloaded, "
        f"{threading.active_count()} thread(s))\n"
    )
    stale: str | None = None

    def ours() -> bool:
        try:
            return os.stat(socket_name, dir_fd=at, follow_symlinks=False).st_ino == served_inode
        except OSError:
            return False

    def step_aside() -> None:
        """Take no new connections and let a new zygote start (running backtests carry on)."""
        if ours():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_name, dir_fd=at)
        release_lock()

    def accept_all() -> None:
        """Fork every queued job, or answer `stale` once a preloaded module changed on disk."""
        nonlocal stale
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(True)
            peer = peer_credentials(conn)
            if peer is not None and peer[1] != os.getuid():
                conn.close()
                continue
            if stale is None and (changed := changed_source(sources)) is not None:
                stale = changed
                sys.stderr.write(f"shared zygote: {changed} changed since start-up; stopping\n")
                step_aside()  # before answering: the caller's next connect must not reach us again
            if stale is not None:
                _send_json(conn, {"error": STALE_ANSWER, "changed": stale})
                conn.close()
            else:
                forker.fork_job(conn)

    listening = True
    last_busy = time.monotonic()
    while listening or forker.children:
        if forker.poll(1.0 if listening else 0.2):
            accept_all()
        if forker.children:
            last_busy = time.monotonic()
        idle = time.monotonic() - last_busy > idle_timeout
        if listening and (stale is not None or forker.stop_requested or idle or not ours()):
            step_aside()
            accept_all()  # whoever connected before the unlink is still answered
            forker.remove_source(listener)
            listener.close()
            listening = False
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
