"""Run the exchange replay server in the foreground: `python -m tradai_replay --candles-dir DIR`.

For a person exploring the platform by hand: point ccxt (or curl) at the printed URL, inject faults with
`curl -X POST <url>/_replay/faults -d '{"kind": "http_429", "count": 2}'`, stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from tradai_core.errors import TradAIError
from tradai_replay.server import ReplayServer, is_loopback

logger = logging.getLogger("tradai_replay")

USAGE_HINT = """\
Point ccxt at it:
    import ccxt
    from tradai_core.urls import rebase_urls
    ex = ccxt.binance({{"options": {{"fetchMarkets": {{"types": ["spot"]}}}}}})
    ex.urls["api"] = rebase_urls(ex.urls["api"], "{url}")
    ex.fetch_ohlcv("BTC/USDT", "1h", limit=5)
or set TRADAI_EXCHANGE_BASE_URL={url}
Inject a fault:  curl -X POST {url}/_replay/faults -d '{{"kind": "http_429", "count": 2}}'
Clear faults:    curl -X DELETE {url}/_replay/faults
Fault kinds:     curl {url}/_replay/fault-kinds
Press Ctrl-C to stop."""


def parse_now(text: str) -> int:
    """An ISO 8601 instant (`2022-06-01T12:30:00Z`; naive means UTC) as milliseconds since the epoch."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of `python -m tradai_replay`."""
    parser = argparse.ArgumentParser(
        prog="python -m tradai_replay",
        description="Serve Binance's public REST API (markets, klines) from recorded candles on loopback.",
    )
    parser.add_argument(
        "--candles-dir", type=Path, required=True, help="folder of files like BTC_USDT-1h.parquet"
    )
    parser.add_argument(
        "--exchange-info", type=Path, default=None, help="exchangeInfo snapshot (default: the shipped one)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument(
        "--now",
        type=parse_now,
        default=None,
        help="freeze the clock here (ISO 8601; default: last candle close)",
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow listening on a non-loopback address (not advised)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(
            f"refusing to listen on {args.host}, which is not loopback; add --allow-remote to insist"
        )
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = ReplayServer(
            args.candles_dir,
            exchange_info_path=args.exchange_info,
            host=args.host,
            port=args.port,
            now_ms=args.now,
            allow_remote=args.allow_remote,
        ).start()
    except TradAIError as error:
        logger.error("%s", error)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    now = datetime.fromtimestamp(server.now_ms / 1000, tz=UTC).isoformat()
    logger.info("serving %s; clock frozen at %s", ", ".join(server.pairs), now)
    hint = USAGE_HINT.format(url=server.base_url)
    sys.stdout.write(f"Replay server listening on {server.base_url}\n{hint}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
