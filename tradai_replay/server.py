"""A loopback HTTP server that answers Binance's public REST endpoints from recorded candles.

No machine that builds or tests TradAI reaches an exchange, so the platform's exchange client (ccxt) is
pointed at this server instead (`tradai_core.urls.rebase_urls`) and runs its real code path: HTTP, JSON,
Binance's error codes, rate-limit headers, and the faults a real exchange has (see `faults.py`).

Served, as Binance answers them and as ccxt 4.5 parses them:
- `GET /api/v3/ping`, `GET /api/v3/time`, `GET /api/v3/exchangeInfo` (`symbol`, `symbols`,
  `permissions`, `symbolStatus` filters), `GET /api/v3/klines` and `GET /api/v3/uiKlines`;
- `GET /fapi/v1/exchangeInfo` and `GET /dapi/v1/exchangeInfo` with no markets, so a ccxt client left
  with its default market types (spot, linear, inverse) still loads the spot markets;
- `GET|POST|DELETE /_replay/faults`, `GET /_replay/fault-kinds` (one fault of every kind and variant)
  and `GET /_replay/status` to drive the server by hand (curl).

The clock is frozen at `now_ms` (default: the close of the last recorded candle, so every served candle
is closed); candles opening after it are not served and the candle containing it is served still open.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError as PydanticValidationError

from tradai_core.errors import ConfigurationError, TradAIError
from tradai_replay.candles import CandleStore
from tradai_replay.faults import Fault, FaultQueue, corrupt_klines, parse_faults, supported_faults
from tradai_replay.markets import exchange_info_for, load_exchange_info, pair_to_symbol

logger = logging.getLogger(__name__)

DEFAULT_KLINES_LIMIT = 500
MAX_KLINES_LIMIT = 1000
DROPPED = 0  # status recorded for a request whose connection was dropped without an answer
CONTROL_PREFIX = "/_replay/"
JSON_TYPE = "application/json;charset=UTF-8"
# Request weights from Binance's spot API documentation.
WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
    "/fapi/v1/exchangeInfo": 1,
    "/dapi/v1/exchangeInfo": 1,
}
GATEWAY_PAGE = (
    "<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}</h1>"
    "</center><hr><center>nginx</center></body></html>"
)


class ServedRequest(NamedTuple):
    """One request the server answered (or dropped: status 0).

    Recorded before the answer is sent, so a client holding an answer always finds its request here.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int


class ApiError(Exception):
    """A Binance error answer: HTTP status plus `{"code": ..., "msg": ...}`."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _int_param(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(
            400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        ) from None


def _list_param(query: dict[str, str], name: str) -> list[str] | None:
    """A Binance list parameter: a JSON array (`["BTCUSDT","ETHUSDT"]`) or a single bare value."""
    value = query.get(name)
    if value is None or value == "":
        return None
    if value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            items = None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
        return items
    return [value]


class _WeightCounter:
    """Request weight used in the current wall-clock minute, as Binance reports it in headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info_lock = threading.Lock()
        self._minute = -1
        self._used = 0

    def add(self, weight: int) -> int:
        minute = int(time.time() // 60)
        with self._lock:
            if minute != self._minute:
                self._minute, self._used = minute, 0
            self._used += weight
            return self._used


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], replay: ReplayServer, ipv6: bool) -> None:
        if ipv6:
            self.address_family = socket.AF_INET6
        self.replay = replay
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed connection instead of printing a traceback to stderr; a client that hung up
        early (after its own timeout, say) is normal here."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            logger.debug("connection from %s ended: %r", client_address, error)
        else:
            logger.exception("error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: ccxt reuses one connection for a whole download
    server_version = "TradAIReplay/1.0"
    timeout = 60  # seconds an idle keep-alive connection is kept
    disable_nagle_algorithm = True  # headers and body go out in two writes; do not wait for an ACK
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.replay._track_connection(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.replay._track_connection(self.connection, opened=False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self.server.replay._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.replay._handle(self, "POST")

    def do_DELETE(self) -> None:
        self.server.replay._handle(self, "DELETE")

    def do_PUT(self) -> None:
        self.server.replay._handle(self, "PUT")


class ReplayServer:
    """Binance's public REST API replayed from recorded candles, on loopback, with fault injection.

    Use as a context manager (`with ReplayServer(dir) as server:`) or with `start()` / `stop()`; point
    ccxt at `server.base_url` with `tradai_core.urls.rebase_urls`.
    """

    def __init__(
        self,
        candles_dir: Path,
        exchange_info_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        now_ms: int | None = None,
        *,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ConfigurationError(
                f"the replay server refuses to listen on {host}: it is meant for loopback only",
                "use host 127.0.0.1 (or pass allow_remote=True / --allow-remote on purpose)",
            )
        self.host = host
        self.port = port
        self._store = CandleStore(Path(candles_dir))
        self._snapshot = load_exchange_info(exchange_info_path)
        self._now_ms = int(now_ms) if now_ms is not None else self._store.last_close_ms()
        self._exchange_info: dict[str, Any] | None = None
        self._faults = FaultQueue()
        self._weights = _WeightCounter()
        self._lock = threading.Lock()
        self._info_lock = threading.Lock()
        self._requests: list[ServedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------------
    # lifecycle

    def start(self) -> ReplayServer:
        """Bind the port and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise TradAIError("the replay server is already running", "call stop() before starting it again")
        self._stopping.clear()
        ipv6 = ":" in self.host
        try:
            httpd = _HTTPServer((self.host, self.port), self, ipv6=ipv6)
        except OSError as exc:
            raise ConfigurationError(
                f"the replay server cannot listen on {self.host}:{self.port}: {exc}",
                "pick a free port, or port 0 to let the system choose one",
            ) from exc
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-server", daemon=True
        )
        self._thread.start()
        logger.info("replay server for %d pairs listening on %s", len(self.pairs), self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, release faults that hold requests, close open connections and the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        logger.info("replay server on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------
    # public state

    @property
    def base_url(self) -> str:
        """Where the server answers, e.g. `http://127.0.0.1:8765`; known once started."""
        if self._httpd is None:
            raise TradAIError("the replay server is not running", "call start() or enter it with `with`")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pairs(self) -> list[str]:
        """Pairs with recorded candles, sorted, e.g. `["ADA/USDT", "BTC/USDT", ...]`."""
        return self._store.pairs

    @property
    def now_ms(self) -> int:
        """The server's frozen clock in ms: `/api/v3/time`, and no candle opening after it is served."""
        return self._now_ms

    @now_ms.setter
    def now_ms(self, value: int) -> None:
        """Move the clock, e.g. forward to let an incremental sync find new candles."""
        self._now_ms = int(value)

    @property
    def requests(self) -> list[ServedRequest]:
        """Requests answered so far (a copy), excluding the `/_replay/` control endpoints."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._requests.clear()

    def inject(self, *faults: Fault) -> None:
        """Queue faults behind those already pending; each applies to its next `count` matching requests."""
        self._faults.inject(faults)
        for fault in faults:
            logger.info("fault queued: %s", fault.model_dump(exclude_defaults=True))

    def clear_faults(self) -> int:
        """Drop every pending fault; returns how many there were."""
        return self._faults.clear()

    @property
    def pending_faults(self) -> list[tuple[Fault, int]]:
        """Pending faults with how many more requests each applies to."""
        return self._faults.pending()

    def exchange_info(self) -> dict[str, Any]:
        """The exchangeInfo answer: the snapshot's markets for the served pairs plus made-up ones for the
        pairs it lacks, sized from their price at `now_ms`. Built once, on first use."""
        with self._info_lock:
            if self._exchange_info is None:
                self._exchange_info = self._build_exchange_info()
            return self._exchange_info

    def _build_exchange_info(self) -> dict[str, Any]:
        in_snapshot = {entry.get("symbol") for entry in self._snapshot.get("symbols", [])}
        prices: dict[str, float] = {}
        for pair in self.pairs:
            if pair_to_symbol(pair) not in in_snapshot:
                price = self._store.last_close_price(pair, self._now_ms)
                if price is not None:
                    prices[pair] = price
        return exchange_info_for(self.pairs, self._snapshot, prices)

    # ----------------------------------------------------------------------------------------------
    # request handling (called from the handler threads)

    def _track_connection(self, connection: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _record(self, method: str, path: str, query: dict[str, str], status: int) -> None:
        """Remember a request; called before its answer is written (see `ServedRequest`)."""
        with self._lock:
            self._requests.append(ServedRequest(method, path, query, status))

    def _handle(self, handler: _Handler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        if path.startswith(CONTROL_PREFIX):
            self._control(handler, method, path, body)
            return

        fault = self._faults.take(path)
        if fault is not None:
            logger.info("injecting %s fault into %s %s", fault.kind, method, handler.path)
            if fault.kind == "timeout":
                self._record(method, path, query, DROPPED)  # recorded on arrival: the attempt counts now
                self._stopping.wait(fault.delay_s)
                self._drop(handler)
                return
            if fault.kind == "latency":
                self._stopping.wait(fault.delay_s)
            if fault.kind in ("http_429", "http_418", "http_5xx"):
                self._record(
                    method, path, query, {"http_429": 429, "http_418": 418}.get(fault.kind, fault.status)
                )
                self._send_fault_answer(handler, fault, path)
                return

        weight = WEIGHTS.get(path, 1)
        try:
            stale = fault is not None and fault.kind == "stale_page"
            status, payload = self._route(method, path, query, stale=stale)
        except ApiError as error:
            status, payload = error.status, {"code": error.code, "msg": error.msg}
        except TradAIError as error:
            logger.error("cannot answer %s %s: %s", method, handler.path, error)
            status, payload = 500, {"code": -1001, "msg": f"Internal error; {error}"}
        except Exception:
            logger.exception("bug while answering %s %s", method, handler.path)
            status, payload = 500, {"code": -1001, "msg": "Internal error; see the replay server's log."}
        if payload is None:
            self._record(method, path, query, status)
            self._send_html(handler, status, weight, path)
            return
        if fault is not None and fault.kind == "malformed" and status == 200:
            rows = json.loads(payload) if isinstance(payload, bytes) else payload
            payload = corrupt_klines(rows, fault.variant or "high_below_low")
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        self._record(method, path, query, status)
        if fault is not None and fault.kind == "truncated":
            self._send_truncated(handler, status, weight, data, fault.variant or "body")
        else:
            self._send(handler, status, data, weight)

    def _route(
        self, method: str, path: str, query: dict[str, str], *, stale: bool = False
    ) -> tuple[int, Any]:
        """(status, answer) for an API request: a JSON-able payload, JSON bytes already encoded (klines),
        or None for an HTML error page. `stale`: answer klines with the page before the one asked for."""
        handlers = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": self._now_ms},
            "/api/v3/exchangeInfo": lambda: self._exchange_info_answer(query),
            "/api/v3/klines": lambda: self._klines(query, stale),
            "/api/v3/uiKlines": lambda: self._klines(query, stale),
            "/fapi/v1/exchangeInfo": self._empty_futures_info,
            "/dapi/v1/exchangeInfo": self._empty_futures_info,
        }
        answer = handlers.get(path)
        if answer is None:
            logger.warning("%s %s is not served by the replay server (404)", method, path)
            return 404, None
        if method != "GET":
            return 405, None
        return 200, answer()

    def _exchange_info_answer(self, query: dict[str, str]) -> dict[str, Any]:
        info = dict(self.exchange_info())
        info["serverTime"] = self._now_ms
        symbols: list[dict[str, Any]] = info["symbols"]
        wanted = _list_param(query, "symbols")
        if query.get("symbol"):
            wanted = [query["symbol"]]
        if wanted is not None:
            by_id = {entry["symbol"]: entry for entry in symbols}
            unknown = [symbol for symbol in wanted if symbol not in by_id]
            if unknown:
                raise ApiError(400, -1121, "Invalid symbol.")
            symbols = [by_id[symbol] for symbol in wanted]
        permissions = _list_param(query, "permissions")
        if permissions is not None:
            symbols = [entry for entry in symbols if set(permissions) & _permissions(entry)]
        status = query.get("symbolStatus")
        if status:
            symbols = [entry for entry in symbols if entry.get("status") == status]
        info["symbols"] = symbols
        return info

    def _empty_futures_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms,
            "rateLimits": self._snapshot.get("rateLimits", []),
            "exchangeFilters": [],
            "assets": [],
            "symbols": [],
        }

    def _klines(self, query: dict[str, str], stale: bool = False) -> bytes:
        symbol, interval = query.get("symbol"), query.get("interval")
        for name, value in (("symbol", symbol), ("interval", interval)):
            if not value:
                raise ApiError(
                    400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
                )
        assert symbol is not None and interval is not None
        if symbol not in self._store.symbols:
            raise ApiError(400, -1121, "Invalid symbol.")
        series = self._store.series(symbol, interval)
        if series is None:
            raise ApiError(400, -1120, "Invalid interval.")
        limit = _int_param(query, "limit")
        limit = DEFAULT_KLINES_LIMIT if limit is None else limit
        if limit < 1:
            raise ApiError(
                400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-1000'."
            )
        start, end = _int_param(query, "startTime"), _int_param(query, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        end = self._now_ms if end is None else min(end, self._now_ms)
        if stale and start is not None:  # a stale cache: the page that ended where this one begins
            start, end = None, start - 1
        lo, hi = series.window(start, end, min(limit, MAX_KLINES_LIMIT))
        return series.kline_json(lo, hi)

    # ----------------------------------------------------------------------------------------------
    # writing answers

    def _headers(self, handler: _Handler, status: int, content_type: str, length: int, weight: int) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(length))
        used = self._weights.add(weight)
        handler.send_header("x-mbx-used-weight", str(used))
        handler.send_header("x-mbx-used-weight-1m", str(used))

    def _send(self, handler: _Handler, status: int, data: bytes, weight: int, **extra: str) -> None:
        self._headers(handler, status, JSON_TYPE, len(data), weight)
        for name, value in extra.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(data)

    def _send_html(self, handler: _Handler, status: int, weight: int, path: str) -> None:
        reason = handler.responses.get(status, ("Error",))[0]
        page = GATEWAY_PAGE.format(status=status, reason=reason)
        if status in (404, 405):
            page = page.replace(
                "<hr>",
                f"<p>the TradAI replay server does not serve {path} (see tradai_replay.server)</p><hr>",
            )
        data = page.encode()
        self._headers(handler, status, "text/html", len(data), weight)
        handler.end_headers()
        handler.wfile.write(data)

    def _send_fault_answer(self, handler: _Handler, fault: Fault, path: str) -> None:
        weight = WEIGHTS.get(path, 1)
        if fault.kind == "http_5xx":
            if fault.variant == "html":
                self._send_html(handler, fault.status, weight, path)
            else:
                body = {
                    "code": -1001,
                    "msg": "Internal error; unable to process your request. Please try again.",
                }
                self._send(handler, fault.status, json.dumps(body, separators=(",", ":")).encode(), weight)
            return
        retry_after = format(fault.retry_after_s, "g")
        if fault.kind == "http_418":
            banned_until = int(time.time() * 1000 + fault.retry_after_s * 1000)
            status, msg = (
                418,
                (
                    f"Way too many requests; IP(127.0.0.1) banned until {banned_until}. "
                    "Please use the websocket for live updates to avoid bans."
                ),
            )
        else:
            status, msg = (
                429,
                (
                    "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
                    "Please use the websocket for live updates to avoid polling the API."
                ),
            )
        body = json.dumps({"code": -1003, "msg": msg}, separators=(",", ":")).encode()
        self._send(handler, status, body, weight, Retry_After=retry_after)

    def _send_truncated(self, handler: _Handler, status: int, weight: int, data: bytes, variant: str) -> None:
        half = data[: len(data) // 2]
        if variant == "body":
            self._send(handler, status, half, weight)
            return
        self._headers(handler, status, JSON_TYPE, len(data), weight)
        handler.end_headers()
        handler.wfile.write(half)
        handler.wfile.flush()
        self._drop(handler)

    def _drop(self, handler: _Handler) -> None:
        """Close the connection without (finishing) an answer."""
        handler.close_connection = True
        try:
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _control(self, handler: _Handler, method: str, path: str, body: bytes) -> None:
        """`/_replay/faults` (GET lists, POST queues a fault or a list, DELETE clears);
        `/_replay/fault-kinds` (every kind and variant it can inject); `/_replay/status`."""
        if path.rstrip("/") == "/_replay/faults":
            if method == "GET":
                answer: Any = [
                    {**fault.model_dump(), "remaining": remaining} for fault, remaining in self.pending_faults
                ]
                self._send(handler, 200, json.dumps(answer).encode(), 0)
                return
            if method == "POST":
                try:
                    faults = parse_faults(json.loads(body or b"null"))
                except (ValueError, PydanticValidationError) as exc:
                    error = {"error": "invalid faults", "detail": str(exc)}
                    self._send(handler, 400, json.dumps(error).encode(), 0)
                    return
                self.inject(*faults)
                self._send(handler, 200, json.dumps({"queued": len(faults)}).encode(), 0)
                return
            if method == "DELETE":
                cleared = self.clear_faults()
                self._send(handler, 200, json.dumps({"cleared": cleared}).encode(), 0)
                return
        if path.rstrip("/") == "/_replay/fault-kinds" and method == "GET":
            kinds = [fault.model_dump(exclude_defaults=True) for fault in supported_faults()]
            self._send(handler, 200, json.dumps(kinds).encode(), 0)
            return
        if path.rstrip("/") == "/_replay/status" and method == "GET":
            status = {
                "pairs": self.pairs,
                "timeframes": {pair: self._store.timeframes(pair_to_symbol(pair)) for pair in self.pairs},
                "now_ms": self._now_ms,
                "pending_faults": len(self.pending_faults),
                "requests_served": len(self.requests),
            }
            self._send(handler, 200, json.dumps(status).encode(), 0)
            return
        self._send(handler, 404, json.dumps({"error": f"no control endpoint {method} {path}"}).encode(), 0)


def _permissions(entry: dict[str, Any]) -> set[str]:
    found = set(entry.get("permissions") or [])
    for permission_set in entry.get("permissionSets") or []:
        found.update(permission_set)
    return found
