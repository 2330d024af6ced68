"""Market-data benchmarks (issue: foundation).

1. Ingestion of every pair's whole history through replay server → CCXT → ArcticDB, against writing the
   same parquet files straight into ArcticDB (the ratio is the cost of the exchange path).
2. Refreshing one day of every pair with 1 year vs 5 years already stored (should be about 1: a refresh
   costs the new candles, not the history).
3. Reading 5 years of every pair from ArcticDB vs from the parquet files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from bench.common import candles_dir, median_seconds, report
from tradai_core.candles import normalize_candles
from tradai_replay.server import ReplayServer
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource

TF = "1h"


def _pairs(folder: Path) -> dict[str, Path]:
    return {f.name.split("-")[0].replace("_", "/"): f for f in sorted(folder.glob(f"*-{TF}.parquet"))}


def _load(files: dict[str, Path]) -> dict[str, pd.DataFrame]:
    return {pair: normalize_candles(pd.read_parquet(path)) for pair, path in files.items()}


def run() -> None:
    """Run the three market-data benchmarks and print their ratios."""
    folder = candles_dir()
    files = _pairs(folder)
    source = _load(files)
    first = min(c.index[0] for c in source.values()).floor("D")
    end = max(c.index[-1] for c in source.values()).floor("D") + pd.Timedelta(days=1)
    rows_total = sum(len(c) for c in source.values())
    print(f"{len(files)} pairs, {rows_total:,} candles, {first:%Y-%m-%d} → {end:%Y-%m-%d}, from {folder}")
    work = Path(tempfile.mkdtemp(prefix="tradai-bench-"))

    with ReplayServer(folder) as server:
        exchange = ExchangeResource(base_url=server.base_url)
        exchange.client().enableRateLimit = False  # loopback: measure our path, not the client's throttle

        def ingest_via_exchange(store: ArcticDBResource) -> None:
            for pair in files:
                fetched = exchange.fetch_candles(pair, TF, first, end)
                store.write_window("binance", TF, pair, fetched.candles, first, end)

        def ingest_parquet(store: ArcticDBResource) -> None:
            for pair, path in files.items():
                store.write_window("binance", TF, pair, normalize_candles(pd.read_parquet(path)), first, end)

        stores = iter(range(1000))

        def fresh() -> ArcticDBResource:
            return ArcticDBResource(uri=f"lmdb://{work / f'ingest-{next(stores)}'}")

        current: dict[str, ArcticDBResource] = {}
        ours = median_seconds(lambda: ingest_via_exchange(current["s"]), 3, lambda: current.update(s=fresh()))
        base = median_seconds(lambda: ingest_parquet(current["s"]), 3, lambda: current.update(s=fresh()))
        ingest_rows = [
            (
                f"ingest {len(files)} pairs × all history (replay→CCXT→ArcticDB)",
                ours,
                base,
                "vs parquet→ArcticDB",
            )
        ]

        # Refresh the last day with 1 vs 5 years stored.
        last_day = end - pd.Timedelta(days=1)
        refresh_rows = []
        timings = {}
        for years in (1, 5):
            store = ArcticDBResource(uri=f"lmdb://{work / f'history-{years}y'}")
            since = last_day - pd.DateOffset(years=years)
            for pair, candles in source.items():
                history = candles[(candles.index >= since) & (candles.index < last_day)]
                if len(history):
                    store.write_window("binance", TF, pair, history, since, last_day)

            def refresh(store: ArcticDBResource = store) -> None:
                for pair in files:
                    fetched = exchange.fetch_candles(pair, TF, last_day, end)
                    store.write_window("binance", TF, pair, fetched.candles, last_day, end)

            refresh()  # warm: the first refresh appends, the timed ones rewrite the same day
            timings[years] = median_seconds(refresh, 7)
        refresh_rows.append(
            (
                f"refresh 1 day × {len(files)} pairs, 5 y stored",
                timings[5],
                timings[1],
                "vs 1 y stored; ≈1 expected",
            )
        )

    # Reads of 5 years.
    store = ArcticDBResource(uri=f"lmdb://{work / 'history-5y'}")
    read_since = last_day - pd.DateOffset(years=5)
    arctic_read = median_seconds(lambda: [store.read("binance", TF, p, read_since, end) for p in files], 5)
    parquet_read = median_seconds(lambda: _load(files), 5)
    read_rows = [
        (f"read 5 y × {len(files)} pairs from ArcticDB", arctic_read, parquet_read, "vs parquet files")
    ]
    report("Market data", ingest_rows + refresh_rows + read_rows)
