"""`ArcticDBResource`: the candle store, and the store of every other time-indexed frame.

One library per exchange and timeframe (`ohlcv.binance.1h`), one symbol per pair (`BTC_USDT`). A write
covers a time window and replaces exactly that window: re-writing it never duplicates candles and never
touches candles outside it. ArcticDB versions every write atomically, so a failed write leaves the previous
version readable, and each write returns the version it made so downstream assets can record lineage.

The same window semantics are offered for any frame indexed by UTC time (`write_frame_window`,
`read_frame`: e.g. features in `features.binance.1h`), and whole-symbol versioned writes for frames that
are rebuilt as a whole (`write_frame`: e.g. the training set).

**One writer per symbol.** Every write holds the symbol's write lock (`symbol_lock`) from its checks to
its pruning: ArcticDB itself lets two concurrent writers of a symbol lose one of the two writes.

**Retention.** After each write the symbol keeps its newest `keep_versions` versions
(`TRADAI_ARCTICDB_KEEP_VERSIONS`) plus every version an ArcticDB snapshot holds; older versions are
deleted. Consumers that record the versions they read pin them with `pin_versions` (a snapshot named
after the model or run, in each library involved), so those versions stay readable by number for good.
A version written with metadata `tradai_pin: <snapshot>` releases that snapshot when it is itself pruned
(the training set pins its inputs for as long as it exists).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from dagster import ConfigurableResource
from pydantic import BaseModel, ConfigDict, Field

from tradai_core.candles import OHLCV_COLUMNS, empty_candles, normalize_candles, utc_timestamp
from tradai_core.errors import DataLossRefusedError, NotFoundError, StorageError, ValidationError
from tradai_core.lazy import LazyModule
from tradai_core.settings import TradAISettings, pair_slug
from tradai_core.timeframes import timeframe_delta
from tradai_core.urls import redact_uri, scrub
from tradai_resources.symbol_lock import lock_root, symbol_lock, symbol_locks

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from arcticdb.version_store.library import Library

arcticdb = LazyModule("arcticdb")  # imported on first use, not when the code location loads

# One Arctic instance per URI and process: LMDB refuses a second environment over the same folder.
_CONNECTIONS: dict[str, arcticdb.Arctic] = {}
_CONNECTIONS_LOCK = threading.Lock()

META_PIN = "tradai_pin"
"""Version metadata key: the snapshot this version pins its inputs with, released when it is pruned."""


KEEP_VERSIONS_ENV = "TRADAI_ARCTICDB_KEEP_VERSIONS"


@functools.lru_cache(maxsize=8)
def _default_retention(env_value: str | None) -> int:
    """The setting in force for this value of the variable (building the settings is slow)."""
    return TradAISettings().arcticdb_keep_versions


def symbol_pool(library: str, symbol: str) -> str:
    """Dagster pool of the ops writing `library/symbol` (limit 1 by dagster.yaml's default): one run
    writes a symbol at a time."""
    return f"arcticdb/{library}/{symbol}"


def split_key(key: str) -> tuple[str, str]:
    """`features.binance.1h/BTC_USDT` → (library, symbol)."""
    library, sep, symbol = key.partition("/")
    if not (sep and library and symbol):
        raise ValidationError(f"{key!r} is not a library/symbol key", "use e.g. ohlcv.binance.1h/BTC_USDT")
    return library, symbol


class CandleWrite(BaseModel):
    """What a window write did: where, which version it made, how many candles the window now holds."""

    model_config = ConfigDict(frozen=True)

    library: str
    symbol: str
    version: int | None
    rows: int


class FrameWrite(BaseModel):
    """What a frame write did: where, which version it made (None: nothing stored), how many rows it wrote."""

    model_config = ConfigDict(frozen=True)

    library: str
    symbol: str
    version: int | None
    rows: int


class StoredFrame(BaseModel):
    """A frame read from the store, with the symbol version it came from and the metadata of that version."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    library: str
    symbol: str
    version: int
    frame: pd.DataFrame
    metadata: dict[str, Any] | None = None


class Pin(BaseModel):
    """An ArcticDB snapshot `name` holding exactly `versions` (`library/symbol` → version)."""

    model_config = ConfigDict(frozen=True)

    name: str
    versions: dict[str, int]


class StoredCandles(BaseModel):
    """Candles read from the store, with the symbol version they came from (for lineage)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    library: str
    symbol: str
    version: int
    candles: pd.DataFrame


class ArcticDBResource(ConfigurableResource):
    """ArcticDB at `uri`: `lmdb://<folder>` on one machine, `s3://…` (or S3-compatible) to scale out."""

    uri: str = Field(
        description="ArcticDB URI, e.g. lmdb:///path/to/arcticdb or s3://host:bucket?access=…&secret=…; "
        "when it carries credentials, set it as EnvVar('TRADAI_ARCTICDB_URI') so the UI shows the name."
    )
    rows_per_segment: int = Field(
        default=8760,
        description="Rows per ArcticDB segment: a year of 1h candles. Smaller segments make window "
        "rewrites cheaper; larger ones make long reads cheaper.",
    )
    keep_versions: int | None = Field(
        default=None,
        ge=1,
        description="Newest versions kept per symbol besides those a snapshot holds; default "
        "TRADAI_ARCTICDB_KEEP_VERSIONS.",
    )

    def retention(self) -> int:
        """Versions kept per symbol (besides the pinned ones)."""
        return self.keep_versions or _default_retention(os.environ.get(KEEP_VERSIONS_ENV))

    def _lock_root(self) -> Path:
        return lock_root(self.uri)

    @contextmanager
    def symbol_lock(self, library: str, symbol: str) -> Iterator[None]:
        """Hold the write lock of `library/symbol` (reentrant): hold it across a check of the stored
        symbol and the write that depends on it."""
        with symbol_lock(self._lock_root(), library, symbol):
            yield

    def __repr__(self) -> str:  # the URI may carry credentials: never show it whole
        return f"ArcticDBResource(uri={redact_uri(self.uri)!r})"

    __str__ = __repr__

    def arctic(self) -> arcticdb.Arctic:
        """The ArcticDB connection, opened on first use and shared by every resource on the same URI."""
        with _CONNECTIONS_LOCK:
            if self.uri not in _CONNECTIONS:
                try:
                    _CONNECTIONS[self.uri] = arcticdb.Arctic(self.uri)
                except Exception as error:  # raised from None: the chained error may quote the URI
                    raise StorageError(
                        f"cannot open ArcticDB at {redact_uri(self.uri)}: "
                        f"{scrub(f'{type(error).__name__}: {error}', self.uri)}",
                        "check TRADAI_ARCTICDB_URI (lmdb://<folder> or s3://…) and its credentials",
                    ) from None
            return _CONNECTIONS[self.uri]

    @staticmethod
    def library_name(exchange_id: str, timeframe: str) -> str:
        """Library holding one exchange's candles of one timeframe."""
        return f"ohlcv.{exchange_id}.{timeframe}"

    def library(self, exchange_id: str, timeframe: str, create: bool = True) -> Library:
        """The library for `exchange_id`/`timeframe`, created on first write."""
        name = self.library_name(exchange_id, timeframe)
        if not create and not self.arctic().has_library(name):
            raise NotFoundError(
                f"no candles stored for {exchange_id} {timeframe} (library {name} missing)",
                "materialize the market-data assets first",
            )
        return self.open_library(name)

    def open_library(self, name: str, create: bool = True) -> Library:
        """Any library by name (e.g. `features.binance.1h`), created on first use unless `create` is off."""
        arctic = self.arctic()
        if not arctic.has_library(name):
            if not create:
                raise NotFoundError(
                    f"ArcticDB library {name} does not exist", "materialize the asset that writes it first"
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
        with self.symbol_lock(lib.name, symbol):
            return self._write_window_locked(lib, symbol, pair, candles, lo, hi, metadata, allow_removal)

    def _write_window_locked(
        self,
        lib: Library,
        symbol: str,
        pair: str,
        candles: pd.DataFrame,
        lo: pd.Timestamp,
        hi: pd.Timestamp,
        metadata: dict[str, Any] | None,
        allow_removal: bool,
    ) -> CandleWrite:
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
        written = self._replace_window(lib, symbol, candles, lo, hi, metadata, what=f"{pair} candles")
        self._prune(lib, symbol)
        return CandleWrite(library=lib.name, symbol=symbol, version=written.version, rows=written.rows)

    @classmethod
    def _replace_window(
        cls,
        lib: Library,
        symbol: str,
        frame: pd.DataFrame,
        lo: pd.Timestamp,
        hi: pd.Timestamp,
        metadata: dict[str, Any] | None,
        what: str,
    ) -> FrameWrite:
        """Make `[lo, hi)` of `symbol` exactly `frame` (already checked to lie inside it), as one version."""
        last_ns = hi - pd.Timedelta(1, "ns")
        try:
            if not lib.has_symbol(symbol):
                if frame.empty:
                    return FrameWrite(library=lib.name, symbol=symbol, version=None, rows=0)
                item = lib.write(symbol, frame, metadata=metadata, prune_previous_versions=False)
            elif frame.empty:
                probe = list(frame.columns[:1]) or None
                if not lib.read(symbol, date_range=(lo, last_ns), columns=probe).data.empty:
                    lib.delete_data_in_range(symbol, date_range=(lo, last_ns))
                return FrameWrite(library=lib.name, symbol=symbol, version=cls._latest(lib, symbol), rows=0)
            else:
                item = lib.update(symbol, frame, date_range=(lo, last_ns), metadata=metadata, upsert=True)
        except arcticdb.exceptions.ArcticException as error:
            raise StorageError(
                f"ArcticDB refused to write {what} [{lo}, {hi}) to {lib.name}/{symbol}: {error}",
                "the previous version is intact; check the frame's columns and dtypes",
            ) from error
        logger.debug("wrote %d rows of %s to %s/%s v%s", len(frame), what, lib.name, symbol, item.version)
        return FrameWrite(library=lib.name, symbol=symbol, version=item.version, rows=len(frame))

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

    def read_pairs(
        self, exchange_id: str, timeframe: str, pairs: Sequence[str], start: datetime, end: datetime
    ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """Candles of every pair over `[start, end)` and the symbol versions read (`library/symbol` →
        version), for a consumer that records its lineage; a pair with no candles there is an error
        naming the partitions to materialize."""
        candles: dict[str, pd.DataFrame] = {}
        versions: dict[str, str] = {}
        for pair in pairs:
            stored = self.read(exchange_id, timeframe, pair, start, end)
            if stored.candles.empty:
                first, last = utc_timestamp(start), utc_timestamp(end)
                raise NotFoundError(
                    f"no {pair} candles stored for {first:%Y-%m-%d} → {last:%Y-%m-%d}",
                    f"materialize ohlcv/{pair_slug(pair)} for those days first",
                )
            candles[pair] = stored.candles
            versions[f"{stored.library}/{stored.symbol}"] = str(stored.version)
        return candles, versions

    def latest_version(self, exchange_id: str, timeframe: str, pair: str) -> int | None:
        """Latest version of a pair's symbol, or None when nothing is stored."""
        lib = self.library(exchange_id, timeframe)
        symbol = pair_slug(pair)
        return self._latest(lib, symbol) if lib.has_symbol(symbol) else None

    def last_candle_end(
        self, exchange_id: str, timeframe: str, pairs: Sequence[str], now: datetime | None = None
    ) -> datetime:
        """The end (exclusive) of the newest candle stored for any of `pairs`: how far the history
        reaches, which windows ending "now" (drift, the champion's performance) end at offline too.
        `now` (the platform's clock) caps it: a store filled further, e.g. before a simulation stepped the
        clock back, is read only up to the clock."""
        library = self.library(exchange_id, timeframe, create=False)
        newest: pd.Timestamp | None = None
        for pair in pairs:
            symbol = pair_slug(pair)
            if not library.has_symbol(symbol):
                continue
            tail = library.tail(symbol, 1, columns=["close"]).data
            if len(tail):
                stamp = utc_timestamp(tail.index[-1])
                newest = stamp if newest is None else max(newest, stamp)
        if newest is None:
            raise NotFoundError(
                f"no candles stored for {', '.join(pairs)}", "materialize the market-data assets first"
            )
        step = pd.Timedelta(timeframe_delta(timeframe))
        end = newest + step
        if now is not None:
            end = min(end, utc_timestamp(now).floor(step))
        return end.to_pydatetime()

    @staticmethod
    def _latest(lib: Library, symbol: str) -> int:
        return int(lib.read_metadata(symbol).version)

    # -- any frame indexed by UTC time (features, ...) or rebuilt as a whole (training sets)

    def write_frame_window(
        self,
        library: str,
        symbol: str,
        frame: pd.DataFrame,
        start: datetime,
        end: datetime,
        metadata: dict[str, Any] | None = None,
        replace_symbol: bool = False,
    ) -> FrameWrite:
        """Make the stored rows of `symbol` in `[start, end)` exactly `frame`, leaving every other row as
        it was, as one new version (rows of the window absent from `frame` are removed).

        With `replace_symbol` the new version holds `frame` only: every row outside the window is gone
        from it (earlier versions stay readable until pruned). Either way it is one atomic write: a crash
        leaves the previous version as the latest, intact.

        `frame` must be indexed by a sorted, unique, tz-aware DatetimeIndex inside the window; it is stored
        in UTC. `metadata` becomes the symbol's metadata at the new version.
        """
        lo, hi = utc_timestamp(start), utc_timestamp(end)
        frame = _utc_indexed(frame, f"{library}/{symbol}")
        if len(frame) and (frame.index[0] < lo or frame.index[-1] >= hi):
            raise ValidationError(
                f"{library}/{symbol} rows span {frame.index[0]} → {frame.index[-1]}, outside the window "
                f"[{lo}, {hi})",
                "pass only the rows of the window being written",
            )
        lib = self.open_library(library)
        with self.symbol_lock(library, symbol):
            if replace_symbol:
                written = self._write_whole(lib, symbol, frame, metadata)
            else:
                what = f"{library}/{symbol}"
                written = self._replace_window(lib, symbol, frame, lo, hi, metadata, what=what)
            self._prune(lib, symbol)
        return written

    def write_frame(
        self, library: str, symbol: str, frame: pd.DataFrame, metadata: dict[str, Any] | None = None
    ) -> FrameWrite:
        """Store `frame` as a new version of `symbol`, replacing its content (earlier versions stay
        readable with `read_frame(..., as_of=version)` until pruned)."""
        lib = self.open_library(library)
        with self.symbol_lock(library, symbol):
            written = self._write_whole(lib, symbol, frame, metadata)
            self._prune(lib, symbol)
        return written

    @staticmethod
    def _write_whole(
        lib: Library, symbol: str, frame: pd.DataFrame, metadata: dict[str, Any] | None
    ) -> FrameWrite:
        try:
            item = lib.write(symbol, frame, metadata=metadata, prune_previous_versions=False)
        except arcticdb.exceptions.ArcticException as error:
            raise StorageError(
                f"ArcticDB refused to write {lib.name}/{symbol}: {error}",
                "the previous version is intact; check the frame's columns and dtypes",
            ) from error
        return FrameWrite(library=lib.name, symbol=symbol, version=item.version, rows=len(frame))

    # -- retention and pins

    def _prune(self, lib: Library, symbol: str) -> list[int]:
        """Delete the versions of `symbol` older than the newest `retention()` that no snapshot holds,
        and release the pins those versions made (call with the symbol's lock held). A failure is
        logged, not raised: the write it follows has succeeded."""
        try:
            infos = lib.list_versions(symbol)
            live = sorted((key.version, info) for key, info in infos.items() if not info.deleted)
            newest = {version for version, _ in live[-self.retention() :]}
            doomed = [version for version, info in live if version not in newest and not info.snapshots]
            if not doomed:
                return []
            releases = []
            for version in doomed:
                meta = lib.read_metadata(symbol, as_of=version).metadata
                if isinstance(meta, dict) and meta.get(META_PIN):
                    releases.append(str(meta[META_PIN]))
            lib.delete(symbol, versions=doomed)
        except arcticdb.exceptions.ArcticException as error:
            logger.warning("could not prune old versions of %s/%s: %s", lib.name, symbol, error)
            return []
        logger.info("pruned %d old versions of %s/%s: %s", len(doomed), lib.name, symbol, doomed)
        for name in releases:
            try:
                self.unpin(name)
            except arcticdb.exceptions.ArcticException as error:  # the pin stays: it only holds data longer
                logger.warning(
                    "could not release pin %s of a pruned %s/%s version: %s", name, lib.name, symbol, error
                )
        return doomed

    def pin_versions(self, name: str, versions: Mapping[str, int | str], note: str = "") -> Pin:
        """Keep exactly these versions (`library/symbol` → version) readable for good: the ArcticDB
        snapshot `name` in every library involved. Taking the same pin again is a no-op; a pin whose
        name is taken by other versions, or of a version already pruned, is a StorageError and takes
        no snapshot at all."""
        wanted: dict[str, dict[str, int]] = {}
        for key, version in versions.items():
            library, symbol = split_key(key)
            wanted.setdefault(library, {})[symbol] = int(version)
        pairs = [(library, symbol) for library, symbols in wanted.items() for symbol in symbols]
        pin = Pin(
            name=name, versions={f"{lib}/{sym}": v for lib, syms in wanted.items() for sym, v in syms.items()}
        )
        taken: list[Library] = []
        with symbol_locks(self._lock_root(), pairs):
            held = self.pinned_versions(name)
            if held == pin.versions:
                return pin  # the same pin again (a retried step)
            if held:
                raise StorageError(
                    f"the ArcticDB snapshot {name} already holds {held}, not {pin.versions}",
                    "pin under another name",
                )
            try:
                for library, symbols in sorted(wanted.items()):
                    lib = self.open_library(library, create=False)
                    self._snapshot(lib, name, symbols, note)
                    taken.append(lib)
            except Exception:
                for lib in taken:
                    lib.delete_snapshot(name)
                raise
        logger.info("pinned %s as ArcticDB snapshot %s", pin.versions, name)
        return pin

    @staticmethod
    def _snapshot(lib: Library, name: str, symbols: dict[str, int], note: str) -> None:
        try:
            lib.snapshot(name, versions=symbols, metadata={"note": note} if note else None)
        except arcticdb.exceptions.ArcticException as error:
            raise StorageError(
                f"cannot pin {lib.name} {symbols} as snapshot {name}: {error}",
                "a version read was pruned before it could be pinned (more than keep_versions newer "
                "writes in between): re-run, or raise TRADAI_ARCTICDB_KEEP_VERSIONS",
            ) from error

    def pinned_versions(self, name: str) -> dict[str, int]:
        """What the pin `name` holds (`library/symbol` → version) across every library; {} when none."""
        arctic = self.arctic()
        held: dict[str, int] = {}
        for library in arctic.list_libraries():
            lib = arctic[library]
            if name in lib.list_snapshots(load_metadata=False):
                for key in lib.list_versions(snapshot=name):
                    held[f"{library}/{key.symbol}"] = int(key.version)
        return held

    def unpin(self, name: str) -> None:
        """Drop the pin `name` in every library (its versions become prunable at their next write)."""
        arctic = self.arctic()
        for library in arctic.list_libraries():
            lib = arctic[library]
            if name in lib.list_snapshots(load_metadata=False):
                lib.delete_snapshot(name)
                logger.info("released pin %s in %s", name, library)

    def read_frame(
        self,
        library: str,
        symbol: str,
        start: datetime | None = None,
        end: datetime | None = None,
        as_of: int | None = None,
        columns: list[str] | None = None,
    ) -> StoredFrame:
        """Rows of `symbol` in `[start, end)` (time-indexed symbols; open-ended when None), at the latest
        version or the version `as_of`, with that version's metadata. NotFoundError when nothing is stored."""
        lib = self.open_library(library, create=False)
        if not lib.has_symbol(symbol):
            raise NotFoundError(
                f"nothing stored as {symbol} in {library}", "materialize the asset that writes it first"
            )
        date_range = None
        if start is not None or end is not None:
            lo = utc_timestamp(start) if start is not None else None
            hi = utc_timestamp(end) - pd.Timedelta(1, "ns") if end is not None else None
            date_range = (lo, hi)
        item = lib.read(symbol, date_range=date_range, as_of=as_of, columns=columns)
        return StoredFrame(
            library=lib.name,
            symbol=symbol,
            version=int(item.version),
            frame=item.data,
            metadata=dict(item.metadata) if item.metadata else None,
        )

    def frame_metadata(self, library: str, symbol: str) -> tuple[int, dict[str, Any]] | None:
        """(latest version, its metadata) of a symbol, or None when nothing is stored."""
        arctic = self.arctic()
        if not arctic.has_library(library) or not arctic[library].has_symbol(symbol):
            return None
        item = arctic[library].read_metadata(symbol)
        return int(item.version), dict(item.metadata or {})

    def delete_symbol(self, library: str, symbol: str) -> None:
        """Remove a symbol and all its versions (nothing when absent; versions a snapshot holds stay
        readable through the snapshot only)."""
        arctic = self.arctic()
        with self.symbol_lock(library, symbol):
            if arctic.has_library(library) and arctic[library].has_symbol(symbol):
                arctic[library].delete(symbol)


def _utc_indexed(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """`frame` with its tz-aware DatetimeIndex in UTC (ns), after checking it is sorted and unique."""
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValidationError(
            f"{what}: frames written by window must be indexed by a tz-aware DatetimeIndex",
            "index the frame by its UTC timestamps",
        )
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise ValidationError(f"{what}: the index is not sorted and unique", "sort and de-duplicate first")
    out = frame.copy(deep=False)
    out.index = index.tz_convert("UTC").as_unit("ns")
    return out
