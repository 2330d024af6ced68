"""Exchange replay: Binance's public REST API served on loopback from recorded candles, with faults.

`ReplayServer` lets the platform's real exchange client run offline (tests, benchmarks, the demo);
`Fault` describes a failure to inject (rate limits, timeouts, 5xx, malformed or truncated answers, bad
candle content, stale pages); `supported_faults()` lists one of every kind and variant.
"""

from tradai_replay.faults import FAULT_KINDS, Fault, supported_faults
from tradai_replay.markets import default_exchange_info_path, exchange_info_for
from tradai_replay.server import ReplayServer, ServedRequest

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "ReplayServer",
    "ServedRequest",
    "default_exchange_info_path",
    "exchange_info_for",
    "supported_faults",
]
