"""`ArcticDBResource`: the candle store.

One library per exchange and timeframe (`ohlcv.binance.1h`), one symbol per pair (`BTC_USDT`). A write
covers a time window and replaces exactly that window: re-writing it never duplicates candles and never
touches candles outside it. ArcticDB versions every write atomically, so a failed write leaves the previous
version readable, and each write returns the version it made so downstream assets can record lineage.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

import arcticdb
import pandas as pd
from arcticdb.version_store.library import Library
from dagster import ConfigurableResource
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.candles import OHLCV_COLUMNS, empty_candles, normalize_candles, utc_timestamp
from tradai_core.errors import DataLossRefusedError, NotFoundError, StorageError, ValidationError
from tradai_core.settings import pair_slug

logger = logging.getLogger(__name__)

# One Arctic instance per URI and process: LMDB refuses a second environment over the same folder.
_CONNECTIONS: dict[str, arcticdb.Arctic] = {}
_CONNECTIONS_LOCK = threading.Lock()


class CandleWrite(BaseModel):
    """What a window write did: where, which version it made, how many candles the window now holds."""

    model_config = ConfigDict(frozen=True)

    library: str
    symbol: str
    version: int | None
    rows: int


class StoredCandles(BaseModel):
    """Candles read from the store, with the symbol version they came from (for lineage)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    library: str
    symbol: str
    version: int
    candles: pd.DataFrame


class ArcticDBResource(ConfigurableResource):
    """ArcticDB at `uri`: `lmdb://<folder>` on one machine, `s3://…` (or S3-compatible) to scale out."""

    uri: str = Field(description="ArcticDB URI, e.g. lmdb:///path/to/arcticdb or s3://host:bucket?...")
    rows_per_segment: int = Field(
        default=8760,
        description="Rows per ArcticDB segment: a year of 1h candles. Smaller segments make window "
        "rewrites cheaper; larger ones make long reads cheaper.",
    )

    def arctic(self) -> arcticdb.Arctic:
        """The ArcticDB connection, opened on first use and shared by every resource on the same URI."""
        with _CONNECTIONS_LOCK:
            if self.uri not in _CONNECTIONS:
                try:
                    _CONNECTIONS[self.uri] = arcticdb.Arctic(self.uri)
                except Exception as error:
                    raise StorageError(
                        f"cannot open ArcticDB at {self.uri}: {error}",
                        "check TRADAI_ARCTICDB_URI (lmdb://<folder> or s3://…) and its credentials",
                    ) from error
            return _CONNECTIONS[self.uri]

    @staticmethod
    def library_name(exchange_id: str, timeframe: str) -> str:
        """Library holding one exchange's candles of one timeframe."""
        return f"ohlcv.{exchange_id}.{timeframe}"

    def library(self, exchange_id: str, timeframe: str, create: bool = True) -> Library:
        """The library for `exchange_id`/`timeframe`, created on first write."""
        name = self.library_name(exchange_id, timeframe)
        arctic = self.arctic()
        if not arctic.has_library(name):
            if not create:
                raise NotFoundError(
                    f"no candles stored for {exchange_id} {timeframe} (library {name} missing)",
                    "materialize the market-data assets first",
                )
            options = arcticdb.LibraryOptions(rows_per_segment=self.rows_per_segment)
            arctic.get_library(name, create_if_missing=True, library_options=options)
        return arctic[name]

    def write_window(
        self,
        exchange_id: str,
        timeframe: str,
        pair: str,
        candles: pd.DataFrame,
        start: datetime,
        end: datetime,
        metadata: dict[str, Any] | None = None,
        allow_removal: bool = False,
    ) -> CandleWrite:
        """Make the stored candles of `[start, end)` exactly `candles`, leaving every other candle as it was.

        `candles` must be validated already and lie inside the window. Exchanges never delete history, so
        a write that would drop candles already stored in the window (an exchange answering with less
        than it did before) is refused with `DataLossRefusedError` unless `allow_removal` is set.
        """
        lo, hi = utc_timestamp(start), utc_timestamp(end)
        candles = normalize_candles(candles) if len(candles) else empty_candles()
        if len(candles) and (candles.index[0] < lo or candles.index[-1] >= hi):
            raise ValidationError(
                f"{pair} candles span {candles.index[0]} → {candles.index[-1]}, outside the window "
                f"[{lo}, {hi})",
                "pass only the candles of the window being written",
            )
        lib = self.library(exchange_id, timeframe)
        symbol = pair_slug(pair)
        last_ns = hi - pd.Timedelta(1, "ns")
        if not allow_removal and lib.has_symbol(symbol):
            stored = lib.read(symbol, date_range=(lo, last_ns), columns=["close"]).data.index
            if len(dropped := stored.difference(candles.index)):
                raise DataLossRefusedError(
                    f"{pair}: the new candles for [{lo}, {hi}) would remove {len(dropped)} stored candles "
                    f"(first {dropped[0]}); nothing was written",
                    "the exchange answered with less than it did before: re-run later; if the removal is "
                    "intended, materialize with config allow_removing_candles: true",
                )
        try:
            if not lib.has_symbol(symbol):
                if candles.empty:
                    return CandleWrite(library=lib.name, symbol=symbol, version=None, rows=0)
                item = lib.write(symbol, candles, metadata=metadata, prune_previous_versions=False)
            elif candles.empty:
                if not lib.read(symbol, date_range=(lo, last_ns), columns=["close"]).data.empty:
                    lib.delete_data_in_range(symbol, date_range=(lo, last_ns))
                return CandleWrite(library=lib.name, symbol=symbol, version=self._latest(lib, symbol), rows=0)
            else:
                item = lib.update(symbol, candles, date_range=(lo, last_ns), metadata=metadata, upsert=True)
        except arcticdb.exceptions.ArcticException as error:
            raise StorageError(
                f"ArcticDB refused to write {pair} [{lo}, {hi}) to {lib.name}: {error}",
                "the previous version is intact; check the candles' columns and dtypes",
            ) from error
        logger.debug("wrote %d %s candles to %s v%s", len(candles), pair, lib.name, item.version)
        return CandleWrite(library=lib.name, symbol=symbol, version=item.version, rows=len(candles))

    def read(
        self,
        exchange_id: str,
        timeframe: str,
        pair: str,
        start: datetime | None = None,
        end: datetime | None = None,
        as_of: int | None = None,
    ) -> StoredCandles:
        """Stored candles of `pair` with open time in `[start, end)` (open-ended when None), at the latest
        version or the version `as_of`."""
        lib = self.library(exchange_id, timeframe, create=False)
        symbol = pair_slug(pair)
        if not lib.has_symbol(symbol):
            raise NotFoundError(
                f"no {pair} candles stored in {lib.name}", f"materialize the market-data asset for {pair}"
            )
        lo = utc_timestamp(start) if start is not None else None
        hi = utc_timestamp(end) - pd.Timedelta(1, "ns") if end is not None else None
        item = lib.read(symbol, date_range=(lo, hi), as_of=as_of, columns=list(OHLCV_COLUMNS))
        return StoredCandles(library=lib.name, symbol=symbol, version=item.version, candles=item.data)

    def latest_version(self, exchange_id: str, timeframe: str, pair: str) -> int | None:
        """Latest version of a pair's symbol, or None when nothing is stored."""
        lib = self.library(exchange_id, timeframe)
        symbol = pair_slug(pair)
        return self._latest(lib, symbol) if lib.has_symbol(symbol) else None

    @staticmethod
    def _latest(lib: Library, symbol: str) -> int:
        return int(lib.read_metadata(symbol).version)
